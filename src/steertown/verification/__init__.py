"""Steering verification: does a run's steering do what it claims?

Reads a run directory (and, for the model checks, the run's loaded backend) and writes
`verification/report.{json,md}`. Depends on `steering/` (vectors, hooks, held-out data)
and `inference/`; neither of them imports this package.
"""

from steertown.verification.verdict import format_line, verify_run

__all__ = ["format_line", "verify_run"]
