"""The benchmark's protocol: one frozen, versioned description of how every entry is trained and
measured (docs/method.md section 11). A leaderboard row is comparable only with rows of the same
protocol version; every output carries the protocol in full.
"""

from __future__ import annotations

import dataclasses
import math
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaelens._configs import check_fields
from vaelens._errors import VaelensError
from vaelens._version import __version__

# pythae's families whose posterior is a diagonal Gaussian or a point (docs/method.md section 1)
PYTHAE_GAUSSIAN = (
    "VAE",
    "BetaVAE",
    "VAMP",
    "MSSSIM_VAE",
    "INFOVAE_MMD",
    "DisentangledBetaVAE",
    "BetaTCVAE",
    "Adversarial_AE",
    "IWAE",
    "CIWAE",
    "MIWAE",
    "PIWAE",
    "VAEGAN",
    "FactorVAE",
    "HVAE",
    "RHVAE",
)  # fmt: skip  (the costliest to train last)
PYTHAE_DETERMINISTIC = ("AE", "WAE_MMD", "RAE_L2", "RAE_GP", "VQVAE")
PYTHAE_FAMILIES = PYTHAE_GAUSSIAN[:8] + PYTHAE_DETERMINISTIC + PYTHAE_GAUSSIAN[8:]
# vaelens' own defences of the zoo, each trained at the protocol's defence_beta
VAELENS_DEFENCES = ("mixup-mean", "mixup-sample", "adversarial", "noise", "smoothed-noise")


@dataclass(frozen=True)
class BenchProtocol:
    """How every entry of the leaderboard is trained and measured.

    Arguments:
        version: the protocol's name; rows of different versions are not comparable.
        dataset: the offline data set every entry is trained and tested on.
        n_test: the first n test inputs every measurement uses.
        seeds: training seeds of every zoo family (and evaluation seeds of submitted models).
        epochs, batch_size, lr, latent_dim: training of every zoo family (vaelens and pythae alike).
        betas: the beta grid of vaelens' plain beta-VAEs: the frontier every entry is judged against.
        defence_beta: the beta of vaelens' defended runs.
        l2_budgets, linf_budgets: attack budgets, two or more per norm.
        objective: what the attacks maximise and the headline damage measures: "recon", the
            reconstruction shift, defined for Gaussian and deterministic encoders alike.
        pgd_steps: PGD steps of the strongest ensemble (EigenAttack with one direction, PGD, and
            APGD with twice the steps and one restart).
        adv_eps, adv_steps, noise_sigma: the adversarial and noise defences' training settings.
        cert_sigma, cert_budgets, cert_n, cert_n0, cert_alpha: center smoothing's certificate on
            the latent center, at these L2 budgets (each one of l2_budgets, so that the attacks'
            latent shift there can be set beside the bound); cert_sigma is also the smoothed
            entry's sigma.
        smooth_n, smooth_n0, smooth_alpha: the samples (and confidence) of the smoothed entry, the
            noise run center-smoothed, when it is attacked and scored (fewer than the certificate's:
            every attack step pays them).
        pythae_families: the pythae families of the zoo.
    """

    version: str
    dataset: str = "mnist-5k"
    n_test: int = 64
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-3
    latent_dim: int = 16
    betas: tuple[float, ...] = (0.01, 0.1, 0.3, 1.0, 3.0, 10.0)
    defence_beta: float = 1.0
    l2_budgets: tuple[float, ...] = (0.25, 1.0)
    linf_budgets: tuple[float, ...] = (0.05, 0.1)
    objective: str = "recon"
    pgd_steps: int = 10
    adv_eps: float = 1.0
    adv_steps: int = 5
    noise_sigma: float = 0.25
    cert_sigma: float = 0.25
    cert_budgets: tuple[float, ...] = (0.25,)
    cert_n: int = 1000
    cert_n0: int = 100
    cert_alpha: float = 0.01
    smooth_n: int = 64
    smooth_n0: int = 16
    smooth_alpha: float = 0.05
    pythae_families: tuple[str, ...] = PYTHAE_FAMILIES

    def __post_init__(self) -> None:
        check_fields(self)
        positive = (
            "n_test",
            "epochs",
            "batch_size",
            "latent_dim",
            "pgd_steps",
            "adv_steps",
            "cert_n",
            "cert_n0",
            "smooth_n",
            "smooth_n0",
        )
        bad = [name for name in positive if getattr(self, name) < 1]
        if bad:
            raise VaelensError(f"protocol {self.version}: {', '.join(bad)} must be >= 1")
        reals = (self.lr, self.adv_eps, self.noise_sigma, self.cert_sigma, self.defence_beta)
        budgets = (*self.l2_budgets, *self.linf_budgets)
        if not all(v > 0 and math.isfinite(v) for v in (*reals, *budgets)):
            raise VaelensError(f"protocol {self.version}: rates, budgets, sigmas and beta must be > 0")
        if len(self.l2_budgets) < 2 or len(self.linf_budgets) < 2:
            raise VaelensError(f"protocol {self.version}: give at least two L2 and two Linf budgets")
        if len(self.betas) < 2 or len(set(self.betas)) != len(self.betas) or min(self.betas) <= 0:
            raise VaelensError(f"protocol {self.version}: the frontier needs two or more distinct betas > 0")
        if not self.cert_budgets or not set(self.cert_budgets) <= set(self.l2_budgets):
            raise VaelensError(f"protocol {self.version}: cert_budgets must be among the L2 budgets")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise VaelensError(f"protocol {self.version}: give one or more distinct seeds")
        if not (0 < self.cert_alpha < 1 and 0 < self.smooth_alpha < 1):
            raise VaelensError(f"protocol {self.version}: cert_alpha and smooth_alpha must lie in (0, 1)")
        if self.objective != "recon":
            raise VaelensError(f"protocol {self.version}: the objective must be 'recon'")
        unknown = sorted(set(self.pythae_families) - set(PYTHAE_FAMILIES))
        if unknown:
            raise VaelensError(f"protocol {self.version}: unknown pythae families {unknown}")

    @property
    def budgets(self) -> tuple[tuple[str, float], ...]:
        """Every (norm, eps) the attacks run at, L2 first."""
        return (*(("l2", e) for e in self.l2_budgets), *(("linf", e) for e in self.linf_budgets))

    def families(self) -> tuple[str, ...]:
        """Every family of the zoo: vaelens' beta-VAEs (one per beta), its defences, then pythae's."""
        betas = tuple(beta_family(b) for b in self.betas)
        return (*betas, *VAELENS_DEFENCES, *(f"pythae-{f}" for f in self.pythae_families))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def cell(measure: str, norm: str, eps: float) -> str:
    """The column of one measure at one budget, e.g. ``recon_shift@l2:0.5``: the only place it is built."""
    return f"{measure}@{norm}:{eps:g}"


def versions() -> dict[str, str]:
    """vaelens, torch, Python and pythae versions, echoed in every output."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    try:
        pythae = version("pythae")
    except PackageNotFoundError:
        pythae = "absent"
    return {"vaelens": __version__, "torch": torch.__version__, "pythae": pythae, "python": platform.python_version()}


def entry_dir(root: Path, entry: str) -> Path:
    """The directory of one entry's measurements (a file per seed) inside a benchmark's output."""
    return root / "entries" / entry.replace("/", "_").replace(":", "_")


def beta_family(beta: float) -> str:
    """The family name of vaelens' beta-VAE at one beta, e.g. ``beta-0.3``."""
    return f"beta-{beta:g}"


PROTOCOLS: dict[str, BenchProtocol] = {
    "v1": BenchProtocol("v1"),
    # a protocol for tests and smoke runs: 8x8 digits, few inputs, short trainings, cheap attacks
    "tiny": BenchProtocol(
        "tiny",
        dataset="digits",
        n_test=6,
        seeds=(0, 1),
        epochs=1,
        batch_size=64,
        latent_dim=4,
        betas=(0.5, 2.0),
        l2_budgets=(0.25, 0.5),
        linf_budgets=(0.03, 0.06),
        pgd_steps=2,
        adv_steps=1,
        cert_n=100,
        cert_n0=20,
        cert_alpha=0.05,
        smooth_n=64,
        smooth_n0=16,
        pythae_families=("VAE", "AE"),
    ),  # fmt: skip
}


def get_protocol(name: str | BenchProtocol) -> BenchProtocol:
    """The protocol named ``name`` (or ``name`` itself), or a one-line error listing the known ones."""
    if isinstance(name, BenchProtocol):
        return name
    if name not in PROTOCOLS:
        raise VaelensError(f"unknown benchmark protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def protocol_from_dict(d: dict[str, Any]) -> BenchProtocol:
    """A protocol read back from an output's JSON (lists become tuples)."""
    if not isinstance(d, dict) or "version" not in d:
        raise VaelensError("the output holds no benchmark protocol; it was not written by vaelens bench")
    fields = {f.name for f in dataclasses.fields(BenchProtocol)}
    args: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in fields}
    return BenchProtocol(**args)
