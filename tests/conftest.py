"""Shared fixtures: tiny models and tiny trained runs on the offline digits set."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch

from vaelens.models import ModelConfig
from vaelens.training import TrainConfig, train

torch.set_num_threads(2)


def tiny_config(**overrides) -> TrainConfig:
    """A training config that runs in about a second on digits (1x8x8)."""
    model = ModelConfig("mlp", (1, 8, 8), latent_dim=3, hidden=(32, 16))
    base = dict(dataset="digits", model=model, epochs=2, batch_size=64, beta=1.0, seed=0)
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A trained tiny run directory (read-only for tests: copy it before changing it)."""
    out = tmp_path_factory.mktemp("runs") / "digits"
    train(tiny_config(), out, progress=False)
    return out


@pytest.fixture(scope="session")
def mnist_run(tmp_path_factory):
    """A small MLP VAE trained for a few epochs on the real mnist-5k images (about 5 s)."""
    out = tmp_path_factory.mktemp("runs") / "mnist"
    model = ModelConfig("mlp", (1, 28, 28), latent_dim=8, hidden=(128, 64))
    train(TrainConfig(dataset="mnist-5k", model=model, epochs=4, batch_size=64), out, progress=False)
    return out


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """Run the vaelens CLI in-process; return (exit code, stdout, stderr)."""
    from vaelens.cli import main

    def _run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["vaelens", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return _run


PYTHAE_GAUSSIAN = (
    "VAE", "BetaVAE", "IWAE", "CIWAE", "MIWAE", "PIWAE", "VAMP", "MSSSIM_VAE", "INFOVAE_MMD", "DisentangledBetaVAE",
    "FactorVAE", "BetaTCVAE", "VAEGAN", "Adversarial_AE", "HVAE", "RHVAE",
)  # fmt: skip
PYTHAE_DETERMINISTIC = ("AE", "WAE_MMD", "RAE_L2", "RAE_GP", "VQVAE")
PYTHAE_REFUSED = ("VAE_IAF", "VAE_LinNF", "PoincareVAE", "SVAE")


def pythae_pipeline_folder(out, name: str):
    """The ``final_model`` folder that pythae's own TrainingPipeline writes for model class ``name``,
    with pythae's default networks on digits-shaped inputs (1, 8, 8), trained 1 epoch on 16 inputs."""
    import warnings

    import numpy as np
    import pythae.models as models
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import (
        AdversarialTrainerConfig,
        BaseTrainerConfig,
        CoupledOptimizerAdversarialTrainerConfig,
        CoupledOptimizerTrainerConfig,
    )

    trainer = {
        "RAE_L2": CoupledOptimizerTrainerConfig, "PIWAE": CoupledOptimizerTrainerConfig,
        "Adversarial_AE": AdversarialTrainerConfig, "FactorVAE": AdversarialTrainerConfig,
        "VAEGAN": CoupledOptimizerAdversarialTrainerConfig,
    }.get(name, BaseTrainerConfig)  # fmt: skip
    torch.manual_seed(0)
    config_cls = getattr(models, f"{name}Config", None) or getattr(models, f"{name}_Config")
    model = getattr(models, name)(config_cls(input_dim=(1, 8, 8), latent_dim=2))
    training = trainer(output_dir=str(out / name), num_epochs=1, per_device_train_batch_size=8,
                       per_device_eval_batch_size=8, no_cuda=True)  # fmt: skip
    x = np.random.RandomState(0).rand(16, 1, 8, 8).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pythae's own deprecations and notes are not under test
        TrainingPipeline(model=model, training_config=training)(train_data=x, eval_data=x[:8])
    (folder,) = (out / name).glob("*_training_*/final_model")
    return folder


@pytest.fixture(scope="session")
def pythae_zoo(tmp_path_factory):
    """Every pythae model class's ``final_model`` folder, as its TrainingPipeline wrote it."""
    pytest.importorskip("pythae.models")
    out = tmp_path_factory.mktemp("pythae-zoo")
    return {n: pythae_pipeline_folder(out, n) for n in PYTHAE_GAUSSIAN + PYTHAE_DETERMINISTIC + PYTHAE_REFUSED}


def write_clip(path, colours, size=(12, 16), rate=8):
    """An mp4 clip (mpeg4) whose frame i is filled with the RGB colour ``colours[i]`` (0..255)."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        for colour in colours:
            frame = np.broadcast_to(np.asarray(colour, dtype=np.uint8), (*size, 3)).copy()
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_volume(path, data):
    """A NIfTI file (.nii or .nii.gz) holding ``data`` with an identity affine."""
    import nibabel
    import numpy as np

    nibabel.save(nibabel.Nifti1Image(np.asarray(data, dtype=np.float32), np.eye(4)), str(path))


@pytest.fixture
def headless_chromium(tmp_path):
    """Run headless Chromium with the flags the page tests need (offline, a fresh profile, 5 s of
    virtual time): ``browse(*args)`` -> the finished process; the test skips without Chromium."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed here (.ci/run installs it with apt-get install chromium)")
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]  # fmt: skip

    def browse(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*flags, *args], capture_output=True, text=True, timeout=120)

    return browse
