"""``run_dataset``: explain every item of a dataset into a run folder, resumably.

The local engine is a pipeline of three stages that overlap:

1. worker processes (a torch ``DataLoader``) read, decode, hash and preprocess the items;
2. the main process runs one ``explain`` per batch (one forward + one backward) on the model;
3. a writer process writes each item's files and commits the manifest in parts.

Queues between the stages are short, so memory depends on the batch size and the queue
lengths, never on the number of items. See :mod:`layerscope.batch.manifest` for the folder
layout and why a killed run resumes without losing or repeating an item.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import multiprocessing as mp
import os
import platform
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from layerscope.batch import manifest
from layerscope.batch.capture import Prepared, explain_batch, prepare
from layerscope.batch.progress import MODES, Progress
from layerscope.batch.sources import Item, Source, open_source
from layerscope.batch.writer import SAVE_KINDS, RunContext, writer_loop, writer_process
from layerscope.errors import LayerscopeError, OutputError, UsageError

log = logging.getLogger("layerscope.batch")

ENGINES = ("local", "ray")
#: Batches waiting for the writer; a full queue makes the capture wait (bounded memory).
WRITER_QUEUE = 4


@dataclass
class RunResult:
    """What a run did.

    Attributes:
        run_dir: the run folder.
        total: items of the source (all shards).
        done: items explained or recorded as errors by this call.
        errors: of ``done``, the items recorded as errors.
        skipped: items already done by an earlier call (resumed).
        other_shards: items that belong to other shards.
        seconds: wall-clock time of this call's processing.
        timings: seconds per stage (``wait_data``, ``capture``, ``wait_writer`` in the main
            process; ``decode`` summed over the readers; ``render_write``, ``commit`` in the writer).
        merged: whether the run's manifest, summaries (and report) were written.
        manifest: the merged manifest's path (``None`` until every shard is done).
    """

    run_dir: Path
    total: int = 0
    done: int = 0
    errors: int = 0
    skipped: int = 0
    other_shards: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    merged: bool = False
    manifest: Path | None = None

    @property
    def rate(self) -> float:
        """Items per second of this call."""
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line: done, skipped, errors, time."""
        text = f"{self.done} done ({self.errors} errors), {self.skipped} skipped as already done"
        if self.other_shards:
            text += f", {self.other_shards} in other shards"
        return text + f", in {self.seconds:.1f} s ({self.rate:.1f} items/s) → {self.run_dir}"


def _parse_save(save: str | Sequence[str] | None) -> tuple[str, ...]:
    if save is None:
        return ("npz",)
    items = [s.strip().lower() for s in (save.split(",") if isinstance(save, str) else save) if s and s.strip()]
    if items == ["none"]:
        return ()
    bad = [s for s in items if s not in SAVE_KINDS]
    if bad or not items:
        raise UsageError(
            f"unknown --save kind {', '.join(bad) or '(empty)'}; use any of {', '.join(SAVE_KINDS)} or none"
        )
    return tuple(dict.fromkeys(items))


def weights_hash(model: Any) -> str:
    """SHA-256 of a model's parameters and buffers (names, dtypes, shapes and values)."""
    h = hashlib.sha256()
    state = getattr(model, "state_dict", None)
    if callable(state):
        for name, t in sorted(state().items()):
            a = t.detach().cpu().contiguous()
            h.update(f"{name}|{a.dtype}|{tuple(a.shape)}".encode())
            h.update(a.view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes() if a.numel() else b"")
        return h.hexdigest()
    weights = getattr(model, "weights", None)
    if weights is not None:
        for w in weights:
            a = np.asarray(w.numpy() if hasattr(w, "numpy") else w)
            h.update(f"{getattr(w, 'path', getattr(w, 'name', ''))}|{a.dtype}|{a.shape}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()
    return "unknown"


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    from layerscope import __version__

    out = {"layerscope": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for name in ("torch", "keras", "pyarrow", "pillow", "ray"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _identity(batch: list[Prepared]) -> list[Prepared]:
    return batch


def _reader_init(worker_id: int) -> None:
    """A reader process dies with the run (a killed run's reader could otherwise hang on a
    full queue nobody reads)."""
    from layerscope.batch.writer import _die_with_parent

    _die_with_parent()


class _Items:
    """A map-style dataset of the pending items (read by the DataLoader's workers)."""

    def __init__(self, source: Source, items: Sequence[Item], preprocess: Callable, shard: Any, keep: bool) -> None:
        self.source, self.items, self.preprocess, self.shard, self.keep = source, items, preprocess, shard, keep

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Prepared:
        return prepare(self.source, self.items[i], self.preprocess, self.shard, self.keep)


def _check_html(ctx: RunContext) -> None:
    """Fail before any work when this layerscope cannot write an ``.html`` explanation."""
    import tempfile

    from layerscope.batch.writer import ChunkWriter, _save

    payload = {
        "cams": {name: np.zeros((2, 2), np.float32) for name in ctx.layers},
        "flat": {name: True for name in ctx.layers},
        "shapes": {name: (1, 2, 2) for name in ctx.layers},
        "target": 0,
        "target_score": 0.0,
        "target_probability": 0.0,
        "image": np.zeros((8, 8, 3), np.uint8),
    }
    exp = ChunkWriter.__new__(ChunkWriter)
    exp.ctx = ctx
    one = exp._one_explanation(payload)
    with tempfile.TemporaryDirectory() as d:
        try:
            _save(one, Path(d) / "check.html", ctx.render)
        except LayerscopeError as e:
            raise UsageError(f"--save html: this layerscope cannot write .html pages ({e})") from None


def run_dataset(
    source: Any = None,
    out_dir: str | os.PathLike[str] = "layerscope-run",
    model: Any = None,
    *,
    layers: str | Sequence[str] | None = None,
    method: str = "gradcam",
    target: int | str | None = None,
    save: str | Sequence[str] | None = "npz",
    batch_size: int = 32,
    workers: int = 2,
    writers: int | None = None,
    shard: str | tuple[int, int] | None = None,
    engine: str = "local",
    overwrite: bool = False,
    report: bool = False,
    render: Any = None,
    preprocess: Any = None,
    info: Any = None,
    cifar10: bool = False,
    split: str = "test",
    cifar10_path: str | os.PathLike[str] | None = None,
    shapes: int | None = None,
    shapes_seed: int = 1,
    limit: int | None = None,
    progress: str = "auto",
    log_every: int = 500,
    commit_every: int = 256,
    method_options: dict[str, Any] | None = None,
    explain_options: dict[str, Any] | None = None,
    ray_actors: int = 1,
    ray_address: str | None = None,
) -> RunResult:
    """Explain every item of a dataset into ``out_dir``: per-item outputs, a Parquet manifest,
    per-class mean maps and (optionally) an index page. A rerun of the same call skips what is
    done; a different run in the same folder is refused unless ``overwrite``.

    Args:
        source: a folder (recursive, image extensions), a glob pattern, a ``.txt`` file of
            paths, a list of paths, or a :class:`~layerscope.batch.sources.Source`; ``None``
            with ``cifar10=True`` or ``shapes=N``.
        out_dir: the run folder.
        model: the model (default: the built-in demo model).
        layers: as for :func:`layerscope.explain`.
        method: the CAM method.
        target: ``None`` (top-1), ``"label"`` (the true label; needs a labelled source:
            CIFAR-10 or shapes), or a class index or name.
        save: per-item outputs, any of ``npz`` (the maps, compressed), ``gif``, ``html``, or
            ``"none"``; a comma-separated string or a list.
        batch_size: images per ``explain`` call.
        workers: reader processes (0: read in the main process).
        writers: writer processes (default: 1, or up to 4 when GIF/HTML pages are rendered).
        shard: ``"i/N"``: only the items whose content hash falls in shard ``i`` of ``N``.
        engine: ``"local"`` or ``"ray"`` (Ray Data; ``ray_address`` or ``RAY_ADDRESS`` picks
            the cluster, else a local Ray).
        overwrite: replace a different run in ``out_dir``.
        report: write ``report.html`` when the run is complete.
        render: a :class:`~layerscope.render.options.RenderOptions` for gif/html/thumbnails.
        preprocess: the model input from RGB images; default: the model info's.
        info: a :class:`~layerscope.info.ModelInfo`.
        cifar10, split, cifar10_path: read CIFAR-10's split.
        shapes, shapes_seed: read ``shapes`` samples of the synthetic shapes dataset.
        limit: at most this many items of CIFAR-10 or shapes.
        progress: ``auto``, ``bar``, ``log`` or ``none``; ``log_every``: items between log lines.
        commit_every: items per manifest part (the most a crash can make the rerun redo).
        method_options: the method's options (``guided_grads=True`` …).
        explain_options: more keyword arguments for :func:`layerscope.explain` (``device``,
            ``precision`` where supported).
        ray_actors: model actors of the Ray engine.

    Returns:
        A :class:`RunResult`.

    Raises:
        UsageError: a bad option, or ``out_dir`` holds a different run.
        OutputError: the run folder cannot be written.
    """
    from layerscope.capture import detect_framework, get_adapter
    from layerscope.info import info_for
    from layerscope.methods import get_method
    from layerscope.render.options import RenderOptions

    t_start = time.perf_counter()
    try:
        import pyarrow  # noqa: F401 - the manifest's format
    except ImportError:
        raise UsageError('dataset runs write a Parquet manifest: pip install "layerscope[batch]" (pyarrow)') from None
    save_kinds = _parse_save(save)
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    if progress not in MODES:
        raise UsageError(f"unknown progress mode {progress!r}; expected one of {', '.join(MODES)}")
    for name, value in (("batch_size", batch_size), ("commit_every", commit_every), ("log_every", log_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"{name} must be a whole number of at least 1, not {value!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise UsageError(f"workers must be a whole number of at least 0, not {workers!r}")
    if writers is not None and (isinstance(writers, bool) or not isinstance(writers, int) or writers < 1):
        raise UsageError(f"writers must be a whole number of at least 1, not {writers!r}")
    shard_t = manifest.parse_shard(shard)
    render = render if render is not None else RenderOptions()
    m = get_method(method)
    method_options = dict(method_options or {})
    unknown = set(method_options) - set(m.options)
    if unknown:
        raise UsageError(
            f"method {method!r} has no option {', '.join(sorted(unknown))}; "
            f"its options: {', '.join(m.options) or 'none'}"
        )
    explain_options = dict(explain_options or {})
    device = explain_options.pop("device", None)  # the model moves there once, for the whole run

    src = open_source(
        source,
        cifar10=cifar10,
        split=split,
        cifar10_path=cifar10_path,
        shapes=shapes,
        shapes_seed=shapes_seed,
        limit=limit,
    )
    if target is not None and isinstance(target, str) and target.lower() in ("label", "true", "true-label"):
        target = "label"
        if src.description.get("kind") not in ("cifar10", "shapes"):
            raise UsageError("--target label needs a source that knows the true labels: --cifar10 or --shapes N")
    if model is None:
        from layerscope.models import load_model

        model = load_model("demo")
    facts = info_for(model, info)
    fw = detect_framework(model)
    placement: Any = contextlib.nullcontext()
    if fw != "torch" and device == "auto":
        device = None
    if device is not None:
        if fw != "torch":
            raise UsageError("device= applies to torch models; a Keras model runs where its backend puts it")
        from layerscope.capture.torch import placed, resolve_device

        placement = placed(model, resolve_device(device))
    resolved = get_adapter(fw).resolve_layers(model, layers, facts)
    layer_names = [name for name, _ in resolved]
    class_names = list(facts.class_names) if facts.class_names else (list(src.class_names) if src.class_names else None)
    if target not in (None, "label"):
        from layerscope.explanation import resolve_target

        target = resolve_target(target, class_names)
    prep = preprocess if preprocess is not None else facts.preprocessor()
    if class_names and not facts.class_names:
        facts = facts.replace(class_names=tuple(class_names))

    run_dir = Path(out_dir)
    tag = manifest.shard_tag(shard_t)
    fingerprint = {
        "source": src.description,
        "model": facts.name or f"{type(model).__module__}.{type(model).__qualname__}",
        "weights_sha256": weights_hash(model),
        "method": method,
        "method_options": method_options,
        "layers": layer_names,
        "target": target,
        "save": list(save_kinds),
        "render": _render_dict(render) if (set(save_kinds) & {"gif", "html"} or report) else None,
        "preprocess": repr(prep),
        "explain_options": explain_options,
        "shards": shard_t[1] if shard_t else 1,
    }
    meta = {
        "started": _now(),
        "versions": _versions(),
        "class_names": class_names,
        "layers": layer_names,
        "report": bool(report),
        "host": platform.node(),
        "engine": engine,
    }
    ctx = RunContext(
        run_dir=run_dir,
        layers=layer_names,
        method=method,
        class_names=class_names,
        save=save_kinds,
        tag=tag,
        shard_index=shard_t[0] if shard_t else 0,
        render=render,
        thumbs=bool(report),
        info=facts,
        method_options=method_options,
        commit_every=commit_every,
    )
    if "html" in save_kinds:
        _check_html(ctx)

    manifest.prepare_run_dir(run_dir, fingerprint, meta, overwrite)
    with manifest.shard_lock(run_dir, tag):
        manifest.remove_parts(run_dir, tag, everywhere=shard_t is None or shard_t[1] == 1)
        items = src.items()
        done = manifest.done_keys(run_dir, tag)
        pending = [it for it in items if it.key not in done]
        result = RunResult(run_dir=run_dir, total=len(items), skipped=len(items) - len(pending))
        keep_image = bool(set(save_kinds) & {"gif", "html"}) or bool(report)
        if writers is None:
            writers = min(4, max(1, (os.cpu_count() or 2) // 2)) if set(save_kinds) & {"gif", "html"} else 1
        bar = Progress(len(pending), progress, log_every)
        params = {
            "layers": layer_names,
            "method": method,
            "target": target,
            "info": facts,
            "method_options": method_options,
            "explain_options": explain_options,
            "keep_image": keep_image,
        }
        try:
            if pending:
                with placement:
                    _run_engine(
                        engine,
                        src,
                        pending,
                        ctx,
                        model,
                        prep,
                        params,
                        bar,
                        result,
                        batch_size,
                        workers,
                        shard_t,
                        writers,
                        ray_actors,
                        ray_address,
                    )
        finally:
            bar.close()
            result.seconds = time.perf_counter() - t_start
        status = {
            "finished": _now(),
            "done": result.done,
            "errors": result.errors,
            "skipped": result.skipped,
            "other_shards": result.other_shards,
            "seconds": round(result.seconds, 3),
            "timings": {k: round(v, 3) for k, v in result.timings.items()},
        }
        manifest.write_json(run_dir / "manifest" / tag / "status.json", status)
    if _all_shards_finished(run_dir, shard_t):
        merged = merge_run(run_dir, report=report)
        result.merged, result.manifest = True, merged
    log.info("%s", result.summary())
    return result


def _run_engine(
    engine: str,
    src: Source,
    pending: list[Item],
    ctx: RunContext,
    model: Any,
    prep: Callable,
    params: dict[str, Any],
    bar: Progress,
    result: RunResult,
    batch_size: int,
    workers: int,
    shard: tuple[int, int] | None,
    writers: int,
    ray_actors: int,
    ray_address: str | None,
) -> None:
    if engine == "ray":
        from layerscope.batch.ray_engine import run_ray

        run_ray(
            src, pending, ctx, model, prep, params, bar, result, batch_size, shard, ray_actors, ray_address, writers
        )
    else:
        _run_local(src, pending, ctx, model, prep, params, bar, result, batch_size, workers, shard, writers)


def _render_dict(render: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(render) if dataclasses.is_dataclass(render) else {"repr": repr(render)}


def _all_shards_finished(run_dir: Path, shard: tuple[int, int] | None) -> bool:
    n = shard[1] if shard else 1
    tags = [manifest.shard_tag((i, n)) for i in range(n)]
    return all((run_dir / "manifest" / t / "status.json").is_file() for t in tags)


# ---------------------------------------------------------------------- the local engine


class _Writer:
    """The writer stage: ``count`` forked processes where possible (else one thread), each fed
    by a bounded queue; batches go to them in turn. Writer ``k`` numbers its manifest parts
    ``base + k``, ``base + k + count`` … so the writers never pick the same name."""

    def __init__(self, ctx: RunContext, count: int = 1) -> None:
        import dataclasses

        self.parent = os.getpid()
        base = manifest.next_part_number(ctx.run_dir, ctx.tag)
        fork = "fork" in mp.get_all_start_methods()
        count = count if fork else 1
        self.outbox: Any = mp.get_context("fork").Queue() if fork else queue.Queue()
        self.inboxes: list[Any] = []
        self.workers: list[Any] = []
        for k in range(count):
            wctx = dataclasses.replace(ctx, part_start=base + k, part_step=count, writer_id=k)
            if fork:
                mpc = mp.get_context("fork")
                inbox: Any = mpc.Queue(maxsize=WRITER_QUEUE)
                worker: Any = mpc.Process(
                    target=writer_process, args=(wctx, inbox, self.outbox, self.parent), daemon=True
                )
            else:  # pragma: no cover - platforms without fork
                inbox = queue.Queue(maxsize=WRITER_QUEUE)
                worker = threading.Thread(
                    target=writer_loop, args=(wctx, inbox, self.outbox, os.getppid()), daemon=True
                )
            worker.start()
            self.inboxes.append(inbox)
            self.workers.append(worker)
        self.counts: dict[int, tuple[int, int]] = {}
        self.stopped: dict[int, dict[str, float]] = {}
        self._turn = 0

    @property
    def ok(self) -> int:
        return sum(c[0] for c in self.counts.values())

    @property
    def errors(self) -> int:
        return sum(c[1] for c in self.counts.values())

    @property
    def seconds(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for sec in self.stopped.values():
            for k, v in sec.items():
                out[k] = out.get(k, 0.0) + v
        return out

    def _check(self) -> None:
        while True:
            try:
                msg = self.outbox.get_nowait()
            except queue.Empty:
                return
            self._handle(msg)

    def _handle(self, msg: Any) -> None:
        kind, k = msg[0], msg[1]
        if kind == "error":
            raise OutputError(f"the writer failed: {msg[2]}")
        if kind == "committed":
            self.counts[k] = (msg[3], msg[4])
        elif kind == "stopped":
            self.stopped[k] = msg[2]

    def _put_one(self, k: int, msg: Any) -> float:
        t0 = time.perf_counter()
        while True:
            self._check()
            try:
                self.inboxes[k].put(msg, timeout=0.5)
                return time.perf_counter() - t0
            except queue.Full:
                if not self.workers[k].is_alive():
                    self._check()
                    raise OutputError("the writer stopped unexpectedly") from None

    def put(self, msg: Any) -> float:
        """Hand a batch to the next writer, waiting while its queue is full; returns the seconds waited."""
        k = self._turn
        self._turn = (self._turn + 1) % len(self.workers)
        return self._put_one(k, msg)

    def stop(self, timeout: float | None = None) -> None:
        """Tell every writer to commit what it holds and end; wait for them."""
        for k in range(len(self.workers)):
            if k not in self.stopped:
                self._put_one(k, ("stop",))
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self.stopped) < len(self.workers):
            try:
                msg = self.outbox.get(timeout=0.5)
            except queue.Empty:
                if any(not w.is_alive() for k, w in enumerate(self.workers) if k not in self.stopped):
                    self._check()
                    if len(self.stopped) == len(self.workers):
                        break
                    raise OutputError("a writer stopped before committing") from None
                if deadline is not None and time.monotonic() > deadline:
                    raise OutputError("the writers did not finish in time") from None
                continue
            self._handle(msg)
        for w in self.workers:
            w.join(timeout=10)

    def abort(self) -> None:
        """After Ctrl-C or an error: commit what is whole, then end (a second failure kills
        the writers)."""
        try:
            self.stop(timeout=60)
        except BaseException:
            self.kill()

    def account(self, result: RunResult, timings: dict[str, float]) -> None:
        """The writers' counts and times into the run's result."""
        result.errors = self.errors
        result.done = self.ok + self.errors
        timings.update(self.seconds)
        result.timings = timings

    def kill(self) -> None:
        """End the writers at once (after an error)."""
        for w in self.workers:
            if isinstance(w, threading.Thread):
                continue
            with contextlib.suppress(Exception):
                if w.is_alive():
                    w.terminate()
                    w.join(timeout=5)


def _explain_safely(model: Any, batch: list[Prepared], params: dict[str, Any]) -> tuple[list[dict[str, Any]], float]:
    """``explain_batch``; when the batch fails as a whole, each item alone, so one bad item
    becomes one error row."""
    try:
        return explain_batch(model, batch, **params)
    except LayerscopeError as e:
        good = [p for p in batch if not p.other_shard and p.error is None]
        if len(good) <= 1:
            for p in good:
                p.error = str(e).splitlines()[0]
            return explain_batch(model, batch, **params)
    out: list[dict[str, Any]] = []
    total = 0.0
    for p in batch:
        try:
            payloads, s = explain_batch(model, [p], **params)
        except LayerscopeError as e:
            p.error = str(e).splitlines()[0]
            payloads, s = explain_batch(model, [p], **params)
        out.extend(payloads)
        total += s
    return out, total


def _run_local(
    src: Source,
    pending: list[Item],
    ctx: RunContext,
    model: Any,
    prep: Callable,
    params: dict[str, Any],
    bar: Progress,
    result: RunResult,
    batch_size: int,
    workers: int,
    shard: tuple[int, int] | None,
    writers: int = 1,
) -> None:
    from torch.utils.data import DataLoader

    dataset = _Items(src, pending, prep, shard, params["keep_image"])
    loader_kw: dict[str, Any] = {}
    if workers > 0:
        loader_kw = {
            "multiprocessing_context": "fork",
            "prefetch_factor": 2,
            "persistent_workers": False,
            "worker_init_fn": _reader_init,
        }
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=_identity, **loader_kw)
    timings = {"wait_data": 0.0, "capture": 0.0, "wait_writer": 0.0, "decode": 0.0}
    writer = _Writer(ctx, writers)
    it = iter(loader)
    try:
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            timings["wait_data"] += time.perf_counter() - t0
            timings["decode"] += sum(p.seconds for p in batch)
            others = sum(p.other_shard for p in batch)
            result.other_shards += others
            payloads, s = _explain_safely(model, batch, params)
            timings["capture"] += s
            timings["wait_writer"] += writer.put(("items", payloads))
            errs = sum(1 for p in payloads if p.get("error") is not None)
            result.done += len(payloads)
            bar.update(len(batch), errs)
        writer.stop()
    except BaseException:
        writer.abort()
        raise
    finally:
        del it
        writer.account(result, timings)


# ---------------------------------------------------------------------- merging


def merge_run(run_dir: str | os.PathLike[str], report: bool | None = None) -> Path:
    """Merge a run's manifest parts (every shard) into ``manifest.parquet``, write the
    per-class mean maps (``summary/mean_maps.npz`` and ``.png``) and, with ``report`` (default:
    as the run was started), ``report.html``.

    Raises:
        UsageError: not a run folder, or an item listed twice (parts of different runs mixed).
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from layerscope.atomic import atomic_file, write_bytes
    from layerscope.batch import stats
    from layerscope.batch.stats import SummarySums, grid_png

    run_dir = Path(run_dir)
    record = manifest.read_run_file(run_dir)
    if record is None:
        raise UsageError(f"{run_dir}: holds no run.json (is it a layerscope batch run folder?)")
    table = manifest.read_manifest(run_dir)
    keys = table.column("key")
    if len(pc.unique(keys)) != len(keys):
        counts = pc.value_counts(keys)
        dup = [v["values"] for v in counts.to_pylist() if v["counts"] > 1]
        raise UsageError(f"{run_dir}: {len(dup)} items are listed more than once (e.g. {dup[0]}); the parts mix runs")
    table = table.sort_by("key")
    out = run_dir / manifest.MANIFEST
    with atomic_file(out, overwrite=True) as f:
        pq.write_table(table, f, compression="zstd")

    layers = list(record.get("layers") or [])
    class_names = list(record.get("class_names") or [])
    sums = SummarySums()
    for part in manifest.part_files(run_dir):
        side = part.with_name(part.name.replace(".parquet", ".sums.npz"))
        if side.is_file():
            sums.merge(SummarySums.from_file(str(side)))
    labels = table.column("label").to_pylist() + table.column("predicted").to_pylist()
    n_classes = stats.class_count(labels, class_names)
    means = sums.means(layers, n_classes)
    summary = run_dir / "summary"
    summary.mkdir(exist_ok=True)
    arrays = dict(means)
    arrays["layers"] = np.asarray(layers)
    arrays["class_names"] = np.asarray(class_names or [f"class {i}" for i in range(n_classes)])
    with atomic_file(summary / "mean_maps.npz", overwrite=True) as f:
        np.savez_compressed(f, **arrays)
    colormap = ((record.get("fingerprint") or {}).get("render") or {}).get("colormap", "jet")
    names = class_names or [f"class {i}" for i in range(n_classes)]
    write_bytes(summary / "mean_maps.png", grid_png(means, layers, names, colormap), overwrite=True)
    if report is None:
        report = bool(record.get("report"))
    if report:
        from layerscope.batch.report import write_report

        write_report(run_dir, table, record)
    shards = sorted((run_dir / "manifest").glob("*/status.json"))
    manifest.update_run_file(run_dir, finished=_now(), items=table.num_rows, shards_finished=len(shards))
    return out
