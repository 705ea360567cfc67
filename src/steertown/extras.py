"""Optional runtime packages, installed as pip extras: which are missing, and what to type.

`pip install steertown` gives the torch backend; `steertown[onnx]` adds ONNX Runtime
(`model.backend=onnx`, the fast CPU path; `make setup` installs it), `steertown[quant]`
adds bitsandbytes (4-bit weights on CUDA, `optimization.use_quantization`).
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


def onnx_fallback_note(backend: str) -> str | None:
    """For `model.backend=onnx` without ONNX Runtime: the one line saying the run uses torch
    instead and how to get ONNX; None when nothing falls back."""
    if backend != "onnx":
        return None
    missing = missing_modules("onnx")
    if not missing:
        return None
    return (f"model.backend=onnx: {', '.join(missing)} not installed; running on torch "
            f"instead (same model, slower on CPU). For ONNX: {install_hint('onnx')}")
