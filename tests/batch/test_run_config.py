"""RunConfig / SourceSpec: what run_dataset's keywords become, checked before any work."""

from __future__ import annotations

import pytest

from layerscope.batch import RunConfig, run_dataset
from layerscope.errors import UsageError


def test_check_returns_the_save_kinds_and_refuses_bad_values() -> None:
    assert RunConfig(save="gif, npz,gif").check() == ("gif", "npz")
    assert RunConfig(save="none").check() == ()
    for kw, match in (
        ({"engine": "rya"}, r"unknown engine 'rya'. Did you mean ray\?"),
        ({"progress": "bars"}, r"unknown progress mode 'bars'. Did you mean bar"),
        ({"workers": -1}, "workers must be a whole number of at least 0"),
        ({"ray_actors": 0}, "ray_actors must be a whole number of at least 1"),
        ({"writers": True}, "writers must be a whole number"),
    ):
        with pytest.raises(UsageError, match=match):
            RunConfig(**kw).check()


def test_writer_count() -> None:
    assert RunConfig(writers=3).writer_count(("npz",)) == 3
    assert RunConfig().writer_count(("npz",)) == 1  # nothing drawn: one writer
    assert 1 <= RunConfig().writer_count(("npz", "gif")) <= 4


def test_run_dataset_refuses_an_unknown_keyword_with_a_suggestion() -> None:
    with pytest.raises(TypeError, match=r"unknown run_dataset\(\) argument 'batchsize'. Did you mean batch_size"):
        run_dataset(shapes=2, batchsize=4)
