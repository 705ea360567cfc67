"""Constrained reply starts: the first tokens of a reply must spell one of a set of options.

A 135M model often ignores an output format. Constraining the start of each action reply
to the actions the world allows here ("Move park", "Talk Ben:", "Work:", "Rest") makes
every reply parseable, while the model (and so the steering) still chooses *which*
option through its logits: disallowed tokens are masked, the rest renormalised. An
option with a ":" continues with free text (what is said or done); any other option
ends the reply, which also saves the tokens a MOVE or REST does not need.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch


@dataclass
class TrieNode:
    children: dict[int, TrieNode] = field(default_factory=dict)
    option: str | None = None  # set where an option's tokens end
    mask: torch.Tensor | None = None  # allowed next tokens (built once)


class OptionTrie:
    """Token-level trie of a request's options."""

    def __init__(self, options: tuple[str, ...], tokenizer, vocab: int):
        self.root = TrieNode()
        for opt in options:
            node = self.root
            for tok in tokenizer(opt, add_special_tokens=False)["input_ids"]:
                node = node.children.setdefault(tok, TrieNode())
            node.option = node.option or opt
        self._vocab = vocab

    def allowed(self, node: TrieNode) -> torch.Tensor:
        """Vocabulary mask of the tokens that continue some option from `node`."""
        if node.mask is None:
            node.mask = torch.zeros(self._vocab, dtype=torch.bool)
            node.mask[list(node.children)] = True
        return node.mask

    def logprob(self, logits: torch.Tensor, node: TrieNode, tok: int) -> float:
        """log P(tok) from raw `logits` [V] renormalised over the tokens allowed at `node`."""
        masked = logits.float().masked_fill(~self.allowed(node), float("-inf"))
        return float(torch.log_softmax(masked, dim=-1)[tok])

    @staticmethod
    def advance(node: TrieNode, tok: int) -> tuple[TrieNode | None, str | None]:
        """Follow `tok`; returns (next node or None once an option is complete, that option).

        The shortest complete option wins (an option that is a token prefix of another
        ends the constraint there).
        """
        nxt = node.children[tok]
        if nxt.option is not None:
            return None, nxt.option
        return nxt, None

    @staticmethod
    def continues(option: str) -> bool:
        """Whether free text follows the option: it has a ':' ("Talk Ben:", or "Work: I",
        a prefix the free text continues)."""
        return ":" in option


_SENTENCE_END = re.compile(r"[.!?][\"')]*$")
SENTENCE_MIN_WORDS = 4


def sentence_done(text: str) -> bool:
    """Whether an action reply's free text (after the option's ':') ends a full sentence of
    at least SENTENCE_MIN_WORDS words: where a one-sentence action line stops."""
    _, sep, free = text.partition(":")
    free = free.strip()
    return bool(sep) and len(free.split()) >= SENTENCE_MIN_WORDS and bool(_SENTENCE_END.search(free))
