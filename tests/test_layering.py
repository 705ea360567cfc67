"""Dependencies point one way: flows -> tasks -> src/steertown; the core imports no
orchestration (Prefect, Hydra) and MLflow only in tracking.py; the CLI modules do not
import each other in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


def _top(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


def test_tasks_do_not_import_flows():
    for path in (ROOT / "tasks").glob("*.py"):
        assert "flows" not in _top(_imports(path)), path.name


def test_core_imports_no_orchestration():
    for path in (ROOT / "src" / "steertown").rglob("*.py"):
        top = _top(_imports(path))
        assert not top & {"prefect", "prefect_dask", "hydra", "omegaconf", "flows", "tasks"}, path
        if path.name != "tracking.py":
            assert "mlflow" not in top, path


def test_cli_modules_import_one_way():
    assert "steertown.cli_commands" in _imports(ROOT / "src/steertown/cli.py")
    assert "steertown.cli" not in _imports(ROOT / "src/steertown/cli_commands.py")


def test_statistics_are_on_the_ground_floor():
    """One statistics module for analysis and verification (issue 22): both import it, it
    imports neither (nor anything of the project)."""
    stats = _imports(ROOT / "src/steertown/stats.py")
    assert not {n for n in stats if n.startswith("steertown")}, stats
    assert "steertown.stats" in _imports(ROOT / "src/steertown/analysis/fingerprint.py")
    assert "steertown.stats" in _imports(ROOT / "src/steertown/verification/decision_stats.py")
    for path in (ROOT / "src/steertown").rglob("*.py"):
        assert "steertown.verification.stats" not in _imports(path), path
