"""The run's sink: per-item outputs, statistics, summary sums and manifest parts.

:class:`ManifestSink` is shaped like Ray Data's ``Datasink``: :meth:`~ManifestSink.on_write_start`,
:meth:`~ManifestSink.write` (a batch of payloads — plain dicts, one per explained or failed
item), :meth:`~ManifestSink.on_write_complete` and :meth:`~ManifestSink.on_write_failed`. It
writes each item's files atomically through :mod:`layerscope.outputs` (the writer chosen by
extension) and its maps to the run's maps store (:mod:`~layerscope.batch.maps_store`,
``--save maps``), computes its statistics, and every ``commit_every`` items (or when told)
commits one manifest part: first the chunk's summary sums, then the ``.parquet`` part. An
item is done exactly when its part exists, so an interrupted run loses at most the chunk in
progress (redone by the rerun, its files replaced) and never lists a file that is not whole.
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from layerscope.batch import fs, manifest, maps_store, stats
from layerscope.errors import LayerscopeError, OutputError

#: Side of a report thumbnail, in pixels.
THUMB_SIDE = 96
#: A write failing with one of these ends the run (every later item would fail the same way).
FATAL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def output_name(key: str) -> str:
    """A relative file name (without extension) for an item key: POSIX separators kept as
    folders, absolute anchors and ``..`` made harmless.

    Injective: a key that this normalisation changes (``x:y.png``, ``a\\b.png``,
    ``./a.jpg``, ``/abs/a.png``) gets ``~`` and 10 hex digits of its SHA-256, so it never
    shares a file with a key that is already a clean relative path (``x_y.png``,
    ``a/b.png``, ``a.jpg``).
    """
    parts = [p for p in key.replace("\\", "/").split("/") if p not in ("", ".")]
    parts = ["__" if p == ".." else p.replace(":", "_") for p in parts]
    name = "/".join(parts) or "item"
    if name != key:
        name += "~" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return name


def is_fatal(e: BaseException) -> bool:
    """Whether a write error is the disk's (full, over quota, read-only) rather than one item's."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in FATAL_ERRNOS:
            return True
        if isinstance(cur, OutputError) and any(
            s in str(cur) for s in ("no space left", "disk quota exceeded", "read-only file system")
        ):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


@dataclass
class RunContext:
    """What every item of a run shares (known before the first item)."""

    #: the run folder: a path, or a :func:`~layerscope.batch.fs.run_dir` (a URI's included)
    run_dir: Any
    layers: list[str]
    method: str
    class_names: list[str] | None
    save: tuple[str, ...]
    tag: str
    shard_index: int = 0
    render: Any = None
    thumbs: bool = False
    info: Any = None
    method_options: dict[str, Any] = field(default_factory=dict)
    commit_every: int = 256
    #: ``float32`` / ``float16``: the maps go to the run's maps store; ``None``: they do not
    maps_dtype: str | None = None
    part_start: int | None = None
    part_step: int = 1
    writer_id: int = 0
    #: who writes, as each row's ``writer`` column records it (``None``: :func:`writer_label`)
    writer: str | None = None


def writer_error(e: BaseException) -> str:
    """The one line a writer that failed reports (its first line; the exception's type in
    front unless it is one of layerscope's own errors)."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text if isinstance(e, LayerscopeError) else f"{type(e).__name__}: {text}"


def writer_label() -> str:
    """This process as a manifest row's ``writer``: ``host/pid:N`` (cheap, read once per sink)."""
    return f"{socket.gethostname()}/pid:{os.getpid()}"


@dataclass(frozen=True)
class _LayerFacts:
    """One layer's map of one item, as a batch's write computed it."""

    stats: dict[str, float | None]
    small: np.ndarray
    hit: bool | None


class ManifestSink:
    """Writes items and commits them in manifest parts (see the module)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.rows: list[dict[str, Any]] = []
        self.sums = stats.SummarySums()
        start = ctx.part_start
        self.next_part = start if start is not None else manifest.next_part_number(ctx.run_dir, ctx.tag)
        self.ok = 0
        self.errors = 0
        self.seconds = {"render_write": 0.0, "commit": 0.0}
        self.maps: maps_store.ShardWriter | None = None
        self.writer = ctx.writer if ctx.writer is not None else writer_label()

    # ------------------------------------------------------------------ Datasink
    def on_write_start(self) -> None:
        """Before the first batch: nothing to prepare (the run folder exists)."""

    def write(self, payloads: Sequence[Mapping[str, Any]]) -> None:
        """Write a batch of payloads (committing a part every ``commit_every`` items)."""
        t0 = time.perf_counter()
        facts = self._batch_facts(payloads)
        self.seconds["render_write"] += time.perf_counter() - t0
        for i, p in enumerate(payloads):
            self.add(p, facts.get(i))

    def _batch_facts(self, payloads: Sequence[Mapping[str, Any]]) -> dict[int, dict[str, _LayerFacts]]:
        """What the manifest and the class means need of every layer's map of the batch's
        items — its statistics, its small normalised copy, its pointing game where the item
        has a mask —, computed per layer for all maps of one shape at once:
        ``{payload index: {layer: facts}}`` (an item or layer left out is computed by its own
        write, which also reports what is wrong with it)."""
        ok = [i for i, p in enumerate(payloads) if p.get("error") is None]
        out: dict[int, dict[str, _LayerFacts]] = {i: {} for i in ok}
        for layer in self.ctx.layers:
            groups: dict[tuple, list[int]] = {}
            for i in ok:
                groups.setdefault(np.shape(payloads[i]["cams"][layer]), []).append(i)
            for shape, idx in groups.items():
                if len(shape) != 2:
                    continue  # not a map: the item's own write reports it
                cams = np.stack([np.asarray(payloads[i]["cams"][layer], dtype=np.float32) for i in idx])
                small = stats.normalised_small(cams)
                hits = self._hits(payloads, idx, cams)
                for j, i in enumerate(idx):
                    out[i][layer] = _LayerFacts(stats.map_stats(cams[j]), small[j], hits.get(i))
        return out

    @staticmethod
    def _hits(payloads: Sequence[Mapping[str, Any]], idx: Sequence[int], cams: np.ndarray) -> dict[int, bool]:
        """The pointing game of the maps ``cams`` of items ``idx`` that have a mask, for the
        masks of one shape at once (``{}`` for a group with a bad mask: each item's own write
        scores it, and reports the bad one)."""
        from layerscope.evaluate.localisation import pointing_game

        by_shape: dict[tuple, list[int]] = {}
        for j, i in enumerate(idx):
            if payloads[i].get("mask") is not None:
                by_shape.setdefault(np.shape(payloads[i]["mask"]), []).append(j)
        out: dict[int, bool] = {}
        for js in by_shape.values():
            masks = np.stack([np.asarray(payloads[idx[j]]["mask"]) for j in js])
            try:
                hits = pointing_game(cams[js], masks)
            except ValueError:
                continue
            out.update({idx[j]: bool(h) for j, h in zip(js, hits, strict=True)})
        return out

    def on_write_complete(self) -> int:
        """Commit what is held; returns the rows committed."""
        return self.commit()

    def on_write_failed(self, error: BaseException) -> None:
        """After a failure: keep nothing that is not committed (the rerun redoes it)."""
        self.rows = []
        self.sums = stats.SummarySums()
        if self.maps is not None:
            self.maps.abort()
            self.maps = None

    # ------------------------------------------------------------------ items
    def add(self, payload: Mapping[str, Any], facts: Mapping[str, _LayerFacts] | None = None) -> None:
        """Write one item's files and keep its row for the next commit (``facts``: its maps'
        statistics, when :meth:`write` computed them with its batch's)."""
        t0 = time.perf_counter()
        row = self._base_row(payload)
        if payload.get("error") is None:
            store = self._maps_file(payload["cams"])
            try:
                row.update(self._write_ok(payload, facts or {}))
                self.ok += 1
            except Exception as e:
                if not isinstance(e, (LayerscopeError, OSError, ValueError)) or is_fatal(e):
                    raise
                row["status"] = f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                row["outputs"] = []
                self.errors += 1
            else:
                if store is not None:  # not one item's failure: an error here ends the run
                    row["maps_shard"] = maps_store.shard_rel(self.ctx.tag, self.next_part)
                    row["maps_row"] = store.add(payload["key"], payload["cams"])
        else:
            row["status"] = f"error: {payload['error']}"
            self.errors += 1
        self.rows.append(row)
        self.seconds["render_write"] += time.perf_counter() - t0
        if len(self.rows) >= self.ctx.commit_every:
            self.commit()

    def _maps_file(self, cams: Mapping[str, Any]) -> maps_store.ShardWriter | None:
        """The maps file this item goes to (``None`` without a maps store); an item whose maps'
        shapes differ from those of the open file commits the part first (one shape per file)."""
        if self.ctx.maps_dtype is None:
            return None
        if self.maps is not None and not self.maps.fits(cams):
            self.commit()
        if self.maps is None:
            path = fs.run_dir(self.ctx.run_dir).root / maps_store.shard_rel(self.ctx.tag, self.next_part)
            self.maps = maps_store.ShardWriter(path, self.ctx.layers, self.ctx.maps_dtype)
        return self.maps

    def _base_row(self, p: Mapping[str, Any]) -> dict[str, Any]:
        names = self.ctx.class_names
        label = p.get("label")
        return {
            "key": p["key"],
            "source": p.get("source"),
            "content_hash": p.get("content_hash"),
            "shard": self.ctx.shard_index,
            "status": "ok",
            "label": label,
            "label_name": _name(names, label),
            "outputs": [],
            "writer": self.writer,
        }

    def _write_ok(self, p: Mapping[str, Any], facts: Mapping[str, _LayerFacts]) -> dict[str, Any]:
        ctx = self.ctx
        names = ctx.class_names
        label, predicted, target = p.get("label"), int(p["predicted"]), int(p["target"])
        correct = None if label is None else bool(predicted == label)
        row: dict[str, Any] = {
            "predicted": predicted,
            "predicted_name": _name(names, predicted),
            "predicted_probability": float(p["predicted_probability"]),
            "target": target,
            "target_name": _name(names, target),
            "target_probability": float(p["target_probability"]),
            "target_score": float(p["target_score"]),
            "correct": correct,
            **manifest.detection_columns(p.get("detections")),
        }
        cams: Mapping[str, np.ndarray] = p["cams"]
        mask = p.get("mask")
        if mask is not None:
            from layerscope.evaluate.localisation import pointing_game
        group = "unlabelled" if label is None else ("correct" if correct else "wrong")
        cls = predicted if label is None else int(label)
        for layer in ctx.layers:
            cam = np.asarray(cams[layer], dtype=np.float32)
            known = facts.get(layer)
            for k, v in (stats.map_stats(cam) if known is None else known.stats).items():
                row[f"{layer}/{k}"] = v
            row[f"{layer}/flat"] = bool(p["flat"][layer])
            if mask is None:
                row[f"{layer}/pointing"] = None
            elif known is None or known.hit is None:
                row[f"{layer}/pointing"] = bool(pointing_game(cam[None], mask[None])[0])
            else:
                row[f"{layer}/pointing"] = known.hit
            self.sums.add(layer, cls, group, cam, None if known is None else known.small)
        row["outputs"] = self._outputs(p)
        return row

    def _outputs(self, p: Mapping[str, Any]) -> list[str]:
        ctx = self.ctx
        base = output_name(p["key"])
        written = []
        exp = None
        rd = fs.run_dir(ctx.run_dir)
        for kind in ctx.save:
            rel = f"items/{base}.{kind}"
            if exp is None:
                exp = self._one_explanation(p)
            with rd.staged(rel) as path:  # a finished file: renamed in place, or put whole
                _save(exp, path, ctx.render)
            written.append(rel)
        if ctx.thumbs and p.get("image") is not None:
            rel = f"thumbs/{base}.png"
            with rd.staged(rel) as path:
                _thumbnail(path, p["image"], p["cams"][ctx.layers[-1]], ctx.render)
            written.append(rel)
        return written

    def _one_explanation(self, p: Mapping[str, Any]) -> Any:
        from layerscope.explanation import Explanation
        from layerscope.info import ModelInfo

        ctx = self.ctx
        image = p.get("image")
        if image is None:
            h, w = np.asarray(p["cams"][ctx.layers[0]]).shape
            image = np.zeros((max(h, 1), max(w, 1), 3), np.uint8)
        extra = {}
        if p.get("outputs") is not None:
            extra["outputs"] = np.asarray(p["outputs"], np.float32)[None]
        return Explanation(
            layers=list(ctx.layers),
            cams={name: np.asarray(p["cams"][name], np.float32)[None] for name in ctx.layers},
            shapes={name: tuple(p["shapes"][name]) for name in ctx.layers},
            targets=np.asarray([int(p["target"])]),
            scores=np.asarray([p["target_score"]], np.float32),
            probabilities=np.asarray([p["target_probability"]], np.float32),
            flat={name: np.asarray([bool(p["flat"][name])]) for name in ctx.layers},
            images=[image],
            method=ctx.method,
            class_names=list(ctx.class_names) if ctx.class_names else None,
            options=dict(ctx.method_options),
            info=ctx.info if ctx.info is not None else ModelInfo(),
            **extra,
        )

    # ------------------------------------------------------------------ commit
    def commit(self) -> int:
        """Commit the kept rows as one manifest part; returns how many rows it held."""
        if not self.rows:
            return 0
        t0 = time.perf_counter()
        rd = fs.run_dir(self.ctx.run_dir)
        stem = f"manifest/{self.ctx.tag}/part-{self.next_part:06d}"
        if self.maps is not None:  # the maps file first: a part only lists maps that are whole
            self.maps.commit()
            self.maps = None
        rd.put(f"{stem}.sums.npz", self.sums.to_bytes())
        manifest.write_part(rd, f"{stem}.parquet", self.rows, self.ctx.layers)
        n = len(self.rows)
        self.rows = []
        self.sums = stats.SummarySums()
        self.next_part += self.ctx.part_step
        self.seconds["commit"] += time.perf_counter() - t0
        return n


def _name(names: Sequence[str] | None, index: Any) -> str | None:
    if index is None:
        return None
    i = int(index)
    return names[i] if names and 0 <= i < len(names) else f"class {i}"


def _save(exp: Any, path: Path, render: Any) -> None:
    """Write one item's explanation; the writer is chosen by extension (:func:`layerscope.outputs.write`)."""
    from layerscope import outputs

    outputs.write(exp, path, render, index=0, overwrite=True)


def _thumbnail(path: Path, image: np.ndarray, cam: np.ndarray, render: Any) -> None:
    """A small picture of the image with its deepest layer's map over it."""
    from PIL import Image

    from layerscope.atomic import atomic_file
    from layerscope.render import normalise, overlay

    im = Image.fromarray(np.asarray(image, np.uint8))
    im.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BILINEAR)
    if max(im.size) < THUMB_SIDE:  # a tiny image (CIFAR-10) is shown larger
        scale = THUMB_SIDE / max(im.size)
        im = im.resize((max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale))), Image.Resampling.NEAREST)
    norm, _ = normalise(np.asarray(cam, np.float32))
    colormap = getattr(render, "colormap", "jet")
    alpha = getattr(render, "alpha", 0.5)
    pic = overlay(np.asarray(im.convert("RGB")), norm, colormap, alpha)
    with atomic_file(path, overwrite=True) as f:
        Image.fromarray(pic).save(f, format="PNG")
