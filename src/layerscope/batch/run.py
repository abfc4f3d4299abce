"""``run_dataset``: explain every item of a dataset into a run folder, resumably.

A run is a :class:`~layerscope.batch.config.RunConfig` and a
:class:`~layerscope.batch.config.SourceSpec`, checked before any work. Its stages overlap:

1. readers (DataLoader workers, Ray tasks) read, decode, hash and preprocess the items;
2. the model runs one ``explain`` per batch (one forward + one backward);
3. writer processes write each item's files and commit the manifest in parts.

Queues between the stages are short, so memory depends on the batch size and the drawn size,
never on the number of items or a file's size. :mod:`~layerscope.batch.engine` holds the one
loop; :mod:`~layerscope.batch.manifest` the folder layout and why a killed run resumes
without losing or repeating an item.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerscope._version import versions
from layerscope.batch import fs, manifest, maps_store
from layerscope.batch.config import STORE_KINDS, RunConfig, SourceSpec, draws_image
from layerscope.batch.engine import Job, run_engine
from layerscope.batch.merge import all_shards_finished, merge_run, now
from layerscope.batch.progress import Progress, plural
from layerscope.batch.sink import RunContext
from layerscope.errors import UsageError, unknown_name

log = logging.getLogger("layerscope.batch")

__all__ = ["RunConfig", "RunResult", "SourceSpec", "merge_run", "run_config", "run_dataset"]


@dataclass
class RunResult:
    """What a run did.

    Attributes:
        run_dir: the run folder (its URI for object storage).
        total: items of the source (all shards).
        done: items explained or recorded as errors by this call.
        errors: of ``done``, the items recorded as errors.
        skipped: items already done by an earlier call (resumed).
        other_shards: items that belong to other shards.
        other_files: files of a folder source skipped because they are not images.
        unreadable: subfolders of a folder source that could not be read.
        seconds: wall-clock time of this call's processing.
        timings: seconds per stage (``wait_data``, ``capture``, ``wait_writer`` in the main
            process; ``decode`` summed over the readers; ``render_write``, ``commit`` in the writer).
        merged: whether the run's manifest, summaries (and report) were written.
        manifest: the merged manifest's path (``None`` until every shard is done).
    """

    run_dir: Path | str
    total: int = 0
    done: int = 0
    errors: int = 0
    skipped: int = 0
    other_shards: int = 0
    other_files: int = 0
    unreadable: list[str] = field(default_factory=list)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    merged: bool = False
    manifest: Path | str | None = None

    @property
    def rate(self) -> float:
        """Items per second of this call."""
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line: done, skipped, errors, time."""
        text = f"{self.done} done ({plural(self.errors, 'error')}), {self.skipped} skipped as already done"
        if self.other_shards:
            text += f", {self.other_shards} in other shards"
        if self.other_files:
            text += f", {plural(self.other_files, 'non-image file')} not read"
        if self.unreadable:
            text += f", {plural(len(self.unreadable), 'unreadable folder')} ({self.unreadable[0]})"
        return text + f", in {self.seconds:.1f} s ({self.rate:.1f} items/s) → {self.run_dir}"


def _render_dict(render: Any) -> dict[str, Any]:
    return dataclasses.asdict(render) if dataclasses.is_dataclass(render) else {"repr": repr(render)}


def run_dataset(
    source: Any = None,
    out_dir: str | os.PathLike[str] = "layerscope-run",
    model: Any = None,
    *,
    cifar10: bool = False,
    split: str = "test",
    cifar10_path: str | os.PathLike[str] | None = None,
    shapes: int | None = None,
    shapes_seed: int = 1,
    limit: int | None = None,
    image_column: str | None = None,
    id_column: str | None = None,
    label_column: str | None = None,
    **options: Any,
) -> RunResult:
    """Explain every item of a dataset into ``out_dir``: per-item outputs, a Parquet manifest,
    per-class mean maps and (optionally) an index page. A rerun of the same call skips what is
    done; a different run in the same folder is refused unless ``overwrite``.

    Args:
        source: a folder (recursive, image extensions), a glob pattern, a ``.txt`` file of
            paths, a list of paths, a Parquet/Arrow table, WebDataset tar shards (brace
            patterns), a folder saved by ``datasets``' ``save_to_disk``, any of these as an
            fsspec URI (``s3://…``), or a :class:`~layerscope.batch.sources.Source`; ``None``
            with ``cifar10=True`` or ``shapes=N`` (see docs/datasets.md, "Sources").
        out_dir: the run folder: a path or any fsspec URI (``s3://bucket/run``, ``gs://…``);
            see :mod:`~layerscope.batch.fs` for how object storage commits and locks.
        model: the model (default: the built-in demo model).
        layers: as for :func:`layerscope.explain`.
        method: the CAM method.
        target: ``None`` (top-1), ``"label"`` (the true label; needs a labelled source:
            CIFAR-10 or shapes), or a class index or name.
        save: what to write: ``maps`` (every item's maps in the run's columnar maps store,
            ``maps/*.arrow``, read back with :func:`layerscope.open_run`) and/or per-item
            outputs: any extension of the output registry without its dot (``npz`` — the maps,
            compressed —, ``gif``, ``html``, ``png``, ``webp``, ``mp4``, or one registered by
            :func:`layerscope.outputs.register`), or ``"none"``; a comma-separated string or a list.
        maps_dtype: ``"float32"`` (default) or ``"float16"``: the number type of ``save="maps"``.
        batch_size: images per ``explain`` call.
        workers: reader processes (0: read in the main process).
        writers: writer processes of the local engine (default: 1, or up to 4 when GIF/HTML
            pages are rendered); with ``engine="ray"`` each model actor writes its own output.
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
        image_column, id_column, label_column: a table's (or dataset's) column of images
            (bytes, ``{"bytes", "path"}`` structs or paths; default ``image``), of unique item
            ids (default: the row number), of true labels (class indices or names).
        progress: ``auto``, ``bar``, ``log`` or ``none``; ``log_every``: items between log lines.
        commit_every: items per manifest part (the most a crash can make the rerun redo).
        method_options: the method's options (``guided_grads=True`` …).
        explain_options: more keyword arguments for :func:`layerscope.explain` (``device``,
            ``precision`` where supported).
        ray_actors: model actors of the Ray engine (each also writes the items it explains).
        ray_address: the Ray cluster (default: ``RAY_ADDRESS``, else a local Ray started for the run).
        retry_errors: on a rerun, explain again the items recorded as errors (their error
            rows are replaced); ``False`` keeps them as they are.
        recheck: on a rerun, read every done file again and redo the items whose bytes
            changed (with the rest of their manifest part); off by default, as it reads the
            whole data set.

    Returns:
        A :class:`RunResult`.

    Raises:
        UsageError: a bad option, ``out_dir`` holds a different run, or another process is
            running in ``out_dir`` (whatever ``overwrite`` says).
        OutputError: the run folder cannot be written.
    """
    fields = {f.name for f in dataclasses.fields(RunConfig)} - {"out_dir"}
    bad = sorted(set(options) - fields)
    if bad:
        raise TypeError(unknown_name("run_dataset() argument", bad[0], sorted(fields)))
    spec = SourceSpec(
        source, cifar10, split, cifar10_path, shapes, shapes_seed, limit, image_column, id_column, label_column
    )
    config = RunConfig(out_dir=out_dir, **options)
    config.method_options = dict(config.method_options or {})
    config.explain_options = dict(config.explain_options or {})
    return run_config(config, spec, model)


def _placement(model: Any, device: Any) -> tuple[Any, Any]:
    """The model's capture adapter and the context that places the model on ``device``."""
    from layerscope import capture

    adapter = capture.adapter_for(model)
    return adapter, adapter.placed(model, adapter.resolve_device(device))


def run_config(config: RunConfig, spec: SourceSpec, model: Any = None) -> RunResult:
    """Run ``config`` over the items of ``spec`` (see :func:`run_dataset`)."""
    from layerscope.info import info_for
    from layerscope.methods import get_method
    from layerscope.render.options import RenderOptions

    t_start = time.perf_counter()
    try:
        import pyarrow  # noqa: F401 - the manifest's format
    except ImportError:
        raise UsageError('dataset runs write a Parquet manifest: pip install "layerscope[batch]" (pyarrow)') from None
    save_kinds = config.check()
    if fs.is_remote(config.out_dir) and set(save_kinds) & set(STORE_KINDS):
        raise UsageError(
            "--save maps memory-maps its Arrow files in a local (or mounted) RUN_DIR; on object storage "
            "save per-item files (--save npz) or write the run to a local folder and copy it"
        )
    shard_t = manifest.parse_shard(config.shard)
    render = config.render if config.render is not None else RenderOptions()
    m = get_method(config.method)
    method_options = dict(config.method_options or {})
    unknown = sorted(set(method_options) - set(m.options))
    if unknown:
        raise UsageError(
            unknown_name(f"option of method {config.method!r}", unknown[0], list(m.options), valid="Its options")
        )
    explain_options = dict(config.explain_options or {})
    device = explain_options.pop("device", None)  # the model moves there once, for the whole run

    src = spec.open()
    target = config.target
    if isinstance(target, str) and target.lower() in ("label", "true", "true-label"):
        target = "label"
        if src.description.get("kind") not in ("cifar10", "shapes") and not src.description.get("label_column"):
            raise UsageError(
                "--target label needs a source that knows the true labels: --cifar10, --shapes N, "
                "a table with --label-column, or WebDataset shards with .cls members"
            )
    if model is None:
        from layerscope.models import load_model

        model = load_model("demo")
    facts = info_for(model, config.info)
    adapter, placement = _placement(model, device)
    layer_names = [name for name, _ in adapter.resolve_layers(model, config.layers, facts)]
    class_names = list(facts.class_names) if facts.class_names else (list(src.class_names) if src.class_names else None)
    if target not in (None, "label"):
        from layerscope.explanation import resolve_target

        target = resolve_target(target, class_names)
    prep = config.preprocess if config.preprocess is not None else facts.preprocessor()
    if class_names and not facts.class_names:
        facts = facts.replace(class_names=tuple(class_names))

    drawn = any(draws_image(k) for k in save_kinds if k != "npz") or bool(config.report)
    run_dir = fs.run_dir(config.out_dir)  # a local folder or a URI (s3://, gs://, file://)
    tag = manifest.shard_tag(shard_t)
    fingerprint = {
        "source": src.description,
        "model": facts.name or f"{type(model).__module__}.{type(model).__qualname__}",
        "weights_sha256": adapter.weights_digest(model),
        "method": config.method,
        "method_options": method_options,
        "layers": layer_names,
        "target": target,
        "save": list(save_kinds),
        "maps_dtype": config.maps_dtype if "maps" in save_kinds else None,
        "render": _render_dict(render) if drawn else None,
        "preprocess": repr(prep),
        "explain_options": explain_options,
        "shards": shard_t[1] if shard_t else 1,
    }
    meta = {
        "started": now(),
        "versions": versions(),
        "class_names": class_names,
        "layers": layer_names,
        "report": bool(config.report),
        "host": platform.node(),
        "engine": config.engine,
    }
    ctx = RunContext(
        run_dir=run_dir,
        layers=layer_names,
        method=config.method,
        class_names=class_names,
        save=tuple(k for k in save_kinds if k not in STORE_KINDS),
        maps_dtype=config.maps_dtype if "maps" in save_kinds else None,
        tag=tag,
        shard_index=shard_t[0] if shard_t else 0,
        render=render,
        thumbs=bool(config.report),
        info=facts,
        method_options=method_options,
        commit_every=config.commit_every,
    )
    _check_outputs(save_kinds, render)

    with manifest.RunLock(run_dir) as lock:  # before anything in the folder is read or removed
        manifest.prepare_run_dir(run_dir, fingerprint, meta, config.overwrite, lock)
        with manifest.shard_lock(run_dir, tag):
            params = {
                "layers": layer_names,
                "method": config.method,
                "target": target,
                "info": facts,
                "method_options": method_options,
                "explain_options": explain_options,
                "keep_image": drawn,
                "image_side": render.max_side if drawn else None,
            }
            result = _run_shard(config, src, ctx, model, prep, placement, shard_t, t_start, params)
        if all_shards_finished(run_dir, shard_t):
            merged = merge_run(run_dir, report=config.report)
            result.merged, result.manifest = True, merged
    for folder in result.unreadable:
        log.warning("%s: cannot read this folder; its files are not in the run", folder)
    log.info("%s", result.summary())
    return result


def _run_shard(
    config: RunConfig,
    src: Any,
    ctx: RunContext,
    model: Any,
    prep: Any,
    placement: Any,
    shard_t: tuple[int, int] | None,
    t_start: float,
    params: dict[str, Any],
) -> RunResult:
    """One shard of the run, under its lock: resume, run the engine, write the status."""
    run_dir, tag = ctx.run_dir, ctx.tag
    manifest.remove_parts(run_dir, tag, everywhere=shard_t is None or shard_t[1] == 1)
    items = src.items()
    if config.retry_errors:
        manifest.drop_error_rows(run_dir, tag)
    if config.recheck:
        manifest.drop_parts_with(run_dir, tag, changed_files(items, manifest.ok_hashes(run_dir, tag)))
    maps_store.remove_orphans(run_dir, tag)  # maps files whose manifest part never came
    done = manifest.done_keys(run_dir, tag)
    pending = [it for it in items if it.key not in done]
    result = RunResult(run_dir=run_dir.display, total=len(items), skipped=len(items) - len(pending))
    result.other_files, result.unreadable = src.other_files, list(src.unreadable)
    bar = Progress(len(pending), config.progress, config.log_every)
    try:
        if pending:
            job = Job(src, pending, model, prep, params, shard_t, config)
            with placement:
                run_engine(config.engine, job, ctx, config.writer_count(ctx.save), bar, result)
    finally:
        bar.close()
        result.seconds = time.perf_counter() - t_start
    status = {
        "finished": now(),
        "done": result.done,
        "errors": result.errors,
        "skipped": result.skipped,
        "other_shards": result.other_shards,
        "seconds": round(result.seconds, 3),
        "timings": {k: round(v, 3) for k, v in result.timings.items()},
    }
    manifest.write_json(run_dir, f"manifest/{tag}/status.json", status)
    return result


def changed_files(items: Sequence[Any], hashes: dict[str, str]) -> set[str]:
    """Keys of the done file items whose bytes are no longer those recorded (or unreadable)."""
    from concurrent.futures import ThreadPoolExecutor

    from layerscope.batch.sources import file_hash

    todo = [it for it in items if it.kind == "file" and it.key in hashes]

    def differs(it: Any) -> bool:
        try:
            return file_hash(it.ref) != hashes[it.key]
        except OSError:
            return True

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2))) as pool:
        flags = list(pool.map(differs, todo))
    return {it.key for it, changed in zip(todo, flags, strict=True) if changed}


def _check_outputs(kinds: Sequence[str], render: Any) -> None:
    """Fail before any work when a per-item output cannot be written by this layerscope
    (a writer's module missing, frames too large for the format)."""
    import tempfile

    from layerscope import outputs
    from layerscope.errors import LayerscopeError

    with tempfile.TemporaryDirectory() as d:
        for kind in kinds:
            if kind in STORE_KINDS:
                continue
            try:
                outputs.check_path(Path(d) / f"check.{kind}", render, overwrite=True)
            except LayerscopeError as e:
                raise UsageError(f"--save {kind}: {str(e).splitlines()[0]}") from None
