"""The transfer strategies a user picks with `nnUNetv2_train -tr nnUNetTrainer_<name>`.

A strategy says which parts of the network stay fixed, whether it starts from pretrained
weights, and how its initial learning rate relates to nnU-Net's. `trainers/` makes one
trainer class per strategy declared here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from nnunet_transfer.architectures.parts import PARTS


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

    @property
    def trainer_name(self) -> str:
        return f"nnUNetTrainer_{self.name}"

    @property
    def needs_pretrained(self) -> bool:
        return self.pretrained is Pretrained.REQUIRED

    def __post_init__(self) -> None:
        unknown = set(self.frozen_parts) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown network parts {sorted(unknown)}; parts are {PARTS}")


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

ALL_STRATEGIES: tuple[Strategy, ...] = (
    SCRATCH, FINE_TUNE, FROZEN_RANDOM_ENCODER, FROZEN_ENCODER, FROZEN_DECODER,
    FROZEN_DECODER_AND_HEAD, HEAD_ONLY,
)
BY_TRAINER_NAME = {s.trainer_name: s for s in ALL_STRATEGIES}
