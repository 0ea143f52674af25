import struct
from urllib.error import URLError

import numpy as np
import pytest
import torch

import vaelens
from vaelens.data import TensorImageDataset, load_dataset, sample_shape, take


def _check_images(ds, n, shape):
    x, y = take(ds)
    assert len(ds) == n and x.shape == (n, *shape)
    assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    assert y.dtype == torch.long
    image, label = ds[0]
    assert image.shape == shape and isinstance(label, int)


def test_mnist_5k_offline():
    train, test = load_dataset("mnist-5k", "train"), load_dataset("mnist-5k", "test")
    _check_images(train, 4000, (1, 28, 28))
    _check_images(test, 1000, (1, 28, 28))
    assert train.images.max() == 1.0  # real 8-bit images, scaled by 255
    assert set(test.labels.tolist()) == set(range(10))
    # deterministic, disjoint split
    again = load_dataset("mnist-5k", "test")
    assert torch.equal(again.images, test.images)
    flat_train = {tuple(r.tolist()) for r in train.images.flatten(1)[:, ::7][:500]}
    assert not any(tuple(r.tolist()) in flat_train for r in test.images.flatten(1)[:, ::7])


def test_digits_offline():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    _check_images(train, 1437, (1, 8, 8))
    _check_images(test, 360, (1, 8, 8))
    assert sample_shape(train) == (1, 8, 8)


def _write_idx(path, array: np.ndarray, magic: int):
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic))
        for s in array.shape:
            f.write(struct.pack(">I", s))
        f.write(array.astype(np.uint8).tobytes())


def test_torchvision_mnist_from_idx_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), 0x803)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n), 0x801)
    train = load_dataset("mnist", "train", root=tmp_path)
    assert isinstance(train, TensorImageDataset)
    _check_images(train, 12, (1, 28, 28))
    _check_images(load_dataset("mnist", "test", root=tmp_path), 5, (1, 28, 28))


def test_cifar_shape_is_channels_first(tmp_path, monkeypatch):
    from torchvision import datasets

    class FakeCIFAR:
        def __init__(self, root, train, download):
            self.data = np.zeros((3, 32, 32, 3), dtype=np.uint8)
            self.data[..., 0] = 255  # red channel
            self.targets = [0, 1, 2]

    monkeypatch.setattr(datasets, "CIFAR10", FakeCIFAR)
    ds = load_dataset("cifar10", "train", root=tmp_path)
    assert ds.images.shape == (3, 3, 32, 32)
    assert ds.images[:, 0].min() == 1 and ds.images[:, 1:].max() == 0


def test_failed_download_is_one_line_error(tmp_path, monkeypatch):
    from torchvision.datasets import mnist

    def no_network(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(mnist, "download_and_extract_archive", no_network)
    with pytest.raises(vaelens.VaelensError) as info:
        load_dataset("fashion-mnist", "train", root=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert "mnist-5k" in message and "digits" in message and "FashionMNIST" in message


def _write_pngs(folder, n, size=(20, 12), mode="RGB"):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new(mode, size, color=(i * 20 % 255, 0, 0) if mode == "RGB" else i).save(folder / f"{i}.png")


def test_folder_dataset(tmp_path):
    _write_pngs(tmp_path / "imgs" / "cats", 6)
    _write_pngs(tmp_path / "imgs" / "dogs", 4)
    name = f"folder:{tmp_path / 'imgs'}"
    train = load_dataset(name, "train", image_size=16)
    test = load_dataset(name, "test", image_size=16)
    assert len(train) + len(test) == 10 and len(test) == 1
    _check_images(train, 9, (3, 16, 16))
    assert set(take(train)[1].tolist()) == {0, 1}
    grey = load_dataset(name, "train", image_size=8, channels=1)
    assert grey[0][0].shape == (1, 8, 8)


def test_celeba_from_local_folder(tmp_path):
    _write_pngs(tmp_path / "celeba" / "img_align_celeba", 10, size=(178, 218))
    ds = load_dataset("celeba", "train", root=tmp_path)
    _check_images(ds, 9, (3, 64, 64))


def test_unreadable_image_is_a_clear_error(tmp_path):
    _write_pngs(tmp_path / "imgs", 3)
    (tmp_path / "imgs" / "0.png").write_bytes(b"not a png")
    ds = load_dataset(f"folder:{tmp_path / 'imgs'}", "train", image_size=8)
    with pytest.raises(vaelens.VaelensError, match="cannot read image"):
        take(ds)


@pytest.mark.parametrize(
    "name, split, match",
    [
        ("imagenet", "train", "unknown data set"),
        ("digits", "valid", "split must be"),
        ("folder:/definitely/not/here", "train", "does not exist"),
    ],
)
def test_bad_dataset_requests(name, split, match):
    with pytest.raises(vaelens.VaelensError, match=match):
        load_dataset(name, split)


def test_tensor_dataset_checks_its_arguments():
    with pytest.raises(vaelens.VaelensError, match=r"images must be a tensor of shape \(N, C, H, W\)"):
        TensorImageDataset(torch.rand(4, 8, 8), torch.zeros(4))
    with pytest.raises(vaelens.VaelensError, match=r"labels must be a tensor of shape \(4,\)"):
        TensorImageDataset(torch.rand(4, 1, 8, 8), torch.zeros(3))
