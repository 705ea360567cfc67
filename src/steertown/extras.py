"""Optional runtime packages, installed as pip extras: which are missing, and what to type.

`pip install steertown` gives the torch backend; `steertown[onnx]` adds ONNX Runtime
(`model.backend=onnx`, the fast CPU path `auto` picks; `make setup` installs it; without
it `auto` resolves to torch and says why, inference.choice), `steertown[quant]` adds
bitsandbytes (4-bit weights on CUDA, `optimization.use_quantization`).
"""

from __future__ import annotations

import importlib.util

# extra -> the modules it provides (import names)
EXTRAS: dict[str, tuple[str, ...]] = {
    "onnx": ("onnx", "onnxruntime", "onnxruntime_genai"),
    "quant": ("bitsandbytes",),
}


def missing_modules(extra: str) -> list[str]:
    """The modules of `extra` that cannot be imported here (empty: the extra is usable)."""
    out = []
    for name in EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a module set to None in sys.modules, a bad spec
            found = False
        if not found:
            out.append(name)
    return out


def install_hint(extra: str) -> str:
    """What to type to get `extra`: `pip install 'steertown[onnx]'` (or `make setup`)."""
    return f"pip install 'steertown[{extra}]' (make setup installs it)"
