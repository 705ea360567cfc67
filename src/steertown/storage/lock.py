"""One writer per run directory: an exclusive `flock` on `<run_dir>/.lock`.

The kernel holds the lock for the open file and drops it when the owner exits, however
it dies (kill -9 included), so there are no stale locks to detect or take over, and no
race between two processes taking over the same stale lock. The file itself stays (it is
never deleted: deleting a lock file is what makes such races possible) and holds the
owner's `host:pid`, for the message to whoever is refused. On a shared filesystem the
lock is as good as the filesystem's `flock` (NFSv4: yes).
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

HOST = socket.gethostname()

# lock path -> (file descriptor, depth): re-entrant within one process
_HELD: dict[Path, tuple[int, int]] = {}


class RunLockedError(RuntimeError):
    """Another live process is writing this run directory."""


class RunLock:
    """Context manager: `with RunLock(run_dir): ...`. Re-entrant within one process."""

    def __init__(self, run_dir: Path):
        self.path = (Path(run_dir) / ".lock").absolute()
        self.owned = False

    def _holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def _refuse(self) -> RunLockedError:
        host, _, pid = self._holder().rpartition(":")
        return RunLockedError(
            f"{self.path.parent}: in use by process {pid or '?'} on {host or HOST}; wait for "
            "it or stop it (the lock goes away with its process)")

    def check(self) -> None:
        """Raise RunLockedError if another process holds the lock (takes nothing)."""
        if self.path in _HELD or not self.path.exists():
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._refuse() from None
        finally:
            os.close(fd)  # closing drops the shared lock taken for the test

    def acquire(self) -> None:
        """Take the lock, or raise RunLockedError naming the process that holds it."""
        if self.path in _HELD:
            fd, depth = _HELD[self.path]
            _HELD[self.path] = (fd, depth + 1)
            self.owned = True
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._refuse() from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{HOST}:{os.getpid()}".encode())
        _HELD[self.path] = (fd, 1)
        self.owned = True

    def release(self) -> None:
        """Give the lock back (the outermost release of this process unlocks it)."""
        if not self.owned:
            return
        self.owned = False
        fd, depth = _HELD[self.path]
        if depth > 1:
            _HELD[self.path] = (fd, depth - 1)
            return
        del _HELD[self.path]
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
