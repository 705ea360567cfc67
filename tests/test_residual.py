"""The residual-stream plumbing: padding, chat-template ids, layer capture and addition."""

from __future__ import annotations

import pytest
import torch

from steertown.residual import (
    added,
    captured,
    chat_ids,
    decoder_layers,
    forward_until,
    left_pad,
    pad_id,
    right_pad,
)
from tests.model_fixtures import ROOT


def test_left_and_right_padding():
    ids, mask, pos = left_pad([[5, 6, 7], [8]], pad=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert pos.tolist() == [[0, 1, 2], [0, 0, 0]]  # real tokens count from 0 in every row
    ids, mask = right_pad([[5, 6, 7], [8]], pad=9)
    assert ids.tolist() == [[5, 6, 7], [8, 9, 9]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


@pytest.fixture(scope="module")
def tiny():
    """A randomly initialised 4-layer Llama: exercises the hooks without the real weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=4,
                      num_attention_heads=2, num_key_value_heads=1)
    return LlamaForCausalLM(cfg).eval()


def test_capture_reads_hidden_states_and_stops_early(tiny):
    ids, mask, pos = left_pad([[3, 4, 5, 6], [7, 8]], pad=0)
    with torch.no_grad():
        ref = tiny(input_ids=ids, attention_mask=mask, position_ids=pos,
                   output_hidden_states=True).hidden_states
    ran: list[int] = []
    probe = decoder_layers(tiny)[3].register_forward_hook(lambda *_: ran.append(4))
    try:
        with torch.no_grad(), captured(tiny, [1, 2], stop=True) as got:
            forward_until(lambda: tiny(input_ids=ids, attention_mask=mask, position_ids=pos))
    finally:
        probe.remove()
    for layer in (1, 2):  # "layer L" = hidden_states[L]
        assert torch.equal(got[layer], ref[layer].float())
    assert ran == []  # the pass stopped after layer 2


def test_added_deltas_are_per_row_and_seen_by_later_captures(tiny):
    ids, mask, pos = left_pad([[3, 4, 5], [7, 8, 9]], pad=0)
    delta = torch.zeros(2, 16)
    delta[1, 0] = 2.5
    # The addition is hooked first (as steering is, at load); captures come later.
    with torch.no_grad(), added(tiny, {2: delta}):
        with captured(tiny, [2], before_steering=True) as pre, captured(tiny, [2]) as post:
            tiny(input_ids=ids, attention_mask=mask, position_ids=pos)
    assert torch.equal(post[2][0], pre[2][0])  # row 0: zero delta, untouched
    assert torch.allclose(post[2][1] - pre[2][1], delta[1].expand(3, 16))


def test_chat_ids_system_block_is_the_prompt_prefix():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ROOT / "storage" / "models" / "smollm2-135m-instruct")
    full = chat_ids(tok, "You are Ana.", "Say hello.")
    pre = chat_ids(tok, "You are Ana.")
    assert len(pre) < len(full) and full[:len(pre)] == pre
    assert isinstance(pad_id(tok), int)
