"""Which (source, strategy) pairs of a study can train, judged before anything runs.

A model source is judged as `inspect` judges it (`part_coverage`, `strategy_refusal`:
the parts a strategy keeps frozen or adapted must come whole from the file). A dataset source
pretrained in the study provides every part. Either way a strategy that keeps the head (it
freezes or adapts it in some phase) needs every label of the target among the source's, by
name: a new label would keep a random output channel. The target's labels are read from what
the study file says of it where that is known before setup (`known_labels`), and checked again
as a setup step once the datasets exist (`StudySetup`), before any training.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from nnunet_transfer.checkpoints.inspection import part_coverage, strategy_refusal
from nnunet_transfer.checkpoints.reader import Checkpoint
from nnunet_transfer.data.synthetic import synthetic_label_names
from nnunet_transfer.study.spec import DatasetSpec
from nnunet_transfer.training.strategies import Strategy
from nnunet_transfer.yaml_lines import Problems

@dataclass(frozen=True)
class PairRefusal:
    source: str
    strategy: str
    reason: str

    def message(self, kind: str | None = None) -> str:
        """The refusal as a sentence, the source's kind in brackets where given."""
        named = f"{self.source!r} ({kind})" if kind else repr(self.source)
        return f"source {named} cannot feed {self.strategy}: {self.reason}"


class ModelRefusals:
    """`inspect`'s refusal of each strategy by one model (its parts counted once)."""

    def __init__(self, checkpoint: Checkpoint):
        self.checkpoint = checkpoint
        self.coverage = part_coverage(checkpoint)[1]

    def __call__(self, strategy: Strategy) -> str | None:
        return strategy_refusal(strategy, self.checkpoint, self.coverage)


def keeps_head(strategy: Strategy) -> bool:
    return strategy.needs_pretrained and "head" in strategy.parts_needed


def label_problem(strategy: Strategy, source_labels, target_labels) -> str | None:
    """Why `strategy` cannot keep the source's head on this target (None: it can, or the
    labels are not known yet)."""
    if not keeps_head(strategy) or source_labels is None or target_labels is None:
        return None
    new = [name for name in target_labels if name not in source_labels]
    if not new:
        return None
    return (f"it keeps the source's head, and the target's label(s) {', '.join(new)} are not "
            f"the source's ({', '.join(source_labels)}); a new label would keep a random "
            "output channel. Use a strategy that trains the head (e.g. FrozenDecoder, "
            "FineTune)")


def pair_refusal(source: str, strategy: Strategy, model_refusal: str | None, source_labels,
                 target_labels) -> PairRefusal | None:
    """The refusal of one pair: `model_refusal` is inspect's for a model source (None where the
    model provides what the strategy needs, and for a dataset source, which provides every
    part)."""
    if model_refusal:
        return PairRefusal(source, strategy.name, model_refusal)
    problem = label_problem(strategy, source_labels, target_labels)
    return PairRefusal(source, strategy.name, problem) if problem else None


def known_labels(key: str, datasets: dict[str, DatasetSpec], raw: str,
                 seen: frozenset = frozenset()) -> tuple | None:
    """The label names of a dataset as far as they can be known before the study makes it
    (None when they cannot: an existing dataset not yet in nnU-Net's raw folder)."""
    dataset = datasets.get(key)
    if dataset is None or key in seen:   # a cycle: refused as such by the file's check
        return None
    if dataset.kind == "synthetic":
        return tuple(synthetic_label_names(dataset.options["synthetic"]["core"]))
    if dataset.kind == "msd":   # MSD's dataset.json: {"0": "background", "1": ...}
        labels = _json_labels(os.path.join(dataset.options["msd"] or "", "dataset.json"))
        return tuple(labels.values()) if labels else None
    if dataset.kind == "existing":
        return raw_labels(os.path.join(raw, dataset.folder_name))
    if dataset.inputs:   # subset, degrade: the input's labels; pool: the first's
        return known_labels(dataset.inputs[0], datasets, raw, seen | {key})
    return None


def raw_labels(folder: str) -> tuple | None:
    """The label names of an nnU-Net v2 raw dataset folder (None without its dataset.json)."""
    labels = _json_labels(os.path.join(folder, "dataset.json"))
    return tuple(labels) if labels else None


def _json_labels(path: str) -> dict | None:
    try:
        with open(path) as f:
            labels = json.load(f).get("labels")
    except (OSError, ValueError, AttributeError):
        return None
    return labels if isinstance(labels, dict) else None


def judge_pairs(problems: Problems, written: bool, strategies: tuple, sources: tuple,
                 models: dict, checkpoints: dict, datasets: dict, target: str | None, raw: str,
                 defaults: list[str]) -> tuple:
    """Every (source, strategy) pair that could not train: refused at its strategy's line where
    the file names the strategies; left out of the default strategies otherwise (for every
    source, so that the sources are compared on the same strategies)."""
    target_labels = known_labels(target, datasets, raw) if target else None
    refused = []
    for source in sources:
        refusal_of = ModelRefusals(checkpoints[source]) if source in models else None
        source_labels = (models[source].labels if source in models
                         else known_labels(source, datasets, raw))
        for position, strategy in enumerate(strategies):
            refusal = pair_refusal(source, strategy, refusal_of and refusal_of(strategy),
                                   source_labels, target_labels)
            if refusal:
                refused.append((position, refusal))
    kind = {s: (models[s].format if s in models else "dataset") for s in sources}
    if written:
        for position, refusal in refused:
            problems.add(("strategies", position), refusal.message(kind[refusal.source]))
        return strategies
    dropped = {refusal.strategy for _, refusal in refused}
    kept = tuple(s for s in strategies if s.name not in dropped)
    defaults.append("strategies not given: the one-phase strategies every source can feed"
                    + ("; left out: " + "; ".join(refusal.message(kind[refusal.source])
                                                  for _, refusal in refused) if refused else ""))
    if not kept:
        problems.add(("strategies",), "no one-phase strategy can train from every source; "
                     "name the strategies")
    return kept
