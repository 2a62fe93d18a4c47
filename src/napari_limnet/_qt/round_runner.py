"""The round runner: one round at a time, with explicit states and one place for "after it".

A :class:`RoundRunner` runs the events of ``Session.run_iter`` either in napari's thread worker
(:func:`worker.start_round`, the widget's way) or *inline*: synchronously in the caller's
thread (tests and scripts, as stardist-napari's switch does). Its state is one of
:class:`RunnerState`: ``IDLE`` (no round), ``RUNNING`` and ``CANCELLING`` (asked to stop; the
round's events are closed when it has stopped, so the session goes back to before it).

Anything that changes objects while a round runs goes through :meth:`RoundRunner.when_idle`:
the round is cancelled and the action runs once it has ended. :meth:`RoundRunner.request`
starts a round, or cancels the running one and starts again when it has ended.

Importing this module needs neither Qt nor napari (the thread worker is imported when used).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterator
from typing import Any


class RunnerState(enum.Enum):
    IDLE = "idle"
    RUNNING = "running"
    CANCELLING = "cancelling"


class RoundRunner:
    """Runs rounds one at a time; ``inline=True`` runs them in the caller's thread."""

    def __init__(self, inline: bool = False) -> None:
        self.inline = inline
        self.state = RunnerState.IDLE
        self.restart = False  # start a round again when this one has ended
        self._restart_fn: Callable[[], None] | None = None
        self._deferred: list[Callable[[], None]] = []
        self._worker: Any = None
        self._events: Iterator[Any] | None = None
        self._completed = False
        self._on_batch: Callable[[list], None] | None = None
        self._on_done: Callable[[bool], None] | None = None
        self._on_error: Callable[[Exception], None] | None = None

    @property
    def busy(self) -> bool:
        """A round runs (or is being cancelled)."""
        return self.state is not RunnerState.IDLE

    # ------------------------------------------------------------ control
    def request(self, start: Callable[[], None]) -> None:
        """``start()`` a round now, or cancel the running one and ``start()`` after it."""
        if self.busy:
            self.restart = True
            self._restart_fn = start
            self._stop()
            return
        start()

    def cancel(self) -> bool:
        """Stop the round in progress (no restart); True when one was running."""
        self.restart = False
        if not self.busy:
            return False
        self._stop()
        return True

    def when_idle(self, action: Callable[[], None]) -> None:
        """Run ``action`` now, or cancel the round in progress and run it when it has ended."""
        if not self.busy:
            action()
            return
        self._deferred.append(action)
        self._stop()

    def _stop(self) -> None:
        self.state = RunnerState.CANCELLING
        if self._worker is not None:
            self._worker.quit()

    # ------------------------------------------------------------ running
    def start(
        self,
        events: Iterator[Any],
        *,
        on_batch: Callable[[list], None],
        on_done: Callable[[bool], None],
        on_error: Callable[[Exception], None] | None = None,
        prepare: Callable[[], None] | None = None,
    ) -> None:
        """Run ``events`` (a round's generator): ``on_batch(list_of_events)`` as they come,
        ``on_error(exc)`` if it fails, then ``on_done(completed)`` (False: cancelled or failed;
        the generator is closed first, so the session is back to before the round).

        Must be called while idle. ``prepare`` runs first, in the thread that computes."""
        if self.busy:
            raise RuntimeError("a round is already running")
        self.state = RunnerState.RUNNING
        self._events = events
        self._completed = False
        self._on_batch, self._on_done, self._on_error = on_batch, on_done, on_error
        if self.inline:
            self._run_inline(events, prepare)
            return
        from .worker import start_round

        self._worker = start_round(
            events, self._batch, self._finished, self._error, self._returned, prepare=prepare
        )

    def _run_inline(self, events: Iterator[Any], prepare: Callable[[], None] | None) -> None:
        try:
            if prepare is not None:
                prepare()
            import torch

            with torch.inference_mode():
                for ev in events:
                    self._batch([ev])
                    if self.state is RunnerState.CANCELLING:
                        break
                else:
                    self._completed = True
        except Exception as exc:  # noqa: BLE001 - reported as the worker reports it
            self._error(exc)
        self._finished()

    def _batch(self, batch: list) -> None:
        if self.busy and self._on_batch is not None:
            self._on_batch(batch)

    def _returned(self, _value: Any) -> None:
        self._completed = True  # the round ran to its end (not cancelled)

    def _error(self, exc: Exception) -> None:
        if self._on_error is not None:
            self._on_error(exc)

    def _finished(self) -> None:
        control = getattr(self._worker, "engine_control", None)
        if control is not None:
            control.stop()  # a cancelled round: wait for the engine to leave the generator
        events, self._events = self._events, None
        self._worker = None
        self.state = RunnerState.IDLE
        if events is not None:
            events.close()  # a cancelled round: the session goes back to before it
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            on_done(self._completed)
        deferred, self._deferred = self._deferred, []
        for action in deferred:
            action()
        if self.restart and not self.busy:
            self.restart = False
            start, self._restart_fn = self._restart_fn, None
            if start is not None:
                start()

    def wait(self, timeout: float = 60.0) -> bool:
        """Process Qt events until no round runs or is due to restart; False on timeout."""
        end = time.monotonic() + timeout
        while self.busy or self.restart:
            if time.monotonic() > end:
                return False
            from qtpy.QtWidgets import QApplication

            QApplication.processEvents()
            time.sleep(0.005)
        return True
