"""`python flows/continue_run.py RUN_DIR [key=value ...]`: run the pipeline flow on a prepared
run directory with the config in its manifest, e.g. a fork made by `steertown fork`
(which calls this, so the core CLI never imports Prefect). The key=values are what the
user typed, recorded in the manifest and MLflow; the config already contains them."""

from __future__ import annotations

import sys

from flows.environment import configure
from steertown.admission import USER_ERRORS
from steertown.storage.run_dir import RunDir


def main(argv: list[str]) -> int:
    """Run the flow on the run directory argv[0]; exit code 2 for a bad directory."""
    configure()
    if not argv:
        print("usage: python flows/continue_run.py RUN_DIR [key=value ...]", file=sys.stderr)
        return 2
    try:
        config = RunDir(argv[0]).read_manifest()["config"]
    except (*USER_ERRORS, KeyError) as e:
        print(f"error: {argv[0]}: {e}", file=sys.stderr)
        return 2
    from flows.pipeline import run_flow  # imports Prefect: configured above

    run_flow(config, argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
