"""The one stand-in for the trained round that engine and widget tests share: threshold +
slice-by-slice propagation, deterministic and fast, so that those tests test the session and
the widget, not the networks."""

from __future__ import annotations

import time

import numpy as np
from scipy import ndimage


class FakeEngine:
    """Deterministic stand-in for the trained round: threshold + slice-by-slice propagation.

    The widget tests test the widget, so they do not depend on trained weights. ``delay`` (s)
    is spent per slice, as a real network would, to test progress, cancel and responsiveness.
    """

    def __init__(self, threshold: float = 50.0, upper: float = np.inf) -> None:
        self.threshold = threshold
        self.upper = upper
        self.delay = 0.0
        self.busy = 0.0  # seconds of pure-Python work per slice (holds the GIL, like glue code)
        self.rounds = 0
        # what each round was given: its prompts, pinned slices, every slice's mask before
        # the round, and its options
        self.calls: list[dict] = []

    def _fg(self, img: np.ndarray) -> np.ndarray:
        return (img > self.threshold) & (img < self.upper)

    def _work(self) -> None:
        if self.delay:
            time.sleep(self.delay)
        if self.busy:
            end = time.perf_counter() + self.busy
            while time.perf_counter() < end:
                pass

    def run_round(self, model, volume, prompts, current, pinned, blocked, options=None):
        self.rounds += 1
        self.calls.append(
            {
                "prompts": dict(prompts),
                "pinned": set(pinned),
                "current": {z: current(z) for z in range(volume.shape[0])},
                "options": options,
            }
        )
        from napari_limnet.engine.prompts import fill_polygon
        from napari_limnet.engine.rounds import RoundOptions

        options = options or RoundOptions()
        nz = volume.shape[0]
        lo, hi = options.z_range if options.z_range is not None else (0, nz - 1)

        def seg2d(z, sp):
            img = self._fg(volume.slice(z))
            seed = np.zeros(img.shape, bool)
            for y, x, pos in sp.clicks:
                if pos:
                    seed[int(round(y)), int(round(x))] = True
            for y0, x0, y1, x1 in sp.boxes:
                seed[y0 : y1 + 1, x0 : x1 + 1] = True
            for region in sp.regions:  # lassos: like a box, the object lies inside
                seed |= fill_polygon(np.asarray(region), img.shape)
            lab, _ = ndimage.label(img)
            hit = np.unique(lab[seed & img])
            m = np.isin(lab, hit[hit > 0])
            prev = current(z)
            if prev is not None and not seed.any():
                m = prev.copy()
            for y, x, pos in sp.clicks:
                if not pos:
                    lab2, _ = ndimage.label(m)
                    v = lab2[int(round(y)), int(round(x))]
                    if v:
                        m[lab2 == v] = False
            return m

        decided = {}
        total = len(prompts)
        for z in sorted(prompts):
            self._work()
            m = seg2d(z, prompts[z])
            b = blocked(z)
            if b is not None:
                m &= ~b
            decided[z] = m
            yield z, m, total
        if not options.propagation:
            return
        dirs = {"both": (1, -1), "up": (1,), "down": (-1,)}[options.direction]
        for z0 in sorted(prompts):
            for d in dirs:
                prev = decided[z0]
                z = z0 + d
                while lo <= z <= hi and z not in prompts and z not in pinned and prev.any():
                    if z in decided:
                        break
                    self._work()
                    img = self._fg(volume.slice(z))
                    lab, _ = ndimage.label(img)
                    hit = np.unique(lab[prev & img])
                    m = np.isin(lab, hit[hit > 0])
                    b = blocked(z)
                    if b is not None:
                        m &= ~b
                    decided[z] = m
                    total = max(total, len(decided) + 1)
                    yield z, m, total
                    prev = m
                    z += d
