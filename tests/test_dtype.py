"""`model.dtype: auto` follows the hardware, stays overridable, and doctor says why."""

from __future__ import annotations

import torch

from steertown.config import RunConfig
from steertown.inference import model_loading
from steertown.preflight import preflight


def test_auto_picks_bf16_only_with_native_bf16(monkeypatch):
    monkeypatch.setattr(model_loading, "native_bf16_cpu", lambda: ["amx_bf16", "avx512_bf16"])
    dtype, why = model_loading.choose_dtype("auto", "cpu")
    assert dtype == torch.bfloat16 and "amx_bf16" in why and "equal-length" in why
    monkeypatch.setattr(model_loading, "native_bf16_cpu", lambda: [])
    dtype, why = model_loading.choose_dtype("auto", "cpu")
    assert dtype == torch.float32 and "without native bfloat16" in why
    # An explicit choice always wins, whatever the CPU.
    monkeypatch.setattr(model_loading, "native_bf16_cpu", lambda: ["amx_bf16"])
    assert model_loading.choose_dtype("float32", "cpu")[0] == torch.float32


def test_auto_on_gpu_prefers_bf16_else_fp16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert model_loading.choose_dtype("auto", "cuda")[0] == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert model_loading.choose_dtype("auto", "cuda:0")[0] == torch.float16


def test_doctor_reports_the_pick_and_the_reason(monkeypatch):
    monkeypatch.setattr(model_loading, "native_bf16_cpu", lambda: [])
    cfg = RunConfig()
    cfg.model.device = "cpu"
    found = {f["check"]: f for f in preflight(cfg)}
    assert found["dtype"]["detail"].startswith("float32: auto: CPU without native bfloat16")
    cfg.model.backend = "onnx"
    assert "float32 graph" in {f["check"]: f for f in preflight(cfg)}["dtype"]["detail"]
