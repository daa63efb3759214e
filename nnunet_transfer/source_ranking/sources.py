"""The candidate sources of a ranking: model paths as `-pretrained_weights` takes them, each
read once as a `Checkpoint`, with every refusal of every source gathered before anything runs.

A source is a v2 model folder, fold folder or checkpoint file, or a v1 model folder or
`.model` file, optionally named `NAME=PATH`. Scoring needs the source's whole network and the
plans that preprocess for it, so an nnssl checkpoint (an encoder without nnU-Net plans or
decoder) is refused with what to do instead, as are 2d and cascade configurations.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from nnunet_transfer.checkpoints.content import FORMAT_NNSSL
from nnunet_transfer.checkpoints.reader import Checkpoint, CheckpointUse
from nnunet_transfer.errors import UserError

RANKED_SOURCE = CheckpointUse(
    noun="the source",
    advice=("; give a model folder (plans.json, fold_X/checkpoint_final.pth), a fold folder or "
            "a checkpoint file, e.g. $nnUNet_results/Dataset501_X/"
            "nnUNetTrainer__nnUNetPlans__3d_fullres"),
    unreadable_advice=(". The file may be truncated or not a checkpoint: copy it again, or "
                       "leave this source out."),
    lacking="(no 'network_weights' entry and not a state dict)",
    bare_refusal=("a ranking rebuilds the source's network and preprocesses with its plans; give "
                  "the model folder it was saved in (with plans.json and dataset.json)"))


@dataclass(frozen=True)
class CandidateSource:
    """One source to rank: `name` (the CSV's `source` column) and the `path` as given."""

    name: str
    path: str

    @classmethod
    def parse(cls, text: str) -> CandidateSource:
        """`NAME=PATH` or `PATH` (then named by the path as given). A path that exists as
        written is a path even when it holds '='."""
        name, sep, path = text.partition("=")
        if sep and name and path and not os.path.exists(text):
            return cls(name, path)
        return cls(text, text)


def _refusal(source: CandidateSource, checkpoint: Checkpoint) -> str | None:
    where = f"source {source.name}" + ("" if source.name == source.path else f" ({source.path})")
    if checkpoint.format == FORMAT_NNSSL:
        return (f"{where} is an nnssl checkpoint: an encoder without nnU-Net plans or decoder, "
                "so there are no plans to preprocess the target with and no decoder features to "
                "score. Fine-tune from it (nnunet-transfer inspect says how) and rank the "
                "fine-tuned model folders instead.")
    if not checkpoint.plans or not checkpoint.configuration:
        return (f"{where} records no plans (no init_args in the checkpoint and no plans.json "
                "beside its fold folder); give the model folder as exported, with plans.json and "
                "dataset.json")
    configuration = checkpoint.plans.get("configurations", {}).get(checkpoint.configuration, {})
    if len(configuration.get("patch_size", ())) != 3:
        return (f"{where} is a {checkpoint.configuration} model: rank-sources scores 3D "
                "configurations (3d_fullres, 3d_lowres); give the 3D model of that source")
    if configuration.get("previous_stage"):
        return (f"{where} is a cascade stage ({checkpoint.configuration}): its input needs the "
                "previous stage's segmentation; give the 3d_fullres or 3d_lowres model")
    try:
        checkpoint.require_installed_network()
    except UserError as error:
        return f"{where}: {error}"
    return None


def read_sources(sources: list[CandidateSource]) -> tuple[list[Checkpoint], list[str]]:
    """Each source's checkpoint (read on the CPU), and every problem of every source."""
    checkpoints, problems = [], []
    names = [s.name for s in sources]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        problems.append(f"source name(s) given more than once: {', '.join(repeated)}; give each "
                        "source once, or name them NAME=PATH")
    if not sources:
        problems.append("no SOURCE given: name at least one model path")
    for source in sources:
        try:
            checkpoint = Checkpoint.read(source.path, RANKED_SOURCE)
        except UserError as error:
            problems.append(f"source {source.name}: {error}" if source.name != source.path
                            else str(error))
            continue
        refusal = _refusal(source, checkpoint)
        if refusal:
            problems.append(refusal)
        else:
            checkpoints.append(checkpoint)
    return checkpoints, problems
