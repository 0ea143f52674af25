"""Config dataclasses: field types checked on construction (pydantic), and built from JSON.

Every config is a frozen dataclass whose ``__post_init__`` first calls ``check_fields``: each field
is validated against its annotation by pydantic in strict mode (no "3" for 3, no 2.5 for an int),
with NaN and Inf refused, and the error names the field. Range checks and the domain messages
("unknown metric kind ...") follow in each config. pydantic rather than more hand-written checks:
its strict validators cover nested tuples, optionals and unions exactly, and it is what the
ecosystem (pythae among others) already uses.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from vaelens._errors import VaelensError

if TYPE_CHECKING:
    from pydantic import TypeAdapter

C = TypeVar("C")


def from_dict(cls: type[C], d: dict[str, Any], what: str) -> C:
    """``cls(**d)`` after checking that d is an object whose every key is a field of cls."""
    if not isinstance(d, dict):
        raise VaelensError(f"a {what} must be a JSON object; got {type(d).__name__}")
    known = {f.name for f in dataclasses.fields(cast(Any, cls))}
    unknown = set(d) - known
    if unknown:
        raise VaelensError(f"unknown {what} keys {sorted(unknown)}; expected some of {sorted(known)}")
    return cls(**d)


def _has_literal(tp: Any) -> bool:
    return typing.get_origin(tp) is Literal or any(_has_literal(a) for a in typing.get_args(tp))


@functools.cache
def _adapters(cls: Any) -> dict[str, TypeAdapter]:
    """One strict validator per field whose values are not a closed set of names.

    Fields typed with ``Literal`` are left to the config's own check, which names the choices in
    the project's words ("unknown metric kind 'x'; choose one of ...").
    """
    from pydantic import ConfigDict, TypeAdapter  # a tenth of a second to import: on the first config

    strict = ConfigDict(strict=True, allow_inf_nan=False)
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if not _has_literal(tp) and typing.get_origin(tp) is not typing.ClassVar:
            out[f.name] = TypeAdapter(tp, config=strict) if not _is_dataclass_type(tp) else TypeAdapter(tp)
    return out


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _tuples(value: Any) -> Any:
    """JSON has arrays, not tuples: lists become tuples (recursively) before validation."""
    if isinstance(value, list | tuple):
        return tuple(_tuples(v) for v in value)
    return value


def check_fields(obj: Any) -> None:
    """Validate every field of a frozen config dataclass against its annotation, in place.

    Lists are stored as tuples. A wrong type or a non-finite number raises ``VaelensError``
    naming the config and the field.
    """
    from pydantic import ValidationError

    name = type(obj).__name__
    for field, adapter in _adapters(cast(Hashable, type(obj))).items():
        value = _tuples(getattr(obj, field))
        object.__setattr__(obj, field, value)
        try:
            adapter.validate_python(value)
        except ValidationError as e:
            first = e.errors()[0]
            where = "".join(f"[{p}]" for p in first["loc"] if isinstance(p, int))
            raise VaelensError(f"{name}.{field}{where}: {first['msg'].lower()}; got {value!r}") from None


def check_unique(values: tuple, field: str) -> None:
    """Repeated values in a grid would duplicate rows or count inputs twice: refuse them."""
    seen: set = set()
    for v in values:
        if v in seen:
            raise VaelensError(f"{field} lists {v!r} more than once; give each value once")
        seen.add(v)
