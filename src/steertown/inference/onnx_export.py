"""Convert the cached HF model to an ONNX Runtime graph with per-row steering inputs (once).

ONNX Runtime GenAI's model builder turns the cached safetensors directory into a fused
fp32 graph (GroupQueryAttention with rotary embeddings, SkipSimplifiedLayerNorm). Two
edits make it ours:

- `steer_L<k>` [batch, 1, hidden] per configured layer k, added to the residual stream
  where "layer k" ends: the builder fuses that sum into the next norm
  (residual + mlp(layer k-1) -> SkipSimplifiedLayerNorm), so the steering vector joins
  the MLP output just before it, which is exactly "output of decoder block k-1 + v".
- `logits_index` [batch, n, 1]: the positions whose logits are wanted (GatherND before
  the LM head), so prefill computes the head for each row's last real token only.

The result is cached under `cfg.model.cache_dir` as `<hf dir>-onnx-fp32-L<layers>` with
a completion marker, published atomically like the safetensors cache.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from steertown.extras import install_hint

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".steertown-complete"
GRAPH_FILE = "model.onnx"


def onnx_dir(hf_dir: Path, layers: list[int]) -> Path:
    """Where the steerable ONNX graph of `hf_dir` for these layers is cached."""
    return hf_dir.with_name(f"{hf_dir.name}-onnx-fp32-L{'-'.join(map(str, sorted(layers)))}")


def ensure_onnx_model(hf_dir: Path, layers: list[int]) -> tuple[Path, bool]:
    """(directory of the steerable graph, from_cache); builds it on first use (~1 min)."""
    target = onnx_dir(hf_dir, layers)
    if (target / COMPLETE_MARKER).exists():
        return target, True
    try:
        import onnx  # noqa: F401
        import onnxruntime_genai  # noqa: F401
    except ImportError as e:
        raise RuntimeError("model.backend=onnx needs onnx, onnxruntime and onnxruntime-genai "
                           f"({install_hint('onnx')})") from e
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    raw = tmp / "raw"
    log.info("building the ONNX graph of %s (one time)", hf_dir)
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir),
           "-o", str(raw), "-p", "fp32", "-e", "cpu", "-c", str(tmp / "builder_cache")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0 or not (raw / GRAPH_FILE).exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"ONNX model builder failed on {hf_dir}: {' | '.join(tail)}")
    add_steering_inputs(raw / GRAPH_FILE, tmp / GRAPH_FILE, layers)
    for f in raw.iterdir():  # weights (external data), tokenizer and configs
        if f.name != GRAPH_FILE:
            os.replace(f, tmp / f.name)
    shutil.rmtree(raw, ignore_errors=True)
    shutil.rmtree(tmp / "builder_cache", ignore_errors=True)
    (tmp / COMPLETE_MARKER).write_text(f"{hf_dir.name} layers {sorted(layers)}\n")
    if (target / COMPLETE_MARKER).exists():  # another process finished first: keep its copy
        shutil.rmtree(tmp, ignore_errors=True)
        return target, True
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target, False


def add_steering_inputs(src: Path, dst: Path, layers: list[int]) -> None:
    """Rewrite the builder's graph: `steer_L<k>` inputs and the `logits_index` gather.

    Only the graph proto changes; the weights stay in the external data file next to it.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(src), load_external_data=False)
    g = model.graph
    hidden = _hidden_size(g)
    nodes = list(g.node)
    for k in sorted(layers):
        down = f"/model/layers.{k - 1}/mlp/down_proj/MatMul/output_0"
        at = next((i for i, n in enumerate(nodes) if n.op_type.startswith("Skip")
                   and len(n.input) > 1 and n.input[1] == down), None)
        if at is None:
            raise RuntimeError(f"ONNX graph of {src.parent}: no residual sum after decoder "
                               f"block {k - 1} (layer {k}); unknown builder layout")
        name = f"steer_L{k}"
        g.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                     ["batch_size", 1, hidden]))
        out = f"/steer/L{k}/Add/output_0"
        nodes.insert(at, helper.make_node("Add", [down, name], [out], name=f"/steer/L{k}/Add"))
        nodes[at + 1].input[1] = out
    head = next((i for i, n in enumerate(nodes) if n.output and n.output[0] == "logits"), None)
    if head is None or nodes[head].op_type != "MatMul":
        raise RuntimeError(f"ONNX graph of {src.parent}: no MatMul LM head producing 'logits'")
    g.input.append(helper.make_tensor_value_info("logits_index", TensorProto.INT64,
                                                 ["batch_size", "num_logits", 1]))
    gathered = "/logits_gather/output_0"
    nodes.insert(head, helper.make_node("GatherND", [nodes[head].input[0], "logits_index"],
                                        [gathered], name="/logits_gather/GatherND", batch_dims=1))
    nodes[head + 1].input[0] = gathered
    logits = next(o for o in g.output if o.name == "logits")
    logits.type.tensor_type.shape.dim[1].dim_param = "num_logits"
    del g.node[:]
    g.node.extend(nodes)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))


def _hidden_size(graph) -> int:
    """Hidden size from the first layer norm's weight shape."""
    for init in graph.initializer:
        if init.name.endswith("input_layernorm.weight"):
            return int(init.dims[0])
    raise RuntimeError("ONNX graph: cannot find a layer norm weight to read the hidden size from")
