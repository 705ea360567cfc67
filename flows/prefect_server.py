"""A real Prefect server on 127.0.0.1 for parallel studies (`--start-server`) and the tests.

Parallel task runners need a real server: the per-process temporary one that a plain
flow call starts cannot be shared by Dask workers.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

NO_SERVER = ("PREFECT_API_URL is not set: studies on Dask run in parallel and need a real "
             "Prefect server; start one with `make ui` and export the PREFECT_API_URL it "
             "prints, or pass --start-server (or run the cells one after another: drop --dask)")


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(api_url: str, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until `<api_url>/health` answers; raise if the server died or timed out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"prefect server at {api_url} not healthy after {timeout:.0f} s")


@contextlib.contextmanager
def prefect_server(port: int | None = None, env: dict[str, str] | None = None,
                   log_path: Path | None = None, timeout: float = 120.0,
                   ui: bool = False) -> Iterator[str]:
    """Start `prefect server start` on 127.0.0.1 (analytics off); yield its API URL; stop it."""
    port = port or free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    full_env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_UI_ENABLED": str(ui).lower(), **(env or {})}
    full_env.pop("PREFECT_API_URL", None)
    prefect = Path(sys.executable).with_name("prefect")
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen([str(prefect), "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env=full_env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(api_url, timeout, proc)
        yield api_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if log_path:
            log.close()


def api_url() -> str | None:
    """The configured Prefect API URL (environment or profile), or None."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url
