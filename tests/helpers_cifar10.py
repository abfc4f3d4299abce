"""Test helper: a small CIFAR-10-format tarball (same folder, file names and pickle layout)."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np

from layerscope.datasets.cifar10 import CLASSES, FOLDER


def write_tarball(
    path: str | os.PathLike[str],
    per_class: int = 2,
    train_batches: int = 5,
    seed: int = 0,
    protocol: int = 2,
) -> Path:
    """Write a small CIFAR-10-format ``.tar.gz`` (same folder, file names and pickle layout),
    ``per_class`` images of each class per batch file; for tests and offline demos."""
    rng = np.random.default_rng(seed)
    n = per_class * len(CLASSES)

    def batch(label: bytes) -> bytes:
        labels = [i % len(CLASSES) for i in range(n)]
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        return pickle.dumps(
            {
                b"batch_label": label,
                b"labels": labels,
                b"data": data,
                b"filenames": [f"img_{i:05d}.png".encode() for i in range(n)],
            },
            protocol=protocol,
        )

    files = {f"data_batch_{i}": batch(f"training batch {i} of {train_batches}".encode()) for i in range(1, 6)}
    files = dict(list(files.items())[:train_batches])
    files["test_batch"] = batch(b"testing batch 1 of 1")
    files["batches.meta"] = pickle.dumps(
        {b"num_cases_per_batch": n, b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072},
        protocol=protocol,
    )
    p = Path(path)
    with tarfile.open(p, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{FOLDER}/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return p
