"""`rank_sources`: every candidate source scored on a target's labelled training cases, before
any fine-tuning.

Per source: the target's cases preprocessed with the source's plans (preprocessing.py), one
patch of the source's patch size per case through the source network with its own weights
(input channels matched by name where the target's differ), class-balanced voxel samples of
the decoder's full-resolution features (features.py), their LogME per target class
(logme.py), the compatibility figures (compatibility.py) and, where labels match by name, the
source's own Dice as is on the patches (dice_as_is.py). Everything is seeded: the same inputs
give the same numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch

from nnunet_transfer.architectures.parts import partition
from nnunet_transfer.checkpoints.reader import Checkpoint
from nnunet_transfer.devices import resolve_device
from nnunet_transfer.errors import UserError
from nnunet_transfer.source_ranking.compatibility import (
    Compatibility, geometry_ratios, loaded_fractions, matched_channels, shared_label_names)
from nnunet_transfer.source_ranking.dice_as_is import DiceAsIs, label_values, shared_label_pairs
from nnunet_transfer.source_ranking.features import (
    HeadInputs, class_balanced_sample, patch_outputs)
from nnunet_transfer.source_ranking.logme import mean_logme, one_vs_rest_logme
from nnunet_transfer.source_ranking.preprocessing import SourcePreprocessor
from nnunet_transfer.source_ranking.ranking import SourceRanking, SourceResult, ranked
from nnunet_transfer.source_ranking.sources import CandidateSource, read_sources
from nnunet_transfer.source_ranking.target import DEFAULT_MAX_CASES, RankingTarget, read_target
from nnunet_transfer.training.pretrained import plan_load
from nnunet_transfer.value_rules import POSITIVE_WHOLE_NUMBER, NotAllowed

# Voxels per class over all cases: LogME's cost is O(n d^2) with d the decoder's features
# (32 in nnU-Net's default U-Net), so a few thousand per class are cheap and leave the
# evidence's sampling noise well below the differences between sources.
DEFAULT_SAMPLES_PER_CLASS = 2000
SAMPLING_SEED = 0


def _target_classes(target: RankingTarget) -> dict[int, str]:
    """The target's label values with their names (a value without a plain label is named by
    its value)."""
    names = {v: n for n, v in label_values(target.labels).items() if n != "ignore"}
    return dict(sorted(names.items()))


def source_network(checkpoint: Checkpoint, target_json: dict, device: torch.device
                   ) -> torch.nn.Module:
    """The source's network with its own weights for the target's input channels (matched by
    name, as a fine-tuning run would load them; the source's own labels and head), eval mode."""
    own = checkpoint.init_args["dataset_json"]
    dataset_json = {**own, "channel_names": target_json["channel_names"]}
    network = checkpoint.network(load_weights=False, dataset_json=dataset_json)
    report = plan_load(network, partition(network), checkpoint,
                       num_input_channels=len(target_json["channel_names"]),
                       target_dataset_json=dataset_json)
    network.load_state_dict(report.state)
    return network.to(device).eval()


def score_source(source: CandidateSource, checkpoint: Checkpoint, target: RankingTarget,
                 cases: dict[str, dict], device: torch.device,
                 samples_per_class: int = DEFAULT_SAMPLES_PER_CLASS) -> SourceResult:
    """One source's figures on `cases` of `target` (rank 0 until ranked)."""
    start = time.perf_counter()
    classes = _target_classes(target)
    preprocessor = SourcePreprocessor(checkpoint, target,
                                      next(iter(cases.values()))["images"][0])
    network = source_network(checkpoint, target.dataset_json, device)
    hooks = HeadInputs(network)
    dice = DiceAsIs(shared_label_pairs(checkpoint.labels, target.labels,
                                       bool(checkpoint.regions_class_order)))
    quota = math.ceil(samples_per_class / len(cases))
    rng = np.random.default_rng(SAMPLING_SEED)
    samples, sample_labels, spacings, shapes = [], [], [], []
    try:
        for case, files in cases.items():
            pre = preprocessor.run(case, files)
            spacings.append(pre.spacing)
            shapes.append(pre.data.shape[1:])
            outputs = patch_outputs(network, hooks, pre.data, pre.seg,
                                    preprocessor.patch_size, device)
            features, labels = class_balanced_sample(outputs.features, outputs.seg,
                                                     tuple(classes), quota, rng)
            samples.append(features)
            sample_labels.append(labels)
            dice.add(outputs.prediction, outputs.seg)
    finally:
        hooks.close()
    features, labels = np.concatenate(samples), np.concatenate(sample_labels)
    per_class = one_vs_rest_logme(features, labels, tuple(classes))
    shared, n_labels = shared_label_names(checkpoint, target.dataset_json)
    channels, n_channels = matched_channels(checkpoint, target.dataset_json)
    spacing_ratio, patch_ratio = geometry_ratios(preprocessor.spacing, preprocessor.patch_size,
                                                 spacings, shapes)
    compatibility = Compatibility(loaded_fractions(checkpoint, target.dataset_json), shared,
                                  n_labels, channels, n_channels, spacing_ratio, patch_ratio)
    return SourceResult(
        source.name, source.path, 0, mean_logme(per_class),
        {classes[v]: e.per_sample for v, e in per_class.items()},
        {classes[v]: int(np.count_nonzero(labels == v)) for v in classes},
        compatibility, dice.result(), len(cases), time.perf_counter() - start)


def rank_sources(target: str, sources: list[CandidateSource], exclude_cases: tuple[str, ...] = (),
                 max_cases: int = DEFAULT_MAX_CASES, device: str = "cpu",
                 exclude_file: str | None = None,
                 samples_per_class: int = DEFAULT_SAMPLES_PER_CLASS,
                 progress: Callable[[str], None] | None = None) -> SourceRanking:
    """Score every source on the labelled training cases of the raw dataset `target` (id or
    name in nnUNet_raw), leaving out `exclude_cases` and the ids of `exclude_file`, at most
    `max_cases` of them (a seeded draw), and rank them by the mean LogME, best first.

    Raises UserError listing every problem of the target, the exclude file, the options and
    every source at once, before anything is computed."""
    problems = []
    try:
        POSITIVE_WHOLE_NUMBER.check(max_cases)
    except NotAllowed as refusal:
        problems.append(f"--max-cases {refusal}")
    try:
        torch_device = torch.device(resolve_device(device))
    except UserError as error:
        problems.append(str(error))
    ranking_target, target_problems = read_target(target, tuple(exclude_cases), exclude_file)
    checkpoints, source_problems = read_sources(list(sources))
    problems += target_problems + source_problems
    if problems:
        raise UserError("rank-sources cannot start:\n" + "\n".join(f"  - {p}" for p in problems))
    cases = ranking_target.chosen(max_cases)
    results = []
    for number, (source, checkpoint) in enumerate(zip(sources, checkpoints), 1):
        if progress:
            progress(f"[{number}/{len(sources)}] {source.name}: {len(cases)} case(s) of "
                     f"{ranking_target.name}")
        results.append(score_source(source, checkpoint, ranking_target, cases, torch_device,
                                    samples_per_class))
    return SourceRanking(ranking_target.name, tuple(cases), ranking_target.excluded,
                         ranked(results))
