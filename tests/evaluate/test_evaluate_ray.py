"""``evaluate(..., engine="ray")`` and ``layerscope evaluate --engine ray`` (the tests of
``evaluate/ray_engine.py``, named apart from ``tests/batch/test_ray_engine.py``): Ray actors
score the chunks and the table is the local engine's, whatever the split and the number of
actors (a real local Ray of 2 CPUs); bad options and a missing Ray are refused before any
work; the Ray the command starts does not outlive it, also when it is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests.conftest import run_cli  # noqa: E402

import layerscope  # noqa: E402
from layerscope.errors import UsageError  # noqa: E402
from layerscope.evaluate import (  # noqa: E402
    Batch,
    Column,
    Evaluation,
    Metric,
    evaluate,
    evaluate_batches,
    register,
    unregister,
)

LAYERS = ["block4_conv3", "block5_conv3"]
#: Every metric of the suite, cheaply: few steps and fractions, one method, two layers.
OPTIONS = {
    "methods": "gradcam",
    "metrics": ["deletion", "insertion", "road", "drop", "pointing", "energy", "sanity"],
    "layers": LAYERS,
    "steps": 3,
    "fractions": (0.2, 0.5),
}
#: The command line's share of it (its ROAD has nine fractions: left to the library test).
CLI = ("--shapes", "4", "--methods", "gradcam", "--layers", ",".join(LAYERS), "--metrics",
       "deletion,insertion,pointing,sanity", "--steps", "3", "--batch-size", "2", "--no-progress")  # fmt: skip


@pytest.fixture(scope="module")
def data():
    """The command line's ``--shapes 4``: the demo model and its first 4 evaluation images."""
    from layerscope.datasets.shapes import iter_dataset
    from layerscope.info import info_for
    from layerscope.models import demo

    model = layerscope.load_model("demo")
    info = info_for(model)
    images, labels, masks = next(iter_dataset(4, demo.EVAL_SEED, demo.IMAGE_SIZE, batch=4))
    x = torch.as_tensor(np.asarray(info.preprocessor()(list(images))))
    return model, info, x, labels.tolist(), masks


@pytest.fixture(scope="module")
def local(data) -> Evaluation:
    """The local engine, the 4 images in one chunk."""
    model, info, x, labels, masks = data
    return evaluate(model, x, target=labels, masks=masks, batch_size=4, info=info, **OPTIONS)


def _crash_once(batch: Batch) -> dict[str, list[np.ndarray]]:
    """A toy metric, each image's mean input, whose process dies the first time it is called."""
    marker = Path(batch.options["crash_marker"])
    if not marker.exists():
        marker.write_text("crashed")
        os._exit(1)
    mean = np.asarray(batch.x, dtype=np.float64).mean(axis=(1, 2, 3))
    return {"crash_once_mean": [mean for _ in batch.maps]}


def _same(a: Evaluation, b: Evaluation, tol: float = 1e-6) -> None:
    assert (a.layers, a.methods, a.metrics, a.images) == (b.layers, b.methods, b.metrics, b.images)
    assert list(a.values) == list(b.values)  # the same cells, in the same order
    for k, v in a.values.items():
        np.testing.assert_allclose(b.values[k], v, rtol=0, atol=tol, err_msg=str(k))
    assert [r["n"] for r in a.rows()] == [r["n"] for r in b.rows()]


def _tagged(tag: str) -> list[int]:
    """The live processes whose environment carries ``LAYERSCOPE_TEST_TAG=tag``."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{name}/stat") as f:
                zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if f"LAYERSCOPE_TEST_TAG={tag}".encode() in env.split(b"\0") and not zombie:
            out.append(int(name))
    return out


def _env(tag: str) -> dict[str, str]:
    path = os.pathsep.join([p for p in sys.path if p])
    return {**os.environ, "PYTHONPATH": path, "LAYERSCOPE_TEST_TAG": tag, "RAY_ADDRESS": ""}


@pytest.mark.slow  # a local Ray and its actors start in 15-30 s on 2 cores
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_ray_engine_gives_the_local_table_for_any_split_and_actors(data, local: Evaluation, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    model, info, x, labels, masks = data
    common = {"target": labels, "masks": masks, "info": info, "engine": "ray", **OPTIONS}
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # Two chunks of 2 images, one on each actor; then the same on one actor.
        two = evaluate(model, x, batch_size=2, ray_actors=2, **common)
        one = evaluate(model, x, batch_size=2, ray_actors=1, **common)
        with pytest.raises(UsageError, match="--ray-actors 3 needs 3 CPUs; the Ray cluster has 2"):
            evaluate(model, x, batch_size=2, ray_actors=3, **common)
        # An actor's process dies (os._exit) in its first chunk: a new actor scores it again.
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the toy metric, to the actors
        register(
            Metric(
                "crash_once",
                (Column("crash_once_mean", "mean input"),),
                _crash_once,
                baseline=False,
                options=("crash_marker",),
            )
        )
        try:
            marker = tmp_path / "crashed"
            kw = {**common, "metrics": ["drop", "crash_once"], "crash_marker": str(marker)}
            survived = evaluate(model, x, batch_size=2, ray_actors=1, **kw)
        finally:
            unregister("crash_once")
        assert marker.read_text() == "crashed"  # it did die once
        assert ray.is_initialized()  # a Ray the caller started is the caller's to shut down
    finally:
        ray.shutdown()
    _same(local, two)
    _same(two, one, tol=0.0)
    assert local.table() == two.table()
    assert {k[0] for k in two.values} == {"trained", "random"} and two.images == 4
    assert np.isfinite(two.values[("trained", "gradcam", "block5_conv3", "road_combined")]).all()
    for k, v in survived.values.items():
        if k[3] == "crash_once_mean":
            np.testing.assert_allclose(v, x.mean(dim=(1, 2, 3)).numpy(), atol=1e-6)
        else:
            np.testing.assert_array_equal(v, two.values[k])


@pytest.mark.slow  # a local Ray and its actors start in 15-30 s on 2 cores
@pytest.mark.skipif(not Path("/proc/self/environ").is_file(), reason="needs Linux /proc")
def test_the_command_line_gives_the_local_table_and_leaves_no_ray(tmp_path: Path, local: Evaluation) -> None:
    pytest.importorskip("ray")
    pq = pytest.importorskip("pyarrow.parquet")
    tag = uuid.uuid4().hex
    out = tmp_path / "ray.parquet"
    cmd = [sys.executable, "-m", "layerscope", "evaluate", *CLI, "--engine", "ray", "--ray-actors", "2", "-o", str(out)]
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=_env(tag))
        seen: set[int] = set()
        while proc.poll() is None:  # Ray's processes (GCS, raylet, workers) carry the tag while it runs
            seen.update(p for p in _tagged(tag) if p != proc.pid)
            time.sleep(0.5)
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert len(seen) >= 3, seen
    assert _tagged(tag) == []  # none outlives the command
    rows = {(r["model"], r["layer"], r["metric"]): r for r in pq.read_table(out).to_pylist()}
    expect = [
        r
        for r in local.rows()
        if r["metric"] in {"deletion_auc", "insertion_auc", "pointing_game", "randomisation_rank_corr"}
    ]
    assert len(rows) == len(expect) == 14  # 2 layers × (3 × 2 models + sanity)
    for r in expect:
        got = rows[(r["model"], r["layer"], r["metric"])]
        assert got["n"] == r["n"]
        assert got["value"] == pytest.approx(r["value"], abs=1e-6, nan_ok=True), r


@pytest.mark.slow  # a local Ray starts in 15-30 s on 2 cores
@pytest.mark.skipif(not Path("/proc/self/environ").is_file(), reason="needs Linux /proc")
def test_a_killed_command_leaves_no_ray(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    tag = uuid.uuid4().hex
    cmd = [sys.executable, "-m", "layerscope", "evaluate", "--shapes", "40", "--batch-size", "2", "--engine", "ray",
           "--ray-actors", "2", "--no-progress", "-o", str(tmp_path / "ev")]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(tag))
    deadline = time.monotonic() + 240
    actors: list[int] = []
    while not actors and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
        for p in _tagged(tag):
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if b"_Actor" in f.read():
                    actors.append(p)
    assert actors, "the actors never started"
    time.sleep(1.0)  # the watchdog scans every 0.5 s
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while _tagged(tag) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _tagged(tag) == []
    assert not list(tmp_path.iterdir())  # nothing written


def test_bad_engine_options_are_refused_before_any_work(capsys, tmp_path: Path, monkeypatch) -> None:
    t0 = time.perf_counter()
    code, _, stderr = run_cli(capsys, "evaluate", *CLI, "--engine", "ray", "--ray-actors", "0", "-o", str(tmp_path))
    assert code == 2 and "--ray-actors" in stderr and "expected a positive number, not 0" in stderr
    code, _, stderr = run_cli(capsys, "evaluate", *CLI, "--ray-address", "10.0.0.1:6379", "-o", str(tmp_path))
    assert code == 2 and "--ray-actors and --ray-address apply to --engine ray" in stderr
    code, _, stderr = run_cli(capsys, "evaluate", "--scenes", "2", "--model", "demo-detector", "--engine", "ray")
    assert code == 2 and "run on the local engine only" in stderr
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed: `import ray` fails
    code, _, stderr = run_cli(capsys, "evaluate", *CLI, "--engine", "ray", "-o", str(tmp_path / "ev"))
    assert code == 2 and 'needs Ray: pip install "layerscope[ray]"' in stderr
    assert time.perf_counter() - t0 < 10  # no model loaded, no image made
    assert os.listdir(tmp_path) == []


class _Counting(torch.nn.Module):
    """Logits = a linear map of the mean colour; counts the images it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 3)
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += int(x.shape[0])
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def test_the_library_refuses_before_running_the_model(monkeypatch) -> None:
    model = _Counting()
    batches = [(torch.zeros(2, 3, 8, 8), None, None)]
    with pytest.raises(UsageError, match="ray_actors must be a whole number of at least 1, not 0"):
        evaluate_batches(model, batches, 2, metrics="drop", engine="ray", ray_actors=0)
    with pytest.raises(UsageError, match="unknown engine 'spark'"):
        evaluate_batches(model, batches, 2, metrics="drop", engine="spark")
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(UsageError, match="needs Ray"):
        evaluate_batches(model, batches, 2, metrics="drop", engine="ray")
    assert model.seen == 0
