"""How accuracy is measured, shared by ``limnet eval``, ``limnet compare`` and training.

- :mod:`.annotator`: the simulated annotator of DESIGN.md (where a user clicks next).
- :mod:`.cases`: real annotated volumes (``cases.json``, MSD / nnU-Net folders), the split,
  and the objects evaluated (``configs/eval_objects.json``).
- :mod:`.protocol`: the protocol run through the public ``Session`` API, per object and
  variant.
- :mod:`.results`: what it measures per object; :mod:`.report`: summaries, files and the
  paired comparison of two evaluations.

Dice itself is :func:`napari_limnet.engine.measure.dice`, the engine's. Only numpy, torch
(through the session) and matplotlib's Agg backend.
"""

from ..engine.measure import dice
from .protocol import VARIANTS, evaluate_object, run_evaluation
from .report import (
    compare_results,
    markdown_comparison,
    markdown_summary,
    summarise,
    write_outputs,
)
from .results import THRESHOLDS, ObjectResult, load_results, noc

__all__ = [
    "THRESHOLDS",
    "VARIANTS",
    "ObjectResult",
    "compare_results",
    "dice",
    "evaluate_object",
    "load_results",
    "markdown_comparison",
    "markdown_summary",
    "noc",
    "run_evaluation",
    "summarise",
    "write_outputs",
]
