"""Dataset runs (``layerscope.batch``): sources, manifest, per-item outputs, resume, shards,
summaries, report — on a tiny conv net, so every run takes a second or two."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from helpers_batch import FAST, tiny_model
from PIL import Image
from torch import nn

import layerscope
from layerscope.batch import manifest, merge_run, run_dataset, stats
from layerscope.batch.sources import open_source, pixel_hash, shard_of
from layerscope.datasets.shapes import CLASS_NAMES, make_sample
from layerscope.errors import UsageError
from layerscope.evaluate.localisation import pointing_game
from layerscope.info import ModelInfo


@pytest.fixture(scope="module")
def tiny() -> tuple[nn.Module, ModelInfo]:
    return tiny_model()


def rows(run_dir: Path) -> list[dict]:
    return pq.read_table(run_dir / "manifest.parquet").to_pylist()


def make_folder(root: Path, n: int = 6) -> Path:
    (root / "sub").mkdir(parents=True)
    for i in range(n):
        img, _, _ = make_sample(3, i, 40)
        folder = root / "sub" if i % 2 else root
        Image.fromarray(img).save(folder / f"img{i}.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    return root


# --------------------------------------------------------------------------- statistics


def test_map_stats_by_hand() -> None:
    cam = np.array([[0.0, 1.0], [3.0, 0.0]], np.float32)
    s = stats.map_stats(cam)
    assert s["peak"] == 3.0
    assert (s["peak_y"], s["peak_x"]) == (0.75, 0.25)  # cell (1, 0): centre at 1.5/2, 0.5/2
    expected = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) / math.log(4)
    assert s["entropy"] == pytest.approx(expected)
    assert stats.map_stats(np.ones((3, 3)))["entropy"] == pytest.approx(1.0)
    assert stats.map_stats(np.zeros((3, 3)))["entropy"] is None


def test_summary_sums_round_trip(tmp_path: Path) -> None:
    a = stats.SummarySums()
    a.add("l", 2, "correct", np.array([[0.0, 2.0], [0.0, 0.0]]))
    a.add("l", 2, "correct", np.array([[0.0, 0.0], [5.0, 0.0]]))
    p = tmp_path / "s.npz"
    p.write_bytes(a.to_bytes())
    b = stats.SummarySums.from_file(str(p))
    means = b.means(["l"], 3)
    expected = (
        stats.normalised_small(np.array([[0, 1.0], [0, 0]])) + stats.normalised_small(np.array([[0, 0], [1.0, 0]]))
    ) / 2
    np.testing.assert_allclose(means["correct/l"][2], expected, rtol=1e-6)
    assert means["count/correct"].tolist() == [0, 0, 2]
    assert "wrong/l" not in means


def test_shard_parse() -> None:
    assert manifest.parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(UsageError):
            manifest.parse_shard(bad)


# --------------------------------------------------------------------------- runs


def test_folder_run_corrupt_item_and_maps(tmp_path: Path, tiny) -> None:
    model, info = tiny
    src = make_folder(tmp_path / "imgs")
    out = tmp_path / "run"
    r = run_dataset(src, out, model, info=info, **FAST)
    assert (r.total, r.done, r.errors, r.skipped) == (7, 7, 1, 0)
    table = rows(out)
    assert [t["key"] for t in table] == sorted(
        ["broken.jpg"] + [f"img{i}.png" if i % 2 == 0 else f"sub/img{i}.png" for i in range(6)]
    )
    broken = next(t for t in table if t["key"] == "broken.jpg")
    assert broken["status"].startswith("error: ") and "broken.jpg" in broken["status"]
    assert broken["outputs"] == [] and broken["predicted"] is None
    layers = ["0", "2"]
    for t in table:
        if t["status"] != "ok":
            continue
        path = src / t["key"]
        assert t["content_hash"] == __import__("hashlib").sha256(path.read_bytes()).hexdigest()
        exp = layerscope.explain(model, [str(path)], info=info)  # the same image alone, independently
        assert exp.layers == layers
        with np.load(out / t["outputs"][0]) as z:
            for name in layers:
                np.testing.assert_allclose(z[f"cam/{name}"][0], exp.cams[name][0], rtol=1e-4, atol=1e-6)
                s = stats.map_stats(exp.cams[name][0])
                assert t[f"{name}/peak"] == pytest.approx(s["peak"], rel=1e-4, abs=1e-7)
        logits = (
            model(torch.from_numpy(info.preprocess([np.asarray(Image.open(path).convert("RGB"))]))).detach().numpy()[0]
        )
        assert t["predicted"] == int(np.argmax(logits)) == t["target"]  # top-1 by default
        p = np.exp(logits - logits.max())
        assert t["predicted_probability"] == pytest.approx(p.max() / p.sum(), rel=1e-4)
        assert t["label"] is None and t["correct"] is None and t[f"{layers[0]}/pointing"] is None
    meta = manifest.read_run_file(out)
    assert meta["fingerprint"]["method"] == "gradcam" and meta["finished"] and meta["versions"]["torch"]


def test_resume_skips_done_and_refuses_another_run(tmp_path: Path, tiny) -> None:
    model, info = tiny
    out = tmp_path / "run"
    first = run_dataset(shapes=30, out_dir=out, model=model, info=info, commit_every=8, **FAST)
    assert (first.done, first.skipped) == (30, 0)
    before = {t["key"]: t for t in rows(out)}
    again = run_dataset(shapes=30, out_dir=out, model=model, info=info, commit_every=8, **FAST)
    assert (again.done, again.skipped) == (0, 30)
    assert {t["key"]: t for t in rows(out)} == before
    # more items of the same source kind but another count is another run
    with pytest.raises(UsageError, match=r"holds a different run \(its source differ"):
        run_dataset(shapes=40, out_dir=out, model=model, info=info, **FAST)
    with pytest.raises(UsageError, match="method"):
        run_dataset(shapes=30, out_dir=out, model=model, info=info, method="gradcam++", **FAST)
    other, _ = tiny_model(seed=1)
    with pytest.raises(UsageError, match="weights_sha256"):
        run_dataset(shapes=30, out_dir=out, model=other, info=info, **FAST)
    r = run_dataset(shapes=12, out_dir=out, model=model, info=info, method="gradcam++", overwrite=True, **FAST)
    assert (r.done, r.skipped) == (12, 0) and len(rows(out)) == 12
    assert not list((out / "manifest").rglob("part-000004.parquet"))  # the old run's parts are gone


def test_a_folder_with_other_files_is_refused(tmp_path: Path, tiny) -> None:
    model, info = tiny
    out = tmp_path / "run"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(UsageError, match="not empty"):
        run_dataset(shapes=3, out_dir=out, model=model, info=info, **FAST)
    run_dataset(shapes=3, out_dir=out, model=model, info=info, overwrite=True, **FAST)
    assert (out / "mine.txt").read_text() == "keep me"


def test_shapes_labels_pointing_and_summary(tmp_path: Path, tiny) -> None:
    model, info = tiny
    out = tmp_path / "run"
    run_dataset(shapes=20, out_dir=out, model=model, info=info, target="label", report=True, **FAST)
    table = rows(out)
    assert len(table) == 20
    sums: dict[tuple[str, int, str], list[np.ndarray]] = {}
    for t in table:
        i = int(t["key"].rsplit("/", 1)[1])
        img, label, mask = make_sample(1, i, 96)
        assert t["label"] == label == t["target"] and t["label_name"] == CLASS_NAMES[label]
        assert t["content_hash"] == pixel_hash(img)
        assert t["correct"] == (t["predicted"] == label)
        with np.load(out / t["outputs"][0]) as z:
            for name in ("0", "2"):
                cam = z[f"cam/{name}"][0]
                assert t[f"{name}/pointing"] == bool(pointing_game(cam[None], mask[None])[0])
                group = "correct" if t["correct"] else "wrong"
                sums.setdefault((name, label, group), []).append(stats.normalised_small(cam))
    with np.load(out / "summary" / "mean_maps.npz") as z:
        assert list(z["layers"]) == ["0", "2"] and list(z["class_names"]) == list(CLASS_NAMES)
        for (name, label, group), maps in sums.items():
            np.testing.assert_allclose(z[f"{group}/{name}"][label], np.mean(maps, axis=0), rtol=1e-5, atol=1e-6)
            assert z[f"count/{group}"][label] == len(maps)
    png = Image.open(out / "summary" / "mean_maps.png")
    assert png.size[0] > 100 and png.size[1] > 40
    html = (out / "report.html").read_text()
    assert html.count("<tr>") == 20 + 1 and "thumbs/shapes-1/000000.png" in html and "mean_maps.png" in html
    assert all((out / f).is_file() for t in table for f in t["outputs"])


def test_cifar10_source_and_label_target(tmp_path: Path, tiny) -> None:
    from helpers_cifar10 import write_tarball
    from layerscope.datasets import cifar10

    tar = write_tarball(tmp_path / "cifar-10-python.tar.gz", per_class=2, train_batches=1)
    images, labels = cifar10.load_split("test", path=tar)
    model, info = tiny
    out = tmp_path / "run"
    r = run_dataset(cifar10=True, cifar10_path=tar, out_dir=out, model=model, info=info, target="label", **FAST)
    assert r.done == 20
    for t in rows(out):
        i = int(t["key"].rsplit("/", 1)[1])
        assert t["key"].startswith("cifar10-test/") and t["label"] == int(labels[i]) == t["target"]
        assert t["content_hash"] == pixel_hash(images[i])


def test_target_label_needs_labels(tmp_path: Path, tiny) -> None:
    model, info = tiny
    src = make_folder(tmp_path / "imgs")
    with pytest.raises(UsageError, match="true labels"):
        run_dataset(src, tmp_path / "run", model, info=info, target="label", **FAST)


def test_fixed_target_by_name(tmp_path: Path, tiny) -> None:
    model, info = tiny
    run_dataset(shapes=5, out_dir=tmp_path / "run", model=model, info=info, target="star", **FAST)
    assert {t["target_name"] for t in rows(tmp_path / "run")} == {"star"}


def test_glob_and_list_sources(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "imgs")
    g = open_source(str(src / "**" / "*.png"))
    assert len(g.items()) == 6
    lst = tmp_path / "list.txt"
    lst.write_text("# two images\nimgs/img0.png\n\nimgs/sub/img1.png\n")
    items = open_source(lst).items()
    assert [i.key for i in items] == ["imgs/img0.png", "imgs/sub/img1.png"]
    assert Path(items[1].ref) == tmp_path / "imgs" / "sub" / "img1.png"
    with pytest.raises(UsageError, match="exactly one source"):
        open_source(src, shapes=3)
    with pytest.raises(UsageError, match="no file"):
        open_source(str(tmp_path / "*.nothing"))


def test_shards_split_by_hash_and_merge(tmp_path: Path, tiny) -> None:
    model, info = tiny
    whole = tmp_path / "whole"
    run_dataset(shapes=24, out_dir=whole, model=model, info=info, **FAST)
    out = tmp_path / "sharded"
    r0 = run_dataset(shapes=24, out_dir=out, model=model, info=info, shard="0/2", **FAST)
    assert not r0.merged and not (out / "manifest.parquet").exists()
    r1 = run_dataset(shapes=24, out_dir=out, model=model, info=info, shard="1/2", **FAST)
    assert r1.merged and r0.done + r1.done == 24 and r0.other_shards == r1.done
    table = rows(out)
    assert [t["key"] for t in table] == [t["key"] for t in rows(whole)]
    for t in table:
        assert t["shard"] == shard_of(t["content_hash"], 2)
    ref = {t["key"]: t for t in rows(whole)}
    for t in table:
        assert t["predicted"] == ref[t["key"]]["predicted"]
        assert t["2/peak"] == pytest.approx(ref[t["key"]]["2/peak"], rel=1e-4, abs=1e-7)
    with np.load(out / "summary/mean_maps.npz") as a, np.load(whole / "summary/mean_maps.npz") as b:
        for name in b.files:
            if a[name].dtype.kind == "f":
                np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-6)
            else:
                assert (a[name] == b[name]).all()
    # batch-merge on demand gives the same file
    (out / "manifest.parquet").unlink()
    merge_run(out)
    assert [t["key"] for t in rows(out)] == [t["key"] for t in rows(whole)]


def test_bad_options_fail_before_work(tmp_path: Path, tiny) -> None:
    model, info = tiny
    for kw, match in (
        ({"save": "gif,mp5"}, r"unknown --save kind 'mp5'. Did you mean mp4"),  # kinds: the output registry
        ({"engine": "spark"}, "engine"),
        ({"shard": "3/2"}, "shard"),
        ({"batch_size": 0}, "batch_size"),
        ({"method_options": {"nope": 1}}, "unknown option of method 'gradcam' 'nope'"),
        ({"explain_options": {"device": "cuda:99"}}, "not available"),
    ):
        with pytest.raises(UsageError, match=match):
            run_dataset(shapes=3, out_dir=tmp_path / "run", model=model, info=info, progress="none", **kw)
    assert not (tmp_path / "run").exists()


def test_gif_outputs_with_workers(tmp_path: Path, tiny) -> None:
    model, info = tiny
    out = tmp_path / "run"
    r = run_dataset(shapes=4, out_dir=out, model=model, info=info, save="gif,npz", workers=2, progress="none")
    assert r.done == 4
    for t in rows(out):
        assert [f.rsplit(".", 1)[1] for f in t["outputs"]] == ["gif", "npz"]
        with Image.open(out / t["outputs"][0]) as im:
            assert im.format == "GIF" and im.n_frames == 2
    assert not list(out.rglob(".*.part*"))


def test_progress_log_lines(tmp_path: Path, tiny, caplog: pytest.LogCaptureFixture) -> None:
    model, info = tiny
    caplog.set_level("INFO", logger="layerscope.batch")
    run_dataset(
        shapes=20,
        out_dir=tmp_path / "run",
        model=model,
        info=info,
        progress="log",
        log_every=8,
        workers=0,
        batch_size=4,
    )
    lines = [r.getMessage() for r in caplog.records if r.name == "layerscope.batch"]
    assert any(line.startswith("8/20 items") for line in lines) and any(
        line.startswith("16/20 items") for line in lines
    )
    assert "20 done (0 errors), 0 skipped" in lines[-1]


def test_several_writers_share_the_work_without_name_clashes(tmp_path: Path, tiny) -> None:
    model, info = tiny
    out = tmp_path / "run"
    r = run_dataset(shapes=40, out_dir=out, model=model, info=info, writers=3, commit_every=5, **FAST)
    assert r.done == 40
    parts = sorted(p.name for p in (out / "manifest" / "all").glob("part-*.parquet"))
    assert len(parts) >= 8
    per_part = [pq.read_table(out / "manifest" / "all" / p, columns=["key"]).num_rows for p in parts]
    assert sum(per_part) == 40
    keys = [t["key"] for t in rows(out)]
    assert keys == [f"shapes-1/{i:06d}" for i in range(40)]
    # a resumed run numbers its parts after the existing ones
    first = manifest.next_part_number(out, "all")
    assert first == max(int(p[5:11]) for p in parts) + 1


def test_folder_shards_skip_other_files_by_hash(tmp_path: Path, tiny) -> None:
    model, info = tiny
    src = make_folder(tmp_path / "imgs")
    out = tmp_path / "run"
    done = [run_dataset(src, out, model, info=info, shard=f"{i}/3", **FAST).done for i in range(3)]
    assert sum(done) == 7
    table = rows(out)
    assert len(table) == 7 and len({t["key"] for t in table}) == 7
    for t in table:
        assert t["shard"] == shard_of(t["content_hash"], 3)
