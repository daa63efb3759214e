"""Loading pretrained weights across datasets, with a readable preflight report.

nnU-Net's own loader asserts that every key but the segmentation layers matches, and stops on
the first one that does not. Here every tensor of the target network is classified first:

    loaded          same name and shape in the checkpoint
    adapted         the input layer, whose number of input channels differs (see below)
    re-initialised  an output layer kept at its random init (other labels, or asked for)
    not loaded      left at its random init because only the encoder is loaded
    missing         not in the checkpoint                         -> refused
    mismatched      in the checkpoint with another shape          -> refused
and every checkpoint tensor the network lacks is `unexpected` (refused unless only the encoder
is loaded). A refused load prints the whole table and the command that fixes the usual cause.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from nnunet_transfer.architectures.checkpoint import Checkpoint, CheckpointUse
from nnunet_transfer.architectures.parts import PARTS, NetworkParts, unwrap

BLOCKING = ("missing", "mismatched", "unexpected")

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
class KeyRow:
    key: str
    part: str
    status: str
    checkpoint_shape: tuple[int, ...] | None
    network_shape: tuple[int, ...] | None


def same_labels(source: Checkpoint, target_dataset_json: dict) -> bool:
    """Whether the output channels mean the same: labels (or regions) in the same order."""
    if source.labels is None:
        return False
    return (list(source.labels.items()) == list(target_dataset_json.get("labels", {}).items())
            and source.regions_class_order == target_dataset_json.get("regions_class_order"))


@dataclass
class LoadReport:
    source: Checkpoint
    rows: list[KeyRow]
    head_note: str
    state: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)

    @property
    def problems(self) -> list[KeyRow]:
        return [r for r in self.rows if r.status in BLOCKING]

    def fully_loaded(self, part: str) -> bool:
        rows = [r for r in self.rows if r.part == part]
        return bool(rows) and all(r.status in ("loaded", "adapted") for r in rows)

    def counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for row in self.rows:
            by_status = counts.setdefault(row.part, {})
            by_status[row.status] = by_status.get(row.status, 0) + 1
        return counts

    def table(self, everything: bool = False) -> str:
        """The report as text: a count per part and status, then the rows worth reading."""
        statuses = ["loaded", "adapted", "re-initialised", "not loaded", *BLOCKING]
        counts = self.counts()
        lines = [f"Pretrained weights: {self.source.path}",
                 f"  sha256 {self.source.sha256}",
                 f"  from {self.source.dataset_name or '?'}, plans {self.source.plans_name or '?'}, "
                 f"configuration {self.source.configuration or '?'}, "
                 f"trainer {self.source.trainer_name or '?'}",
                 f"  output layer(s): {self.head_note}",
                 "  " + f"{'part':<10}" + "".join(f"{s:>15}" for s in statuses)]
        for part in (*PARTS, "?"):
            if part in counts:
                lines.append("  " + f"{part:<10}" + "".join(
                    f"{counts[part].get(s, 0):>15}" for s in statuses))
        shown = self.rows if everything else [r for r in self.rows if r.status != "loaded"]
        if shown:
            width = max(len(r.key) for r in shown)
            lines.append("  " + f"{'status':<15}{'part':<9}{'tensor':<{width + 2}}"
                         f"{'checkpoint':<22}network")
            for r in shown:
                lines.append("  " + f"{r.status:<15}{r.part:<9}{r.key:<{width + 2}}"
                             f"{_shape(r.checkpoint_shape):<22}{_shape(r.network_shape)}")
        return "\n".join(lines)

    def as_json(self) -> dict:
        return {
            "path": self.source.path, "sha256": self.source.sha256,
            "source_dataset": self.source.dataset_name, "source_plans": self.source.plans_name,
            "source_configuration": self.source.configuration,
            "source_trainer": self.source.trainer_name, "head": self.head_note,
            "tensors_per_part_and_status": self.counts(),
            "not_loaded_as_is": [
                {"key": r.key, "part": r.part, "status": r.status,
                 "checkpoint_shape": r.checkpoint_shape, "network_shape": r.network_shape}
                for r in self.rows if r.status != "loaded"],
        }


def _shape(shape: tuple[int, ...] | None) -> str:
    return "-" if shape is None else "(" + ", ".join(map(str, shape)) + ")"


def adapt_input_channels(weight: torch.Tensor, num_input_channels: int) -> torch.Tensor:
    """Input-layer weights (out, in_source, *kernel) for `num_input_channels` input channels.

    The kernels are averaged over the source's input channels and repeated, scaled by
    in_source / in_target so that an image repeated on every channel gives the same response
    as before (1 -> n channels divides each by n, n -> 1 sums them).
    """
    mean = weight.mean(dim=1, keepdim=True)
    repeats = (1, num_input_channels) + (1,) * (weight.ndim - 2)
    return mean.repeat(*repeats) * (weight.shape[1] / num_input_channels)


def _is_input_layer_change(part: str, checkpoint: torch.Tensor, target: torch.Tensor,
                           num_input_channels: int) -> bool:
    return (part == "encoder" and checkpoint.ndim == target.ndim >= 3
            and target.shape[1] == num_input_channels
            and checkpoint.shape[0] == target.shape[0]
            and checkpoint.shape[2:] == target.shape[2:])


def plan_load(network: nn.Module, parts: NetworkParts, source: Checkpoint, *,
              num_input_channels: int, target_dataset_json: dict, load: str = "all",
              head: str = "auto") -> LoadReport:
    """Classify every tensor of `network` against the checkpoint and build the state to load."""
    state = unwrap(network).state_dict(keep_vars=True)
    part_of_key = parts.state_dict_parts(network)
    canonical: dict[int, str] = {}
    for key, tensor in state.items():
        canonical.setdefault(id(tensor), key)
    target_labels = target_dataset_json.get("labels")
    load_head = load == "all" and head == "auto" and same_labels(source, target_dataset_json)
    if load == "encoder":
        head_note = "random init (only the encoder is loaded)"
    elif head == "reinit":
        head_note = "re-initialised (NNUNET_TRANSFER_HEAD=reinit)"
    elif load_head:
        head_note = "loaded (the source's labels equal the target's)"
    else:
        head_note = ("re-initialised: the source's labels are unknown" if source.labels is None
                     else f"re-initialised: source labels {source.labels} differ from the "
                          f"target's {target_labels} (or their order / region order)")

    rows, new_state = [], {}
    aliases_of: dict[str, list[str]] = {}
    for key, tensor in state.items():
        aliases_of.setdefault(canonical[id(tensor)], []).append(key)
    for key, keys in aliases_of.items():
        target = state[key]
        part = part_of_key[key]
        found = next((source.weights[k] for k in keys if k in source.weights), None)
        shape_c = tuple(found.shape) if found is not None else None
        value = None
        if load == "encoder" and part != "encoder":
            status = "not loaded"
        elif part == "head" and not load_head:
            status = "re-initialised"
        elif found is None:
            status = "missing"
        elif found.shape == target.shape:
            status, value = "loaded", found
        elif _is_input_layer_change(part, found, target, num_input_channels):
            status, value = "adapted", adapt_input_channels(found.float(), num_input_channels)
        else:
            status = "mismatched"
        rows.append(KeyRow(key, part, status, shape_c, tuple(target.shape)))
        for alias in keys:
            new_state[alias] = (value if value is not None else target).detach()
    known = set(state)
    for key, tensor in source.weights.items():
        if key not in known and load == "all":
            rows.append(KeyRow(key, "?", "unexpected", tuple(tensor.shape), None))
    return LoadReport(source=source, rows=rows, head_note=head_note, state=new_state)


def refusal_message(report: LoadReport, target: str, network_class: str) -> str:
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
        f"the pretrained weights do not fit the network of {target}:\n"
        f"{report.table()}\n"
        "The usual cause: the target was preprocessed with its own plans instead of the "
        "source's, so the two networks differ. Fix:\n"
        f"  nnunet-transfer plans-transfer --source {fix_source} --target <target dataset id>"
        f" -p {src.plans_name or '<source plans>'}\n"
        "then train with the transferred plans (-p as printed by that command). To load only "
        "the encoder instead, set NNUNET_TRANSFER_LOAD=encoder.")


def apply_load(network: nn.Module, report: LoadReport) -> None:
    """Load the planned state into `network`, then drop the report's copies of the weights
    (the report stays for the record; the tensors would double the host memory of a run)."""
    with torch.no_grad():
        unwrap(network).load_state_dict(report.state, strict=True)
    report.state = {}
    report.source.weights = {}
