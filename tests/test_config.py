"""Config: every arm composes, inheritance holds, bad input gets one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from steertown.config import ConfigError, RunConfig, config_diff
from steertown.config_loading import load_config

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"


def compose_dict(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("arm", ["fast", "small", "medium"])
def test_every_arm_composes_and_validates(arm):
    cfg = load_config(compose_dict(f"+arm={arm}"))
    assert cfg.arm == arm
    assert cfg.max_events_per_tick == 12  # inherited from fast
    assert cfg.optimization.use_quantization is True  # inherited from fast


def test_fast_arm_has_the_guides_settings():
    cfg = load_config(compose_dict("+arm=fast"))
    assert (cfg.population, cfg.steps, cfg.max_events_per_tick) == (32, 200, 12)
    assert cfg.inference.max_new_tokens == 48
    assert cfg.optimization.reflect_every_n_ticks == 5
    assert cfg.layers == [16]
    assert cfg.model.name == "smollm2"


def test_small_and_medium_override_only_their_keys():
    fast = load_config(compose_dict("+arm=fast")).to_dict()
    allowed = {"arm", "population", "steps", "layers", "inference.max_new_tokens",
               "optimization.reflect_every_n_ticks", "steering.strength"}
    for arm in ("small", "medium"):
        other = load_config(compose_dict(f"+arm={arm}")).to_dict()
        # resolved.*: why `auto` became what it did (the small arm's graph is another file)
        diff = {k for k in config_diff(fast, other) if not k.startswith("resolved.")}
        assert diff <= allowed
    medium = load_config(compose_dict("+arm=medium"))
    assert medium.population == 100


def test_overrides_apply():
    cfg = load_config(compose_dict("+arm=fast", "steps=20", "population=8",
                                   "max_events_per_tick=4", "seed=3", "run_id=x",
                                   "model=mock", "live=false"))
    assert (cfg.steps, cfg.population, cfg.max_events_per_tick, cfg.seed) == (20, 8, 4, 3)
    assert (cfg.run_id, cfg.model.name, cfg.live) == ("x", "mock", False)


def test_yaml_mirrors_the_schema():
    """conf/config.yaml lists exactly the dataclass keys (so every key is overridable)."""
    data = yaml.safe_load((CONF / "config.yaml").read_text())
    data.pop("defaults"), data.pop("hydra")
    data["model"] = yaml.safe_load((CONF / "model" / "smollm2.yaml").read_text())
    data["steering"].update(yaml.safe_load((CONF / "steering" / "vectors.yaml").read_text()))

    def keys(d, prefix=""):
        out = set()
        for k, v in d.items():
            if isinstance(v, dict) and k not in ("coefficients", "max_new_tokens_by_action"):
                out |= keys(v, f"{prefix}{k}.")
            else:
                out.add(prefix + k)
        return out

    schema = keys(RunConfig().to_dict())
    assert keys(data) == schema
    # ...and the same defaults, so a run from a plain dict equals one composed by Hydra.
    assert load_config(data).to_dict() == load_config(RunConfig().to_dict()).to_dict()


@pytest.mark.parametrize("override,needle", [
    ({"steps": -1}, "steps: -1 is out of range"),
    ({"population": 0}, "population: 0 is out of range"),
    ({"layers": [31]}, "layers[0]: 31 is out of range; allowed: 1..30"),
    ({"steering": {"strength": float("inf")}}, "steering.strength"),
    ({"steering": {"coefficients": {"X": 0.1}}}, "steering.coefficients.X"),
    ({"stepz": 3}, "stepz: unknown key"),
    ({"steps": "many"}, "steps: expected an integer"),
    ({"inference": {"top_p": 0}}, "inference.top_p"),
    ({"run_id": "../evil"}, "run_id"),
    ({"run_id": "a/b"}, "run_id"),
    ({"arm": "../huge"}, "arm: '../huge' is out of range"),
])
def test_bad_values_give_one_clear_line(override, needle):
    with pytest.raises(ConfigError) as e:
        load_config(override)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def run_cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "flows" / "run.py"), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("args,needle", [
    (["+arm=huge"], "arm: unknown arm 'huge'; allowed: fast | medium | small"),
    (["+arm=fast", "model=gpt9"], "model: unknown model 'gpt9'"),
    (["+arm=fast", "steps=-5"], "steps: -5 is out of range"),
    (["+arm=fast", "steps=[1,"], "malformed override"),
    (["+arm=fast", "population=0"], "population: 0 is out of range"),
    (["+arm=fast", "layers=[99]"], "layers[0]: 99 is out of range"),
    (["+arm=fast", "run_id=../x"], "run_id"),
    (["+arm=fast", "bogus=1"], "bogus"),
    (["+arm=fast", "model.name_or_path=/no/such/model"], "model.name_or_path: /no/such/model does not exist"),
    (["+arm=fast", "model.device=cuda:63"], "model.device: cuda:63 requested"),
    (["+arm=fast", "optimization.num_gpus=2", "model.device=cpu"], "optimization.num_gpus: 2 replicas"),
])
def test_entry_point_rejects_bad_input_with_exit_2(args, needle, tmp_path):
    r = run_cli(*args, f"storage_dir={tmp_path}") if "bogus=1" not in args else run_cli(*args)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert len(r.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


# --- Hydra's own flags pass through; arms are the files on disk ---

@pytest.mark.parametrize("args,needle", [
    (["+arm=fast", "--cfg", "job"], "population: 32"),
    (["--info", "defaults"], "Defaults List"),
    (["-cn", "config", "+arm=small", "--cfg", "job", "--package", "inference"],
     "max_new_tokens: 96"),
])
def test_hydra_flags_work(args, needle):
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert needle in r.stdout and "malformed override" not in r.stderr


def test_hydra_config_name_reaches_hydra():
    r = run_cli("-cn", "nosuchconfig")
    assert r.returncode != 0 and "malformed override" not in r.stderr
    assert "nosuchconfig" in r.stderr  # Hydra's own message about the missing config


def test_a_new_arm_file_works_without_code_edits(tmp_path):
    import shutil

    import yaml

    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    (conf / "arm" / "tiny.yaml").write_text(
        "# @package _global_\ndefaults:\n  - fast\n  - _self_\narm: tiny\npopulation: 3\n")
    r = run_cli("-cp", str(conf), "+arm=tiny", "--cfg", "job")
    assert r.returncode == 0, r.stderr
    cfg = load_config(yaml.safe_load(r.stdout))
    assert cfg.arm == "tiny" and cfg.population == 3
    r = run_cli("-cp", str(conf), "+arm=nope")
    assert r.returncode == 2
    assert "allowed: fast | medium | small | tiny" in r.stderr  # what is on disk
    # a model file too: a new conf/model/<name>.yaml picks a backend by its `name` key
    (conf / "model" / "quick.yaml").write_text(
        (conf / "model" / "mock.yaml").read_text().replace("num_threads: 0", "num_threads: 1"))
    r = run_cli("-cp", str(conf), "+arm=tiny", "model=quick", "--cfg", "job")
    assert r.returncode == 0, r.stderr
    assert load_config(yaml.safe_load(r.stdout)).model.num_threads == 1
    r = run_cli("-cp", str(conf), "+arm=tiny", "model=nope")
    assert r.returncode == 2 and "allowed: mock | quick | smollm2" in r.stderr
