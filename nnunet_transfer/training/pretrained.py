"""Loading pretrained weights across datasets: every tensor of the target network matched
against the checkpoint, with a readable preflight report (`load_report`).

nnU-Net's own loader asserts that every tensor but the output layers exists with the same
shape, and stops on the first one that does not. Here each tensor of the network is looked up
in the checkpoint (by name; decoder levels by resolution when the numbers of stages differ) and
fitted where a rule of `tensor_matching` applies: output channels by label name, input channels
by channel name, kernels of another size. What no rule fits (other channel counts, a tensor the
checkpoint lacks) starts fresh at the network's own init; nothing is refused tensor by tensor.

A load is refused as a whole when none of the encoder's weights loaded: the network is not the
source's (usually the target was preprocessed with its own plans), and the refusal says how to
fix that. The trainer also refuses to freeze a part that did not load fully.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nnunet_transfer.checkpoints.reader import Checkpoint, CheckpointUse
from nnunet_transfer.architectures.parts import NetworkParts, unwrap
from nnunet_transfer.training.load_report import KeyRow, LoadReport
from nnunet_transfer.training.tensor_matching import (
    adapt_input_channels, count_stages, fit_kernel, input_channel_names, output_channel_names,
    pick_by_name, stage_key)

__all__ = ["PRETRAINED", "LoadReport", "KeyRow", "adapt_input_channels", "plan_load",
           "refusal_message", "frozen_part_refusal", "apply_load"]

# How the source of pretrained weights is read: `Checkpoint.read(path, PRETRAINED)`.
PRETRAINED = CheckpointUse(
    noun="the pretrained weights file",
    advice=("; give the source run's checkpoint, e.g. $nnUNet_results/Dataset501_X/"
            "nnUNetTrainer_Scratch__nnUNetPlans__3d_fullres/fold_all/checkpoint_final.pth"),
    unreadable_advice=(". The file may be truncated or not a checkpoint: copy it again or "
                       "re-run the source training."),
    lacking=("(no 'network_weights' entry and not a state dict); is it an nnU-Net "
             "checkpoint_final.pth?"))


@dataclass(frozen=True)
class _Names:
    """What the matching by name and by stage needs to know of both sides."""

    source_outputs: list[str] | None
    target_outputs: list[str] | None
    source_inputs: list[str] | None
    target_inputs: list[str] | None
    input_key: str | None
    network_stages: int | None
    source_stages: int | None


def plan_load(network: nn.Module, parts: NetworkParts, source: Checkpoint, *,
              num_input_channels: int, target_dataset_json: dict, load: str = "all",
              head: str = "auto") -> LoadReport:
    """Give every tensor of `network` its status against the checkpoint and build the state to
    load. `load` "encoder" (or a checkpoint that holds an encoder only) leaves decoder and head
    fresh; `head` "reinit" leaves the output layers fresh."""
    module = unwrap(network)
    state = module.state_dict(keep_vars=True)
    part_of_key = parts.state_dict_parts(network)
    parameters = {id(p) for p in module.parameters()}
    transposed = {f"{name}.weight" for name, m in module.named_modules(remove_duplicate=False)
                  if isinstance(m, nn.modules.conv._ConvTransposeNd)}
    aliases_of: dict[str, list[str]] = {}
    canonical: dict[int, str] = {}
    for key, tensor in state.items():
        aliases_of.setdefault(canonical.setdefault(id(tensor), key), []).append(key)
    names = _Names(
        output_channel_names(source.labels, source.regions_class_order),
        output_channel_names(target_dataset_json.get("labels"),
                             target_dataset_json.get("regions_class_order")),
        input_channel_names(source.channel_names),
        input_channel_names(target_dataset_json.get("channel_names")
                            or target_dataset_json.get("modality")),
        next((k for k in aliases_of if part_of_key[k] == "encoder" and state[k].ndim >= 3
              and state[k].shape[1] == num_input_channels), None),
        count_stages(state), count_stages(source.weights))
    encoder_only = load == "encoder" or source.encoder_only
    rows, new_state, claimed = [], {}, set()
    for key, keys in aliases_of.items():
        target, part = state[key], part_of_key[key]
        candidates = [c for c in (stage_key(k, names.network_stages, names.source_stages)
                                  for k in keys) if c is not None]
        claimed.update(candidates)
        checkpoint_key = next((c for c in candidates if c in source.weights), None)
        found = source.weights.get(checkpoint_key) if checkpoint_key else None
        value, partial = None, False
        if encoder_only and part != "encoder":
            status, note = "fresh", _encoder_only_note(source)
        elif part == "head" and head == "reinit":
            status, note = "fresh", "NNUNET_TRANSFER_HEAD=reinit"
        elif found is None:
            status, note = "fresh", _why_missing(names)
        else:
            value, notes, partial = _fit(key, found, target, part, names, key in transposed)
            if checkpoint_key not in keys:
                notes.insert(0, f"from {checkpoint_key} (decoder level matched by resolution)")
            if checkpoint_key in source.origins:
                notes.append(source.origins[checkpoint_key])
            status = "fresh" if value is None else "loaded" if value is found else "adapted"
            note = "; ".join(notes)
        rows.append(KeyRow(key, part, status, tuple(found.shape) if found is not None else None,
                           tuple(target.shape), note, id(target) in parameters, partial))
        for alias in keys:
            new_state[alias] = (value if value is not None else target).detach()
    for keys in _aliases(source.weights):
        if not claimed.intersection(keys):
            rows.append(KeyRow(keys[0], "?", "unused", tuple(source.weights[keys[0]].shape),
                               None, "no tensor of the network takes it"))
    return LoadReport(source=source, rows=rows, state=new_state,
                      head_note=_head_note(names, encoder_only, head, source))


def _aliases(weights: dict[str, torch.Tensor]) -> list[list[str]]:
    """The checkpoint's names grouped by tensor: a U-Net's state dict names the encoder (and
    each conv) twice, and torch.save keeps the shared storage."""
    groups: dict[tuple, list[str]] = {}
    for key, tensor in weights.items():
        where = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(),
                 tuple(tensor.shape)) if tensor.numel() else (key,)
        groups.setdefault(where, []).append(key)
    return list(groups.values())


def _fit(key: str, found: torch.Tensor, target: torch.Tensor, part: str, names: _Names,
         transposed: bool) -> tuple[torch.Tensor | None, list[str], bool]:
    """(the value to load or None for fresh, notes, whether part of it stays fresh)."""
    value, notes, partial = found, [], False
    if (part == "head" and found.ndim >= 1
            and names.source_outputs != names.target_outputs):
        if names.source_outputs is None or names.target_outputs is None:
            return None, ["the source's labels are unknown"], False
        picked = pick_by_name(found, target, 0, names.source_outputs, names.target_outputs)
        if picked is None:
            return None, ["the source's output layer has another shape"], False
        value, taken, new = picked
        if not taken:
            return None, ["no label name in common with the source"], False
        partial = bool(new)
        notes.append("by label name" + (f"; new label(s) fresh: {', '.join(new)}" if new else
                                        ": reordered"))
    elif key == names.input_key and found.ndim == target.ndim >= 3:
        value, note = _fit_input_channels(found, target, names)
        if note:
            notes.append(note)
    if value.shape[:2] != target.shape[:2] or value.ndim != target.ndim:
        return None, [f"channel counts differ ({tuple(found.shape)} vs {tuple(target.shape)})"
                      ], False
    if value.shape != target.shape:
        fitted = fit_kernel(value, tuple(target.shape[2:]), transposed)
        if fitted is None:
            return None, [f"kernel {tuple(found.shape[2:])} does not fit "
                          f"{tuple(target.shape[2:])}"], False
        value = fitted[0]
        notes.append(f"kernel {'x'.join(map(str, found.shape[2:]))} -> "
                     f"{'x'.join(map(str, target.shape[2:]))}: {fitted[1]}")
    return value, notes, partial


def _fit_input_channels(found: torch.Tensor, target: torch.Tensor, names: _Names
                        ) -> tuple[torch.Tensor, str]:
    """The input layer by channel name: modalities the source has keep their kernels, the
    others get the mean rule; without names on both sides, the mean rule when counts differ."""
    channels = target.shape[1]
    mean_rule = adapt_input_channels(found.float(), channels).to(found.dtype)
    if names.source_inputs is not None and names.target_inputs is not None:
        if names.source_inputs == names.target_inputs:
            return found, ""
        picked = pick_by_name(found, mean_rule, 1, names.source_inputs, names.target_inputs,
                              fill=mean_rule)
        if picked is not None and picked[1]:
            value, taken, new = picked
            return value, ("input channels by name: kept " + ", ".join(taken)
                           + (f"; mean rule for {', '.join(new)}" if new else " (reordered)"))
        return mean_rule, "no input channel name in common: mean rule over the channels"
    if found.shape[1] == channels:
        return found, ""
    return mean_rule, f"input channels {found.shape[1]} -> {channels}: mean rule"


def _encoder_only_note(source: Checkpoint) -> str:
    return "only the encoder is loaded (" + (
        "the checkpoint holds an encoder only)" if source.encoder_only
        else "NNUNET_TRANSFER_LOAD=encoder)")


def _why_missing(names: _Names) -> str:
    if names.network_stages and names.source_stages and (
            names.network_stages != names.source_stages):
        return (f"not in the checkpoint (the source has {names.source_stages} stages, "
                f"the network {names.network_stages})")
    return "not in the checkpoint"


def _head_note(names: _Names, encoder_only: bool, head: str, source: Checkpoint) -> str:
    if encoder_only:
        return "fresh: " + _encoder_only_note(source)
    if head == "reinit":
        return "fresh (NNUNET_TRANSFER_HEAD=reinit)"
    src, tgt = names.source_outputs, names.target_outputs
    if src is None or tgt is None:
        return "fresh: the source's labels are unknown"
    if src == tgt:
        return "loaded (the source's labels equal the target's)"
    taken = [n for n in tgt if n in src]
    if not taken:
        return f"fresh: no label name in common (source {src}, target {tgt})"
    new = [n for n in tgt if n not in src]
    return (f"by label name: {', '.join(taken)} from the source"
            + (f"; new, fresh: {', '.join(new)}" if new else "; reordered"))


def refusal_message(report: LoadReport, target: str, network_class: str) -> str:
    """Why a load whose encoder loaded nothing is refused, and the fix of the usual cause."""
    src = report.source
    fix_source = (src.dataset_name or "<source dataset id>").split("_")[0].replace("Dataset", "")
    if src.network_class and src.network_class != network_class:
        return (
            f"the pretrained weights are of another architecture: the checkpoint holds a "
            f"{src.network_class.rsplit('.', 1)[-1]} (configuration {src.configuration} of "
            f"{src.dataset_name}), {target} trains a {network_class.rsplit('.', 1)[-1]}. "
            "Pretrain the source with the same configuration (nnUNetv2_train <source id> "
            "<this configuration> ...; `nnunet-transfer add-architectures` adds the extra "
            "architectures to the source's plans), or train this target with the "
            "checkpoint's configuration.")
    return (
        f"the pretrained weights do not fit the network of {target}: none of its encoder "
        f"weights loaded:\n{report.table()}\n"
        "The usual cause: the target was preprocessed with its own plans instead of the "
        "source's, so the two networks differ. Fix:\n"
        f"  nnunet-transfer plans-transfer --source {fix_source} --target <target dataset id>"
        f" -p {src.plans_name or '<source plans>'}\n"
        "then train with the transferred plans (-p as printed by that command); for a model "
        "folder trained elsewhere: nnunet-transfer plans-transfer --source-model <model folder> "
        "--target <target dataset id>. To load only the encoder instead, set "
        "NNUNET_TRANSFER_LOAD=encoder.")


def frozen_part_refusal(trainer: str, part: str, report: LoadReport) -> str:
    """Why `trainer` will not freeze `part`: the tensors of it that did not come from the
    source, with the reason of each."""
    rows = report.not_from_source(part)
    listed = "\n".join(f"  {r.key}: {r.status}{' in part' if r.partial else ''} ({r.note})"
                       for r in rows[:20])
    more = f"\n  ... and {len(rows) - 20} more" if len(rows) > 20 else ""
    return (f"{trainer} freezes the {part}, but the checkpoint does not provide all of it; "
            f"a frozen {part} would keep these tensors at their random init:\n{listed}{more}\n"
            f"Use a strategy that trains the {part}, or load the whole network (unset "
            "NNUNET_TRANSFER_LOAD / NNUNET_TRANSFER_HEAD, train with the source's plans).\n"
            + report.table())


def apply_load(network: nn.Module, report: LoadReport) -> None:
    """Load the planned state into `network`, then drop the report's copies of the weights
    (the report stays for the record; the tensors would double the host memory of a run)."""
    with torch.no_grad():
        unwrap(network).load_state_dict(report.state, strict=True)
    report.state = {}
    report.source.weights = {}
