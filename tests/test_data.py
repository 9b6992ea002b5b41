"""Dataset readers: every format written tiny in tmp_path and read back; error paths give DataError."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imagegen.data import DATASETS, DataError, ImageData, available_datasets, binarize, load_dataset
from imagegen.data import download as dl
from imagegen.data.dataset import carve_val

RNG = np.random.default_rng(0)


def _pixels(*shape: int) -> np.ndarray:
    return RNG.integers(0, 256, size=shape, dtype=np.uint8)


def _write_idx(path: Path, array: np.ndarray, magic: int, gz: bool) -> None:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def _write_mnist_idx(directory: Path, gz: bool, n: int = 5) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x, y = _pixels(n, 28, 28), RNG.integers(0, 10, n).astype(np.uint8)
        _write_idx(directory / f"{prefix}-images-idx3-ubyte", x, 2051, gz)
        _write_idx(directory / f"{prefix}-labels-idx1-ubyte", y, 2049, gz)
        out[split] = (x, y)
    return out


def _check(data: ImageData, x_nchw: np.ndarray, y: np.ndarray | None, levels: int = 256) -> None:
    assert isinstance(data, ImageData)
    assert data.images.dtype == torch.uint8 and data.images.shape == x_nchw.shape
    assert np.array_equal(data.images.numpy(), x_nchw)
    assert data.levels == levels and len(data) == len(x_nchw)
    assert data.channels == x_nchw.shape[1] and data.image_size == x_nchw.shape[2]
    assert data.shape == x_nchw.shape[1:]
    if y is None:
        assert data.labels is None and data.num_classes is None
    else:
        assert data.labels.dtype == torch.int64
        assert np.array_equal(data.labels.numpy(), y)


def _raises(match_path: Path | str, fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert str(match_path) in msg, msg
    return msg


# --- MNIST -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx(tmp_path, gz):
    ref = _write_mnist_idx(tmp_path, gz)
    for split in ("train", "test"):
        x, y = ref[split]
        data = load_dataset("mnist", tmp_path, split)
        _check(data, x[:, None], y.astype(np.int64))
        assert data.num_classes == 10
    # naming one of the IDX files reads the set from its folder
    one = next(tmp_path.glob("train-images*"))
    _check(load_dataset("mnist", one, "test"), ref["test"][0][:, None], ref["test"][1].astype(np.int64))


def test_mnist_npz_and_root(tmp_path):
    x_tr, x_te = _pixels(4, 28, 28), _pixels(3, 28, 28)
    y_tr, y_te = np.array([0, 9, 3, 4], np.uint8), np.array([7, 1, 2], np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    _check(load_dataset("mnist", tmp_path / "mnist.npz", "test"), x_te[:, None], y_te.astype(np.int64))
    # path=None looks in root; a directory holding mnist.npz works too
    _check(load_dataset("mnist", root=str(tmp_path)), x_tr[:, None], y_tr.astype(np.int64))


def test_binarized_mnist(tmp_path):
    x, y = _write_mnist_idx(tmp_path, gz=True)["train"]
    data = load_dataset("binarized_mnist", tmp_path)
    _check(data, (x[:, None] > 127).astype(np.uint8), y.astype(np.int64), levels=2)
    same = load_dataset("mnist", tmp_path, binarize="threshold")
    assert torch.equal(same.images, data.images) and same.levels == 2
    s1 = load_dataset("binarized_mnist", tmp_path, binarize="stochastic")
    s2 = load_dataset("mnist", tmp_path, binarize="stochastic")
    assert torch.equal(s1.images, s2.images) and s1.levels == 2
    assert set(s1.images.unique().tolist()) <= {0, 1}


def test_binarize():
    images = torch.tensor([[0, 127, 128, 255]], dtype=torch.uint8)
    assert binarize(images, "threshold").tolist() == [[0, 0, 1, 1]]
    p = torch.full((200, 1, 16, 16), 64, dtype=torch.uint8)
    a = binarize(p, "stochastic", torch.Generator().manual_seed(3))
    b = binarize(p, "stochastic", torch.Generator().manual_seed(3))
    assert a.dtype == torch.uint8 and a.shape == p.shape and torch.equal(a, b)
    assert abs(a.float().mean().item() - 64 / 255) < 0.01
    ends = binarize(torch.tensor([0, 255] * 100, dtype=torch.uint8), "stochastic")
    assert ends.tolist() == [0, 1] * 100
    with pytest.raises(DataError):
        binarize(images, "median")


# --- CIFAR-10 --------------------------------------------------------------------------------------


def _cifar_batch(path: Path, x_nchw: np.ndarray, labels: list[int]) -> None:
    # As the official files: a protocol-2 pickled dict with bytes keys, data (N, 3072), labels a list.
    batch = {
        b"batch_label": b"tiny batch",
        b"labels": labels,
        b"data": x_nchw.reshape(len(x_nchw), -1),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


def _write_cifar_batches(directory: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    directory.mkdir(parents=True)
    xs, ys = [], []
    for i in range(1, 6):
        x, y = _pixels(2, 3, 32, 32), [i % 10, (i + 3) % 10]
        _cifar_batch(directory / f"data_batch_{i}", x, y)
        xs.append(x)
        ys += y
    x_te, y_te = _pixels(3, 3, 32, 32), [9, 0, 5]
    _cifar_batch(directory / "test_batch", x_te, y_te)
    return {"train": (np.concatenate(xs), np.array(ys)), "test": (x_te, np.array(y_te))}


def test_cifar_python_batches(tmp_path):
    ref = _write_cifar_batches(tmp_path / "cifar-10-batches-py")
    for split in ("train", "test"):
        # both the batches folder itself and its parent are accepted
        _check(load_dataset("cifar10", tmp_path / "cifar-10-batches-py", split, val_size=0), *ref[split])
        _check(load_dataset("cifar10", tmp_path, split, val_size=0), *ref[split])


def test_cifar_batch_refuses_foreign_pickles(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    _write_cifar_batches(d)
    (d / "test_batch").write_bytes(pickle.dumps({b"data": Path("x"), b"labels": []}))
    _raises(d / "test_batch", load_dataset, "cifar10", d, "test")


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_cifar_npz_arrays(tmp_path, layout):
    x_tr, x_te = _pixels(4, 3, 32, 32), _pixels(2, 3, 32, 32)
    y_tr, y_te = np.array([1, 2, 3, 9]), np.array([0, 5])
    stored = (lambda x: x.transpose(0, 2, 3, 1)) if layout == "nhwc" else (lambda x: x)
    np.savez(tmp_path / "c.npz", x_train=stored(x_tr), y_train=y_tr, x_test=stored(x_te), y_test=y_te)
    _check(load_dataset("cifar10", tmp_path / "c.npz", "train"), x_tr, y_tr)
    _check(load_dataset("cifar10", tmp_path / "c.npz", "test"), x_te, y_te)


def test_cifar_npz_jpeg(tmp_path):
    # smooth images so that JPEG at quality 100 stays close to the original
    ramp = np.linspace(0, 255, 32, dtype=np.float32)
    x = np.stack(
        [
            np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (32, 1)), np.full((32, 32), 40.0 * k)], -1)
            for k in range(3)
        ]
    ).astype(np.uint8)
    blobs = []
    for img in x:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=100, subsampling=0)
        blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    jpeg = np.concatenate(blobs)
    y = np.array([3, 1, 4], np.uint8)
    np.savez(
        tmp_path / "cifar10_jpeg.npz",
        jpeg_train=jpeg,
        offsets_train=offsets,
        y_train=y,
        jpeg_test=jpeg[: offsets[1]],
        offsets_test=offsets[:2],
        y_test=y[:1],
    )
    data = load_dataset("cifar10", tmp_path, "train")  # found by name in the directory
    assert data.images.shape == (3, 3, 32, 32) and data.images.dtype == torch.uint8
    diff = np.abs(data.images.numpy().astype(int) - x.transpose(0, 3, 1, 2).astype(int))
    assert diff.mean() < 2 and diff.max() < 12
    assert data.labels.tolist() == [3, 1, 4]
    assert len(load_dataset("cifar10", tmp_path / "cifar10_jpeg.npz", "test")) == 1
    # a damaged JPEG stream is reported with the file
    bad = jpeg.copy()
    bad[offsets[1] : offsets[1] + 40] = 0
    np.savez(tmp_path / "bad.npz", jpeg_train=bad, offsets_train=offsets, y_train=y)
    assert "image 1" in _raises(tmp_path / "bad.npz", load_dataset, "cifar10", tmp_path / "bad.npz")


# --- ImageNet --------------------------------------------------------------------------------------


def _imagenet_npz(path: Path, x_nchw: np.ndarray, labels_1based: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, data=x_nchw.reshape(len(x_nchw), -1), labels=labels_1based, mean=np.zeros(3))


def test_imagenet32(tmp_path):
    x1, x2, xv = _pixels(2, 3, 32, 32), _pixels(3, 3, 32, 32), _pixels(2, 3, 32, 32)
    x1[0, 0], x1[0, 1], x1[0, 2] = 200, 10, 0  # R plane distinct: channel-planar layout
    base = tmp_path / "imagenet"
    _imagenet_npz(base / "Imagenet32_train_npz" / "train_data_batch_1.npz", x1, np.array([1, 1000]))
    _imagenet_npz(base / "Imagenet32_train_npz" / "train_data_batch_2.npz", x2, np.array([5, 6, 7]))
    _imagenet_npz(base / "Imagenet32_val_npz" / "val_data.npz", xv, np.array([1000, 2]))
    with pytest.warns(UserWarning, match="train batches"):
        data = load_dataset("imagenet32", base, "train", val_size=0)
    _check(data, np.concatenate([x1, x2]), np.array([0, 999, 4, 5, 6]))
    assert data.num_classes == 1000
    assert (data.images[0, 0] == 200).all() and (data.images[0, 1] == 10).all()
    # the official validation files are the test split, as the papers report them
    _check(load_dataset("imagenet32", base, "test"), xv, np.array([999, 1]))
    single = load_dataset("imagenet32", base / "Imagenet32_val_npz" / "val_data.npz", "test")
    _check(single, xv, np.array([999, 1]))
    # the 32x32 files under the imagenet64 name: a clear error
    assert "imagenet32" in _raises(base, load_dataset, "imagenet64", base, "test")


def test_imagenet_download_is_manual(tmp_path):
    assert "image-net.org" in _raises(tmp_path, load_dataset, "imagenet64", root=tmp_path, download=True)


# --- folder ----------------------------------------------------------------------------------------


def test_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, 10:30] = (255, 0, 0)  # the centre 20x20 square is pure red, the sides black
    Image.fromarray(wide).save(tmp_path / "a.png")
    Image.fromarray(np.full((4, 4), 77, np.uint8)).save(tmp_path / "sub" / "b.PNG")  # grayscale, upsized
    Image.fromarray(_pixels(30, 10, 3)).save(tmp_path / "c.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "._a.png").write_bytes(b"macOS metadata, hidden")
    data = load_dataset("folder", tmp_path, image_size=8)
    assert data.images.shape == (3, 3, 8, 8) and data.labels is None and data.num_classes is None
    assert data.levels == 256
    red = data.images[0]  # a.png: center crop keeps only red
    assert (red[0] == 255).all() and (red[1:] == 0).all()
    assert (data.images[2] == 77).all()  # sorted by path: a.png, c.jpg, sub/b.PNG
    gray = load_dataset("folder", tmp_path, image_size=8, channels=1)
    assert gray.images.shape == (3, 1, 8, 8) and gray.channels == 1
    assert abs(int(gray.images[0].float().mean()) - 76) <= 1  # L of pure red is 76


def test_folder_errors(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "ok.png")
    _raises(tmp_path, load_dataset, "folder", tmp_path)  # no image_size
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    _raises(tmp_path / "broken.png", load_dataset, "folder", tmp_path, image_size=4)
    _raises(tmp_path / "empty", load_dataset, "folder", tmp_path / "empty", image_size=4)
    _raises(tmp_path, load_dataset, "folder", tmp_path, image_size=0)
    _raises(tmp_path, load_dataset, "folder", tmp_path, image_size=4, channels=2)


# --- fixed sizes, splits, names --------------------------------------------------------------------


def test_image_size_resizes_fixed_datasets(tmp_path):
    _write_mnist_idx(tmp_path, gz=False)
    data = load_dataset("mnist", tmp_path, "test", image_size=14)
    assert data.images.shape == (5, 1, 14, 14) and data.images.dtype == torch.uint8
    _raises(tmp_path, load_dataset, "mnist", tmp_path, channels=3)


def test_errors_are_one_line_and_name_the_path(tmp_path):
    missing = tmp_path / "nowhere.npz"
    _raises(missing, load_dataset, "mnist", missing)
    _raises(tmp_path / "nodir", load_dataset, "cifar10", tmp_path / "nodir")
    # empty root and no download: says what to put where
    msg = _raises(tmp_path, load_dataset, "mnist", root=tmp_path)
    assert "t10k-images-idx3-ubyte" in msg and "--download" in msg
    # a folder missing one file names that file
    _write_mnist_idx(tmp_path / "m", gz=True)
    (tmp_path / "m" / "t10k-labels-idx1-ubyte.gz").unlink()
    assert "t10k-labels-idx1-ubyte" in _raises(tmp_path / "m", load_dataset, "mnist", tmp_path / "m", "test")
    cifar = tmp_path / "cifar-10-batches-py"
    _write_cifar_batches(cifar)
    (cifar / "data_batch_3").unlink()
    assert "data_batch_3" in _raises(cifar, load_dataset, "cifar10", cifar)
    # corrupt npz, and a truncated one
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 this is not really a zip")
    _raises(tmp_path / "corrupt.npz", load_dataset, "mnist", tmp_path / "corrupt.npz")
    np.savez(tmp_path / "t.npz", x_train=_pixels(50, 28, 28), y_train=np.zeros(50, np.uint8))
    (tmp_path / "t.npz").write_bytes((tmp_path / "t.npz").read_bytes()[:1000])
    _raises(tmp_path / "t.npz", load_dataset, "mnist", tmp_path / "t.npz")
    # an npz with the wrong arrays
    np.savez(tmp_path / "w.npz", images=_pixels(2, 28, 28))
    assert "x_train" in _raises(tmp_path / "w.npz", load_dataset, "mnist", tmp_path / "w.npz")
    # wrong IDX magic: a labels file where the images belong
    _write_mnist_idx(tmp_path / "magic", gz=False)
    images = tmp_path / "magic" / "train-images-idx3-ubyte"
    images.write_bytes((tmp_path / "magic" / "train-labels-idx1-ubyte").read_bytes())
    assert "2051" in _raises(images, load_dataset, "mnist", tmp_path / "magic")
    # unknown split, unknown name
    assert "'dev'" in _raises(tmp_path / "m", load_dataset, "mnist", tmp_path / "m", "dev")
    _raises(tmp_path / "m", load_dataset, "mnist", tmp_path / "m", "dev")  # no such split
    assert "cifar10" in _raises(tmp_path, load_dataset, "svhn", tmp_path)


def test_available_datasets():
    names = ["mnist", "binarized_mnist", "cifar10", "imagenet32", "imagenet64", "celeba", "folder"]
    assert available_datasets() == names


# --- downloads (never touching the network) --------------------------------------------------------


class _FakeResponse(io.BytesIO):
    pass


def _serve(monkeypatch, files: dict[str, bytes]) -> list[str]:
    requested = []

    def urlopen(url, timeout=None):
        assert timeout is not None
        requested.append(url)
        if url not in files:
            raise urllib.request.URLError("no network in tests")
        return _FakeResponse(files[url])

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return requested


def test_download_offline(tmp_path, monkeypatch):
    _serve(monkeypatch, {})
    msg = _raises(tmp_path, load_dataset, "mnist", root=tmp_path, download=True)
    assert dl.MNIST_URL in msg and "train-images-idx3-ubyte.gz" in msg
    msg = _raises(tmp_path, load_dataset, "cifar10", root=tmp_path, download=True)
    assert dl.CIFAR10_URL in msg and "cifar-10-batches-py" in msg
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_download_mnist_checks_md5(tmp_path, monkeypatch):
    src = tmp_path / "src"
    ref = _write_mnist_idx(src, gz=True)
    blobs = {dl.MNIST_URL + name: (src / name).read_bytes() for name in dl.MNIST_MD5}
    requested = _serve(monkeypatch, blobs)
    root = tmp_path / "root"
    # the real checksums do not match the fake files: refused, nothing kept
    assert "md5" in _raises(dl.MNIST_URL, load_dataset, "mnist", root=root, download=True)
    assert list(root.iterdir()) == []
    import hashlib

    md5 = {name: hashlib.md5(blobs[dl.MNIST_URL + name]).hexdigest() for name in dl.MNIST_MD5}
    monkeypatch.setattr(dl, "MNIST_MD5", md5)
    data = load_dataset("binarized_mnist", root=root, split="test", download=True)
    assert torch.equal(data.images, torch.from_numpy(ref["test"][0][:, None] > 127).to(torch.uint8))
    assert sorted(p.name for p in root.iterdir()) == sorted(md5)
    requested.clear()
    load_dataset("mnist", root=root, download=True)  # already there: no download
    assert requested == []


def _tarball(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def test_download_cifar10(tmp_path, monkeypatch):
    import hashlib

    ref = _write_cifar_batches(tmp_path / "src")
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    blob = _tarball({f"cifar-10-batches-py/{n}": (tmp_path / "src" / n).read_bytes() for n in names})
    _serve(monkeypatch, {dl.CIFAR10_URL: blob})
    monkeypatch.setattr(dl, "CIFAR10_MD5", hashlib.md5(blob).hexdigest())
    root = tmp_path / "root"
    _check(load_dataset("cifar10", root=root, split="test", download=True), *ref["test"])
    assert [p.name for p in root.iterdir()] == ["cifar-10-batches-py"]
    # an archive reaching outside its folder is refused
    evil = _tarball({"cifar-10-batches-py/../../evil": b"x"})
    _serve(monkeypatch, {dl.CIFAR10_URL: evil})
    monkeypatch.setattr(dl, "CIFAR10_MD5", hashlib.md5(evil).hexdigest())
    _raises("unsafe", load_dataset, "cifar10", root=tmp_path / "root2", download=True)
    assert not (tmp_path / "evil").exists()


def test_celeba_split_by_standard_numbering_or_partition_file(tmp_path):
    from PIL import Image

    faces = tmp_path / "celeba" / "img_align_celeba"
    faces.mkdir(parents=True)
    for number, shade in [(1, 10), (2, 20), (162771, 30), (182638, 40)]:
        Image.new("RGB", (178, 218), (shade, 0, 0)).save(faces / f"{number:06d}.jpg", quality=100)
    train = load_dataset("celeba", tmp_path / "celeba", "train")
    assert train.images.shape == (2, 3, 32, 32) and train.labels is None
    assert abs(int(train.images[1, 0, 16, 16]) - 20) <= 2
    test = load_dataset("celeba", faces, "test", image_size=8)
    assert test.images.shape == (1, 3, 8, 8) and abs(int(test.images[0, 0, 4, 4]) - 40) <= 2
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text(
        "000001.jpg 2\n000002.jpg 0\n162771.jpg 0\n182638.jpg 0\n")
    assert len(load_dataset("celeba", faces, "test").images) == 1
    assert len(load_dataset("celeba", faces, "train").images) == 3
    with pytest.raises(DataError, match="no CelebA images of the val split"):
        load_dataset("celeba", faces, "val")
    with pytest.raises(DataError, match="not found"):
        load_dataset("celeba", tmp_path / "nowhere", "train")


# --- the validation split --------------------------------------------------------------------------


def test_val_is_carved_out_of_train_deterministically_and_never_overlaps(tmp_path):
    from tests.helpers import tiny_mnist

    path = tiny_mnist(tmp_path / "m.npz", n_train=50, n_test=7)
    full = load_dataset("mnist", path, "train", val_size=0)
    train, val = (load_dataset("mnist", path, s, val_size=12) for s in ("train", "val"))
    assert (len(train), len(val), len(load_dataset("mnist", path, "test"))) == (38, 12, 7)
    rows = lambda d: {bytes(x.numpy()) for x in d.images}  # noqa: E731  (tiny_mnist images are distinct)
    assert len(rows(full)) == 50
    assert rows(train) | rows(val) == rows(full) and not rows(train) & rows(val)
    again = load_dataset("mnist", path, "val", val_size=12)
    assert torch.equal(again.images, val.images) and torch.equal(again.labels, val.labels)
    # a random subset, not a contiguous slice (CIFAR-10 copies may be sorted by class)
    first = next(k for k in range(50) if torch.equal(full.images[k], val.images[0]))
    assert not torch.equal(val.images, full.images[first : first + 12])
    # the default: 5,000 for MNIST or a tenth of the training images, whichever is fewer
    assert len(load_dataset("mnist", path, "val")) == 5
    assert "val_size 50" in _raises(path, load_dataset, "mnist", path, "val", val_size=50)


# The carve as it was when the two long MNIST runs started: the first val indices and a hash of all of
# them (sha256 of the int64 indices, first 16 hex digits), of val and of train.
PINNED_CARVES = {
    "mnist": (60_000, [17, 28, 50, 66, 72, 89, 101, 125], "9a6320f589a31db9", "0fd12bb2d600e0bd"),
    "cifar10": (50_000, [14, 22, 24, 28, 64, 76, 84, 91], "7580bdab922dd449", "76f303ae786d764f"),
    "imagenet32": (1_281_167, [139, 416, 455, 593, 802, 804, 902, 1152], "f6523435f54edcb1",
                   "c9c808ce6ced7222"),
}


def _digest(indices: np.ndarray) -> str:
    return hashlib.sha256(indices.astype("<i8").tobytes()).hexdigest()[:16]


def test_the_mnist_val_split_is_the_pinned_one(tmp_path):
    # 60,000 training images whose first three pixels spell their index
    n, first, val_digest, train_digest = PINNED_CARVES["mnist"]
    x = np.zeros((n, 28, 28), np.uint8)
    x[:, 0, :3] = np.stack([np.arange(n) % 256, np.arange(n) // 256 % 256, np.arange(n) // 65536], 1)
    y = np.zeros(n, np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=y, x_test=x[:1], y_test=y[:1])
    index = lambda d: (d.images[:, 0, 0, :3].long() * torch.tensor([1, 256, 65536])).sum(1).numpy()  # noqa: E731
    val, train = (index(load_dataset("mnist", tmp_path / "mnist.npz", s)) for s in ("val", "train"))
    assert val[:8].tolist() == first and (_digest(val), _digest(train)) == (val_digest, train_digest)


@pytest.mark.parametrize("name", ["cifar10", "imagenet32"])
def test_the_default_val_splits_are_the_pinned_ones(name):
    n, first, val_digest, train_digest = PINNED_CARVES[name]
    rows = ImageData(torch.zeros(n, 1, 1, 1, dtype=torch.uint8), torch.arange(n), 256, None)
    val, train = (carve_val(rows, s, None, name, DATASETS[name].val_size).labels.numpy()
                  for s in ("val", "train"))
    assert val[:8].tolist() == first and (_digest(val), _digest(train)) == (val_digest, train_digest)


def _fake_imagenet(base: Path, sizes: list[int], side: int = 32) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for k, n in enumerate(sizes, 1):
        xs.append(_pixels(n, 3, side, side))
        ys.append(RNG.integers(1, 1001, n))
        _imagenet_npz(base / f"Imagenet{side}_train_npz" / f"train_data_batch_{k}.npz", xs[-1], ys[-1])
    _imagenet_npz(base / f"Imagenet{side}_val_npz" / "val_data.npz", xs[0], ys[0])
    return np.concatenate(xs), np.concatenate(ys) - 1


def _mapped_file(t: torch.Tensor) -> str | None:
    """The file whose memory map holds ``t``'s first byte (Linux), else None."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, *rest = line.split()
        lo, hi = (int(v, 16) for v in span.split("-"))
        if lo <= t.data_ptr() < hi and len(rest) == 5:
            return rest[4]
    return None


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux's /proc/self/maps")
def test_imagenet_is_copied_once_into_a_shared_memory_map_carved_as_in_memory(tmp_path, monkeypatch):
    from imagegen.data import memmap

    x, y = _fake_imagenet(tmp_path / "in", [4, 3, 5, 2, 6, 1, 3, 2, 4, 3])
    whole = ImageData(torch.from_numpy(x), torch.from_numpy(y), 256, 1000)
    root = os.path.realpath(os.environ["IMAGEGEN_DATA"])
    for split in ("train", "val"):
        data = load_dataset("imagenet32", tmp_path / "in", split, val_size=5)
        want = carve_val(whole, split, 5, "in memory")
        _check(data, want.images.numpy(), want.labels.numpy())
        mapped = _mapped_file(data.images)  # mapped from the copy in the data root, not read into memory
        assert mapped and mapped.startswith(root) and mapped.endswith("images.npy"), mapped
    converted = []
    monkeypatch.setattr(memmap, "_convert", lambda *args: converted.append(args))
    for split in ("train", "val"):
        load_dataset("imagenet32", tmp_path / "in", split, val_size=5)
    assert converted == []  # made once, then only mapped
