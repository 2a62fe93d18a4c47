"""The round runner: ``Session.run_iter`` in a napari thread worker, yielding batches of slices.

The worker thread only computes; the main thread writes the slices into the Labels layer in the
``yielded`` handler. Batches are at most ``BATCH_SECONDS`` apart so the layer refreshes smoothly
without flooding the event loop. The first event (the prompted slice) is always sent alone, at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

BATCH_SECONDS = 0.05


def batched_round(events: Iterator[Any], batch_seconds: float = BATCH_SECONDS) -> Iterator[list]:
    """Group ``RoundEvent``s into lists; runs in the worker thread under inference mode.

    Grad mode is thread-local, so it is switched off here, in the thread that computes.
    """
    import torch

    with torch.inference_mode():
        batch: list = []
        last = time.perf_counter()
        first = True
        for ev in events:
            batch.append(ev)
            now = time.perf_counter()
            if first or now - last >= batch_seconds:
                yield batch
                batch, last, first = [], now, False
        if batch:
            yield batch


def start_round(
    events: Iterator[Any],
    on_batch: Callable[[list], None],
    on_finished: Callable[[], None],
    on_error: Callable[[Exception], None],
    on_returned: Callable[[Any], None],
) -> Any:
    """Start a generator thread worker over ``events``; returns the worker (``quit()`` cancels)."""
    from napari.qt.threading import create_worker

    worker = create_worker(batched_round, events, _start_thread=False, _ignore_errors=True)
    worker.yielded.connect(on_batch)
    worker.errored.connect(on_error)
    worker.returned.connect(on_returned)  # a round that ran to its end (not cancelled)
    worker.finished.connect(on_finished)
    worker.start()
    return worker
