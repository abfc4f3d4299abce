"""``evaluate()``: every metric at every layer from one capture per method, the announced cost,
the table, CSV/Parquet/PNG/SVG, reading rows back; and the ``layerscope evaluate`` command."""

from __future__ import annotations

import csv

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests.conftest import run_cli  # noqa: E402

import layerscope  # noqa: E402
from layerscope.errors import UsageError  # noqa: E402
from layerscope.evaluate import (  # noqa: E402
    Evaluation,
    average_drop_increase,
    deletion_insertion,
    energy_pointing_game,
    evaluate,
    plan,
    pointing_game,
    randomised_model,
    rank_correlation,
)

LAYERS = ["block3_conv3", "block5_conv3"]


class Counting(torch.nn.Module):
    """Wraps a model and counts the inputs it sees (``reset_parameters`` modules stay inside)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += x.shape[0]
        return self.inner(x)


@pytest.fixture(scope="module")
def data():
    from layerscope.datasets import make_dataset
    from layerscope.info import info_for

    model = layerscope.load_model("demo")
    images, labels, masks = make_dataset(3, 11, 96)
    info = info_for(model)
    x = torch.as_tensor(np.asarray(info.preprocessor()(list(images))))
    return model, info, x, labels, masks


@pytest.fixture(scope="module")
def result(data):
    model, info, x, labels, masks = data
    return evaluate(
        model,
        x,
        "gradcam,layercam",
        ["deletion", "insertion", "drop", "pointing", "energy", "sanity"],
        layers=LAYERS,
        target=labels.tolist(),
        masks=masks,
        steps=4,
        batch_size=2,
        info=info,
    )


def test_evaluate_equals_the_metric_functions(data, result: Evaluation) -> None:
    model, info, x, labels, masks = data
    exp = layerscope.explain(model, x, LAYERS, "layercam", labels.tolist(), info=info)
    maps = [exp.cams[layer] for layer in LAYERS]
    di = deletion_insertion(model, x, maps, labels, steps=4)
    dr = average_drop_increase(model, x, maps, labels)
    rexp = layerscope.explain(randomised_model(model), x, LAYERS, "layercam", labels.tolist(), info=info)
    for j, layer in enumerate(LAYERS):
        np.testing.assert_allclose(
            result.values[("trained", "layercam", layer, "deletion_auc")], di.deletion[j], rtol=1e-5
        )
        np.testing.assert_allclose(
            result.values[("trained", "layercam", layer, "insertion_auc")], di.insertion[j], rtol=1e-5
        )
        np.testing.assert_allclose(result.values[("trained", "layercam", layer, "average_drop")], dr.drop[j], rtol=1e-5)
        np.testing.assert_array_equal(
            result.values[("trained", "layercam", layer, "pointing_game")], pointing_game(maps[j], masks)
        )
        np.testing.assert_allclose(
            result.values[("trained", "layercam", layer, "energy_pointing_game")], energy_pointing_game(maps[j], masks)
        )
        np.testing.assert_allclose(
            result.values[("trained", "layercam", layer, "randomisation_rank_corr")],
            rank_correlation(maps[j], rexp.cams[layer]),
            equal_nan=True,
        )
        # The baseline rows score the random model's maps on the trained model.
        rd = deletion_insertion(model, x, rexp.cams[layer], labels, steps=4)
        np.testing.assert_allclose(result.values[("random", "layercam", layer, "deletion_auc")], rd.deletion, rtol=1e-5)
    _, _, v = result.best("pointing_game")
    assert v == max(result.mean("pointing_game", mm, ll) for mm in result.methods for ll in result.layers)


def test_plan_counts_every_forward_pass(data) -> None:
    model, info, x, _, _ = data
    counting = Counting(model).eval()
    info = info.replace(layers={k: f"inner.{v}" for k, v in info.layers.items()})
    ev = evaluate(counting, x[:2], "gradcam", ["deletion", "drop", "sanity"], layers=LAYERS, steps=4, info=info)
    # 2 images: captures (trained + random), deletion/insertion (original, zero, blur, 2 x 3 inner per layer)
    # and drop (original + one per layer), each for the trained and the random model's maps.
    expected = 2 * (2 + 2 * (3 + 2 * 3 * 2) + 2 * (1 + 2))
    assert ev.plan.total == expected
    # The model counts them too, except the random model's capture (2), which runs on its copy.
    assert counting.seen == expected - 2
    p = plan(1, 13, 1, ["deletion"], 96 * 96, steps=20, random_baseline=False)
    assert p.passes["deletion/insertion"] == 13 * 38 + 3 <= 13 * 20 * 2


def test_table_files_and_rows(result: Evaluation, tmp_path) -> None:
    text = result.table()
    assert "Deletion AUC ↓" in text and "block5_conv3" in text and "layercam" in text
    for ext in ("csv", "parquet", "png", "svg"):
        path = result.save(tmp_path / f"ev.{ext}")
        assert path.stat().st_size > 100
    with pytest.raises(Exception, match="already exists"):
        result.save(tmp_path / "ev.csv")
    with pytest.raises(UsageError):
        result.save(tmp_path / "ev.xlsx")
    with open(tmp_path / "ev.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 2 * len(result.metrics) - 2 * 2  # no random row for the sanity column
    back = Evaluation.from_rows(rows)
    assert back.layers == LAYERS and back.methods == ["gradcam", "layercam"]
    for metric in result.metrics:
        for m in result.methods:
            for layer in LAYERS:
                a, b = result.mean(metric, m, layer), back.mean(metric, m, layer)
                assert (np.isnan(a) and np.isnan(b)) or abs(a - b) <= 1e-5 * max(1.0, abs(a))
    pq = pytest.importorskip("pyarrow.parquet")
    table = pq.read_table(tmp_path / "ev.parquet")
    assert table.num_rows == len(rows)


def test_evaluate_bad_arguments(data) -> None:
    model, info, x, _, _ = data
    with pytest.raises(UsageError, match="unknown metric"):
        evaluate(model, x, "gradcam", ["deletion", "speed"], info=info)
    with pytest.raises(UsageError, match="masks"):
        evaluate(model, x, "gradcam", ["pointing"], info=info)
    with pytest.raises(UsageError, match="unknown CAM method"):
        evaluate(model, x, "gradcamm", ["deletion"], info=info)
    with pytest.raises(UsageError, match=r"unknown evaluate option 'chunk'\."):
        evaluate(model, x, "gradcam", ["deletion"], info=info, chunk=2)  # now batch_size
    with pytest.raises(UsageError, match=r"unknown evaluate option 'step'\. Did you mean steps"):
        evaluate(model, x, "gradcam", ["deletion"], info=info, step=2)


def test_cli_evaluate_shapes(capsys, tmp_path) -> None:
    out = tmp_path / "ev"
    code, stdout, stderr = run_cli(
        capsys, "evaluate", "--shapes", "2", "--methods", "gradcam", "--layers", "block5_*",
        "--metrics", "deletion,pointing,sanity", "--steps", "4", "--no-progress", "-o", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    assert "forward passes" in stderr  # the cost, announced before starting
    assert "Pointing game" in stdout and "block5_conv3" in stdout
    assert "Best layer per image by Deletion AUC ↓  (2 images)" in stdout
    for ext in (".csv", ".png", ".svg"):
        assert (tmp_path / f"ev{ext}").stat().st_size > 100
    code, _, stderr = run_cli(capsys, "evaluate", "--shapes", "2", "--no-progress", "-o", str(out))
    assert code != 0 and "already exists" in stderr  # checked before any work
    code, _, stderr = run_cli(capsys, "evaluate", "--metrics", "speed", "-o", str(tmp_path / "x"))
    assert code == 2 and "unknown metric 'speed'" in stderr


def test_best_takes_the_names_metrics_takes(result: Evaluation) -> None:
    # Issue 18 item 17: best() raised TypeError and best("deletion") said "not measured".
    assert result.best() == result.best("deletion") == result.best("deletion_auc")
    _, _, v = result.best("deletion")
    assert v == min(result.mean("deletion_auc", mm, ll) for mm in result.methods for ll in result.layers)
    assert result.best("drop") == result.best("average_drop")  # the metric's headline column
    assert result.best("sanity")[2] == min(
        (result.mean("randomisation_rank_corr", mm, ll) for mm in result.methods for ll in result.layers), key=abs
    )
    with pytest.raises(UsageError, match=r"unknown metric 'delet'\. Did you mean deletion"):
        result.best("delet")
    with pytest.raises(UsageError, match="'road_combined' was not measured"):
        result.best("road")


def test_best_layer_counts_which_layer_wins_how_often(result: Evaluation, tmp_path) -> None:
    # No ROAD measured: the first measured metric that re-runs the model, deletion (lower is better).
    name, counts = result.best_layers()
    assert name == "deletion_auc" and list(counts) == ["gradcam", "layercam"]
    for m in result.methods:
        per_image = np.stack([result.values[("trained", m, layer, name)] for layer in LAYERS])
        expected = [LAYERS[k] for k in per_image.argmin(axis=0)]
        assert counts[m] == {layer: expected.count(layer) for layer in LAYERS}
        assert sum(counts[m].values()) == 3
    ins_name, ins = result.best_layers("insertion")
    assert ins_name == "insertion_auc" and all(sum(c.values()) == 3 for c in ins.values())
    text = result.table()
    block = text[text.index("Best layer per image by Deletion AUC ↓  (3 images)") :].splitlines()
    assert block[1].split() == ["layer", "gradcam", "layercam"]
    assert block[2].split() == [
        "block3_conv3",
        str(counts["gradcam"]["block3_conv3"]),
        str(counts["layercam"]["block3_conv3"]),
    ]
    result.save(tmp_path / "ev.csv")
    with open(tmp_path / "ev.csv", newline="") as f:
        back = Evaluation.from_rows(list(csv.DictReader(f)))
    assert back.best_layers()[1] == {} and "Best layer" not in back.table()  # means only: no per-image winner
