"""Subcommands of `steertown`: thin argument wrappers around library functions."""

from __future__ import annotations


