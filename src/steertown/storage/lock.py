"""One writer per run directory: a lock file holding the owner's pid.

A lock whose pid is no longer alive is stale (the owner was killed) and is taken over.
"""

from __future__ import annotations

import os
from pathlib import Path


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

    def holder(self) -> int | None:
        """Pid of a live process holding the lock (other than this one), else None."""
        try:
            pid = int(self.path.read_text().strip() or 0)
        except (OSError, ValueError):
            return None
        return pid if pid and pid != os.getpid() and _alive(pid) else None

    def check(self) -> None:
        """Raise RunLockedError if another live process holds the lock."""
        if (pid := self.holder()) is not None:
            raise RunLockedError(
                f"{self.path.parent}: in use by process {pid}; wait for it or stop it "
                "(a lock of a dead process is taken over automatically)")

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self.path.read_text().strip() == str(os.getpid()):
                    return  # this process already holds it
                self.check()
                self.path.unlink(missing_ok=True)  # stale: its owner is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
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
