"""The round runner: ``Session.run_iter`` in a napari thread worker, yielding batches of slices.

The engine computes in a thread of its own, at a lower CPU priority (Linux: nice
``ENGINE_NICE``), so that on a machine with few cores the viewer's event loop, and the display
server that draws it, get a core when they need one; napari's worker thread only groups its
events into batches. The main thread writes the slices into the Labels layer (the widget
coalesces batches so that it refreshes the layer a few times a second at most). Batches are at
most ``BATCH_SECONDS`` apart; the first event (the prompted slice) is always sent alone, at
once. ``prepare`` runs first, in the engine thread: it loads the model (importing torch and
reading the weights never happen on the main thread) and sets the engine's thread count.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

BATCH_SECONDS = 0.1
ENGINE_NICE = 10  # CPU priority of the engine thread (0 normal, 19 lowest)
_END = object()


def lower_priority(nice: int = ENGINE_NICE) -> None:
    """Lower the CPU priority of the calling thread only (Linux; elsewhere nothing).

    On Linux a thread has its own nice value and the threads it starts (torch's intra-op
    pool) inherit it. Never raises: an unprivileged process may only lower priorities.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except (OSError, AttributeError):
        pass


class EngineControl:
    """Stops a round's engine thread: :meth:`stop` returns once it no longer runs ``events``
    (after the slice it is on), so that the caller may close that generator."""

    def __init__(self) -> None:
        self.stop_flag = threading.Event()
        self.thread: threading.Thread | None = None

    def stop(self, timeout: float | None = None) -> None:
        self.stop_flag.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)


def _engine_thread(
    events: Iterator[Any], prepare: Callable[[], None] | None, out: queue.Queue, stop: Any
) -> None:
    """Run ``events`` to its end (or until ``stop``), putting each event (or the exception,
    then ``_END``) into ``out``."""
    lower_priority()
    try:
        if prepare is not None:
            prepare()
        import torch

        # grad mode is thread-local: switched off here, in the thread that computes
        with torch.inference_mode():
            for ev in events:
                out.put(ev)
                if stop.is_set():
                    break
    except BaseException as exc:  # noqa: BLE001 - handed to the worker, which raises it
        out.put(exc)
    finally:
        out.put(_END)


def batched_round(
    events: Iterator[Any],
    batch_seconds: float = BATCH_SECONDS,
    prepare: Callable[[], None] | None = None,
    control: EngineControl | None = None,
) -> Iterator[list]:
    """Group ``RoundEvent``s into lists; runs in napari's worker thread.

    The events are computed in an engine thread (see the module docstring); ``control`` stops
    it (napari's worker, when quit, just stops asking for batches).
    """
    out: queue.Queue = queue.Queue()
    control = control or EngineControl()
    stop = control.stop_flag
    engine = threading.Thread(
        target=_engine_thread, args=(events, prepare, out, stop), name="limnet-engine"
    )
    control.thread = engine
    engine.start()
    try:
        batch: list = []
        last = time.perf_counter()
        first = True
        while True:
            timeout = (
                None
                if first or not batch
                else max(0.0, last + batch_seconds - time.perf_counter())
            )
            try:
                item = out.get(timeout=timeout)
            except queue.Empty:
                yield batch
                batch, last = [], time.perf_counter()
                continue
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            batch.append(item)
            now = time.perf_counter()
            if first or now - last >= batch_seconds:
                yield batch
                batch, last, first = [], now, False
        if batch:
            yield batch
    finally:
        stop.set()
        engine.join()


def start_round(
    events: Iterator[Any],
    on_batch: Callable[[list], None],
    on_finished: Callable[[], None],
    on_error: Callable[[Exception], None],
    on_returned: Callable[[Any], None],
    prepare: Callable[[], None] | None = None,
) -> Any:
    """Start a generator thread worker over ``events``; returns the worker (``quit()`` cancels)."""
    from napari.qt.threading import create_worker

    control = EngineControl()
    worker = create_worker(
        batched_round,
        events,
        prepare=prepare,
        control=control,
        _start_thread=False,
        _ignore_errors=True,
    )
    worker.engine_control = control  # the widget stops the engine before closing ``events``
    worker.yielded.connect(on_batch)
    worker.errored.connect(on_error)
    worker.returned.connect(on_returned)  # a round that ran to its end (not cancelled)
    worker.finished.connect(on_finished)
    worker.start()
    return worker
