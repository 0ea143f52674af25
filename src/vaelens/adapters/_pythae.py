"""pythae's model zoo as vaelens VAEs (docs/method.md section 1).

pythae's encoders return a ``ModelOutput`` with ``embedding`` and, for Gaussian posteriors,
``log_covariance`` (the diagonal log-variance); decoders return ``reconstruction``. Which models
fit the protocol:

- Gaussian (every kind): VAE, BetaVAE, IWAE, CIWAE, MIWAE, PIWAE, VAMP, MSSSIM_VAE, INFOVAE_MMD,
  DisentangledBetaVAE, FactorVAE, BetaTCVAE, VAEGAN, Adversarial_AE; HVAE and RHVAE with a warning
  (their posterior is refined by a Hamiltonian flow after the Gaussian encoder vaelens reads).
- Deterministic ("mean" and "output" kinds, "latent" and "recon" objectives): AE, WAE_MMD, RAE_L2,
  RAE_GP, VQVAE (the continuous code before quantisation; decoding quantises it as pythae does).
- Refused: VAE_IAF and VAE_LinNF (normalising flows), PoincareVAE (a hyperbolic posterior) and
  SVAE (von Mises-Fisher): their posterior is not the diagonal Gaussian the metric assumes.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vaelens._errors import VaelensError
from vaelens._protocol import eval_mode
from vaelens.adapters._base import AdaptedVAE, float32_for_derivatives, require_extra

REFUSED = {
    "VAE_IAF": "an inverse autoregressive flow",
    "VAE_LinNF": "a linear normalising flow",
    "PoincareVAE": "a wrapped normal on the Poincare ball",
    "SVAE": "a von Mises-Fisher distribution on the sphere",
}
FLOW_REFINED = ("HVAE", "RHVAE")
PARTS = ("encoder", "decoder", "discriminator", "metric")
PICKLED = tuple(f"{part}.pkl" for part in PARTS)


class FlowPosteriorWarning(UserWarning):
    """The pythae model refines its Gaussian posterior; vaelens reads the Gaussian before refinement."""


class _Pythae(AdaptedVAE):
    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.inner.encoder(x)
        return out["embedding"], (None if self.deterministic else out["log_covariance"])

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.name == "VQVAE":
            z = self._quantise(z)
        return self.inner.decoder(z)["reconstruction"]

    def _quantise(self, z: torch.Tensor) -> torch.Tensor:
        """The nearest codebook vector of each position, straight-through, as VQVAE.forward does.

        Written here rather than calling pythae's quantizer, whose ``one_hot`` cannot be vmapped;
        the codebook is the quantizer's (an ``nn.Embedding``, or the EMA quantizer's buffer).
        """
        book = self.inner.quantizer.embeddings
        book = book.weight if isinstance(book, torch.nn.Embedding) else book  # (K, D)
        flat = z.dim() == 2  # pythae then quantises each of the k coordinates on its own (D = 1)
        e = (z.reshape(len(z), 1, 1, -1) if flat else z).permute(0, 2, 3, 1)  # (B, h, w, D)
        dist = (e**2).sum(-1, keepdim=True) + (book**2).sum(-1) - 2 * e @ book.T  # (B, h, w, K)
        q = book[dist.argmin(-1)]  # (B, h, w, D)
        q = (e + (q - e).detach()).permute(0, 3, 1, 2)  # straight-through: the decoder's derivative at the code
        return q.reshape(len(z), -1) if flat else q


def from_pythae(model: Any) -> AdaptedVAE:
    """A pythae model as a vaelens VAE on images in [0, 1] of the model's ``input_dim``.

    See the module's docstring for which models are Gaussian, deterministic or refused.

    Examples::

        >>> model = pythae.models.BetaVAE(pythae.models.BetaVAEConfig(input_dim=(1, 28, 28), latent_dim=16))
        >>> vae = vaelens.adapters.from_pythae(model)
        >>> vaelens.pullback_metric(vae, x, "stochastic").eigenvalues().shape   # x: (B, 1, 28, 28)
        torch.Size([B, 32])
    """
    require_extra("pythae")
    if not any(c.__module__.split(".")[0] == "pythae" for c in type(model).__mro__):
        raise VaelensError(f"from_pythae takes a pythae model; got {type(model).__name__}")
    name = getattr(model, "model_name", type(model).__name__)
    if name in REFUSED:
        raise VaelensError(
            f"pythae {name} has {REFUSED[name]} as its posterior, not the diagonal Gaussian vaelens' "
            "metric and divergences assume; it is not supported"
        )
    if not hasattr(model, "encoder") or not hasattr(model, "decoder") or not hasattr(model, "model_config"):
        raise VaelensError(f"from_pythae takes a pythae model (with encoder, decoder, model_config); got {name}")
    shape = tuple(int(s) for s in model.model_config.input_dim)
    probe = torch.zeros(1, *shape, dtype=next(model.parameters()).dtype, device=next(model.parameters()).device)
    with eval_mode(model), torch.no_grad():  # every submodule's mode comes back as it was
        keys = set(model.encoder(probe).keys())
    if "embedding" not in keys:
        raise VaelensError(f"pythae {name}'s encoder returns {sorted(keys)}, not an embedding; it is not supported")
    if name in FLOW_REFINED:
        warnings.warn(
            f"pythae {name} refines its posterior with a Hamiltonian flow; vaelens measures the Gaussian "
            "encoder before the flow",
            FlowPosteriorWarning,
            stacklevel=2,
        )
    return _Pythae(
        float32_for_derivatives(model),
        input_range=(0.0, 1.0),
        channels=shape[0] if len(shape) == 3 else None,
        input_shape=shape,
        deterministic="log_covariance" not in keys,
        name=name,
    )


def _model_name(config_name: str) -> str:
    """pythae's model class from its config's name: ``VAEConfig`` -> VAE, ``WAE_MMD_Config`` -> WAE_MMD."""
    for suffix in ("_Config", "Config"):
        if config_name.endswith(suffix):
            return config_name[: -len(suffix)]
    return config_name


def _read_config(config_path: Path) -> tuple[str, dict[str, Any]]:
    try:
        config = json.loads(config_path.read_text())
        name = _model_name(config.pop("name"))
    except (ValueError, KeyError, AttributeError, TypeError) as e:
        raise VaelensError(f"{config_path} is not a pythae model config ({e}); re-save the model") from None
    return name, config


def _pickles(folder: Path, config: dict[str, Any]) -> list[str]:
    """The cloudpickle files the model needs: one per custom network the config declares."""
    declared = [f"{part}.pkl" for part in PARTS if config.get(f"uses_default_{part}") is False]
    missing = [name for name in declared if not (folder / name).is_file()]
    if missing:
        raise VaelensError(
            f"{folder} declares custom networks but lacks {', '.join(missing)}; copy the whole folder "
            "that pythae's save() or TrainingPipeline wrote"
        )
    return sorted({*declared, *(name for name in PICKLED if (folder / name).exists())})


def load_pythae(folder: str | Path, allow_pickle: bool = False) -> torch.nn.Module:
    """Read a pythae model written by ``model.save(folder)`` or a ``TrainingPipeline`` (its
    ``final_model`` folder), offline.

    A model with pythae's default networks is rebuilt from ``model_config.json`` and its weights
    read with ``torch.load(weights_only=True)``, which cannot run code. Custom networks are stored as
    cloudpickle files (encoder.pkl, decoder.pkl, discriminator.pkl, metric.pkl): loading those
    executes whatever code they hold, so they are refused unless ``allow_pickle=True``.
    """
    require_extra("pythae")
    models = require_extra("pythae.models")  # ``import pythae`` alone does not import its models
    folder = Path(folder)
    if not (folder / "model_config.json").is_file() and (folder / "final_model" / "model_config.json").is_file():
        folder = folder / "final_model"  # a TrainingPipeline's <MODEL>_training_<DATE> folder: its final model
    config_path = folder / "model_config.json"
    if not config_path.is_file():
        hint = " (a TrainingPipeline writes it into OUTPUT_DIR/<MODEL>_training_<DATE>/final_model)"
        raise VaelensError(
            f"{folder} holds no model_config.json; give a folder written by a pythae model's .save(){hint}"
        )
    model_name, config = _read_config(config_path)
    pickled = _pickles(folder, config)
    if pickled:
        if not allow_pickle:
            raise VaelensError(
                f"{folder} stores custom networks as pickles ({', '.join(pickled)}); loading them runs any code "
                "they hold. Only if you trust their source, pass --allow-pickle (API: allow_pickle=True)"
            )
        return _pythae_call(folder, lambda: models.AutoModel.load_from_folder(str(folder))).eval()
    cls = getattr(models, model_name, None)
    config_cls = getattr(models, f"{model_name}Config", None) or getattr(models, f"{model_name}_Config", None)
    if not isinstance(cls, type) or config_cls is None:
        raise VaelensError(f"{config_path} names an unknown pythae model {model_name!r}; is pythae up to date?")
    for part in PARTS:
        config.pop(f"uses_default_{part}", None)
    return _pythae_call(folder, lambda: _rebuild(cls, config_cls, config, folder)).eval()


def _rebuild(cls: type, config_cls: type, config: dict[str, Any], folder: Path) -> torch.nn.Module:
    weights_path = folder / "model.pt"
    if not weights_path.is_file():
        raise VaelensError(f"{folder} holds no model.pt (the weights); re-save the model with model.save()")
    model = cls(config_cls(**config))
    try:
        weights = torch.load(weights_path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        raise VaelensError(
            f"{weights_path} is damaged or not a torch weights file ({type(e).__name__}); re-save the model "
            "with model.save()"
        ) from None
    if not isinstance(weights, dict) or "model_state_dict" not in weights:
        raise VaelensError(f"{weights_path} holds no model_state_dict; re-save the model with model.save()")
    model.load_state_dict(weights["model_state_dict"])
    for key, attribute in (("M", "M_tens"), ("centroids", "centroids_tens")):  # RHVAE's metric, kept beside
        if key in weights:
            setattr(model, attribute, weights[key])
    return model


def _pythae_call(folder: Path, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    try:
        return build()
    except VaelensError:
        raise
    except Exception as e:  # noqa: BLE001 - pythae and torch raise many types for a bad folder; one line
        msg = " ".join(str(e).split())[:160]
        raise VaelensError(
            f"cannot load the pythae model in {folder} ({type(e).__name__}: {msg}); re-save it with model.save()"
        ) from None


def _hub_offline(hub: Any) -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE")  # read now: huggingface_hub reads it once, at import
    return (
        flag.strip().lower() in ("1", "true", "yes", "on") if flag is not None else bool(hub.constants.HF_HUB_OFFLINE)
    )


def load_pythae_hub(repo: str, allow_pickle: bool = False) -> torch.nn.Module:
    """A pythae model from the Hugging Face hub, ``org/name[@revision]``, through huggingface_hub:
    online it downloads, offline (``HF_HUB_OFFLINE=1``) it reads the local cache.

    Models pushed with pythae's ``push_to_hf_hub`` keep custom networks as cloudpickle files, which
    run code when loaded: those are neither downloaded nor loaded unless ``allow_pickle=True``. The
    weights (``model.pt``) are read with ``weights_only=True`` either way.
    """
    try:
        import huggingface_hub as hub
    except ImportError:
        raise VaelensError(
            f"pythae:{repo} is a hub id, which needs huggingface_hub; pip install huggingface_hub, or give a folder"
        ) from None
    repo_id, _, revision = repo.partition("@")
    patterns = ["model_config.json", "environment.json", "model.pt"] + (["*.pkl"] if allow_pickle else [])
    offline = _hub_offline(hub)
    try:
        folder = Path(hub.snapshot_download(repo_id, revision=revision or None, allow_patterns=patterns,
                                            local_files_only=offline, etag_timeout=10))  # fmt: skip
    except Exception as e:  # noqa: BLE001 - the hub raises many kinds (HTTP, offline, not found, timeout)
        msg = " ".join(str(e).split())[:160]
        where = "in the local cache (HF_HUB_OFFLINE is set)" if offline else "on the Hugging Face hub"
        raise VaelensError(
            f"pythae:{repo}: cannot find it {where} ({type(e).__name__}: {msg}); check the id, download it "
            "once online, or give a local folder"
        ) from None
    if (folder / "model_config.json").is_file() and not allow_pickle:
        _, config = _read_config(folder / "model_config.json")
        custom = [f"{part}.pkl" for part in PARTS if config.get(f"uses_default_{part}") is False]
        if custom:
            raise VaelensError(
                f"pythae:{repo} stores custom networks as pickles ({', '.join(custom)}); loading them runs any "
                "code they hold. Only if you trust its source, pass --allow-pickle (API: allow_pickle=True)"
            )
    return load_pythae(folder, allow_pickle)
