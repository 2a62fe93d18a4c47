"""Training configuration: the run (:class:`TrainConfig`) and each stage's options
(:class:`InteractionConfig`, :class:`MemoryConfig`, :class:`ScorerConfig`, on the options every
stage shares, :class:`StageConfig`), read from the JSON configs of ``limnet train``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

STAGES = ("interaction", "memory", "scorer")


@dataclass
class StageConfig:
    """What every stage takes: its budget, its batches and the real stacks cut for it."""

    seconds: float = 600.0  # wall-clock budget (the schedule follows it)
    steps: int = 0  # if > 0, a step budget instead of seconds
    batch: int = 32
    lr: float = 2e-3
    real_fraction: float = 0.3
    frames: int = 6  # slices per stack (the memory stage's stack length)
    # Options the shipped weights were trained without (their defaults reproduce them):
    compartments: float = 0.0  # share of synthetic targets with a core / rim of other intensity
    end_fraction: float = 0.0  # share of real stacks in which the object ends (for memory)
    # share of the real stacks whose intensities are drawn anew per labelled structure
    # (SynthSeg-style, ``synthetic.paint_labels``): real anatomy in any contrast
    label_synth: float = 0.0
    # share of real targets that are a structure joined with a touching neighbour
    union_fraction: float = 0.0


@dataclass
class InteractionConfig(StageConfig):
    """The interaction stage: how the simulated user's first prompts and corrections look."""

    click_jitter: float = 2.0  # first-click noise on the interior distance (pixels)
    # share of correction starts whose previous mask looks like a propagated one (the object's
    # mask on a neighbouring slice, leaked into similar tissue, or shrunk) rather than a mild
    # corruption of the target; see ``perturb.propagated_like``
    realistic_prev: float = 0.0
    # share of samples that start from an existing mask (a correction of a propagated or
    # imperfect mask) rather than from nothing; the rest start from a first click. Their own
    # click rounds (0-4) follow either way. 0.35 = the shipped weights.
    correction_start: float = 0.35
    # share of first clicks placed anywhere inside the object (uniformly, at any depth)
    # instead of near its most interior point: users do not click the centre
    click_anywhere: float = 0.0
    # share of first prompts that are a positive scribble (a stroke inside the object, drawn
    # into the positive click map) and share that are a lasso (a rough outline around the
    # object, filled into the box channel); see ``perturb.scribbles`` / ``lassos``
    scribble: float = 0.0
    lasso: float = 0.0
    # training boxes are the object's box with N(0, 2) pixel noise on each side; with
    # box_margin > 0 each side also moves out by up to this share of the object's height or
    # width (uniform), as a user's quick, loose box
    box_margin: float = 0.0


@dataclass
class MemoryConfig(StageConfig):
    """The memory stage: propagation over stacks of ``frames`` slices."""


@dataclass
class ScorerConfig(StageConfig):
    """The fusion scorer: which of two masks of a slice is better."""

    # also learn from the fusion decisions of simulated rounds on this many real training
    # objects (``round_pairs``), run with the ``init_weights`` networks; 1/5 of the objects
    # are held out to choose the fusion threshold stored with the weights
    round_pairs: int = 0
    pair_rounds: int = 8
    pair_fraction: float = 0.5  # share of each batch taken from those pairs (1: only them)


# each stage's options
STAGE_CONFIGS: dict[str, type[StageConfig]] = {
    "interaction": InteractionConfig,
    "memory": MemoryConfig,
    "scorer": ScorerConfig,
}


def stage_config(stage: str, **options: object) -> StageConfig:
    """The options of ``stage``; an option another stage owns (or none does) is refused."""
    if stage not in STAGE_CONFIGS:
        raise ValueError(f"unknown training stage {stage!r}; use one of {STAGES}")
    kind = STAGE_CONFIGS[stage]
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"the {stage} stage has no option(s) {unknown}; its options: {sorted(known)}"
        )
    return kind(**options)  # type: ignore[arg-type]


@dataclass
class TrainConfig:
    out: str = "runs/train"
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # CPU threads (0: torch default)
    # bf16 autocast on the CPU too (CUDA always uses it): about 2x faster training steps where
    # the CPU has AMX / AVX512-BF16 (interaction, batch 96, 2 threads: 4 s against 9 s)
    cpu_bf16: bool = False
    # neighbouring slices on each side that the interaction network sees (2.5D input; see
    # ``InteractionNet``); 0 = one slice, as the shipped weights. With ``init_weights`` of
    # fewer, the new input channels start at zero (the network starts as the old one).
    interaction_context: int = 0
    # the interaction network's channels per level (``networks.WIDTHS`` when empty); a run from
    # ``init_weights`` keeps that file's
    interaction_widths: list[int] = field(default_factory=list)
    cases: str = ""  # cases.json of labelled real cases ("" = synthetic only)
    split: str = ""  # split.json (train cases are used; default: the packaged split)
    real_bank: int = 2000  # number of real stacks to cut
    bank_workers: int = 0  # > 1: cut them in that many processes (GPU machines' many cores)
    init_weights: str = ""  # start from this weights file (fine-tuning); "" = random init
    checkpoint_every: float = 60.0  # seconds
    # every this many seconds (and at the end) the stage's loss and Dice / accuracy on fixed
    # stacks cut from the split's validation cases are logged as val_*; 0 = never. Needs a
    # cases.json (a folder of .npz training volumes has no validation cases).
    validate_every: float = 0.0
    val_stacks: int = 64
    stages: dict[str, StageConfig] = field(
        default_factory=lambda: {s: STAGE_CONFIGS[s]() for s in STAGES}
    )

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        raw = json.loads(Path(path).read_text())
        stages = {k: stage_config(k, **v) for k, v in raw.pop("stages", {}).items()}
        cfg = cls(**raw)
        cfg.stages.update(stages)
        return cfg
