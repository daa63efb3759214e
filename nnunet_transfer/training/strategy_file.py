"""A strategy written in a YAML file, for `nnUNetTrainer_Custom` (NNUNET_TRANSFER_STRATEGY_FILE)
and the study file's `strategies`. Every mistake is reported with its line.

    name: ProbeThenAll                 # letters, digits, _ and -; default: the file's name
    summary: the head, then everything # optional
    pretrained: required               # required (default) | refused
    lr: 1.0                            # the initial LR as a factor of nnU-Net's 0.01 (default 1)
    phases:
      - name: probe
        fraction: 0.25                 # or epochs: 10; the last phase may leave it out
        train:                         # rules; a parameter no rule selects is frozen
          - parts: [head]              # encoder | decoder | head (default: all three)
      - name: finetune
        warmup_fraction: 0.05          # or warmup_epochs: 5 (default: none)
        train:
          - parts: [encoder, decoder, head]
            stages: [-1]               # stage indices within each part (default: all)
            kinds: [weights, biases, norms]   # (default: all)
            lr: 0.5                    # multiplier of the initial LR; 0 = frozen (default 1)
            decay: knob                # x decay per stage away from the head; a number or knob
        adapters: {rank: knob, parts: [encoder, decoder], lr: 1.0}   # LoRA (optional)
        per_stage: encoder             # one sub-phase per stage, nearest the head first

The meaning of each key: `schedule.py`. docs/how_to/add_a_strategy_file.md writes every built-in
strategy in this format.
"""

from __future__ import annotations

import os

from nnunet_transfer.architectures.parts import PARTS
from nnunet_transfer.errors import UserError
from nnunet_transfer.training.schedule import KNOB, PARAMETER_KINDS, Adapters, Phase, Rule, \
    Schedule
from nnunet_transfer.training.strategies import CUSTOM_TRAINER, Pretrained, Strategy
from nnunet_transfer.value_rules import (
    NAME,
    NON_NEGATIVE_NUMBER,
    NON_NEGATIVE_WHOLE_NUMBER,
    NotAllowed,
    POSITIVE_NUMBER,
    POSITIVE_WHOLE_NUMBER,
    choice,
    number,
)
from nnunet_transfer.yaml_lines import Problems, Reader, load_with_lines

_PHASE_FRACTION = number(above=0, at_most=1)
_WARMUP_FRACTION = number(at_least=0, at_most=1)
_PER_STAGE = choice(("encoder", "decoder"))
_PRETRAINED = choice(("required", "refused"))


def _or_knob(check):
    return lambda value: KNOB if value == KNOB else check(value)


def _names(allowed):
    """A list of choices (or one choice), as a tuple."""
    one = choice(allowed)
    return lambda value: tuple(map(one, value if isinstance(value, list) else [value]))


def _stages(value):
    values = value if isinstance(value, list) else [value]
    if not values or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        raise NotAllowed(f"{value!r} is not a list of stage indices (whole numbers, -1 for "
                         f"the last)")
    return tuple(values)


def _rule(problems: Problems, value, path: tuple) -> Rule | None:
    reader = Reader(problems, value, path, {"parts", "stages", "kinds", "lr", "decay"})
    return Rule(parts=reader.get("parts", _names(PARTS), PARTS),
                stages=reader.get("stages", _stages),
                kinds=reader.get("kinds", _names(PARAMETER_KINDS), PARAMETER_KINDS),
                lr=reader.get("lr", NON_NEGATIVE_NUMBER, 1.0),
                decay=reader.get("decay", _or_knob(POSITIVE_NUMBER)))


def _phase(problems: Problems, value, path: tuple, last: bool) -> Phase | None:
    known = {"name", "epochs", "fraction", "warmup_epochs", "warmup_fraction", "train",
             "adapters", "per_stage"}
    reader = Reader(problems, value, path, known)
    name = reader.get("name", NAME, required=True)
    lengths = [k for k in ("epochs", "fraction") if k in reader.value]
    if len(lengths) > 1 or not (lengths or last):
        problems.add(path, "give the phase's length as epochs or as fraction (only the last "
                     "phase may leave it out: it takes the rest of the run)")
    if "warmup_epochs" in reader.value and "warmup_fraction" in reader.value:
        problems.add(path + ("warmup_fraction",), "give warmup_epochs or warmup_fraction")
    rules = reader.value.get("train", [])
    if not isinstance(rules, list):
        problems.add(path + ("train",), "expected a list of rules (- parts: [...])")
        rules = []
    adapters = None
    if reader.value.get("adapters") is not None:
        ad = Reader(problems, reader.value["adapters"], path + ("adapters",),
                    {"rank", "parts", "lr"})
        adapters = Adapters(rank=ad.get("rank", _or_knob(POSITIVE_WHOLE_NUMBER), KNOB),
                            parts=ad.get("parts", _names(PARTS), ("encoder", "decoder")),
                            lr=ad.get("lr", POSITIVE_NUMBER, 1.0))
    return Phase(
        name=name or "?", rules=tuple(_rule(problems, rule, path + ("train", i))
                                      for i, rule in enumerate(rules)),
        epochs=reader.get("epochs", POSITIVE_WHOLE_NUMBER),
        fraction=reader.get("fraction", _PHASE_FRACTION),
        warmup_epochs=reader.get("warmup_epochs", NON_NEGATIVE_WHOLE_NUMBER),
        warmup_fraction=reader.get("warmup_fraction", _WARMUP_FRACTION),
        adapters=adapters, per_stage=reader.get("per_stage", _PER_STAGE))


def parse_strategy(text: str, where: str) -> Strategy:
    """The Strategy the YAML `text` (from `where`, for the messages) describes."""
    document = load_with_lines(text, where)
    problems = Problems(where, document, what="the strategy file",
                        consequence="fix it and start again")
    top = Reader(problems, document.value, (), {"name", "summary", "pretrained", "lr", "phases"})
    stem = os.path.splitext(os.path.basename(where))[0]
    name = top.get("name", NAME, stem if NAME.allows(stem) else "Custom")
    pretrained = top.get("pretrained", _PRETRAINED, "required")
    lr_factor = top.get("lr", POSITIVE_NUMBER, 1.0)
    phases = top.value.get("phases")
    if not isinstance(phases, list) or not phases:
        problems.add(("phases",), "give a list of one or more phases (- name: ...)")
        phases = []
    read = [_phase(problems, p, ("phases", i), i == len(phases) - 1)
            for i, p in enumerate(phases)]
    seen: dict[str, int] = {}
    for index, phase in enumerate(read):
        if phase.name in seen:
            problems.add(("phases", index, "name"), f"{phase.name!r} is the name of phase "
                         f"{seen[phase.name] + 1} too; give each phase its own name")
        seen.setdefault(phase.name, index)
    problems.raise_if_any()
    summary = top.get("summary", str, f"custom strategy from {where}")
    return Strategy.scheduled(name, Pretrained(pretrained), float(lr_factor), summary,
                              Schedule(tuple(read)), file=os.path.abspath(where))


def read_strategy_file(path: str | None) -> Strategy:
    if not path:
        raise UserError(f"{CUSTOM_TRAINER} reads its strategy from a YAML file: set "
                        "NNUNET_TRANSFER_STRATEGY_FILE=<file> "
                        "(see docs/how_to/add_a_strategy_file.md)")
    try:
        with open(path) as f:
            text = f.read()
    except OSError as error:
        raise UserError(f"cannot read the strategy file {path} ({error.strerror}); fix "
                        "NNUNET_TRANSFER_STRATEGY_FILE") from None
    return parse_strategy(text, path)
