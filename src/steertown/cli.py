"""`steertown` command line: inspect, verify, analyse and compare runs.

Each subcommand lives in the module that does the work; this file only parses
arguments and turns user mistakes (ConfigError, RunDirError, FileNotFoundError)
into one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from steertown.config import ConfigError
from steertown.storage.run_dir import RunDirError

USER_ERRORS = (ConfigError, RunDirError, FileNotFoundError, NotADirectoryError)

# name -> (help, add_arguments, run). Modules register here through `command`.
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None],
                          Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    """Register `fn(args) -> exit code` as subcommand `name`."""
    def wrap(fn: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = (help, add_arguments, fn)
        return fn
    return wrap


def _load_commands() -> None:
    # Imported here so `steertown --help` stays fast and each module owns its command.
    from steertown import cli_commands  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    _load_commands()
    parser = argparse.ArgumentParser(prog="steertown", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_, add_arguments, _) in sorted(COMMANDS.items()):
        add_arguments(sub.add_parser(name, help=help_))
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command][2](args)
    except USER_ERRORS as e:
        print(f"steertown {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

