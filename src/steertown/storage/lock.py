"""One writer per run directory: a lock file holding the owner's host and pid.

A lock of a dead pid on this host is stale (the owner was killed) and is taken over. A
lock held from another host (a shared filesystem under a cluster) cannot be checked
from here, so it is honoured until removed.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

HOST = socket.gethostname()


class RunLockedError(RuntimeError):
    """Another live process is writing this run directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Context manager: `with RunLock(run_dir): ...`. Re-entrant within one process."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self.owned = False

    def _read(self) -> tuple[str, int]:
        try:
            host, _, pid = self.path.read_text().strip().rpartition(":")
            return host or HOST, int(pid or 0)
        except (OSError, ValueError):
            return HOST, 0

    def holder(self) -> str | None:
        """`host:pid` of another live holder of the lock, else None."""
        host, pid = self._read()
        if not pid or (host == HOST and (pid == os.getpid() or not _alive(pid))):
            return None
        return f"{host}:{pid}"

    def check(self) -> None:
        """Raise RunLockedError if another live process holds the lock."""
        if (who := self.holder()) is not None:
            raise RunLockedError(
                f"{self.path.parent}: in use by process {who.split(':')[-1]} on {who.rsplit(':', 1)[0]};"
                " wait for it or stop it (a lock of a dead process is taken over automatically)")

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._read() == (HOST, os.getpid()):
                    return  # this process already holds it
                self.check()
                self.path.unlink(missing_ok=True)  # stale: its owner is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{HOST}:{os.getpid()}")
            self.owned = True
            return
        raise RunLockedError(f"{self.path}: could not take the lock")

    def release(self) -> None:
        if self.owned:
            self.path.unlink(missing_ok=True)
            self.owned = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
