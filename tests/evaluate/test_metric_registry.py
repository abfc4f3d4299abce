"""The Metric registry: a new metric is one function and one ``register(...)`` — it runs
through the suite, the table, the CSV and the plot with no other change; and what the
registry says of the built-in metrics (names, columns, directions, costs)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from layerscope.errors import UsageError  # noqa: E402
from layerscope.evaluate import (  # noqa: E402
    Batch,
    Column,
    Metric,
    default_metrics,
    evaluate,
    get_metric,
    plan,
    register,
    registered,
    unregister,
)


class Linear(torch.nn.Module):
    """logits = <w_c, x> over a (1, 4, 4) input; one conv-free layer to explain: ``conv``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight[:] = torch.tensor([1.0, 2.0]).reshape(2, 1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


def map_peak(batch: Batch) -> dict[str, list[np.ndarray]]:
    """The toy metric: each map's maximum (a number per image and layer), times its option."""
    return {"map_peak": [m.reshape(len(m), -1).max(axis=1) * batch.options.get("gain", 1.0) for m in batch.maps]}


@pytest.fixture
def toy_metric():
    register(Metric("peak", (Column("map_peak", "Map peak", "lower"),), map_peak, default=False, options=("gain",)))
    yield
    unregister("peak")


def test_a_registered_toy_metric_runs_through_suite_table_and_csv(toy_metric, tmp_path) -> None:
    model = Linear().eval()
    x = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 4, 4) / 10.0
    ev = evaluate(model, x, "gradcam", "peak", layers="conv", target=[1, 0], random_baseline=False)
    assert ev.metrics == ["map_peak"]
    exp_maps = pytest.importorskip("layerscope").explain(model, x, "conv", "gradcam", [1, 0]).cams["conv"]
    np.testing.assert_allclose(ev.values[("trained", "gradcam", "conv", "map_peak")], exp_maps.reshape(2, -1).max(1))
    assert ev.best() == ev.best("peak") == ev.best("map_peak")
    assert "Map peak ↓  (2 images)" in ev.table()
    ev.save(tmp_path / "ev.csv")
    with open(tmp_path / "ev.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["metric"] for r in rows] == ["map_peak"]
    assert float(rows[0]["value"]) == pytest.approx(float(exp_maps.reshape(2, -1).max(1).mean()), rel=1e-5)
    assert ev.save(tmp_path / "ev.svg").stat().st_size > 100
    assert "peak" not in default_metrics()  # default=False: only when asked for
    # Its own option passes through evaluate(); an unknown one is an error.
    ev2 = evaluate(model, x, "gradcam", "peak", layers="conv", target=[1, 0], random_baseline=False, gain=2.0)
    np.testing.assert_allclose(
        ev2.values[("trained", "gradcam", "conv", "map_peak")], 2 * exp_maps.reshape(2, -1).max(1)
    )
    with pytest.raises(UsageError, match="unknown evaluate option 'gian'"):
        evaluate(model, x, "gradcam", "peak", layers="conv", random_baseline=False, gian=2.0)


def test_registry_refuses_a_duplicate_and_suggests_close_names(toy_metric) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register(Metric("peak", (Column("other", "Other"),), map_peak))
    with pytest.raises(ValueError, match="already given"):
        register(Metric("peak2", (Column("map_peak", "Map peak"),), map_peak))
    with pytest.raises(UsageError, match=r"unknown metric 'deletoin'\. Did you mean deletion"):
        get_metric("deletoin")


def test_builtin_metrics_columns_directions_and_costs() -> None:
    names = [m.name for m in registered()]
    assert names[:7] == ["deletion", "insertion", "road", "drop", "pointing", "energy", "sanity"]
    assert default_metrics() == tuple(names[:7])
    cols = {c.name: c.direction for m in registered() for c in m.columns}
    assert cols["deletion_auc"] == "lower" and cols["insertion_auc"] == "higher"
    assert cols["road_morf"] == "lower" and cols["road_combined"] == "higher"
    assert cols["randomisation_rank_corr"] == "zero"
    assert get_metric("road").headline_column == "road_combined"
    # deletion and insertion share one run: asked together they cost what one costs.
    both = plan(1, 13, 1, ["deletion", "insertion"], 96 * 96, random_baseline=False)
    one = plan(1, 13, 1, ["deletion"], 96 * 96, random_baseline=False)
    assert both.passes == one.passes == {"capture": 1, "deletion/insertion": 13 * 38 + 3}
    # One image, one method, 13 layers: the plan's sentence is singular where it should be.
    assert "for 1 image × 13 layers × 1 method (" in one.describe()


def test_save_all_writes_all_or_none(tmp_path) -> None:
    from layerscope.errors import OutputError
    from layerscope.evaluate import Evaluation
    from layerscope.evaluate.report import save_all

    ev = Evaluation(["a"], ["gradcam"], ["deletion_auc"], {("trained", "gradcam", "a", "deletion_auc"): np.ones(2)})

    def full_disk(path) -> None:
        raise OSError(28, "No space left on device")

    paths = [tmp_path / n for n in ("e.csv", "e.svg", "e.png", "e.html", "f.csv")]
    with pytest.raises(OutputError, match=r"(?i)no space left"):
        save_all(ev, paths, writers={tmp_path / "e.html": full_disk})  # the 4th file fails
    assert list(tmp_path.iterdir()) == []
    written = save_all(ev, paths, writers={tmp_path / "e.html": lambda p: p.write_text("<html>")})
    assert [p.name for p in written] == [p.name for p in paths] and all(p.is_file() for p in paths)
    assert sorted(q.name for q in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temporary left
