"""One verification check: name, pass/fail/skip, whether the verdict rests on it, figures."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Check:
    """A named PASS/FAIL/skip result with its figure; `required` ones decide the verdict."""

    name: str
    passed: bool | None  # None = skipped
    required: bool
    figure: str
    detail: str = ""
    data: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)
