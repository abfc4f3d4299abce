"""The evaluation's Ray engine: the chunks of images scored by Ray actors, each holding the model.

The driver reads the chunks one at a time (a data set never exists whole) and hands each to
the least busy of ``ray_actors`` actors — at most two chunks per actor in flight — which
captures every method's maps and runs every metric's perturbation passes for its images
(:class:`~layerscope.evaluate._chunks.Scorer`); the driver keeps only the per-image values
that come back and merges them in image order, so the result is the local engine's. What
moves between machines are the preprocessed images (once per chunk) and the model (once per
actor); an actor that dies is replaced and its chunks scored again (the scoring is pure),
up to :data:`RETRIES` times per chunk.

Ray is connected to at ``ray_address`` / ``RAY_ADDRESS``, or a fresh local Ray is started
(never one left by an earlier run) and shut down on every exit path; a Ray already
initialised in this process is used as it is (:func:`layerscope.cluster.connect_ray`, shared
with the batch engine). Ray is imported only here and there (``pip install "layerscope[ray]"``).
This module knows nothing of :mod:`layerscope.batch`; the command line
adds the watchdog that keeps a SIGKILLed run's Ray processes from outliving it.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable, Iterable
from typing import Any

from layerscope.cluster import connect_ray
from layerscope.errors import LayerscopeError, UsageError, unknown_name
from layerscope.evaluate._chunks import Chunk, Scorer
from layerscope.evaluate._engine import model_device

#: Where the chunks are scored: this process, or Ray actors.
ENGINES = ("local", "ray")
#: Chunks in flight per actor: one scored, one waiting (the actor never idles on the driver).
IN_FLIGHT = 2
#: Times a chunk is scored again on a new actor after its actor died (a killed process, a lost node).
RETRIES = 2


def check(engine: str, ray_actors: int) -> None:
    """The engine options, checked before any work: a known engine, at least one actor, and
    Ray importable for ``"ray"``.

    Raises:
        UsageError: a bad option, or Ray is not installed.
    """
    if engine not in ENGINES:
        raise UsageError(unknown_name("engine", engine, list(ENGINES)))
    if isinstance(ray_actors, bool) or not isinstance(ray_actors, int) or ray_actors < 1:
        raise UsageError(f"ray_actors must be a whole number of at least 1, not {ray_actors!r}")
    if engine == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UsageError('--engine ray needs Ray: pip install "layerscope[ray]" (or "ray")') from None


class _Actor:
    """A Ray actor: holds a :class:`Scorer` (its model on the actor's GPU if it was given one)."""

    def __init__(self, scorer: Scorer, gpu: bool) -> None:
        if gpu:
            scorer.model.to("cuda")  # Ray made the actor's GPU the only one it sees
        self.scorer = scorer.ready()

    def score(self, start: int, x: Any, targets: Any, masks: Any) -> Chunk:
        return self.scorer.score(x, targets, masks, start)


def score_chunks(
    scorer: Scorer,
    chunks: Iterable[tuple[int, Any, Any, Any]],
    ray_actors: int,
    ray_address: str | None = None,
    done: Callable[[Chunk], None] | None = None,
) -> list[Chunk]:
    """Score ``chunks`` — ``(start, x, targets, masks)``, read one at a time — on Ray actors.

    Args:
        scorer: what each actor scores with (its model is sent once to each actor, from
            the CPU; a model on a GPU gets one GPU per actor where the cluster has them).
        chunks: the chunks, in any number.
        ray_actors: the number of actors (each takes one CPU of the cluster).
        ray_address: the Ray cluster (default ``RAY_ADDRESS``, else a local Ray).
        done: called with each chunk as it comes back (progress).

    Returns:
        The chunks' results, in the order they finished.

    Raises:
        UsageError: the cluster has too few CPUs for ``ray_actors``, or an actor's error
            (the library's own errors come back as they were raised).
    """
    check("ray", ray_actors)
    started = connect_ray(ray_address, max(ray_actors, os.cpu_count() or 1))
    import ray

    actors: list[Any] = []
    try:
        res = ray.cluster_resources()
        if res.get("CPU", 0) < ray_actors:
            raise UsageError(
                f"--ray-actors {ray_actors} needs {ray_actors} CPUs; the Ray cluster has {res.get('CPU', 0):g}"
            )
        on_gpu = model_device(scorer.model).type == "cuda" and res.get("GPU", 0) >= 1
        gpus = min(1.0, res.get("GPU", 0) / ray_actors) if on_gpu else 0
        shipped = scorer
        if model_device(scorer.model).type != "cpu":  # an actor's node may have no such device
            shipped = dataclasses.replace(scorer, model=copy.deepcopy(scorer.model).cpu(), random_model=None)
        ref = ray.put(shipped)
        remote = ray.remote(num_cpus=1, num_gpus=gpus)(_Actor)
        actors = [remote.remote(ref, bool(gpus)) for _ in range(ray_actors)]
        generation = [0] * ray_actors  # an actor replaced after its death is the next generation
        load = [0] * ray_actors
        pending: dict[Any, tuple[int, int, tuple[int, Any, Any, Any]]] = {}
        deaths: dict[int, int] = {}
        out: list[Chunk] = []

        def submit(k: int, chunk: tuple[int, Any, Any, Any]) -> None:
            pending[actors[k].score.remote(*chunk)] = (k, generation[k], chunk)
            load[k] += 1

        def collect() -> None:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for r in ready:
                k, gen, chunk = pending.pop(r)
                load[k] -= 1
                try:
                    result = _get(ray, r)
                except ray.exceptions.RayActorError as e:
                    deaths[chunk[0]] = deaths.get(chunk[0], 0) + 1
                    if deaths[chunk[0]] > RETRIES:
                        raise LayerscopeError(
                            f"a Ray actor died {deaths[chunk[0]]} times scoring images {chunk[0]:,} on: {e}"
                        ) from None
                    if gen == generation[k]:  # the first of its chunks to report the death
                        ray.kill(actors[k])
                        actors[k], generation[k] = remote.remote(ref, bool(gpus)), gen + 1
                    submit(k, chunk)  # the scoring is pure: the chunk again, on the new actor
                    continue
                out.append(result)
                if done is not None:
                    done(result)

        for start, x, targets, masks in chunks:
            while len(pending) >= IN_FLIGHT * ray_actors:
                collect()
            submit(min(range(ray_actors), key=load.__getitem__), (start, x, targets, masks))
        while pending:
            collect()
        return out
    finally:
        for a in actors:
            ray.kill(a)
        if started:
            ray.shutdown()


def _get(ray: Any, ref: Any) -> Any:
    """``ray.get(ref)``; an actor's own error (a bad option, a model that fails) is raised as
    the library raised it."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, LayerscopeError):
            raise cause from None
        raise
