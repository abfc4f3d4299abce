"""WebDataset tar shards (issue 22 item 4): brace patterns, samples grouped by key with
their ``.cls`` labels, members read in place (never extracted); a hostile shard — ``../evil``,
a symlink, a huge declared member, a corrupt image — gives error rows before a byte of
those members is read, and the run goes on."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from helpers_batch import FAST, tiny_model
from PIL import Image

from layerscope.batch import read_manifest, run_dataset, shards
from layerscope.batch.shards import TarSource, expand_braces
from layerscope.datasets.shapes import make_sample
from layerscope.errors import UsageError


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(make_sample(8, i, 40)[0]).save(buf, "PNG")
    return buf.getvalue()


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    tf.addfile(ti, io.BytesIO(data))


def test_expand_braces(monkeypatch: pytest.MonkeyPatch) -> None:
    assert expand_braces("s-{000000..000002}.tar") == ["s-000000.tar", "s-000001.tar", "s-000002.tar"]
    assert expand_braces("{a,b}/{8..10}.tar") == ["a/8.tar", "a/9.tar", "a/10.tar", "b/8.tar", "b/9.tar", "b/10.tar"]
    assert expand_braces("plain.tar") == ["plain.tar"]
    monkeypatch.setattr(shards, "MAX_EXPANSION", 1000)
    with pytest.raises(UsageError, match="expands to more than 1,000 names"):
        expand_braces("{0..99}{0..99}.tar")


def test_shards_group_members_by_key_with_labels(tmp_path: Path) -> None:
    for k in range(2):
        with tarfile.open(tmp_path / f"shard-{k:06d}.tar", "w") as tf:
            for i in range(3 * k, 3 * k + 3):
                _add(tf, f"d/s{i}.png", _png(i))
                _add(tf, f"d/s{i}.cls", f"{i % 4}\n".encode())
                _add(tf, f"d/s{i}.json", b"{}")  # other members of the sample are ignored
    model, info = tiny_model()
    pattern = str(tmp_path / "shard-{000000..000001}.tar")
    r = run_dataset(pattern, tmp_path / "run", model, info=info, target="label", **FAST)
    assert (r.done, r.errors) == (6, 0)
    rows = read_manifest(tmp_path / "run").sort_by("key").to_pylist()
    assert [x["key"] for x in rows] == [f"shard-{i // 3:06d}/d/s{i}" for i in range(6)]
    assert [x["label"] for x in rows] == [i % 4 for i in range(6)] == [x["target"] for x in rows]
    with pytest.raises(UsageError, match="no such shard"):
        TarSource(str(tmp_path / "shard-{000000..000002}.tar"))


def test_a_hostile_shard_gives_error_rows_and_the_run_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shard = tmp_path / "evil.tar"
    with tarfile.open(shard, "w") as tf:
        _add(tf, "ok0.png", _png(0))
        _add(tf, "../evil.png", _png(1))
        _add(tf, "/abs/evil.png", _png(2))
        link = tarfile.TarInfo("link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
        hard = tarfile.TarInfo("hard.png")
        hard.type, hard.linkname = tarfile.LNKTYPE, "ok0.png"
        tf.addfile(hard)
        fifo = tarfile.TarInfo("fifo.png")
        fifo.type = tarfile.FIFOTYPE
        tf.addfile(fifo)
        _add(tf, "corrupt.png", b"\x89PNG\r\n\x1a\n not really")
        _add(tf, "nolabel.cls", b"3")  # a sample without an image
        _add(tf, "ok1.png", _png(3))
    data = shard.read_bytes().rstrip(b"\0")
    huge = tarfile.TarInfo("huge.png")
    huge.size = 1 << 40  # declared 1 TiB, no data behind it
    shard.write_bytes(data + b"\0" * (-len(data) % 512) + huge.tobuf(format=tarfile.GNU_FORMAT))

    src = TarSource(str(shard))
    read = []
    monkeypatch.setattr(src, "_read", lambda *a: read.append(a) or TarSource._read(src, *a))
    loaded = {it.key: src.load(it) for it in src.items()}
    errors = {k.split("/", 1)[1]: v.error for k, v in loaded.items() if v.error}
    assert sorted(k for k, v in loaded.items() if v.error is None) == ["evil/ok0", "evil/ok1"]
    assert any("'../evil.png' leaves the archive" in e for e in errors.values())
    assert any("'/abs/evil.png' leaves the archive" in e for e in errors.values())
    assert any("'link.png' is a link (to '/etc/passwd')" in e for e in errors.values())
    assert any("'hard.png' is a link" in e for e in errors.values())
    assert any("'fifo.png' is not a regular file" in e for e in errors.values())
    assert "not an image file" in errors["corrupt"] and "no image member" in errors["nolabel"]
    assert "1,099,511,627,776 bytes, more than" in errors["huge"]
    assert len(read) == 3  # ok0, corrupt, ok1: no refused member was read

    model, info = tiny_model()
    r = run_dataset(str(shard), tmp_path / "run", model, info=info, **FAST)
    assert (r.done, r.errors) == (len(loaded), len(loaded) - 2)
    assert not list(tmp_path.glob("**/evil.png")) and not (tmp_path.parent / "evil.png").exists()


def test_not_a_tar_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.tar").write_bytes(b"\x1f\x8b compressed or not a tar at all")
    with pytest.raises(UsageError, match="not a readable uncompressed tar shard"):
        TarSource(str(tmp_path / "x.tar"))
