"""``--model diffusers:org/name[@revision][#subfolder]`` offline, from a Hugging Face cache that the
test lays out itself (HF_HOME in tmp, HF_HUB_OFFLINE=1), as huggingface_hub would have written it.
The user's path runs through the real console script in a fresh process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("huggingface_hub")

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def tiny_kl() -> torch.nn.Module:
    torch.manual_seed(0)
    return diffusers.AutoencoderKL(
        block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4, latent_channels=2,
    ).eval()  # fmt: skip


def lay_out_cache(home: Path, repo: str = "acme/tiny-sd", pipeline: bool = True) -> Path:
    """HF_HOME/hub/models--acme--tiny-sd/{refs/main, snapshots/COMMIT/...}: a pipeline with vae/."""
    snapshot = home / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / COMMIT
    tiny_kl().save_pretrained(snapshot / "vae" if pipeline else snapshot)
    if pipeline:
        (snapshot / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    refs = snapshot.parents[1] / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    (refs / "main").write_text(COMMIT)
    return snapshot


def offline_env(home: Path) -> dict[str, str]:
    return {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.environ.get("PYTHONPATH", "")}


def photos(folder: Path, n: int = 2, size: int = 8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


def vaelens(*args: object, env: dict[str, str]) -> subprocess.CompletedProcess:
    exe = shutil.which("vaelens") or str(Path(sys.executable).with_name("vaelens"))
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def test_hub_id_offline_from_the_cache_in_process(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from vaelens import VaelensError
    from vaelens.experiments import load_model

    lay_out_cache(tmp_path / "hf")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    for spec in ("diffusers:acme/tiny-sd", f"diffusers:acme/tiny-sd@{COMMIT}", "diffusers:acme/tiny-sd@main#vae"):
        vae = load_model(spec)
        assert vae.name == "AutoencoderKL" and vae.latent_space == "diffusion", spec
    with pytest.raises(VaelensError, match="cannot find acme/missing in the local cache") as e:
        load_model("diffusers:acme/missing")
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_cli_audit_and_attack_on_a_hub_id_offline_in_a_fresh_process(tmp_path):
    lay_out_cache(tmp_path / "hf")
    env = offline_env(tmp_path / "hf")
    data = photos(tmp_path / "photos")
    common = ("--model", "diffusers:acme/tiny-sd#vae", "--dataset", f"folder:{data}", "--image-size", "8",
              "--n", "2", "--split", "train", "--quiet")  # fmt: skip
    proc = vaelens("audit", *common, "--kind", "mean", "--probe-n", "0", "--out", tmp_path / "audit", env=env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "audit" / "summary.json").read_text())
    assert summary["latent_space"] == "diffusion" and summary["latent_normalisation"] == "scaling_factor"
    proc = vaelens("attack", *common, "--method", "pgd", "--objective", "latent", "--eps-rms", "0.05",
                   "--steps", "2", "--latent-space", "raw", "--out", tmp_path / "attack", env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "attack" / "summary.json").read_text())
    assert summary["latent_space"] == "raw"
    proc = vaelens("audit", "--model", "diffusers:acme/nothing", "--out", tmp_path / "x", env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "cannot find acme/nothing in the local cache" in proc.stderr


@pytest.mark.slow
def test_cli_refuses_an_unsupported_class_pointing_to_wrap_and_python(tmp_path):
    folder = tmp_path / "vocoder"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "MMAudioVocoder"}))
    proc = vaelens("audit", "--model", f"diffusers:{folder}", "--out", tmp_path / "x", env=offline_env(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "MMAudioVocoder" in proc.stderr and "python:" in proc.stderr and "wrap" in proc.stderr
