"""The writer pool: the processes that run the :class:`~layerscope.batch.sink.ManifestSink`.

:class:`WriterPool` forks ``count`` writer processes (one thread where there is no fork),
each fed by a bounded queue, so the capture never waits on Pillow, zlib or the disk. A
writer dies with its parent (``PR_SET_PDEATHSIG`` on Linux), so a killed run leaves nothing
behind that could still commit. After a writer fails, the pool never waits on a queue
nobody reads: the run ends within seconds with the writer's error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from typing import Any

from layerscope.batch import manifest
from layerscope.batch.sink import ManifestSink, RunContext, writer_error
from layerscope.errors import OutputError

#: Batches waiting for a writer; a full queue makes the capture wait (bounded memory).
WRITER_QUEUE = 4

__all__ = ["WRITER_QUEUE", "WriterPool", "one_blas_thread", "writer_loop", "writer_process"]


class WriterPool:
    """The writer stage: ``count`` forked processes where possible (else one thread), each fed
    by a bounded queue; batches go to them in turn. Writer ``k`` numbers its manifest parts
    ``base + k``, ``base + k + count`` … so the writers never pick the same name."""

    def __init__(self, ctx: RunContext, count: int = 1) -> None:
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
        self.failed: dict[int, str] = {}
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
            self.failed[k] = msg[2]
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
        """After Ctrl-C or an error: commit what is whole, then end (a second failure, or a
        writer that already failed, kills the writers at once)."""
        if self.failed:
            self.kill()
            return
        try:
            self.stop(timeout=60)
        except BaseException:
            self.kill()

    def account(self, result: Any, timings: dict[str, float]) -> None:
        """The writers' counts and times into the run's result."""
        result.errors = self.errors
        result.done = self.ok + self.errors
        timings.update(self.seconds)
        result.timings = timings

    def kill(self) -> None:
        """End the writers at once (after an error); never wait on a queue nobody reads (a
        queue's feeder thread blocked on a dead writer's pipe would keep the run alive)."""
        for w, inbox in zip(self.workers, self.inboxes, strict=True):
            if isinstance(w, threading.Thread):
                continue
            with contextlib.suppress(Exception):
                inbox.cancel_join_thread()
            with contextlib.suppress(Exception):
                if w.is_alive():
                    w.terminate()
                    w.join(timeout=5)
        with contextlib.suppress(Exception):
            self.outbox.cancel_join_thread()


# ---------------------------------------------------------------------- the process


def _die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (no-op elsewhere)."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


_LIMITS: Any = None


def one_blas_thread() -> None:
    """Run numpy's BLAS on one thread in this helper process (a writer, a reader).

    The statistics shrink every map with two small matrix products; an OpenBLAS that spreads
    them over every core competes with the capture for the same cores and, on a busy
    2-core machine, makes a 224² map's product 5-40× slower (1 ms on one thread). No-op
    without ``threadpoolctl``.
    """
    global _LIMITS
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - an optional speed-up
        return
    with contextlib.suppress(Exception):
        _LIMITS = threadpool_limits(limits=1, user_api="blas")


def writer_loop(ctx: RunContext, inbox: Any, outbox: Any, parent: int) -> None:
    """Serve a :class:`~layerscope.batch.sink.ManifestSink` from a queue until told to stop.

    Messages in: ``("items", [payload, …])``, ``("flush",)``, ``("stop",)``. Out (``k`` is
    ``ctx.writer_id``): ``("committed", k, rows, ok, errors)`` after each part,
    ``("stopped", k, seconds)`` at the end, ``("error", k, message)`` when writing fails (the
    loop then ends).
    """
    writer = ManifestSink(ctx)
    writer.on_write_start()
    committed = 0
    try:
        while True:
            try:
                msg = inbox.get(timeout=1.0)
            except queue.Empty:
                if os.getppid() != parent:  # the run died: commit nothing more
                    return
                continue
            if msg[0] == "items":
                writer.write(msg[1])
            elif msg[0] in ("flush", "stop"):
                if os.getppid() != parent:
                    return
                writer.on_write_complete()
            n_rows = writer.ok + writer.errors
            if n_rows != committed and not writer.rows:
                committed = n_rows
                outbox.put(("committed", ctx.writer_id, n_rows, writer.ok, writer.errors))
            if msg[0] == "stop":
                outbox.put(("stopped", ctx.writer_id, dict(writer.seconds)))
                return
    except BaseException as e:
        writer.on_write_failed(e)
        with contextlib.suppress(Exception):
            outbox.put(("error", ctx.writer_id, writer_error(e)))


def writer_process(ctx: RunContext, inbox: Any, outbox: Any, parent: int) -> None:
    """Entry point of the writer process: dies with its parent, ignores Ctrl-C (the run tells
    it to stop, after which it commits what it holds)."""
    _die_with_parent()
    if os.getppid() != parent:
        return
    one_blas_thread()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    writer_loop(ctx, inbox, outbox, parent)
