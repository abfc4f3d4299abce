"""CIFAR-10 from its python-pickle files: read safely, from a tarball or a folder, offline."""

from __future__ import annotations

import io
import os
import pickle
import tarfile

import numpy as np
import pytest

from helpers_cifar10 import write_tarball
from layerscope.datasets import cifar10
from layerscope.datasets.cifar10 import DatasetError
from layerscope.errors import UsageError


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_tarball(tmp_path_factory.mktemp("cifar") / cifar10.TARBALL, per_class=2))


def test_reads_tarball_like_the_format_says(tarball: str) -> None:
    img, label, name = cifar10.load_image(3, "test", tarball)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert (label, name) == (3, "cat")
    # The image is the 4th row of test_batch's data: R, G, B planes, row by row.
    with tarfile.open(tarball) as tf:
        raw = pickle.load(tf.extractfile("cifar-10-batches-py/test_batch"), encoding="bytes")  # our own file
    planes = raw[b"data"][3].reshape(3, 32, 32)
    assert np.array_equal(img, planes.transpose(1, 2, 0))


def test_train_split_runs_through_the_five_batches(tarball: str) -> None:
    x, y = cifar10.load_split("train", tarball)
    assert x.shape == (100, 32, 32, 3) and y.shape == (100,)
    assert np.array_equal(cifar10.load_image(45, "train", tarball)[0], x[45])  # in data_batch_3
    assert cifar10.load_split("train", tarball, limit=7)[0].shape[0] == 7


def test_folder_and_parent_folder(tarball: str, tmp_path: os.PathLike[str]) -> None:
    with tarfile.open(tarball) as tf:
        tf.extractall(tmp_path, filter="data")
    a = cifar10.load_image(5, "test", tmp_path)[0]
    b = cifar10.load_image(5, "test", os.path.join(tmp_path, cifar10.FOLDER))[0]
    assert np.array_equal(a, b)
    assert np.array_equal(a, cifar10.load_image(5, "test", tarball)[0])


def test_out_of_range_and_bad_split(tarball: str) -> None:
    with pytest.raises(UsageError, match="out of range: the test split has 20 images"):
        cifar10.load_image(20, "test", tarball)
    with pytest.raises(UsageError, match="split"):
        cifar10.load_image(0, "val", tarball)


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo pwned",))


def _tar_with(tmp_path: os.PathLike[str], name: str, data: bytes) -> str:
    p = os.path.join(tmp_path, "evil.tar.gz")
    with tarfile.open(p, "w:gz") as tf:
        info = tarfile.TarInfo(f"{cifar10.FOLDER}/{name}")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return p


def test_malicious_pickle_is_refused(tmp_path: os.PathLike[str], capfd: pytest.CaptureFixture[str]) -> None:
    p = _tar_with(tmp_path, "test_batch", pickle.dumps({b"data": _Evil(), b"labels": [0]}, protocol=2))
    with pytest.raises(DatasetError, match=r"refused to unpickle .*system"):
        cifar10.load_image(0, "test", p)
    assert "pwned" not in capfd.readouterr().out


def test_wrong_content_named(tmp_path: os.PathLike[str]) -> None:
    p = _tar_with(tmp_path, "test_batch", pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DatasetError, match=r"not a CIFAR-10 batch.*3072"):
        cifar10.load_image(0, "test", p)
    p2 = os.path.join(tmp_path, "garbage.tar.gz")
    with open(p2, "wb") as f:
        f.write(b"not a tarball")
    with pytest.raises(DatasetError, match="not a readable"):
        cifar10.load_image(0, "test", p2)
    with pytest.raises(DatasetError, match="no such file or folder"):
        cifar10.load_image(0, "test", os.path.join(tmp_path, "missing.tar.gz"))


def test_offline_without_files_names_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    def offline(*a: object, **k: object) -> None:
        raise OSError("Name or service not known")

    monkeypatch.setattr(cifar10.urllib.request, "urlopen", offline)
    with pytest.raises(DatasetError) as e:
        cifar10.load_image(0)
    msg = str(e.value)
    assert "\n" not in msg and "--cifar10-path" in msg and cifar10.TARBALL in msg
    assert not any(os.scandir(os.path.join(tmp_path, "layerscope")))  # no partial download left


def test_keras_cache_is_used(monkeypatch: pytest.MonkeyPatch, tarball: str, tmp_path: os.PathLike[str]) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with tarfile.open(tarball) as tf:
        tf.extractall(os.path.join(tmp_path, "datasets", "cifar-10-batches-py-target"), filter="data")
    assert np.array_equal(cifar10.load_image(2, allow_download=False)[0], cifar10.load_image(2, "test", tarball)[0])


def test_download_is_atomic_and_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    cache = os.path.join(tmp_path, "cache")
    os.makedirs(cache)
    stale = os.path.join(cache, f".{cifar10.TARBALL}.killed.part")
    with open(stale, "wb") as f:
        f.write(b"half a download from a run that was killed")
    os.utime(stale, (0, 0))  # old: its run is long gone
    served = os.path.join(tmp_path, "served.tar.gz")
    with open(served, "wb") as f:
        f.write(b"not the real CIFAR-10")
    monkeypatch.setattr(cifar10, "URL", "file://" + served)
    dst = cifar10.Path(cache) / cifar10.TARBALL
    with pytest.raises(DatasetError, match="SHA-256 does not match"):
        cifar10.download(dst)
    assert os.listdir(cache) == []  # neither the bad file nor the stale part is left
    monkeypatch.setattr(cifar10, "SHA256", __import__("hashlib").sha256(b"not the real CIFAR-10").hexdigest())
    assert cifar10.download(dst).read_bytes() == b"not the real CIFAR-10"
    assert os.listdir(cache) == [cifar10.TARBALL]
