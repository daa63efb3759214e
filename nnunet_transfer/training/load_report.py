"""The preflight report of a pretrained load: each tensor's status, as a table and as JSON.

Every tensor of the target network has one status, and every checkpoint tensor the network does
not take is listed too:

    loaded    the checkpoint's values as they are (note: the checkpoint's name when another)
    adapted   the checkpoint's values fitted by a rule (note: which; see tensor_matching)
    fresh     the network's own init (note: why)
    unused    a checkpoint tensor no tensor of the network takes

The note also says where a tensor came from when the checkpoint's reader mapped it
(`Checkpoint.origins`, e.g. an nnU-Net v1 name or a bias set to zero). The training log gets
the table, settings.json (`pretrained`) the JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from nnunet_transfer.checkpoints.reader import Checkpoint
from nnunet_transfer.architectures.parts import PARTS

STATUSES = ("loaded", "adapted", "fresh", "unused")


@dataclass(frozen=True)
class KeyRow:
    """One tensor's status. `partial`: adapted, but part of it stays fresh (new labels)."""

    key: str
    part: str
    status: str
    checkpoint_shape: tuple[int, ...] | None
    network_shape: tuple[int, ...] | None
    note: str = ""
    parameter: bool = True
    partial: bool = False

    @property
    def from_source(self) -> bool:
        return self.status in ("loaded", "adapted") and not self.partial


@dataclass
class LoadReport:
    source: Checkpoint
    rows: list[KeyRow]
    head_note: str
    state: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)

    @property
    def encoder_loaded(self) -> bool:
        """Whether any weight of the encoder (a parameter, not a buffer) came from the source."""
        return any(r.status in ("loaded", "adapted") for r in self.rows
                   if r.part == "encoder" and r.parameter)

    @property
    def problems(self) -> list[KeyRow]:
        """What makes the load refused: the encoder's rows when none of its weights loaded
        (the network is not the source's at all), with the checkpoint's unused tensors."""
        if self.encoder_loaded:
            return []
        return [r for r in self.rows if r.part in ("encoder", "?")]

    def not_from_source(self, part: str) -> list[KeyRow]:
        return [r for r in self.rows if r.part == part and not r.from_source]

    def fully_loaded(self, part: str) -> bool:
        return any(r.part == part for r in self.rows) and not self.not_from_source(part)

    def counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for row in self.rows:
            by_status = counts.setdefault(row.part, {})
            by_status[row.status] = by_status.get(row.status, 0) + 1
        return counts

    def table(self, everything: bool = False) -> str:
        """The report as text: a count per part and status, then the rows worth reading (all
        but those loaded as they are without a note)."""
        counts = self.counts()
        lines = [f"Pretrained weights: {self.source.path or self.source.label}",
                 f"  sha256 {self.source.sha256}",
                 f"  from {self.source.dataset_name or '?'}, plans {self.source.plans_name or '?'}, "
                 f"configuration {self.source.configuration or '?'}, "
                 f"trainer {self.source.trainer_name or '?'}",
                 f"  output layer(s): {self.head_note}",
                 "  " + f"{'part':<10}" + "".join(f"{s:>10}" for s in STATUSES)]
        for part in (*PARTS, "?"):
            if part in counts:
                lines.append("  " + f"{part:<10}" + "".join(
                    f"{counts[part].get(s, 0):>10}" for s in STATUSES))
        shown = self.rows if everything else [r for r in self.rows
                                              if r.status != "loaded" or r.note]
        if shown:
            width = max(len(r.key) for r in shown)
            lines.append("  " + f"{'status':<9}{'part':<9}{'tensor':<{width + 2}}"
                         f"{'checkpoint':<22}{'network':<22}note")
            for r in shown:
                lines.append(("  " + f"{r.status:<9}{r.part:<9}{r.key:<{width + 2}}"
                              f"{_shape(r.checkpoint_shape):<22}{_shape(r.network_shape):<22}"
                              f"{r.note}").rstrip())
        fresh = [r for r in self.rows if r.status == "fresh" and r.part in ("encoder", "decoder")
                 and r.parameter and "only the encoder" not in r.note]
        if fresh:
            lines.append(
                f"  {len(fresh)} encoder / decoder weights start fresh. To rebuild the source's "
                "network exactly, preprocess the target with the source's plans (nnunet-transfer "
                "plans-transfer --help).")
        return "\n".join(lines)

    def as_json(self) -> dict:
        return {
            "path": self.source.path, "sha256": self.source.sha256,
            "source_dataset": self.source.dataset_name, "source_plans": self.source.plans_name,
            "source_configuration": self.source.configuration,
            "source_trainer": self.source.trainer_name, "head": self.head_note,
            "tensors_per_part_and_status": self.counts(),
            "not_loaded_as_is": [_row_json(r) for r in self.rows if r.status != "loaded"],
            "tensors": [_row_json(r) for r in self.rows],
        }


def _row_json(r: KeyRow) -> dict:
    return {"key": r.key, "part": r.part, "status": r.status, "note": r.note,
            "partial": r.partial, "checkpoint_shape": r.checkpoint_shape,
            "network_shape": r.network_shape}


def _shape(shape: tuple[int, ...] | None) -> str:
    return "-" if shape is None else "(" + ", ".join(map(str, shape)) + ")"
