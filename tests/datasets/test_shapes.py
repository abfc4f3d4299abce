"""The shapes data set as a stream: ``iter_dataset`` gives what ``make_dataset`` gives, one
batch at a time, and a hundred million samples cost no more than one batch to start."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

from layerscope.datasets.shapes import iter_dataset, make_dataset


def test_iter_dataset_equals_make_dataset_in_batches() -> None:
    whole = make_dataset(7, seed=3, size=32, start=5)
    parts = list(iter_dataset(7, seed=3, size=32, batch=3, start=5))
    assert [len(p[1]) for p in parts] == [3, 3, 1]
    for a, b in zip(whole, (np.concatenate([p[k] for p in parts]) for k in range(3)), strict=True):
        np.testing.assert_array_equal(a, b)
    assert list(iter_dataset(0, seed=3)) == []
    with pytest.raises(ValueError):
        next(iter_dataset(2, seed=3, batch=0))


def test_a_huge_stream_holds_one_batch() -> None:
    # Issue 18 item 10: the evaluate command made every sample up front (2.5 TiB for 10^8).
    tracemalloc.start()
    t0 = time.perf_counter()
    images, labels, masks = next(iter_dataset(100_000_000, seed=1, size=64, batch=4))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert images.shape == (4, 64, 64, 3) and labels.tolist() == [0, 1, 2, 3] and masks.shape == (4, 64, 64)
    assert peak < 20 * 2**20  # a few batches' worth, not 10^8 samples
    assert time.perf_counter() - t0 < 5
