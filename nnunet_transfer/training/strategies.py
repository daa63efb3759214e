"""The transfer strategies a user picks with `nnUNetv2_train -tr nnUNetTrainer_<name>`.

A strategy says whether it starts from pretrained weights, how its initial learning rate relates
to nnU-Net's, and its schedule (`schedule.py`): which parameters train at which multiplier of
that learning rate, phase by phase. The seven strategies of ONE_PHASE_STRATEGIES are one phase each,
given by their frozen parts; SCHEDULED_STRATEGIES have several phases or finer selections.
`trainers/` makes one trainer class per strategy declared here, and nnUNetTrainer_Custom reads
one from a file (`strategy_file.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from nnunet_transfer.architectures.parts import PARTS
from nnunet_transfer.training.budget import KNOB_OF_FIELD
from nnunet_transfer.training.schedule import (
    KNOB, Adapters, Phase, Rule, Schedule, one_phase)


CUSTOM_TRAINER = "nnUNetTrainer_Custom"   # the trainer of strategies read from a file


class Pretrained(str, Enum):
    REQUIRED = "required"
    REFUSED = "refused"


@dataclass(frozen=True)
class Strategy:
    name: str
    frozen_parts: frozenset[str]
    pretrained: Pretrained
    lr_factor: float
    summary: str
    # None: the one phase in which every part but frozen_parts trains
    schedule: Schedule = field(default=None, compare=False)
    file: str | None = None   # the YAML file of a custom strategy (nnUNetTrainer_Custom)

    @classmethod
    def scheduled(cls, name: str, pretrained: Pretrained, lr_factor: float, summary: str,
                  schedule: Schedule, file: str | None = None) -> "Strategy":
        """A strategy of `schedule`; its frozen_parts are those nothing of which trains in
        the first phase (they must come from the checkpoint)."""
        first = schedule.phases[0]
        training = {part for rule in first.rules if rule.lr > 0 for part in rule.parts}
        adapted = set(first.adapters.parts) if first.adapters else set()
        frozen = frozenset(p for p in PARTS if p not in training or p in adapted)
        return cls(name, frozen, pretrained, lr_factor, summary, schedule, file)

    @property
    def trainer_name(self) -> str:
        return CUSTOM_TRAINER if self.file else f"nnUNetTrainer_{self.name}"

    @property
    def needs_pretrained(self) -> bool:
        return self.pretrained is Pretrained.REQUIRED

    @property
    def parts_needed(self) -> dict[str, str]:
        """The parts the checkpoint must provide whole, each with the first phase that holds
        it (frozen or adapted: `Schedule.parts_held`); {} for a strategy that takes no
        pretrained weights, or whose every part trains from the start (a part the file lacks
        then starts fresh)."""
        return self.schedule.parts_held() if self.needs_pretrained else {}

    def __post_init__(self) -> None:
        unknown = set(self.frozen_parts) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown network parts {sorted(unknown)}; parts are {PARTS}")
        if self.schedule is None:
            object.__setattr__(self, "schedule", one_phase(self.frozen_parts))

    def as_json(self) -> dict:
        return {"name": self.name, "file": self.file, "pretrained": self.pretrained.value,
                "lr_factor": self.lr_factor, "phases": self.schedule.as_json()}


def _strategy(name: str, frozen: tuple[str, ...], pretrained: Pretrained, lr_factor: float,
              summary: str) -> Strategy:
    return Strategy(name, frozenset(frozen), pretrained, lr_factor, summary)


SCRATCH = _strategy(
    "Scratch", (), Pretrained.REFUSED, 1.0,
    "all layers trained from nnU-Net's random (He) initialisation")
FINE_TUNE = _strategy(
    "FineTune", (), Pretrained.REQUIRED, 0.5,
    "all layers fine-tuned from the pretrained weights, initial LR halved (Karimi et al. 2021)")
FROZEN_RANDOM_ENCODER = _strategy(
    "FrozenRandomEncoder", ("encoder",), Pretrained.REFUSED, 1.0,
    "encoder frozen at its random initialisation; decoder and head trained (Karimi et al. 2021)")
FROZEN_ENCODER = _strategy(
    "FrozenEncoder", ("encoder",), Pretrained.REQUIRED, 0.5,
    "pretrained encoder frozen; decoder and head fine-tuned (Weatheritt et al. 2020)")
FROZEN_DECODER = _strategy(
    "FrozenDecoder", ("decoder",), Pretrained.REQUIRED, 0.5,
    "pretrained decoder frozen; encoder and head fine-tuned (Karimi et al. 2021, section 3.7)")
FROZEN_DECODER_AND_HEAD = _strategy(
    "FrozenDecoderAndHead", ("decoder", "head"), Pretrained.REQUIRED, 0.5,
    "pretrained decoder and head frozen; only the encoder fine-tuned (Karimi et al. 2021)")
HEAD_ONLY = _strategy(
    "HeadOnly", ("encoder", "decoder"), Pretrained.REQUIRED, 1.0,
    "everything but the output layer(s) frozen: a linear probe of the pretrained features")

ONE_PHASE_STRATEGIES: tuple[Strategy, ...] = (
    SCRATCH, FINE_TUNE, FROZEN_RANDOM_ENCODER, FROZEN_ENCODER, FROZEN_DECODER,
    FROZEN_DECODER_AND_HEAD, HEAD_ONLY,
)


def _scheduled(name: str, pretrained: Pretrained, lr_factor: float, summary: str,
               *phases: Phase) -> Strategy:
    return Strategy.scheduled(name, pretrained, lr_factor, summary, Schedule(phases))


ALL_PARTS = Rule()
LINEAR_PROBE_THEN_FINE_TUNE = _scheduled(
    "LinearProbeThenFineTune", Pretrained.REQUIRED, 1.0,
    "LP-FT: the head alone for the first quarter of the run (a linear probe), then all layers "
    "at half the LR after a linear warm-up (Kumar et al. 2022)",
    Phase("probe", (Rule(parts=("head",)),), fraction=0.25),
    Phase("finetune", (Rule(lr=0.5),), warmup_fraction=0.05))
GRADUAL_UNFREEZE = _scheduled(
    "GradualUnfreeze", Pretrained.REQUIRED, 0.5,
    "the head, then the decoder too, then the encoder's stages one by one from the deepest "
    "(Howard & Ruder 2018)",
    Phase("head", (Rule(parts=("head",)),), fraction=0.1),
    Phase("decoder", (Rule(parts=("decoder", "head")),), fraction=0.1),
    Phase("encoder", (Rule(parts=("decoder", "head")),), per_stage="encoder"))
_DECAY, _RANK = KNOB_OF_FIELD["layerwise_decay"], KNOB_OF_FIELD["lora_rank"]
LAYERWISE_LR = _scheduled(
    "LayerwiseLR", Pretrained.REQUIRED, 1.0,
    f"all layers; the LR is multiplied by {_DECAY.variable} ({_DECAY.default}) per stage "
    "from the head down to the first encoder stage (discriminative fine-tuning)",
    Phase("train", (Rule(decay=KNOB),)))
WARMUP_FINE_TUNE = _scheduled(
    "WarmupFineTune", Pretrained.REQUIRED, 1.0,
    "all layers fine-tuned at nnU-Net's LR after a linear warm-up over the first 5 % of the "
    "run (nnssl's and nnU-Net master's fine-tuning)",
    Phase("train", (ALL_PARTS,), warmup_fraction=0.05))
NORM_AND_BIAS = _scheduled(
    "NormAndBias", Pretrained.REQUIRED, 1.0,
    "only normalisation affine parameters, biases and the head train (BitFit, Zaken et al. 2022)",
    Phase("train", (Rule(parts=("encoder", "decoder"), kinds=("biases", "norms")),
                    Rule(parts=("head",)))))
LORA = _scheduled(
    "LoRA", Pretrained.REQUIRED, 1.0,
    f"the pretrained network frozen; low-rank adapters (rank {_RANK.variable}, "
    f"{_RANK.default}) on its convolutions and the head train (Hu et al. 2021)",
    Phase("train", (Rule(parts=("head",)),), adapters=Adapters()))

SCHEDULED_STRATEGIES: tuple[Strategy, ...] = (
    LINEAR_PROBE_THEN_FINE_TUNE, GRADUAL_UNFREEZE, LAYERWISE_LR, WARMUP_FINE_TUNE,
    NORM_AND_BIAS, LORA,
)
STRATEGIES = ONE_PHASE_STRATEGIES + SCHEDULED_STRATEGIES
"""Every built-in strategy (ONE_PHASE_STRATEGIES: the seven one-phase ones, trained by the
`strategy_runs` fixture and the architecture matrix)."""
BY_TRAINER_NAME = {s.trainer_name: s for s in STRATEGIES}
