"""steertown: towns of LLM agents whose personalities are set by activation steering."""

__version__ = "0.1.0"
