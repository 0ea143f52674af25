"""Bad input and faults on the newer surfaces (issue 24): protect, ``--model`` specs, the Ray
executor's addresses and the sweep's claim. Every case is one line on stderr with exit status 2 (or
a ``VaelensError`` naming the file), nothing claimed on disk by a refused command, the originals
never written, and images written back within the budget in their own depth and mode."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import subprocess
import sys
import threading
import uuid
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_protect import MODEL_FILE, PatchVAE, image

from vaelens import VaelensError
from vaelens._network import bound_hub_waits, check_reachable, network_timeout, split_address
from vaelens.attacks import TargetedAttack
from vaelens.evaluation import ProtectConfig, protect, protect_image, read_image_file, write_protection

FAST = ["--steps", "2", "--eot-samples", "1", "--no-evaluate", "--quiet"]


def _one_line(code: int, stdout: str, stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, (code, stdout, stderr)
    assert "Traceback" not in stdout + stderr and len(lines) == 1, stderr
    return stderr


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def png16(path: Path, array: np.ndarray) -> None:
    """A 16-bit PNG of (H, W, C) uint16 values, C 1, 3 or 4: Pillow cannot write 48 or 64-bit ones."""
    h, w, c = array.shape
    raw = b"".join(b"\x00" + array[i].astype(">u2").tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 3: 2, 4: 6}[c], 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


BROKEN_FACTORIES = {
    "import_error.py": ("import torch\nraise RuntimeError('boom at import')\n", "importing"),
    "exits.py": ("import sys\nsys.exit(3)\n", "raised SystemExit"),
    "syntax.py": ("def make(:\n", "cannot import"),
    "raises.py": ("def make():\n    return 1 / 0\n", "make() raised ZeroDivisionError"),
    "returns_none.py": ("def make():\n    return None\n", "NoneType is neither"),
    "no_factory.py": ("x = 1\n", "has no function 'make'"),
    "encode_fails.py": (
        MODEL_FILE.replace("h = torch.tanh(self.enc(x))", "raise KeyError('encoder broke')"),
        "KeyError: 'encoder broke'",
    ),
    "flat.py": (
        "import torch\nfrom torch import nn\nclass M(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.e, self.d = nn.Linear(64, 4), nn.Linear(2, 64)\n    def encode(self, x):\n"
        "        h = self.e(x.flatten(1))\n        return h[:, :2], h[:, 2:]\n    def decode(self, z):\n"
        "        return torch.sigmoid(self.d(z)).view(-1, 1, 8, 8)\ndef make():\n    return M()\n",
        "M fails on a.png (3x16x16)",
    ),  # declares no input shape: the issue-19 crash
    "kernel.py": (
        "import torch\nfrom torch import nn\nclass M(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.e, self.d = nn.Conv2d(3, 4, 5), nn.ConvTranspose2d(2, 3, 5)\n    def encode(self, x):\n"
        "        h = self.e(x)\n        return h[:, :2].flatten(1), h[:, 2:].flatten(1)\n    def decode(self, z):\n"
        "        return torch.sigmoid(self.d(z.view(len(z), 2, 12, 12)))\ndef make():\n    return M()\n",
        "M fails on a.png (3x1x1)",
    ),  # a 5x5 kernel cannot take a 1x1 image
    "four.py": (MODEL_FILE.replace("size_multiple = 8", "size_multiple = 8\n    input_channels = 4"), "takes 4"),
}


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """A folder of two images, the tiny model file, and the paths the cases fill in."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tinyvae.py").write_text(MODEL_FILE)
    for name, (text, _) in BROKEN_FACTORIES.items():
        (tmp_path / name).write_text(text)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(image(16, 16).numpy().transpose(1, 2, 0)).save(images / "a.png")
    Image.fromarray(image(16, 24, 1, seed=1).numpy()[0]).save(images / "b.png")
    return tmp_path


def _damage(case: str, root: Path) -> None:
    """Make the files a case needs, under ``root``."""
    images = root / "images"
    if case == "48-bit":
        png16(images / "c.png", np.random.default_rng(0).integers(0, 65536, (8, 8, 3)).astype(np.uint16))
    elif case == "64-bit":
        png16(images / "c.png", np.random.default_rng(0).integers(0, 65536, (8, 8, 4)).astype(np.uint16))
    elif case == "float":
        Image.fromarray(np.random.default_rng(0).random((8, 8)).astype(np.float32)).save(images / "c.tif")
    elif case == "empty file":
        (images / "c.png").write_bytes(b"")
    elif case == "truncated":
        (images / "c.png").write_bytes((images / "a.png").read_bytes()[:60])
    elif case == "text":
        (images / "c.jpg").write_text("not an image")
    elif case == "same stem":
        (images / "a.jpg").write_bytes((images / "a.png").read_bytes())
    elif case == "empty dir":
        for p in images.iterdir():
            p.unlink()
    elif case == "mask size":
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "mask.png")
    elif case == "mask garbage":
        (root / "mask.png").write_text("garbage")
    elif case == "target garbage":
        (root / "target.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    elif case == "out is a file":
        (root / "out").write_text("a file of the user's")
    elif case == "one pixel":
        Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(images / "a.png")
    elif case == "symlink":
        (root / "out").symlink_to(images)


OUT_CASES = [  # (--out, extra options, case, message)
    ("images", [], None, "--out images is --images images"),
    ("images", ["--overwrite"], None, "with or without --overwrite"),
    ("images/protected", [], None, "lies inside --images"),
    ("images/protected", ["--overwrite"], None, "lies inside --images"),
    (".", ["--overwrite"], None, "holds --images"),
    ("out", ["--overwrite"], "symlink", "is --images"),
    ("out", [], "48-bit", "16-bit RGB image"),
    ("out", [], "64-bit", "16-bit RGBA image"),
    ("out", [], "float", "is a F image"),
    ("out", [], "empty file", "cannot read"),
    ("out", [], "truncated", "cannot read"),
    ("out", [], "text", "cannot read"),
    ("out", [], "same stem", "several images named a"),
    ("out", [], "empty dir", "holds no image files"),
    ("out", ["--mask", "mask.png"], "mask size", "the mask is 8x8"),
    ("out", ["--mask", "mask.png"], "mask garbage", "cannot read"),
    ("out", ["--mask", "missing.png"], None, "does not exist"),
    ("out", ["--target", "target.png"], "target garbage", "cannot read"),
    ("out", ["--target", "missing.png"], None, "does not exist"),
    ("out", ["--images", "missing"], None, "not a directory"),
    ("out", ["--images", "tinyvae.py"], None, "not a directory"),
    ("out", [], "out is a file", "is a file, not a directory"),
    ("out", ["--eps", "300"], None, "must lie in [1, 255]"),
    ("out", ["--steps", "0"], None, "steps and eot_samples must be >= 1"),
    ("out", ["--robust", "crop"], None, "choose from jpeg"),
    ("out", ["--model", "python:missing.py:make"], None, "does not exist"),
    ("out", ["--model", "python:tinyvae.py"], None, "must be python:MODULE:FUNCTION"),
    ("out", ["--model", "python:no_such_module_xyz:make"], None, "cannot import no_such_module_xyz"),
    ("out", ["--model", "pythae:missing"], None, "no model_config.json"),
    ("out", ["--model", "diffusers:missing"], None, "no config.json"),
    ("out", ["--model", "missing_run"], None, "does not exist"),
]


@pytest.mark.parametrize(
    ("out", "extra", "case", "message"), OUT_CASES, ids=[f"{c[2] or c[0]}-{c[3][:24]}" for c in OUT_CASES]
)
def test_protect_refuses_in_one_line_and_claims_nothing(run_cli, setup, out, extra, case, message):
    _damage(case, setup)
    before = _digest(setup / "images") if (setup / "images").is_dir() else {}
    args = ["protect", "--model", "python:tinyvae.py:make", "--images", "images", "--out", out, *FAST, *extra]
    stderr = _one_line(*run_cli(*args))
    assert message in stderr, stderr
    assert _digest(setup / "images") == before if before else True  # the originals are untouched
    assert not (setup / "images" / "protected").exists()
    claimed = setup / out
    assert not (claimed.is_dir() and (claimed / ".vaelens.json").exists())  # refused before anything was claimed


@pytest.mark.parametrize("name", list(BROKEN_FACTORIES), ids=list(BROKEN_FACTORIES))
def test_user_code_that_fails_is_one_line_naming_it(run_cli, setup, name):
    if name in ("kernel.py",):
        _damage("one pixel", setup)
    _, message = BROKEN_FACTORIES[name]
    args = ["protect", "--model", f"python:{name}:make", "--images", "images", "--out", "out", *FAST]
    stderr = _one_line(*run_cli(*args))
    assert message in stderr, stderr
    assert not (setup / "out").exists()  # the model was refused before the output was claimed
    if name in ("import_error.py", "exits.py"):
        assert f"{name}:2" in stderr  # the file and the line that raised


def test_a_file_protect_did_not_write_is_never_written_over(run_cli, setup):
    out = setup / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"the user's own a.png")
    (out / "notes.txt").write_text("kept")
    args = ["protect", "--model", "python:tinyvae.py:make", "--images", "images", "--out", out, *FAST]
    stderr = _one_line(*run_cli(*args, "--overwrite"))
    assert "was not written by vaelens" in stderr
    assert (out / "a.png").read_bytes() == b"the user's own a.png" and not (out / ".vaelens.json").exists()
    (out / "a.png").unlink()  # without the clash, --overwrite writes beside the user's other files
    code, _, stderr = run_cli(*args, "--overwrite")
    assert code == 0, stderr
    assert (out / "notes.txt").read_text() == "kept" and (out / "a.png").is_file()
    code, _, stderr = run_cli(*args)  # the same command again: its own files, rewritten
    assert code == 0, stderr


def test_a_one_pixel_image_is_protected(run_cli, setup):
    _damage("one pixel", setup)
    args = ["protect", "--model", "python:tinyvae.py:make", "--images", "images", "--out", "out", "--steps", "2"]
    code, stdout, stderr = run_cli(*args, "--quiet")
    assert code == 0, stderr
    written = np.array(Image.open(setup / "out" / "a.png"))
    assert written.shape == (1, 1, 3) and np.abs(written.astype(int)).max() <= 8


# -- images in their own depth and mode, written back within the budget ------------------------------
def _save(path: Path, array: np.ndarray, mode: str | None = None, **info) -> None:
    picture = Image.fromarray(array)
    (picture.convert(mode) if mode else picture).save(path, **info)


MODES = {  # name: (writes the original, compares in, mode written back)
    "gray16": (lambda p, a: _save(p, (a[..., 0].astype(np.uint16) * 257 + 99)), "I;16"),
    "palette": (lambda p, a: _save(p, a, "P"), "RGB"),
    "palette-transparent": (lambda p, a: _save(p, a, "P", transparency=0), "RGBA"),
    "cmyk": (lambda p, a: _save(p.with_suffix(".tif"), a, "CMYK"), "RGB"),
    "rgba": (
        lambda p, a: _save(p, np.dstack([a, np.arange(a.shape[0] * a.shape[1], dtype=np.uint8).reshape(a.shape[:2])])),
        "RGBA",
    ),
    "la": (lambda p, a: _save(p, np.dstack([a[..., 0], a[..., 1]]), "LA"), "LA"),
    "gray": (lambda p, a: _save(p, a[..., 0]), "L"),
    "bilevel": (lambda p, a: _save(p, a[..., 0], "1"), "L"),
    "rgb-icc": (lambda p, a: _save(p, a, icc_profile=b"fake profile bytes"), "RGB"),
}


def _as_unit(picture: Image.Image) -> np.ndarray:
    """Colours in [0, 1] as (H, W, C), alpha dropped; 16-bit at its own scale."""
    if picture.mode.startswith("I"):
        return np.array(picture).astype(np.float64)[..., None] / 65535
    rgb = picture.convert("RGB") if picture.mode not in ("L", "LA") else picture.convert("L")
    array = np.array(rgb).astype(np.float64) / 255
    return array[..., None] if array.ndim == 2 else array


@pytest.mark.parametrize("mode", list(MODES), ids=list(MODES))
def test_every_mode_is_read_as_it_is_and_written_back_within_the_budget(tmp_path, mode):
    make, written_mode = MODES[mode]
    folder = tmp_path / "in"
    folder.mkdir()
    make(folder / "x.png", np.asarray(image(16, 16).numpy().transpose(1, 2, 0)))
    path = next(folder.iterdir())
    source = read_image_file(path)
    config = ProtectConfig(eps=8, steps=4, evaluate=False)
    results = protect(PatchVAE(channels=source.pixels.shape[0]), {"x": source.pixels}, config, progress=False)
    write_protection(results, tmp_path / "out", config, sources={"x": source})
    with Image.open(path) as original, Image.open(tmp_path / "out" / "x.png") as written:
        assert written.mode == written_mode
        change = np.abs(_as_unit(written) - _as_unit(original))
        assert change.max() <= 8 / 255 + 1e-9 and change.max() > 0
        if "A" in original.mode or "transparency" in original.info:
            assert np.array_equal(np.array(written)[..., -1], np.array(original.convert(written_mode))[..., -1])
        if mode == "rgb-icc":
            assert written.info.get("icc_profile") == b"fake profile bytes"


def test_sixteen_bit_gray_keeps_its_low_bits_and_the_budget(tmp_path):
    """The issue's case: 254/255 off with an 8/255 budget, because 16 bits were clipped to 8."""
    values = ((np.arange(16 * 16).reshape(16, 16) * 251 + 7) % 65536).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    source = read_image_file(tmp_path / "deep.png")
    assert source.deep is not None and int(source.pixels.max()) > 200  # scaled, not clipped to 255
    config = ProtectConfig(eps=8, steps=4, evaluate=False)
    results = protect(PatchVAE(channels=1), {"deep.png": source.pixels}, config, progress=False)
    write_protection(results, tmp_path / "out", config, sources={"deep.png": source})
    written = np.array(Image.open(tmp_path / "out" / "deep.png")).astype(np.int64)
    delta = written - values
    inside = (written > 0) & (written < 65535)  # not clipped at the ends of the range
    assert np.abs(delta).max() <= 8 * 257 and np.all(delta[inside] % 257 == 0)  # whole 8-bit steps, 16-bit scale
    unchanged = delta == 0
    assert np.array_equal(written[unchanged] % 257, values[unchanged] % 257)  # the low bits are the original's


def test_gray_image_and_colour_model_keep_the_image_gray(tmp_path):
    x = image(16, 16, 1)
    p = protect_image(PatchVAE(channels=3), x, ProtectConfig(eps=8, steps=6, evaluate=False))
    assert p.image.shape == (1, 16, 16) and (p.image.int() - x.int()).abs().max() <= 8
    q = protect_image(PatchVAE(channels=1), image(16, 16), ProtectConfig(eps=8, steps=6, evaluate=False))
    assert q.image.shape == (3, 16, 16) and q.distance_after < q.distance_before


# -- the fractional mask --------------------------------------------------------------------------------
def test_a_fractional_mask_weights_the_budget_once(tmp_path):
    model = PatchVAE()
    x, target = torch.rand(1, 3, 16, 16), torch.full((1, 3, 16, 16), 0.5)
    eps = 16 / 255
    weight = torch.full((1, 1, 16, 16), 0.5)
    weight[..., :4] = 0.0
    adv = TargetedAttack(model, eps, "linf", "latent", steps=30, random_start=True, mask=weight)(x, target)
    delta = (adv - x).abs()  # (1, 3, 16, 16)
    assert delta[..., :4].max() == 0
    assert delta.max() <= 0.5 * eps + 1e-6
    # under repeated projection the old mask shrank the perturbation to eps * 0.5 ** steps
    assert delta[..., 4:].mean() > 0.25 * eps


def test_protect_with_a_gray_mask_spends_a_share_of_eps(tmp_path):
    x = image(16, 16)
    mask = torch.ones(16, 16)
    mask[:8] = 0.5
    mask[:, :3] = 0.0
    p = protect_image(PatchVAE(), x, ProtectConfig(eps=8, steps=10, evaluate=False), mask=mask)
    change = (p.image.int() - x.int()).abs()  # (3, 16, 16)
    assert change[:, :, :3].max() == 0 and change[:, :8, 3:].max() <= 4 and change[:, 8:, 3:].max() <= 8
    assert change[:, :8, 3:].max() > 0
    with pytest.raises(VaelensError, match="must lie in"):
        protect_image(PatchVAE(), x, ProtectConfig(eps=8, steps=2), mask=torch.full((16, 16), 2.0))


# -- network waits ---------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_server():
    """A TCP server that accepts and never answers: a port where something that is not Ray listens."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    stop, held = threading.Event(), []

    def serve() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("garbage", "not an address of the form HOST:PORT"),
        ("host:port", "not an address"),
        ("host:70000", "not an address"),
        ("{free}", "nothing listens on port"),
        ("ray://{free}", "nothing listens on port"),
        ("nohost.invalid:6379", "the host nohost.invalid is unknown"),
        ("{silent}", "gives no gRPC answer within 1 s"),
    ],
)
def test_an_address_that_does_not_answer_fails_fast_in_one_line(silent_server, monkeypatch, address, message):
    monkeypatch.setenv("VAELENS_NETWORK_TIMEOUT", "1")
    address = address.replace("{free}", f"127.0.0.1:{_free_port()}").replace("{silent}", silent_server)
    with pytest.raises(VaelensError) as info:
        check_reachable(address, "the Ray cluster", "check it", grpc=True)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_network_timeout_is_one_setting(monkeypatch):
    monkeypatch.delenv("VAELENS_NETWORK_TIMEOUT", raising=False)
    assert network_timeout() == 10.0
    monkeypatch.setenv("VAELENS_NETWORK_TIMEOUT", "2.5")
    assert network_timeout() == 2.5
    for bad in ("0", "-1", "nan", "soon"):
        monkeypatch.setenv("VAELENS_NETWORK_TIMEOUT", bad)
        with pytest.raises(VaelensError, match="positive number of seconds"):
            network_timeout()
    monkeypatch.setenv("VAELENS_NETWORK_TIMEOUT", "7")
    monkeypatch.delenv("HF_HUB_DOWNLOAD_TIMEOUT", raising=False)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "30")  # the user's own setting wins
    bound_hub_waits()
    assert os.environ["HF_HUB_DOWNLOAD_TIMEOUT"] == "7" and os.environ["HF_HUB_ETAG_TIMEOUT"] == "30"
    assert split_address("ray://[::1]:10001") == ("::1", 10001)
    assert split_address("ray://head") == ("head", 10001) and split_address("head:6379") == ("head", 6379)


# -- a refused sweep claims nothing ----------------------------------------------------------------------
SWEEP = ["sweep", "--dataset", "digits", "--epochs", "1", "--n", "4", "--latent-dim", "2", "--betas", "1", "--quiet"]
SWEEP_CASES = [
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--dataset", "folder:missing"], "does not exist"),
    (["--executor", "ray", "--device", "cuda"], "needs GPUs per unit"),
    (["--executor", "ray", "--ray-address", "{free}"], "nothing listens on port"),
    (["--executor", "ray", "--ray-address", "ray://{free}"], "nothing listens on port"),
    (["--executor", "ray", "--ray-address", "nohost.invalid:6379"], "is unknown"),
    (["--executor", "ray", "--ray-address", "garbage"], "not an address"),
    (["--executor", "ray", "--ray-address", "{silent}"], "no gRPC answer"),
    (["--executor", "nope"], "unknown executor"),
]
if not torch.cuda.is_available():
    SWEEP_CASES.append((["--device", "cuda"], "CUDA is not available"))


@pytest.mark.parametrize(("extra", "message"), SWEEP_CASES, ids=[" ".join(e)[:40] for e, _ in SWEEP_CASES])
def test_a_refused_sweep_claims_nothing(run_cli, tmp_path, silent_server, monkeypatch, extra, message):
    if "ray" in extra:
        pytest.importorskip("ray")
    monkeypatch.setenv("VAELENS_NETWORK_TIMEOUT", "1")
    extra = [a.replace("{free}", f"127.0.0.1:{_free_port()}").replace("{silent}", silent_server) for a in extra]
    out = tmp_path / "sweep"
    stderr = _one_line(*run_cli(*SWEEP, "--out", out, *extra))
    assert message in stderr, stderr
    assert not out.exists()  # the corrected command finds its --out free
    (tmp_path / "mine").mkdir()  # an --out the user made stays, empty
    _one_line(*run_cli(*SWEEP, "--out", tmp_path / "mine", *extra))
    assert (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())


ZOO_CASES = [c for c in SWEEP_CASES if "--ray-address" in c[0]]


@pytest.mark.parametrize(("extra", "message"), ZOO_CASES, ids=[" ".join(e)[:40] for e, _ in ZOO_CASES])
def test_a_zoo_on_an_unreachable_ray_fails_fast_and_claims_nothing(
    run_cli, tmp_path, silent_server, monkeypatch, extra, message
):
    pytest.importorskip("ray")
    monkeypatch.setenv("VAELENS_NETWORK_TIMEOUT", "1")
    extra = [a.replace("{free}", f"127.0.0.1:{_free_port()}").replace("{silent}", silent_server) for a in extra]
    out = tmp_path / "zoo"
    stderr = _one_line(*run_cli("bench", "train-zoo", "--protocol", "tiny", "--out", out, "--quiet", *extra))
    assert message in stderr, stderr
    assert not out.exists()


def test_a_zoo_whose_ray_will_not_start_claims_nothing(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    from vaelens.experiments import _zoo

    def refuse(*_):  # what a Ray that will not start (or a folder not shared) raises once the address answered
        raise VaelensError("cannot start or connect to Ray at head:6379 (...)")

    monkeypatch.setattr(_zoo, "_run_ray", refuse)
    with pytest.raises(VaelensError, match="cannot start or connect"):
        _zoo.train_zoo("tiny", tmp_path / "zoo", executor="ray", progress=False)
    assert not (tmp_path / "zoo").exists()  # the corrected command finds its --out free
    (tmp_path / "mine").mkdir()
    with pytest.raises(VaelensError):
        _zoo.train_zoo("tiny", tmp_path / "mine", executor="ray", progress=False)
    assert (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())


TRAIN = ["train", "--dataset", "digits", "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--quiet"]
OTHER_CASES = [  # refusals after which nothing may be claimed, nor an option silently ignored
    (TRAIN + ["--mixup-target", "x"], "--mixup-target must be mean or sample"),
    (SWEEP + ["--ray-address", "127.0.0.1:1"], "--ray-address is for --executor ray"),
    (["attack", "--model", "python:flat.py:make", "--dataset", "digits", "--targeted", "--n", "1"], "at least 2"),
    (["audit", "--model", "python:encode_fails.py:make", "--dataset", "digits"], "fails on an input of digits"),
    (["compare", "--model", "python:flat.py:make"], "no offline data set's shape"),
    (["compare", "missing_run", "--n", "4"], "does not exist"),
]


@pytest.mark.parametrize(("args", "message"), OTHER_CASES, ids=[" ".join(a[:2]) + f" {m[:20]}" for a, m in OTHER_CASES])
def test_other_refusals_claim_nothing(run_cli, setup, args, message):
    stderr = _one_line(*run_cli(*args, "--out", "out"))
    assert message in stderr, stderr
    assert not (setup / "out").exists()


# -- damaged model folders -------------------------------------------------------------------------------
def _pythae_folder(root: Path) -> Path:
    models = pytest.importorskip("pythae.models")
    torch.manual_seed(0)
    config = models.VAEConfig(input_dim=(1, 28, 28), latent_dim=4)
    models.VAE(config).save(str(root / "ok"))
    from pythae.models.nn.benchmarks.mnist import Decoder_ResNet_AE_MNIST, Encoder_ResNet_VAE_MNIST

    custom = models.VAE(config, encoder=Encoder_ResNet_VAE_MNIST(config), decoder=Decoder_ResNet_AE_MNIST(config))
    custom.save(str(root / "custom"))  # custom networks: pickled
    return root / "ok"


def _edit_json(path: Path, **changes) -> None:
    import json

    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


PYTHAE_DAMAGE = {
    "garbage weights": (lambda f: (f / "model.pt").write_bytes(b"garbage"), "is damaged or not a torch weights file"),
    "truncated weights": (lambda f: (f / "model.pt").write_bytes((f / "model.pt").read_bytes()[:300]), "is damaged"),
    "no weights": (lambda f: (f / "model.pt").unlink(), "holds no model.pt"),
    "weights without state": (lambda f: torch.save({"x": 1}, f / "model.pt"), "holds no model_state_dict"),
    "config not json": (lambda f: (f / "model_config.json").write_text("{"), "is not a pythae model config"),
    "config a list": (lambda f: (f / "model_config.json").write_text("[1]"), "is not a pythae model config"),
    "config unknown model": (lambda f: _edit_json(f / "model_config.json", name="NopeConfig"), "unknown pythae model"),
    "config wrong type": (lambda f: _edit_json(f / "model_config.json", latent_dim="x"), "ValidationError"),
    "config other size": (lambda f: _edit_json(f / "model_config.json", latent_dim=7), "size mismatch"),
    "garbage pickle": (lambda f: (f / "encoder.pkl").write_bytes(b"garbage"), "cannot load the pythae model"),
}


@pytest.mark.slow  # importing pythae takes seconds
def test_damaged_pythae_folders_are_one_line(tmp_path):
    import shutil

    from vaelens.experiments import load_model

    good = _pythae_folder(tmp_path)
    for case, (damage, message) in PYTHAE_DAMAGE.items():
        folder = tmp_path / case.replace(" ", "_")
        shutil.copytree(tmp_path / "custom" if "pickle" in case else good, folder)
        damage(folder)
        with pytest.raises(VaelensError) as info:
            load_model(f"pythae:{folder}", allow_pickle=True)
            pytest.fail(f"{case}: loaded")
        assert message in str(info.value) and str(folder) in str(info.value), (case, str(info.value))
        assert "\n" not in str(info.value)


DIFFUSERS_DAMAGE = {
    "garbage weights": (lambda f: (f / "diffusion_pytorch_model.safetensors").write_bytes(b"garbage"), "cannot load"),
    "truncated weights": (
        lambda f: (f / "diffusion_pytorch_model.safetensors").write_bytes(
            (f / "diffusion_pytorch_model.safetensors").read_bytes()[:2000]
        ),
        "cannot load",
    ),
    "no weights": (lambda f: (f / "diffusion_pytorch_model.safetensors").unlink(), "holds no weights"),
    "config wrong type": (lambda f: _edit_json(f / "config.json", block_out_channels="x"), "cannot load"),
    "config other size": (lambda f: _edit_json(f / "config.json", latent_channels=8), "size mismatch"),
    "config bad groups": (lambda f: _edit_json(f / "config.json", norm_num_groups=5), "cannot load"),
    "config a list": (lambda f: (f / "config.json").write_text("[1]"), "is a unnamed model"),
    "config not json": (lambda f: (f / "config.json").write_text("{"), "is not valid JSON"),
}


@pytest.mark.slow  # importing diffusers takes seconds
def test_damaged_diffusers_folders_are_one_line(tmp_path):
    import shutil

    diffusers = pytest.importorskip("diffusers")
    from vaelens.experiments import load_model

    torch.manual_seed(0)
    blocks = ("DownEncoderBlock2D",) * 2
    vae = diffusers.AutoencoderKL(block_out_channels=(16, 16), down_block_types=blocks, latent_channels=4,
                                  up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=16)  # fmt: skip
    vae.save_pretrained(tmp_path / "ok")
    for case, (damage, message) in DIFFUSERS_DAMAGE.items():
        folder = tmp_path / case.replace(" ", "_")
        shutil.copytree(tmp_path / "ok", folder)
        damage(folder)
        with pytest.raises(VaelensError) as info:
            load_model(f"diffusers:{folder}")
        assert message in str(info.value) and "\n" not in str(info.value), (case, str(info.value))


# -- the user's path: the real console script, nothing pre-imported ---------------------------------------
def _processes_with(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.mark.slow  # two fresh processes start vaelens (seconds each)
def test_console_script_protect_and_ray_address_fail_fast_and_leave_nothing(tmp_path):
    pytest.importorskip("ray")
    (tmp_path / "images").mkdir()
    Image.fromarray(image(16, 16).numpy().transpose(1, 2, 0)).save(tmp_path / "images" / "a.png")
    (tmp_path / "tinyvae.py").write_text(MODEL_FILE)
    token = f"vaelens-test-{uuid.uuid4().hex}"
    env = {**os.environ, "VAELENS_TEST_TOKEN": token, "VAELENS_NETWORK_TIMEOUT": "2"}
    script = str(Path(sys.executable).parent / "vaelens")
    protect_args = [script, "protect", "--model", "python:tinyvae.py:make", "--images", "images", "--out", "images"]
    done = subprocess.run([*protect_args, "--overwrite", "--quiet"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2 and "never writes where the originals are" in done.stderr, done.stderr
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["a.png"]
    address = f"127.0.0.1:{_free_port()}"
    sweep = [script, *SWEEP, "--out", "s", "--executor", "ray", "--ray-address", address]
    done = subprocess.run(sweep, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and f"cannot reach the Ray cluster at {address}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "s").exists()
    assert _processes_with(token) == []  # no Ray process (nor anything else) left behind


def test_the_table_is_large_enough():
    cases = len(OUT_CASES) + len(BROKEN_FACTORIES) + len(MODES) + len(SWEEP_CASES) + len(OTHER_CASES) + 7
    assert cases + len(PYTHAE_DAMAGE) + len(DIFFUSERS_DAMAGE) >= 60
