"""The admission check before a run starts: one function for every way of starting one.

`admit_run` refuses, writing nothing, what would fail later: a bad config, a model
config that cannot load (real models only; torch is imported only then), a run directory
that cannot be created or resumed with this config, and a run another live process is
writing. Every refusal is one of `USER_ERRORS` with a one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from steertown.config import ConfigError, RunConfig
from steertown.config_loading import load_config
from steertown.storage.lock import RunLock, RunLockedError
from steertown.storage.run_dir import RunDir, RunDirError

# Mistakes of the user: one line on stderr and exit code 2, never a traceback.
USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, RunDirError, RunLockedError,
                                            FileNotFoundError, NotADirectoryError)


@dataclass
class Admission:
    """An admitted run: its config, directory and (when it exists) manifest."""

    cfg: RunConfig
    run: RunDir
    manifest: dict | None

    @property
    def complete(self) -> bool:
        """The run exists and finished: nothing to do."""
        return bool(self.manifest) and self.manifest.get("status") == "complete"


def admit_run(config: dict[str, Any]) -> Admission:
    """Validate `config` (a composed config dict) and the run it names; raise one of
    USER_ERRORS on the first problem."""
    from steertown.sim.runner import check_run

    cfg = load_config(config)
    if cfg.model.name != "mock":
        from steertown.inference.choice import check_backend_available
        from steertown.inference.model_loading import check_model_config

        check_model_config(cfg)
        check_backend_available(cfg)
    run, manifest = check_run(cfg)
    RunLock(run.path).check()
    return Admission(cfg, run, manifest)
