"""Entry point: `python flows/resume.py RUN_DIR`: continue a run directory through the run
flow with the config in its manifest (an interrupted run, or a fork made by
`steertown fork`, which starts at its fork tick). Exit code 2 with one line on bad input."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flows.environment import configure  # noqa: E402

configure()

from steertown.admission import USER_ERRORS, admit_run  # noqa: E402
from steertown.storage.run_dir import RunDir  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python flows/resume.py RUN_DIR", file=sys.stderr)
        return 2
    try:
        manifest = RunDir(argv[0]).require().read_manifest()
        if "config" not in manifest:
            raise ValueError(f"{argv[0]}: the manifest has no config (an imported run?)")
        config = manifest["config"]
        admitted = admit_run(config)
    except (*USER_ERRORS, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if admitted.complete:
        print(f"Run {admitted.run.run_id} is complete; nothing to do.")
        return 0
    from flows.pipeline import run_flow

    run_flow(config, list(manifest.get("overrides") or []))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
