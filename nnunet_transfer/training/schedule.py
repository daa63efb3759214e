"""A strategy's schedule: phases, each saying what trains and at which learning rate.

A `Schedule` is a sequence of `Phase`s. A phase lasts a number of epochs or a fraction of the
run (the last may leave its length out: the rest of the run), optionally starts with a linear
learning-rate warm-up, and lists `Rule`s: each selects parameters by part (encoder / decoder /
head), by stage within a part and by kind (conv weights, biases, normalisation affine) and gives
them a learning-rate multiplier (0 = frozen). A parameter selected by several rules takes the
last one's multiplier; a parameter no rule selects is frozen. A rule's `decay` multiplies the
multiplier by decay ** (stages between the parameter's stage and the head): a layer-wise
learning rate. A phase may name low-rank `Adapters` (LoRA): the adapters train, the weights they
adapt stay frozen. A phase with `per_stage` set is split into one sub-phase per stage of that
part, nearest the head first, the k-th training the phase's rules plus the k stages nearest the
head (gradual unfreezing: for the encoder, deepest first).

Nothing here touches a network: `Schedule.resolve` turns the schedule into `ResolvedPhase`s with
epoch boundaries for a run's length and its architecture's stage counts; `training/selection.py`
applies a resolved phase to a network.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from nnunet_transfer.architectures.parts import PARTS

PARAMETER_KINDS = ("weights", "biases", "norms")
"""Kinds of parameter a rule selects: weights of convolutions (and any other layer but norms),
biases of those layers, the affine weight and bias of normalisation layers."""

KNOB = "knob"
"""A rule's decay or an adapter's rank given as KNOB is read from the run's budget knob
(NNUNET_TRANSFER_LAYERWISE_DECAY, NNUNET_TRANSFER_LORA_RANK)."""


@dataclass(frozen=True)
class Rule:
    parts: tuple[str, ...] = PARTS
    stages: tuple[int, ...] | None = None   # indices in data-flow order, negative from the end
    kinds: tuple[str, ...] = PARAMETER_KINDS
    lr: float = 1.0                         # multiplier of the run's initial LR; 0 = frozen
    decay: float | str | None = None        # per stage away from the head; KNOB: the knob

    def __post_init__(self):
        for values, allowed, what in ((self.parts, PARTS, "part"),
                                      (self.kinds, PARAMETER_KINDS, "kind")):
            unknown = set(values) - set(allowed)
            if unknown:
                raise ValueError(f"unknown {what} {sorted(unknown)}; choose from {allowed}")
        if self.lr < 0:
            raise ValueError(f"a learning-rate multiplier cannot be negative ({self.lr})")

    def as_json(self) -> dict:
        return {"parts": list(self.parts), "stages": None if self.stages is None else
                list(self.stages), "kinds": list(self.kinds), "lr": self.lr, "decay": self.decay}


@dataclass(frozen=True)
class Adapters:
    """Low-rank adapters on every convolution weight of `parts` (the weights stay frozen)."""
    rank: int | str = KNOB
    parts: tuple[str, ...] = ("encoder", "decoder")
    lr: float = 1.0

    def as_json(self) -> dict:
        return {"rank": self.rank, "parts": list(self.parts), "lr": self.lr}


@dataclass(frozen=True)
class Phase:
    name: str
    rules: tuple[Rule, ...]
    epochs: int | None = None        # length in epochs, or
    fraction: float | None = None    # in a fraction of the run; neither: the rest of the run
    warmup_epochs: int | None = None
    warmup_fraction: float | None = None
    adapters: Adapters | None = None
    per_stage: str | None = None     # "encoder" / "decoder": one sub-phase per stage

    def __post_init__(self):
        if self.per_stage not in (None, "encoder", "decoder"):
            raise ValueError(f"per_stage is encoder or decoder, not {self.per_stage!r}")

    def as_json(self) -> dict:
        return {"name": self.name, "epochs": self.epochs, "fraction": self.fraction,
                "warmup_epochs": self.warmup_epochs, "warmup_fraction": self.warmup_fraction,
                "train": [r.as_json() for r in self.rules],
                "adapters": self.adapters.as_json() if self.adapters else None,
                "per_stage": self.per_stage}


@dataclass(frozen=True)
class ResolvedPhase:
    """A phase placed in a run: epochs [start, end), warm-up in epochs."""
    name: str
    start: int
    end: int
    rules: tuple[Rule, ...]
    warmup: int = 0
    adapters: Adapters | None = None

    def warmup_factor(self, epoch: int) -> float:
        """Linear warm-up: (k + 1) / (warmup + 1) in the phase's k-th epoch, then 1."""
        k = epoch - self.start
        return (k + 1) / (self.warmup + 1) if 0 <= k < self.warmup else 1.0

    def as_json(self) -> dict:
        return {"name": self.name, "start_epoch": self.start, "end_epoch": self.end,
                "warmup_epochs": self.warmup}


@dataclass(frozen=True)
class Schedule:
    phases: tuple[Phase, ...]

    def __post_init__(self):
        if not self.phases:
            raise ValueError("a schedule needs at least one phase")
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ValueError(f"phase names must differ: {names}")
        for phase in self.phases[:-1]:
            if phase.epochs is None and phase.fraction is None:
                raise ValueError(f"phase {phase.name!r} needs a length (epochs or fraction): "
                                 "only the last phase may take the rest of the run")

    def resolve(self, num_epochs: int, stage_counts: dict[str, int]) -> tuple[ResolvedPhase, ...]:
        """The phases with their epochs in a run of `num_epochs` epochs; boundaries are rounded
        from the cumulative lengths, so a phase may get no epoch in a very short run."""
        resolved, start, cumulative = [], 0, 0.0
        for index, phase in enumerate(self.phases):
            last = index == len(self.phases) - 1
            if phase.epochs is not None:
                cumulative += phase.epochs
            elif phase.fraction is not None:
                cumulative += phase.fraction * num_epochs
            else:
                cumulative = num_epochs
            end = num_epochs if last and phase.epochs is None and phase.fraction is None else \
                min(num_epochs, round(cumulative))
            end = max(end, start)
            warmup = (phase.warmup_epochs if phase.warmup_epochs is not None
                      else round((phase.warmup_fraction or 0.0) * num_epochs))
            resolved.extend(_split_per_stage(
                ResolvedPhase(phase.name, start, end, phase.rules, warmup, phase.adapters),
                phase.per_stage, stage_counts))
            start = end
        return tuple(resolved)

    def parts_held(self) -> dict[str, str]:
        """Part -> the first phase that keeps some of its parameters from training (frozen,
        whole or in part, or under low-rank adapters). Such a part must come from the
        checkpoint: held at its random initialisation it would be no transfer at all."""
        held: dict[str, str] = {}
        for phase in self.phases:
            for part in PARTS:
                if part not in held and not _trains_whole(phase, part):
                    held[part] = phase.name
        return {part: held[part] for part in PARTS if part in held}

    def as_json(self) -> list[dict]:
        return [p.as_json() for p in self.phases]


def _trains_whole(phase: Phase, part: str) -> bool:
    """Whether every parameter of `part` trains throughout `phase`: a rule selects all of it at
    a multiplier above zero, no later rule sets any of it to zero, no adapter holds it, and it
    is not unfrozen stage by stage."""
    if (phase.adapters and part in phase.adapters.parts) or phase.per_stage == part:
        return False
    trains = False
    for rule in phase.rules:
        if part not in rule.parts:
            continue
        moving = rule.lr > 0 and rule.decay != 0
        whole = rule.stages is None and set(rule.kinds) == set(PARAMETER_KINDS)
        trains = (trains or (moving and whole)) and moving
    return trains


def _split_per_stage(phase: ResolvedPhase, part: str | None, stage_counts: dict[str, int]
                     ) -> list[ResolvedPhase]:
    if part is None:
        return [phase]
    count = stage_counts[part]
    length = phase.end - phase.start
    bounds = [phase.start + round(i * length / count) for i in range(count + 1)]
    return [replace(phase, name=f"{phase.name}{k}", start=bounds[k - 1], end=bounds[k],
                    rules=phase.rules + (Rule(parts=(part,), stages=tuple(range(-k, 0))),),
                    warmup=phase.warmup if k == 1 else 0)
            for k in range(1, count + 1)]


def phase_at(phases: tuple[ResolvedPhase, ...], epoch: int) -> ResolvedPhase:
    """The phase epoch `epoch` trains in (the last phase for epochs after the run)."""
    for phase in phases:
        if phase.start <= epoch < phase.end:
            return phase
    return phases[-1]


def one_phase(frozen_parts=frozenset(), name: str = "train") -> Schedule:
    """The schedule of the one-phase strategies: every part but `frozen_parts` trains."""
    return Schedule((Phase(name, (Rule(parts=tuple(p for p in PARTS
                                                   if p not in frozen_parts)),)),))

