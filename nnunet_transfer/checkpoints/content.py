"""What a reader of one checkpoint format hands back: the pieces a `Checkpoint` is made of.

The readers of the formats other than nnU-Net v2 (nnunet_v1, nnssl) and the
model-folder finder return this, and `Checkpoint.read` turns it into a Checkpoint; the readers
thus need nothing of reader.py and the imports run one way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

FORMAT_V2 = "nnU-Net v2 checkpoint"
FORMAT_BARE = "bare state dict"
FORMAT_V1 = "nnU-Net v1 model (Generic_UNet)"
FORMAT_NNSSL = "nnssl checkpoint (self-supervised encoder)"


@dataclass
class Content:
    """Attributes as in `Checkpoint` (weights with nnU-Net v2 names); `details` holds what
    inspect reports beyond them (format version, folds, the v1 stage, the adaptation plan)."""

    weights: dict[str, torch.Tensor]
    path: str
    format: str
    init_args: dict = field(default_factory=dict)
    trainer_name: str | None = None
    network_class: str | None = None
    origins: dict[str, str] = field(default_factory=dict)
    encoder_only: bool = False
    details: dict = field(default_factory=dict)
