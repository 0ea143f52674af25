"""Named per-sample results (scores, damage): a dataclass of (B,) tensors with shared helpers.

Statistics follow numpy everywhere: the median of an even number of values is the mean of the two
middle ones (torch's ``median`` returns the lower one), and quantiles interpolate linearly. Every
"median" vaelens writes, in summary.json, results.csv or comparison.csv, comes from numpy.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, cast

import numpy as np
import torch

QUANTILES = (0.05, 0.25, 0.75, 0.95)


def describe(values: torch.Tensor) -> dict[str, float]:
    """mean, median, std and the 5/25/75/95% quantiles of a (B,) tensor (NaNs ignored)."""
    a = values.detach().double().cpu().numpy()
    a = a[~np.isnan(a)]
    if len(a) == 0:
        return {k: float("nan") for k in ("mean", "median", "std", *(f"q{round(q * 100):02d}" for q in QUANTILES))}
    stats = {"mean": float(a.mean()), "median": float(np.median(a)), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0}
    for q in QUANTILES:
        stats[f"q{round(q * 100):02d}"] = float(np.quantile(a, q))
    return stats


class PerSample:
    """Mixin for frozen dataclasses whose fields are all (B,) tensors."""

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cast(Any, cls))]

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in self.names()}

    def summary(self) -> dict[str, dict[str, float]]:
        """{field: describe(field)}."""
        return {name: describe(value) for name, value in self.as_dict().items()}

    @classmethod
    def concat(cls, parts: list):
        """One record from several batches' records, on the CPU."""
        return cls(**{name: torch.cat([getattr(p, name) for p in parts]).cpu() for name in cls.names()})
