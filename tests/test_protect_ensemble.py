"""Protection against several encoders, transfer, batching and precision (docs/method.md section 9)."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torch import nn

from vaelens import VaelensError
from vaelens.evaluation import (
    EVALUATED,
    EnsembleObjective,
    ProtectConfig,
    _images,
    protect,
    pull,
    read_images,
    write_protection,
)
from vaelens.evaluation._ensemble import check_precision

FAST = dict(steps=12, evaluate=False)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is faster than two, and far faster on cores other jobs share."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Patch(nn.Module):
    """A protocol VAE over 4x4 patches (any H, W divisible by 4); ``scale`` multiplies its codes."""

    size_multiple = 4

    def __init__(self, seed: int, scale: float = 1.0, dtype: torch.dtype = torch.float64, channels: int = 3) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.enc = nn.Conv2d(channels, 4, 4, stride=4, dtype=dtype)
        self.dec = nn.ConvTranspose2d(2, channels, 4, stride=4, dtype=dtype)
        self.scale, self.grid, self.decoded_with_grad = scale, (1, 1), 0
        self.input_channels = channels

    def encode(self, x):
        h = torch.tanh(self.enc(x))  # (B, 4, H/4, W/4)
        self.grid = tuple(h.shape[-2:])
        return self.scale * h[:, :2].flatten(1), h[:, 2:].flatten(1)

    def decode(self, z):
        self.decoded_with_grad += int(torch.is_grad_enabled())
        return torch.sigmoid(self.dec(z.view(len(z), 2, *self.grid) / self.scale))


def image(h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(40, 216, (3, h, w), generator=g, dtype=torch.uint8)


def images(n: int = 3, size: int = 16) -> dict[str, torch.Tensor]:
    return {f"{i}.png": image(size, size, i) for i in range(n)}


def test_ensemble_objective_is_scale_free():
    a, b, b100 = Patch(0), Patch(1), Patch(1, scale=100.0)
    x = torch.stack(list(images().values())).double() / 255
    gray = torch.full((1, 3, 16, 16), 0.5, dtype=torch.float64)
    y = (x + 0.03 * torch.randn_like(x)).clamp(0, 1)
    plain, scaled = EnsembleObjective([a, b], x, gray), EnsembleObjective([a, b100], x, gray)
    assert torch.allclose(plain(x), torch.full((3,), 2.0, dtype=torch.float64))  # each encoder starts at 1
    assert torch.allclose(plain.terms(y), scaled.terms(y), rtol=1e-9)


def test_multiplying_one_models_latents_by_100_changes_nothing():
    config = ProtectConfig(**FAST)
    plain = protect({"a": Patch(0), "b": Patch(1)}, images(), config, progress=False)
    scaled = protect({"a": Patch(0), "b": Patch(1, scale=100.0)}, images(), config, progress=False)
    for name in plain:
        assert torch.equal(plain[name].image, scaled[name].image), name


def test_the_ensemble_pulls_every_encoder():
    pictures = images()
    results = protect({"a": Patch(0), "b": Patch(1)}, pictures, ProtectConfig(**FAST), progress=False)
    for name, p in results.items():
        assert set(p.encoders) == {"a", "b"} and p.attacked == ("a", "b")
        assert all(e.distance_after < e.distance_before for e in p.encoders.values())
        assert (p.image.int() - pictures[name].int()).abs().max() <= 8


def test_transfer_columns_for_every_evaluate_on(tmp_path):
    config = ProtectConfig(steps=8)
    others = {"c": Patch(2), "d": Patch(3)}
    results = protect({"a": Patch(0)}, images(2), config, progress=False, evaluate_on=others)
    write_protection(results, tmp_path / "out", config)
    rows = list(csv.DictReader((tmp_path / "out" / "protect.csv").read_text().splitlines()))
    for label in others:
        assert {f"{label}/{t}_held" for t in EVALUATED} | {f"{label}/distance_after"} <= set(rows[0])
        held = sum(int(r[f"{label}/{t}_held"]) for r in rows for t in EVALUATED)
        summary = json.loads((tmp_path / "out" / "summary.json").read_text())
        assert summary["transfer"]["a"][label] == pytest.approx(held / (2 * len(EVALUATED)))
        assert summary["encoders"][label]["attacked"] is False
    assert "jpeg_held" in rows[0] and "a/jpeg_held" not in rows[0]  # the attacked encoder keeps plain names
    pulled = [(float(r["distance_before"]) - float(r["distance_after"])) / float(r["distance_before"]) for r in rows]
    assert summary["transfer_pull"]["a"]["a"] == pytest.approx(sum(pulled) / 2) and sum(pulled) > 0


def test_mismatched_channels_across_models_is_one_line():
    with pytest.raises(VaelensError, match="different channels .*a takes 3, b takes 1"):
        protect({"a": Patch(0), "b": Patch(1, channels=1)}, images(1), ProtectConfig(**FAST), progress=False)
    with pytest.raises(VaelensError, match="both attacked"):
        protect({"a": Patch(0)}, images(1), ProtectConfig(**FAST), progress=False, evaluate_on={"a": Patch(1)})


def test_batched_equals_one_by_one():
    pictures = {**images(3), "wide.png": image(16, 24, 9)}
    one = protect(Patch(0), pictures, ProtectConfig(**FAST), progress=False)
    four = protect(Patch(0), pictures, ProtectConfig(**FAST, batch_size=4), progress=False)
    assert list(four) == list(pictures)
    for name in pictures:
        assert torch.equal(one[name].image, four[name].image), name


def test_no_decoder_graph_during_the_attack():
    model = Patch(0)
    x = torch.stack(list(images(2).values())).float() / 255
    pull([model], x, torch.full((1, 3, 16, 16), 0.5), None, ProtectConfig(steps=10))
    assert model.decoded_with_grad == 0


def test_bf16_held_rate_within_tolerance_of_fp32():
    """The stated tolerance: bf16's held rate over (image, transform) pairs within 0.2 of fp32's,
    and every bf16 protection still pulls the fp32-measured code towards the target."""
    model = Patch(0, dtype=torch.float32)
    pictures = images(4)
    rates = {}
    for precision in ("fp32", "bf16"):
        config = ProtectConfig(steps=15, precision=precision, batch_size=4)
        results = protect(model, pictures, config, progress=False)
        rates[precision] = sum(c.held for p in results.values() for c in p.checks.values()) / (4 * len(EVALUATED))
        assert all(p.distance_after < p.distance_before for p in results.values())
    assert abs(rates["bf16"] - rates["fp32"]) <= 0.2, rates


def test_fp16_refused_for_force_upcast_models():
    model = Patch(0)
    model.force_upcast = True
    with pytest.raises(VaelensError, match="force_upcast"):
        check_precision("fp16", {"sdxl": model})
    check_precision("bf16", {"sdxl": model})
    with pytest.raises(VaelensError, match="unknown precision"):
        ProtectConfig(precision="fp8")
    with pytest.raises(VaelensError, match="batch_size"):
        ProtectConfig(batch_size=0)


MODELS = """
import torch
from torch import nn


class Patch(nn.Module):
    size_multiple = 4

    def __init__(self, seed, channels=3):
        super().__init__()
        torch.manual_seed(seed)
        self.enc = nn.Conv2d(channels, 4, 4, stride=4)
        self.dec = nn.ConvTranspose2d(2, channels, 4, stride=4)
        self.grid, self.input_channels = (1, 1), channels

    def encode(self, x):
        h = torch.tanh(self.enc(x))
        self.grid = tuple(h.shape[-2:])
        return h[:, :2].flatten(1), h[:, 2:].flatten(1)

    def decode(self, z):
        return torch.sigmoid(self.dec(z.view(len(z), 2, *self.grid)))


def a():
    return Patch(0)


def b():
    return Patch(1)


def c():
    return Patch(2)


def gray():
    return Patch(3, channels=1)
"""


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.py").write_text(MODELS)
    (tmp_path / "images").mkdir()
    for name, pixels in images(2).items():
        _images.write_png(tmp_path / "images" / name, pixels)
    return tmp_path


def test_cli_ensemble_and_transfer(run_cli, workspace):
    args = ["protect", "--model", "python:m.py:a", "--model", "python:m.py:b", "--evaluate-on", "python:m.py:c"]
    code, stdout, stderr = run_cli(*args, "--images", "images", "--out", "out", "--steps", "6", "--batch-size", "2",
                                   "--quiet")  # fmt: skip
    assert code == 0, stderr
    assert "transfer" in stdout and "m.py:a+m.py:b" in stdout
    rows = list(csv.DictReader((workspace / "out" / "protect.csv").read_text().splitlines()))
    assert {"m.py:b/jpeg_held", "m.py:c/vae_held"} <= set(rows[0])
    summary = json.loads((workspace / "out" / "summary.json").read_text())
    assert summary["model"] == ["python:m.py:a", "python:m.py:b"] and summary["evaluate_on"] == ["python:m.py:c"]
    assert list(summary["transfer"]["m.py:a+m.py:b"]) == ["m.py:a", "m.py:b", "m.py:c"]
    assert read_images(workspace / "out").keys() == {"0.png", "1.png"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "python:m.py:a", "--model", "python:m.py:gray"], "different channels"),
        (["--model", "python:m.py:a", "--precision", "fp8"], "unknown precision"),
        (["--model", "python:m.py:a", "--batch-size", "0"], "batch_size"),
        ([], "no --model given"),
        (["--protector", "nowhere"], "not a protector directory"),
        (["--model", "python:m.py:a", "--refine-steps", "3"], "--refine-steps continues from a --protector"),
    ],
)
def test_cli_bad_inputs_are_one_line(run_cli, workspace, extra, message):
    code, _, stderr = run_cli("protect", "--images", "images", "--out", "out", "--quiet", *extra)
    assert code == 2 and message in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_protect_train_refuses_its_photos_folder_and_encoders_protect_would_refuse(run_cli, workspace):
    train = ["protect-train", "--images", "images", "--crop", "16", "--epochs", "1", "--quiet"]
    code, _, stderr = run_cli(*train, "--model", "python:m.py:a", "--out", "images")
    assert code == 2 and "where the originals are" in stderr and not (workspace / "images" / "config.json").exists()
    code, _, stderr = run_cli(*train, "--model", "python:m.py:a", "--model", "python:m.py:gray", "--out", "p")
    assert code == 2 and "different channels" in stderr and not (workspace / "p").exists()


def test_a_folder_of_images_and_videos_is_refused_naming_both(run_cli, workspace):
    (workspace / "images" / "0.mov").write_bytes(b"")  # a Live Photo's clip beside its still
    code, _, stderr = run_cli("protect", "--model", "python:m.py:a", "--images", "images", "--out", "o", "--quiet")
    assert code == 2 and "1 videos and 2 images" in stderr and not (workspace / "o").exists()
    (workspace / "images" / "0.mp4").write_bytes(b"")
    code, _, stderr = run_cli("protect", "--model", "python:m.py:a", "--images", "images", "--out", "o", "--quiet")
    assert code == 2 and "would both be protected as 0.mkv" in stderr
