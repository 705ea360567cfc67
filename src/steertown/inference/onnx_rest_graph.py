"""A second ONNX graph for the batched rest-of-prompt prefill on top of per-row prefix KV.

ONNX Runtime's GroupQueryAttention (GQA) takes several new tokens on top of a KV cache
only for a batch of one, so the backend used to prefill the rest of each prompt (after
the cached persona prefix) one row at a time. This graph is the steered model graph with
every GQA node replaced by the same attention written in standard ops, which accept a
batch whose rows have different prefix and rest lengths:

- rotary positions per row (`position_ids` [B, S] = prefix length + offset), applied by
  ORT's RotaryEmbedding kernel, the one GQA uses inside;
- each row's keys/values gathered into GQA's own cache layout (`kv_index` [B, T, 1]:
  the row's prefix, then its new tokens, then padding), so `present.*` feeds straight
  into the decode graph and the attention sums run over the same positions in the same
  order as GQA's;
- an additive mask (`attn_bias` [B, 1, group * S, T], 0 or -inf) for causality and
  padding; each kv head's `group` query heads are folded into its rows, as GQA shares it.

The weights stay in the decode graph's external data file; only the proto differs.
Whether its outputs equal the row-by-row path is measured, not assumed
(tests/test_onnx_backend.py, bench/RESULTS.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

REST_GRAPH_FILE = "model_rest.onnx"


def ensure_rest_graph(onnx_dir: Path) -> Path:
    """The batched-prefill graph next to `onnx_dir/model.onnx`, built once (seconds)."""
    dst = onnx_dir / REST_GRAPH_FILE
    if not dst.exists():
        tmp = onnx_dir / f".{REST_GRAPH_FILE}.tmp{os.getpid()}"
        build_rest_graph(onnx_dir / "model.onnx", tmp)
        os.replace(tmp, dst)  # atomic: another process may have published the same bytes
    return dst


def build_rest_graph(src: Path, dst: Path) -> None:
    """Rewrite `src` (the steered decode graph) with every GQA node as standard ops."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(src), load_external_data=False)
    g = model.graph
    nodes = []
    consts: list = []
    weights = {w.name: list(w.dims) for w in g.initializer}
    made_by = {o: m for m in g.node for o in m.output}
    for n in g.node:
        if n.op_type != "GroupQueryAttention":
            nodes.append(n)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        # Head size from the packed QKV projection's width: (heads + 2 kv_heads) * head_dim.
        proj = made_by[n.input[0]]
        width = weights[proj.input[1]][-1]
        attrs["head_dim"] = width // (attrs["num_heads"] + 2 * attrs["kv_num_heads"])
        if attrs.get("local_window_size", -1) != -1 or attrs.get("softcap", 0.0) != 0.0:
            raise RuntimeError(f"{n.name}: sliding window or softcap not supported")
        nodes += _attention(n, attrs, consts)
    for name, shape in (("position_ids", ["batch_size", "sequence_length"]),
                        ("kv_index", ["batch_size", "total_sequence_length", 1])):
        g.input.append(helper.make_tensor_value_info(name, TensorProto.INT64, shape))
    g.input.append(helper.make_tensor_value_info(
        "attn_bias", TensorProto.FLOAT, ["batch_size", 1, "group_sequence_length",
                                         "total_sequence_length"]))
    g.initializer.extend(consts)
    del g.node[:]
    g.node.extend(nodes)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(dst))


def _attention(n, attrs: dict, consts: list) -> list:
    """Standard-op nodes computing what GQA node `n` computes (packed QKV input)."""
    from onnx import helper, numpy_helper

    heads, kv_heads = int(attrs["num_heads"]), int(attrs["kv_num_heads"])
    qkv, past_k, past_v, cos, sin = n.input[0], n.input[3], n.input[4], n.input[7], n.input[8]
    if n.input[1] or n.input[2] or not attrs.get("do_rotary"):
        raise RuntimeError(f"{n.name}: expected packed QKV with rotary (the builder's layout)")
    head_dim = int(attrs["head_dim"])
    p = n.name.rsplit("/", 1)[0] + "/rest"

    def c(name: str, value) -> str:
        consts.append(numpy_helper.from_array(np.asarray(value, dtype=np.int64), f"{p}/{name}"))
        return f"{p}/{name}"

    def node(op: str, inputs: list[str], out: str, **kw) -> str:
        domain = kw.pop("domain", "")
        out_name = out if out.startswith("present.") or out == n.output[0] else f"{p}/{out}"
        built.append(helper.make_node(op, inputs, [out_name], name=f"{p}/{op}_{out}",
                                      domain=domain, **kw))
        return out_name

    built: list = []
    q_w, kv_w = heads * head_dim, kv_heads * head_dim
    q, k, v = (f"{p}/q", f"{p}/k", f"{p}/v")
    built.append(helper.make_node("Split", [qkv, c("split", [q_w, kv_w, kv_w])], [q, k, v],
                                  name=f"{p}/Split", axis=-1))
    rope = {"domain": "com.microsoft", "interleaved": int(attrs.get("rotary_interleaved", 0))}
    q_rot = node("RotaryEmbedding", [q, "position_ids", cos, sin], "q_rot",
                 num_heads=heads, **rope)
    k_rot = node("RotaryEmbedding", [k, "position_ids", cos, sin], "k_rot",
                 num_heads=kv_heads, **rope)
    cache = {}
    for kind, past, new, out in (("key", past_k, k_rot, n.output[1]),
                                 ("value", past_v, v, n.output[2])):
        # past [B, kvH, P, D] -> [B, P, kvH*D]; append the new rows; gather GQA's layout.
        flat = node("Transpose", [past], f"{kind}_past_t", perm=[0, 2, 1, 3])
        flat = node("Reshape", [flat, c(f"{kind}_flat", [0, 0, kv_w])], f"{kind}_past_flat")
        cat = node("Concat", [flat, new], f"{kind}_cat", axis=1)
        got = node("GatherND", [cat, "kv_index"], f"{kind}_gathered", batch_dims=1)
        got = node("Reshape", [got, c(f"{kind}_heads", [0, 0, kv_heads, head_dim])],
                   f"{kind}_heads4")
        cache[kind] = node("Transpose", [got], out, perm=[0, 2, 1, 3])  # [B, kvH, T, D]
    # Query head h reads kv head h // group (GQA): fold each kv head's `group` query heads
    # into its rows, [B, kvH, group * S, D], instead of copying keys/values per head.
    qh = node("Reshape", [q_rot, c("q_heads", [0, 0, heads, head_dim])], "q4")
    qh = node("Transpose", [qh], "q_t", perm=[0, 2, 1, 3])  # [B, H, S, D]
    qh = node("Reshape", [qh, c("q_groups", [0, kv_heads, -1, head_dim])], "q_g")
    kt = node("Transpose", [cache["key"]], "k_t", perm=[0, 1, 3, 2])  # [B, kvH, D, T]
    scores = node("MatMul", [qh, kt], "scores")  # [B, kvH, group * S, T]
    scale = f"{p}/scale"
    consts.append(numpy_helper.from_array(np.asarray(attrs["scale"], np.float32), scale))
    scores = node("Mul", [scores, scale], "scaled")
    scores = node("Add", [scores, "attn_bias"], "masked")  # bias [B, 1, group * S, T]
    probs = node("Softmax", [scores], "probs", axis=-1)
    out = node("MatMul", [probs, cache["value"]], "ctx")  # [B, kvH, group * S, D]
    out = node("Reshape", [out, c("ctx_heads", [0, heads, -1, head_dim])], "ctx4")
    out = node("Transpose", [out], "ctx_t", perm=[0, 2, 1, 3])
    node("Reshape", [out, c("ctx_flat", [0, 0, q_w])], n.output[0])
    return built


def rest_feeds(prefix_lengths: list[int], rest_lengths: list[int], max_position: int,
               group: int) -> dict[str, np.ndarray]:
    """`position_ids`, `kv_index` and `attn_bias` for rows whose prefix KV (right-padded
    to P = max prefix) is followed by their rest tokens (right-padded to S = max rest).

    Row b's present is [its prefix, its rest, padding] over T = P + S positions, as GQA
    lays it out; padded queries attend causally too (their outputs are never read).
    """
    p_max, s_max = max(prefix_lengths), max(rest_lengths)
    total = p_max + s_max
    b = len(prefix_lengths)
    pre = np.asarray(prefix_lengths, np.int64)[:, None]
    offs = np.arange(s_max, dtype=np.int64)[None, :]
    positions = np.minimum(pre + offs, max_position - 1)
    t = np.arange(total, dtype=np.int64)[None, :]
    # Position t of row b: its prefix at t < p_b, else its rest token t - p_b (from the
    # concatenated [past (width P), new (width S)] axis: index P + t - p_b).
    index = np.where(t < pre, t, p_max + np.minimum(t - pre, s_max - 1))
    allowed = t[:, None, :] <= (pre + offs)[:, :, None]  # [B, S, T]: causal on real slots
    bias = np.where(allowed, 0.0, -np.inf).astype(np.float32)[:, None]
    bias = np.tile(bias, (1, 1, group, 1))  # the same mask for each query head of a group
    return {"position_ids": positions, "kv_index": index.reshape(b, total, 1),
            "attn_bias": bias}
