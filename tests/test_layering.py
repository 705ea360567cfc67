"""Dependencies point one way: flows -> tasks -> src/steertown; inside the core, each
package imports only packages on lower floors (LAYERS), and no two modules import each
other in a circle (imports inside functions and under TYPE_CHECKING count: they hide a
circle, they do not remove it). The core imports no orchestration (Prefect, Hydra) and
MLflow only in tracking.py."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "steertown"

# Floors of the core, lowest first. A unit (a subpackage, or a top-level module) may
# import units on its own floor's lower floors only; units on one floor import none of
# each other unless ALSO_ALLOWED says so.
LAYERS: tuple[tuple[str, ...], ...] = (
    # ground: the process, the schema, seeds, the residual stream, files of a run
    ("process_env",),  # applied by the package's __init__, before anything else
    ("__init__", "console", "extras", "seeds", "stats", "residual", "config"),
    ("config_loading",),
    ("storage",),
    ("world",),  # the town and its residents' state
    ("agents", "steering"),  # agents: memory, prompts; steering: vectors, hooks, modes
    ("inference",),  # backends install steering
    ("sim", "preflight"),
    ("verification",),
    ("tracking", "legacy", "live", "admission"),
    ("analysis",),  # compare reads tracked runs
    ("cli_experiments",),
    ("cli_commands",),
    ("cli",),
    ("__main__",),
)
ALSO_ALLOWED: set[tuple[str, str]] = {
    # load_config resolves `auto` device/backend/dtype against this machine (inference.choice,
    # imported inside load_config) so the resolved values are in the config hash
    ("config_loading", "inference"),
}


def _floor() -> dict[str, int]:
    return {unit: i for i, units in enumerate(LAYERS) for unit in units}


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            # `from steertown.analysis import study` imports a module too
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _top(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _core_modules() -> dict[str, set[str]]:
    """steertown module -> the steertown modules it imports (anywhere in its file)."""
    paths = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        graph[name] = {m for m in _imports(path) if m in paths and m != name}
    return graph


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """`a imports b` lines where a's unit is not above b's (or the unit has no floor)."""
    floor = _floor()
    bad = []
    for a, targets in sorted(graph.items()):
        ua = _unit(a)
        for b in sorted(targets):
            ub = _unit(b)
            if ua == ub or (ua, ub) in ALSO_ALLOWED:
                continue
            if ua not in floor or ub not in floor:
                bad.append(f"{a} -> {b}: add {ua if ua not in floor else ub} to LAYERS")
            elif floor[ua] <= floor[ub]:
                bad.append(f"{a} (floor {floor[ua]}) imports {b} (floor {floor[ub]})")
    return bad


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Circles of modules importing each other (one path per circle found)."""
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return cycles


def test_packages_import_only_lower_floors():
    assert layer_violations(_core_modules()) == []


def test_no_module_imports_itself_in_a_circle():
    assert import_cycles(_core_modules()) == []


def test_the_checks_catch_an_upward_import_and_a_circle():
    graph = _core_modules()
    # the circles this layout removed: each, put back, is caught
    for a, b in [("steertown.steering.modes", "steertown.sim.engine"),
                 ("steertown.residual", "steertown.steering.hooks"),
                 ("steertown.world.economy", "steertown.agents.prompts")]:
        broken = {**graph, a: graph[a] | {b}}
        assert any(a in line and b in line for line in layer_violations(broken)), (a, b)
    broken = {**graph, "steertown.analysis.report_sections": graph[
        "steertown.analysis.report_sections"] | {"steertown.analysis.diff"}}
    assert import_cycles(broken)


def test_tasks_do_not_import_flows():
    for path in (ROOT / "tasks").glob("*.py"):
        assert "flows" not in _top(_imports(path)), path.name


def test_core_imports_no_orchestration():
    for path in SRC.rglob("*.py"):
        top = _top(_imports(path))
        assert not top & {"prefect", "prefect_dask", "hydra", "omegaconf", "flows", "tasks"}, path
        if path.name != "tracking.py":
            assert "mlflow" not in top, path


def test_cli_modules_import_one_way():
    assert "steertown.cli_commands" in _imports(SRC / "cli.py")
    assert "steertown.cli" not in _imports(SRC / "cli_commands.py")


def test_statistics_are_on_the_ground_floor():
    """One statistics module for analysis and verification (issue 22): both import it, it
    imports neither (nor anything of the project)."""
    stats = _imports(ROOT / "src/steertown/stats.py")
    assert not {n for n in stats if n.startswith("steertown")}, stats
    assert "steertown.stats" in _imports(ROOT / "src/steertown/analysis/fingerprint.py")
    assert "steertown.stats" in _imports(ROOT / "src/steertown/verification/decision_stats.py")
    for path in (ROOT / "src/steertown").rglob("*.py"):
        assert "steertown.verification.stats" not in _imports(path), path
