"""`model.backend: auto` and `model.dtype: auto`: the fastest exact pick by default, resolved
into the config (hash, manifest), stays overridable, and doctor says what and why."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from steertown.config import ConfigError, RunConfig
from steertown.config_loading import load_config
from steertown.inference import choice, model_loading
from steertown.preflight import preflight


def _cfg(**model) -> dict:
    d = RunConfig().to_dict()
    d["model"].update(device="cpu", **model)
    return d


@pytest.fixture
def onnx_here(monkeypatch, tmp_path):
    """A CPU machine where onnxruntime imports and the graph is cached."""
    monkeypatch.setattr(choice, "onnxruntime_version", lambda: "9.9")
    graph = tmp_path / "smollm2-135m-instruct-onnx-fp32-L16"
    graph.mkdir()
    (graph / ".steertown-complete").write_text("x\n")
    return str(tmp_path)


def test_hardware_choice_picks_bf16_only_with_native_bf16(monkeypatch):
    """What model.exact=false lets auto follow (choose_dtype); explicit always wins."""
    monkeypatch.setattr(model_loading, "native_bf16_cpu", lambda: ["amx_bf16", "avx512_bf16"])
    dtype, why = model_loading.choose_dtype("auto", "cpu")
    assert dtype == torch.bfloat16 and "amx_bf16" in why and "equal-length" in why
    monkeypatch.setattr(model_loading, "native_bf16_cpu", lambda: [])
    dtype, why = model_loading.choose_dtype("auto", "cpu")
    assert dtype == torch.float32 and "without native bfloat16" in why
    monkeypatch.setattr(model_loading, "native_bf16_cpu", lambda: ["amx_bf16"])
    assert model_loading.choose_dtype("float32", "cpu")[0] == torch.float32


def test_hardware_choice_on_gpu_prefers_bf16_else_fp16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert model_loading.choose_dtype("auto", "cuda")[0] == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert model_loading.choose_dtype("auto", "cuda:0")[0] == torch.float16


def test_auto_dtype_stays_float32_while_exact_even_with_native_bf16(monkeypatch):
    monkeypatch.setattr(model_loading, "native_bf16_cpu", lambda: ["avx512_bf16"])
    monkeypatch.setattr(choice, "onnxruntime_version", lambda: None)  # torch backend
    cfg = load_config(_cfg())
    assert (cfg.model.backend, cfg.model.dtype) == ("torch", "float32")
    assert "model.exact=true" in cfg.resolved["model.dtype"]
    fast = load_config(_cfg(exact=False))  # speed over exactness, asked for
    assert fast.model.dtype == "bfloat16" and "exact=false" in fast.resolved["model.dtype"]
    assert load_config(_cfg(dtype="bfloat16")).model.dtype == "bfloat16"  # explicit wins


def test_auto_backend_is_onnx_on_cpu_when_it_imports_else_torch(monkeypatch, onnx_here):
    cfg = load_config(_cfg(cache_dir=onnx_here))
    assert (cfg.model.backend, cfg.model.dtype) == ("onnx", "float32")
    assert "graph cached" in cfg.resolved["model.backend"]
    # Explicit bfloat16: the graph is float32, so torch.
    assert load_config(_cfg(cache_dir=onnx_here, dtype="bfloat16")).model.backend == "torch"
    # A hub id cannot be converted here.
    hub = load_config(_cfg(cache_dir=onnx_here, name="hf", name_or_path="org/model"))
    assert hub.model.backend == "torch" and "not one" in hub.resolved["model.backend"]
    monkeypatch.setattr(choice, "onnxruntime_version", lambda: None)
    gone = load_config(_cfg(cache_dir=onnx_here))
    assert gone.model.backend == "torch" and "does not import" in gone.resolved["model.backend"]
    assert load_config(_cfg(backend="onnx")).model.backend == "onnx"  # explicit wins
    assert choice.choose_backend(RunConfig(), "cuda")[0] == "torch"


def test_resolved_backend_is_in_the_hash_and_a_resume_elsewhere_is_refused(
        monkeypatch, onnx_here, tmp_path):
    from steertown.sim.runner import check_run, prepare_run

    data = _cfg(cache_dir=onnx_here)
    data.update(run_id="r", storage_dir=str(tmp_path / "dumps"), population=3)
    here = load_config(data)
    prepare_run(here, tmp_path)
    monkeypatch.setattr(choice, "onnxruntime_version", lambda: None)  # "another machine"
    there = load_config(data)
    assert there.config_hash() != here.config_hash()
    with pytest.raises(ConfigError, match=r"in: model\.backend;.*auto -> torch") as e:
        check_run(there)
    assert "\n" not in str(e.value)
    # The resolved config (what the manifest keeps) says onnx, which cannot run here.
    with pytest.raises(ConfigError, match="model.backend: onnx .* does not import"):
        choice.check_backend_available(load_config(here.to_dict()))


def test_a_fork_or_resume_must_run_the_recorded_backend_and_dtype():
    cfg = load_config(_cfg(backend="torch", dtype="float32"))
    choice.check_same_model(cfg, {"backend": "transformers", "dtype": "float32"}, "the parent")
    choice.check_same_model(cfg, {}, "the parent")  # nothing recorded: the config decides
    with pytest.raises(ConfigError, match="the parent ran torch bfloat16, this machine gives "
                                          "torch float32"):
        choice.check_same_model(cfg, {"backend": "transformers", "dtype": "bfloat16"},
                                "the parent")


def test_mock_is_left_alone():
    cfg = load_config({**RunConfig().to_dict(), "model": {"name": "mock"}})
    assert cfg.model.backend == "auto" and cfg.resolved == {}
    from steertown.inference import make_backend

    assert make_backend(cfg).name == "mock"


def test_doctor_reports_the_picks_and_the_reasons(monkeypatch, onnx_here):
    monkeypatch.setattr(model_loading, "native_bf16_cpu", lambda: ["avx512_bf16"])
    cfg = RunConfig()
    cfg.model.device, cfg.model.cache_dir = "cpu", onnx_here
    found = {f["check"]: f["detail"] for f in preflight(cfg)}
    assert found["backend"].startswith("onnx (auto: CPU, onnxruntime 9.9, graph cached")
    assert found["dtype"].startswith("float32: the ONNX graph is float32")
    monkeypatch.setattr(choice, "onnxruntime_version", lambda: None)
    found = {f["check"]: f["detail"] for f in preflight(dataclasses.replace(cfg))}
    assert found["backend"].startswith("torch (auto: onnxruntime does not import")
    assert found["dtype"].startswith("float32: auto -> float32: model.exact=true")
    cfg.model.exact = False
    found = {f["check"]: f["detail"] for f in preflight(cfg)}
    assert found["dtype"].startswith("bfloat16:") and "not exact" in found["dtype"]
