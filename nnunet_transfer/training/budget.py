"""Budget knobs of a run, read from environment variables so no new trainer class is needed.

`nnUNetv2_train` has no way to pass extra options to a trainer, so the knobs travel in the
environment (set them by hand or with `eval "$(nnunet-transfer env --epochs 50 ...)"`). Every
value is checked when the trainer starts and recorded in the run's settings.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, fields
from typing import Callable, Iterable, Mapping

from nnunet_transfer.arguments import (
    NotAllowed,
    non_negative_whole_number,
    one_of,
    positive_number,
    positive_whole_number,
)
from nnunet_transfer.errors import UserError

ENV_PREFIX = "NNUNET_TRANSFER_"


@dataclass(frozen=True)
class Knob:
    field: str
    parse: Callable[[str], object]
    help: str

    @property
    def variable(self) -> str:
        return ENV_PREFIX + self.field.upper()

    @property
    def option(self) -> str:
        return "--" + self.field.replace("_", "-")


KNOBS = (
    Knob("epochs", positive_whole_number, "number of epochs (nnU-Net: 1000)"),
    Knob("iters", positive_whole_number, "training iterations per epoch (nnU-Net: 250)"),
    Knob("val_iters", positive_whole_number, "validation iterations per epoch (nnU-Net: 50)"),
    Knob("lr", positive_number,
         "initial learning rate; default: nnU-Net's 0.01 times the strategy's factor"),
    Knob("snapshot_every", non_negative_whole_number,
         "keep the weights every K epochs besides epoch 0 and the final ones (default 50; "
         "0 keeps only those two)"),
    Knob("seed", non_negative_whole_number,
         "seed of the network initialisation (default: drawn at random and recorded)"),
    Knob("load", one_of("all", "encoder"),
         "what -pretrained_weights loads: the whole network or the encoder only (default all)"),
    Knob("head", one_of("auto", "reinit"),
         "the output layer(s): 'auto' matches their channels by label name (a label the "
         "source has keeps its trained channel, a new one starts from random), 'reinit' "
         "always starts them from random (default auto)"),
    Knob("cpu_threads", positive_whole_number,
         "torch threads of a run on the CPU (default: nnU-Net's, every core); set 1 when "
         "several runs share the machine"),
    Knob("layerwise_decay", positive_number,
         "LR factor per stage from the head down, of LayerwiseLR and of custom strategies whose "
         "decay is 'knob' (default 0.5)"),
    Knob("lora_rank", positive_whole_number,
         "rank of the low-rank adapters of LoRA and of custom strategies whose rank is 'knob' "
         "(default 4)"),
    Knob("strategy_file", os.path.abspath,
         "the YAML file of nnUNetTrainer_Custom's strategy (docs/how_to/add_a_strategy_file.md)"),
)


KNOB_OF_FIELD = {knob.field: knob for knob in KNOBS}


def parse_knob(knob: Knob, text: str, given_as: str, fix: str) -> object:
    """The value of `knob` written as `text`, or a UserError naming how it was given."""
    try:
        return knob.parse(text)
    except ValueError as error:
        reason = str(error) if isinstance(error, NotAllowed) else "is not a number"
        raise UserError(f"{given_as} {reason} ({knob.help}); {fix}") from None


@dataclass(frozen=True)
class Budget:
    epochs: int | None = None
    iters: int | None = None
    val_iters: int | None = None
    lr: float | None = None
    snapshot_every: int = 50
    seed: int | None = None
    load: str = "all"
    head: str = "auto"
    cpu_threads: int | None = None
    layerwise_decay: float = 0.5
    lora_rank: int = 4
    strategy_file: str | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None,
                         recorded: "Budget | None" = None) -> "Budget":
        """The knobs set in `environ` over `recorded` (a resumed run's own budget) or the
        defaults; a missing seed is drawn at random."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = recorded.as_dict() if recorded else {}
        for knob in KNOBS:
            text = environ.get(knob.variable, "").strip()
            if not text:
                continue
            values[knob.field] = parse_knob(knob, text, f"{knob.variable}={text!r}",
                                            f"fix it or unset it: unset {knob.variable}")
        budget = cls(**values)
        if budget.seed is None:
            # A run without a seed still records the one it used, so it can be repeated.
            budget = cls(**{**budget.as_dict(), "seed": secrets.randbelow(2**31)})
        return budget

    def as_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def environment(self, knobs: Iterable[str] | None = None) -> dict[str, str]:
        """The variables that give a trainer this budget, {NNUNET_TRANSFER_<KNOB>: value}, in
        the order of KNOBS: of the knobs named by field (default: all), those not None. The
        knobs left out keep what the trainer's environment says."""
        chosen = set(KNOB_OF_FIELD) if knobs is None else set(knobs)
        unknown = chosen - set(KNOB_OF_FIELD)
        if unknown:
            raise ValueError(f"not budget knobs: {sorted(unknown)}")
        return {knob.variable: str(getattr(self, knob.field)) for knob in KNOBS
                if knob.field in chosen and getattr(self, knob.field) is not None}
