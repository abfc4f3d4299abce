"""Object storage end to end (issue 22 item 3): ``layerscope batch`` from ``s3://`` sources
(a prefix of PNGs, a Parquet table, WebDataset shards) into an ``s3://`` RUN_DIR, on a real
S3-compatible server started here (moto in server mode, on a free port) through s3fs — no
mock of the filesystem API. A rerun does nothing new; results read back from the bucket; the
run's lease object refuses a second run and is taken over once expired."""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers_batch import FAST, moto_s3, tiny_model
from PIL import Image

from conftest import run_cli
from layerscope.batch import fs, manifest, read_manifest, run_dataset
from layerscope.datasets.shapes import make_sample
from layerscope.errors import UsageError

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

BUCKET = "layerscope-test"


@pytest.fixture(scope="module")
def s3() -> Iterator[object]:
    """An S3 server on localhost, the AWS variables pointing at it, one empty bucket."""
    with moto_s3(BUCKET) as f:
        yield f


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(make_sample(4, i, 40)[0]).save(buf, "PNG")
    return buf.getvalue()


def test_remote_dir_commits_by_put_and_lists(s3: object) -> None:
    rd = fs.run_dir(f"s3://{BUCKET}/unit")
    assert rd.remote and not rd.exists() and rd.listdir() == []
    rd.put("manifest/all/part-000001.parquet", b"x")
    assert rd.listdir() == ["manifest"] and rd.listdir("manifest") == ["all"]
    assert rd.create("lock", b"1") and not rd.create("lock", b"2")  # a conditional put
    assert rd.read_bytes("lock") == b"1"
    with rd.staged("items/a/b.bin") as p:
        p.write_bytes(b"finished")
    assert rd.read_bytes("items/a/b.bin") == b"finished" and not p.exists()
    with pytest.raises(RuntimeError), rd.staged("items/never.bin") as p:
        p.write_bytes(b"half")
        raise RuntimeError("a writer failed")
    assert not rd.isfile("items/never.bin")  # nothing put after a failure
    rd.remove("items")
    assert not rd.isdir("items")


def test_a_live_lease_refuses_a_second_run_and_an_expired_one_is_taken_over(s3: object) -> None:
    rd = fs.run_dir(f"s3://{BUCKET}/leased")
    holder = fs.Lease(rd, ".lock/all", ttl=60)
    assert holder.try_take()
    try:
        with pytest.raises(UsageError, match="another layerscope batch is running"):
            with manifest.shard_lock(rd, "all", wait=0.3):
                pass
        with manifest.RunLock(rd) as lock, pytest.raises(UsageError, match="another layerscope batch"):
            lock.exclusive()  # nothing may be cleared while a shard runs
    finally:
        holder.release()
    assert not rd.isfile(".lock/all")
    stale = {"owner": "dead-host:1:x", "expires": time.time() - 1}  # a killed run's
    rd.put(".lock/all", json.dumps(stale).encode())
    with manifest.shard_lock(rd, "all", wait=0.3):
        assert json.loads(rd.read_bytes(".lock/all"))["owner"] != stale["owner"]
    assert not rd.isfile(".lock/all")


@pytest.mark.slow
def test_batch_from_s3_sources_to_an_s3_run_dir_resumes_and_reads_back(
    s3: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = s3
    for i in range(5):
        f.pipe_file(f"{BUCKET}/photos/{'sub/' if i % 2 else ''}p{i}.png", _png(i))
    f.pipe_file(f"{BUCKET}/photos/broken.png", b"\x89PNG\r\n\x1a\n truncated")
    f.pipe_file(f"{BUCKET}/photos/notes.txt", b"not an image")
    run = f"s3://{BUCKET}/runs/photos"
    args = ["batch", f"s3://{BUCKET}/photos/", "-o", run, "--layers", "block5_conv3", "--progress", "none"]
    args += ["--save", "npz,png", "--report", "--workers", "1", "--batch-size", "4"]
    code, stdout, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "6 done (1 error), 0 skipped" in err and f"manifest: {run}/manifest.parquet" in stdout
    table = pq.read_table(f"{BUCKET}/runs/photos/manifest.parquet", filesystem=f)
    rows = {r["key"]: r for r in table.to_pylist()}
    assert sorted(rows) == ["broken.png", "p0.png", "p2.png", "p4.png", "sub/p1.png", "sub/p3.png"]
    assert rows["broken.png"]["status"].startswith("error: ") and "broken.png" in rows["broken.png"]["status"]
    for key in ("p0.png", "sub/p3.png"):
        r = rows[key]
        assert r["status"] == "ok" and r["source"] == f"s3://{BUCKET}/photos/{key}"
        with np.load(io.BytesIO(f.cat_file(f"{BUCKET}/runs/photos/{r['outputs'][0]}"))) as z:
            assert z["cam/block5_conv3"].shape[0] == 1
        with Image.open(io.BytesIO(f.cat_file(f"{BUCKET}/runs/photos/{r['outputs'][1]}"))) as im:
            im.load()
    names = set(f.find(f"{BUCKET}/runs/photos"))
    assert not [n for n in names if n.endswith(".part") or "/.lock/" in n]  # no temporary object, lease released
    assert {f"{BUCKET}/runs/photos/{n}" for n in ("run.json", "report.html", "summary/mean_maps.png")} <= names
    assert read_manifest(run).num_rows == 6

    code, _, err = run_cli(capsys, *args)  # the same command: only the error row is tried again
    assert code == 0 and "1 done (1 error), 5 skipped" in err, err
    code, _, err = run_cli(capsys, *args, "--no-retry-errors")  # nothing new at all
    assert code == 0 and "0 done (0 errors), 6 skipped" in err, err
    assert set(f.find(f"{BUCKET}/runs/photos")) >= names
    record = json.loads(f.cat_file(f"{BUCKET}/runs/photos/run.json"))
    assert len(record["resumed"]) == 2

    code, _, err = run_cli(capsys, *args, "--method", "layercam")
    assert code != 0 and "holds a different run" in err


@pytest.mark.slow
def test_tables_and_shards_on_s3(s3: object) -> None:
    f = s3
    model, info = tiny_model()
    images = [_png(i) for i in range(6)]
    images[2] = b"corrupt row"
    buf = io.BytesIO()
    pq.write_table(pa.table({"img": images, "name": [f"n{i}" for i in range(6)]}), buf, row_group_size=2)
    f.pipe_file(f"{BUCKET}/tables/t.parquet", buf.getvalue())
    r = run_dataset(
        f"s3://{BUCKET}/tables/t.parquet", f"s3://{BUCKET}/runs/table", model, info=info,
        image_column="img", id_column="name", **FAST,
    )  # fmt: skip
    assert (r.done, r.errors) == (6, 1)
    rows = {x["key"]: x["status"] for x in read_manifest(f"s3://{BUCKET}/runs/table").to_pylist()}
    assert rows["n2"].startswith("error: ") and sum(s == "ok" for s in rows.values()) == 5

    for k in range(2):
        tbuf = io.BytesIO()
        with tarfile.open(fileobj=tbuf, mode="w") as tf:
            for i in range(3 * k, 3 * k + 3):
                for name, data in ((f"s{i}.png", _png(i)), (f"s{i}.cls", str(i % 3).encode())):
                    ti = tarfile.TarInfo(name)
                    ti.size = len(data)
                    tf.addfile(ti, io.BytesIO(data))
        f.pipe_file(f"{BUCKET}/shards/shard-{k:06d}.tar", tbuf.getvalue())
    out = f"s3://{BUCKET}/runs/shards"
    r = run_dataset(f"s3://{BUCKET}/shards/shard-{{000000..000001}}.tar", out, model, info=info, target="label", **FAST)
    assert (r.done, r.errors) == (6, 0)
    rows = read_manifest(out).to_pylist()
    assert sorted(x["key"] for x in rows) == [f"shard-{i // 3:06d}/s{i}" for i in range(6)]
    assert all(x["label"] == x["target"] == int(x["key"][-1]) % 3 for x in rows)
    r = run_dataset(f"s3://{BUCKET}/shards/shard-{{000000..000001}}.tar", out, model, info=info, target="label", **FAST)
    assert (r.done, r.skipped) == (0, 6)
