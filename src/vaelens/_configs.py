"""Building frozen config dataclasses from JSON objects, with one-line errors for unknown keys."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar, cast

from vaelens._errors import VaelensError

C = TypeVar("C")


def from_dict(cls: type[C], d: dict[str, Any], what: str) -> C:
    """``cls(**d)`` after checking that every key of d is a field of cls."""
    known = {f.name for f in dataclasses.fields(cast(Any, cls))}
    unknown = set(d) - known
    if unknown:
        raise VaelensError(f"unknown {what} keys {sorted(unknown)}; expected some of {sorted(known)}")
    return cls(**d)
