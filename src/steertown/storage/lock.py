"""One writer per run directory: `filelock`'s FileLock (an exclusive `flock`) on
`<run_dir>/.lock`.

The kernel holds the lock for the open file and drops it when the owner exits, however
it dies (kill -9 included), so there are no stale locks to detect or take over. The file
is never deleted (`preserve_lock_file`: deleting a lock file is what makes takeover races
possible) and, while held, names the owner's `host:pid` for the message to whoever is
refused (written by the `on_acquired` hook, so a refused process never touches it). One
FileLock per path per process (`is_singleton`) makes the lock re-entrant within a process.
On a shared filesystem the lock is as good as the filesystem's `flock` (NFSv4: yes).
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from filelock import FileLock, Timeout

HOST = socket.gethostname()

# path -> its FileLock while this process holds it: FileLock's singletons are weakly kept
# and a collected FileLock releases, so a lock taken without keeping the RunLock (as
# `RunLock(d).acquire()`) must be kept alive here until released.
_HELD: dict[Path, FileLock] = {}


class RunLockedError(RuntimeError):
    """Another live process is writing this run directory."""


def _write_holder(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{HOST}:{os.getpid()}".encode(), 0)


class RunLock:
    """Context manager: `with RunLock(run_dir): ...`. Re-entrant within one process."""

    def __init__(self, run_dir: Path):
        self.path = (Path(run_dir) / ".lock").absolute()
        self.owned = False

    def _lock(self) -> FileLock:
        return FileLock(self.path, blocking=False, is_singleton=True, thread_local=False,
                        preserve_lock_file=True, fallback_to_soft=False,
                        on_acquired=_write_holder)

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
        """Raise RunLockedError if another process holds the lock (takes nothing).

        A shared `flock` probe, not FileLock: FileLock only takes the exclusive lock, and
        taking it to test would refuse a real writer starting at that moment."""
        if not self.path.exists() or self._lock().is_locked:
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self._lock()
        try:
            lock.acquire()
        except Timeout:
            raise self._refuse() from None
        _HELD[self.path] = lock
        self.owned = True

    def release(self) -> None:
        """Give the lock back (the outermost release of this process unlocks it)."""
        if not self.owned:
            return
        self.owned = False
        lock = _HELD[self.path]
        if lock.lock_counter == 1:  # outermost: no holder named once it is free
            os.truncate(self.path, 0)
            del _HELD[self.path]
        lock.release()

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
