"""Register the run as a Prefect deployment and serve it: runs triggered or scheduled from
the Prefect UI.

    export PREFECT_API_URL=http://127.0.0.1:4200/api     # printed by `make ui`
    python flows/deploy.py                               # = make serve; Ctrl-C stops serving
    python flows/deploy.py --cron "0 3 * * *" --arm small --seed 1 --override steps=50
    python flows/deploy.py --interval 3600 --name hourly
    python flows/deploy.py --register-only               # register; run it from a work pool

The deployment's flow is `scheduled_run(arm, seed, overrides)` (flows/scheduled_run.py):
it composes the config in a task, exactly as `python flows/run.py +arm=<arm> seed=<seed>
<overrides>` would, and runs the run flow as a subflow. `prefect.yaml` describes the same
deployment for a process work pool.
"""

from __future__ import annotations

import argparse
import sys

from flows.compose import compose_run
from flows.environment import configure
from steertown.admission import USER_ERRORS, admit_run
from steertown.config import ConfigError

NO_SERVER = ("PREFECT_API_URL is not set: a deployment needs a real Prefect server; start "
             "one with `make ui` and export the PREFECT_API_URL it prints")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="flows/deploy.py", description=__doc__.split("\n\n")[0])
    # prefect.yaml's deployments are named differently, so neither replaces the other.
    p.add_argument("--name", default="served",
                   help="deployment name (default: served; prefect.yaml registers work-pool "
                        "and nightly-small)")
    p.add_argument("--arm", default="fast", help="default arm parameter")
    p.add_argument("--seed", type=int, default=0, help="default seed parameter")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="default Hydra override (repeatable)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--cron", help='schedule, e.g. "0 3 * * *" (03:00 daily)')
    when.add_argument("--interval", type=float, help="schedule every N seconds")
    p.add_argument("--timezone", default="UTC", help="timezone of --cron (default UTC)")
    p.add_argument("--paused", action="store_true", help="register the schedule paused")
    p.add_argument("--limit", type=int, help="most runs executing at once (default: no limit)")
    p.add_argument("--register-only", action="store_true",
                   help="register the deployment and exit (no runner: use a work pool)")
    return p.parse_args(argv)


def schedules(args: argparse.Namespace) -> list:
    """The deployment's schedule from --cron or --interval (one-line errors)."""
    from prefect.schedules import Cron, Interval

    if args.cron:
        try:
            return [Cron(args.cron, timezone=args.timezone)]
        except Exception as e:  # noqa: BLE001 - croniter/pydantic raise various types
            raise ConfigError(f"--cron: {args.cron!r} is not a cron expression "
                              f"({str(e).splitlines()[0]})") from None
    if args.interval is not None:
        if args.interval <= 0:
            raise ConfigError(f"--interval: {args.interval:g} must be > 0 seconds")
        return [Interval(args.interval)]
    return []


def main(argv: list[str] | None = None) -> int:
    """Register (and unless --register-only, serve) the deployment; exit 2 on bad input."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    configure()
    # Prefect reads its settings when first imported: only now, after configure()
    from prefect.settings import get_current_settings

    from flows.scheduled_run import FLOW_NAME, scheduled_run

    try:
        admit_run(compose_run(args.arm, args.seed, args.override))
        sched = schedules(args)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not get_current_settings().api.url:
        print(f"error: {NO_SERVER}", file=sys.stderr)
        return 2
    params = {"arm": args.arm, "seed": args.seed, "overrides": list(args.override)}
    options = dict(name=args.name, schedules=sched, parameters=params, paused=args.paused or None,
                   tags=["steertown"], description=scheduled_run.__doc__)
    if args.register_only:
        dep_id = scheduled_run.to_deployment(**options).apply()
        print(f"Registered {FLOW_NAME}/{args.name} ({dep_id}); runs wait for a runner: "
              "`python flows/deploy.py` or a work pool worker (see prefect.yaml)")
        return 0
    print(f"Serving {FLOW_NAME}/{args.name}: trigger it from the UI (Deployments -> Run); "
          "Ctrl-C stops serving")
    scheduled_run.serve(**options, limit=args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
