"""The defences by name: the one table the trainer, the sweeps and the CLI look defences up in.

Adding a defence is one file (a ``Defence`` subclass) and one line here. Order matters only for
metrics.csv, whose columns list every defence's terms in this order.
"""

from __future__ import annotations

from typing import Any

from vaelens._errors import VaelensError
from vaelens.training._adversarial import AdversarialConfig
from vaelens.training._defence import Defence
from vaelens.training._mixup import MixupConfig
from vaelens.training._noise import NoiseConfig
from vaelens.training._none import NoDefence

DEFENCES: dict[str, type[Defence]] = {
    "none": NoDefence,
    "mixup": MixupConfig,
    "adversarial": AdversarialConfig,
    "noise": NoiseConfig,
}
# every defence's logged terms, in metrics.csv's column order
DEFENCE_TERMS: tuple[str, ...] = tuple(t for cls in DEFENCES.values() for t in cls.terms)


def check_defence(name: str, flag: str = "--defence") -> str:
    """``name`` if it names a defence; otherwise a one-line error listing them."""
    if name not in DEFENCES:
        raise VaelensError(f"{flag} must be one of {', '.join(DEFENCES)}; got {name!r}")
    return name


def defence_from_dict(d: dict[str, Any] | None) -> Defence:
    """The defence a config.json names: ``{"name": "mixup", ...settings}``; None is no defence."""
    if d is None:
        return NoDefence()
    if not isinstance(d, dict) or not isinstance(d.get("name"), str):
        raise VaelensError(f"a defence config must be an object with a 'name'; got {d!r}")
    settings = {k: v for k, v in d.items() if k != "name"}
    return DEFENCES[check_defence(d["name"], "defence name")].from_dict(settings)
