"""`steertown` command line: analyse, show, verify, compare and import runs; diagnostics.

The subcommands are listed in `steertown.cli_commands.COMMANDS` (add new ones there);
this module only builds the parser from that list and turns user mistakes (ConfigError,
RunDirError, a locked run, a missing file or directory) into one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from steertown.admission import USER_ERRORS
from steertown.cli_commands import COMMANDS


def _version() -> str:
    """The installed distribution's version (pyproject's), or the package's own when run
    from a source tree that was never installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("steertown")
    except PackageNotFoundError:
        from steertown import __version__

        return __version__


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv), run the subcommand, return its exit code."""
    parser = argparse.ArgumentParser(prog="steertown", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    by_name = {}
    for cmd in COMMANDS:
        cmd.add_arguments(sub.add_parser(cmd.name, help=cmd.help))
        by_name[cmd.name] = cmd
    args = parser.parse_args(argv)
    try:
        return by_name[args.command].run(args)
    except USER_ERRORS as e:
        print(f"steertown {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
