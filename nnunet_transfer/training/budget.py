"""Budget knobs of a run, read from environment variables so no new trainer class is needed.

`nnUNetv2_train` has no way to pass extra options to a trainer, so the knobs travel in the
environment (set them by hand or with `eval "$(nnunet-transfer env --epochs 50 ...)"`). Every
value is checked when the trainer starts and recorded in the run's settings.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, fields
from typing import Iterable, Mapping

from nnunet_transfer.errors import UserError
from nnunet_transfer.value_rules import (
    NON_NEGATIVE_WHOLE_NUMBER,
    NotAllowed,
    PATH,
    POSITIVE_NUMBER,
    POSITIVE_WHOLE_NUMBER,
    ValueRule,
    choice,
)

ENV_PREFIX = "NNUNET_TRANSFER_"


def _knob(rule: ValueRule, help: str, default=None):
    """A field of Budget that is a knob: its rule and its help travel in the field's metadata,
    so that the knob is declared once, here, and KNOBS, `env` and the docs read it."""
    return field(default=default, metadata={"rule": rule, "help": help})


@dataclass(frozen=True)
class Knob:
    field: str
    rule: ValueRule
    help: str
    default: object

    @property
    def variable(self) -> str:
        return ENV_PREFIX + self.field.upper()

    @property
    def option(self) -> str:
        return "--" + self.field.replace("_", "-")

    @property
    def described(self) -> str:
        """The help with the default, where the knob has one (`env --help`, the docs)."""
        return self.help if self.default is None else f"{self.help} (default {self.default})"


def parse_knob(knob: Knob, text: str, given_as: str, fix: str) -> object:
    """The value of `knob` written as `text`, or a UserError naming how it was given."""
    try:
        return knob.rule.parse(text)
    except NotAllowed as refusal:
        reason = str(refusal)
    except ValueError:
        # a number of the wrong kind (2.5 epochs) is named by the rule, only words are not numbers
        reason = knob.rule.complaint(text) if _is_float(text) else "is not a number"
    raise UserError(f"{given_as} {reason} ({knob.described}); {fix}")


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Budget:
    """The budget knobs of a run; each field is one knob (NNUNET_TRANSFER_<FIELD>, `env
    --<field>`), its rule and help given where it is declared."""
    epochs: int | None = _knob(POSITIVE_WHOLE_NUMBER, "number of epochs (nnU-Net: 1000)")
    iters: int | None = _knob(POSITIVE_WHOLE_NUMBER,
                              "training iterations per epoch (nnU-Net: 250)")
    val_iters: int | None = _knob(POSITIVE_WHOLE_NUMBER,
                                  "validation iterations per epoch (nnU-Net: 50)")
    lr: float | None = _knob(
        POSITIVE_NUMBER, "initial learning rate; default: nnU-Net's 0.01 times the strategy's "
                         "factor")
    snapshot_every: int = _knob(
        NON_NEGATIVE_WHOLE_NUMBER, "keep the weights every K epochs besides epoch 0 and the "
                                   "final ones; 0 keeps only those two", 50)
    seed: int | None = _knob(
        NON_NEGATIVE_WHOLE_NUMBER,
        "seed of the network initialisation (default: drawn at random and recorded)")
    load: str = _knob(choice(("all", "encoder")),
                      "what -pretrained_weights loads: the whole network or the encoder only",
                      "all")
    head: str = _knob(choice(("auto", "reinit")),
                      "the output layer(s): 'auto' matches their channels by label name (a "
                      "label the source has keeps its trained channel, a new one starts from "
                      "random), 'reinit' always starts them from random", "auto")
    cpu_threads: int | None = _knob(
        POSITIVE_WHOLE_NUMBER, "torch threads of a run on the CPU (default: nnU-Net's, every "
                               "core); set 1 when several runs share the machine")
    layerwise_decay: float = _knob(
        POSITIVE_NUMBER, "LR factor per stage from the head down, of LayerwiseLR and of custom "
                         "strategies whose decay is 'knob'", 0.5)
    lora_rank: int = _knob(
        POSITIVE_WHOLE_NUMBER, "rank of the low-rank adapters of LoRA and of custom strategies "
                               "whose rank is 'knob'", 4)
    strategy_file: str | None = _knob(
        PATH, "the YAML file of nnUNetTrainer_Custom's strategy (docs/how_to/add_a_strategy_file.md)")

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


KNOBS = tuple(Knob(f.name, f.metadata["rule"], f.metadata["help"], f.default)
              for f in fields(Budget))
KNOB_OF_FIELD = {knob.field: knob for knob in KNOBS}
