"""steertown: towns of LLM agents whose personalities are set by activation steering."""

from steertown.process_env import apply_defaults as _apply_defaults

__version__ = "0.1.0"

_apply_defaults()  # before any entry point imports MLflow or transformers: nothing calls home
