"""The target's cases preprocessed with a source's plans, in memory, as nnU-Net does it.

The source's plans are moved to the target as `plans-transfer` moves them (`plans_for_target`:
the target's reader, one normalisation scheme per target channel), and each case goes through
nnU-Net's own preprocessor class of the source's configuration (`run_case`: transpose, crop to
non-zero, normalise with the source's intensity properties, resample to the source's spacing).
Nothing is written: the user's nnUNet_preprocessed is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnunet_transfer.checkpoints.reader import Checkpoint
from nnunet_transfer.planning.transfer import plans_for_target
from nnunet_transfer.source_ranking.target import RankingTarget

# The identifier the moved plans carry (never written anywhere).
_PLANS_NAME = "rank_sources"


@dataclass(frozen=True)
class PreprocessedCase:
    """One case in the source's geometry.

    Attributes:
        case: its id.
        data: (channels, z, y, x) float32, normalised, at the source's spacing (nnU-Net's axis
            order after its transpose).
        seg: (z, y, x) int, the target's label values; -1 outside the non-zero crop.
        spacing: the case's own spacing, transposed as the data is.
    """

    case: str
    data: np.ndarray
    seg: np.ndarray
    spacing: tuple[float, ...]


class SourcePreprocessor:
    """nnU-Net's preprocessor of a source's configuration, on the target's files."""

    def __init__(self, checkpoint: Checkpoint, target: RankingTarget, example: str):
        """`example`: an image file of a case the ranking reads anyway (nnU-Net finds the
        reader by reading one; never an excluded case)."""
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        plans, self.notes = plans_for_target(checkpoint.plans, target.name, _PLANS_NAME,
                                             target.folder, target.dataset_json, example)
        self.plans_manager = PlansManager(plans)
        self.configuration = self.plans_manager.get_configuration(checkpoint.configuration)
        self._preprocessor = self.configuration.preprocessor_class(verbose=False)
        self._dataset_json = target.dataset_json

    @property
    def patch_size(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.configuration.patch_size)

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(s) for s in self.configuration.spacing)

    def run(self, case: str, files: dict) -> PreprocessedCase:
        data, seg, properties = self._preprocessor.run_case(
            files["images"], files["label"], self.plans_manager, self.configuration,
            self._dataset_json)
        order = self.plans_manager.transpose_forward
        spacing = tuple(float(properties["spacing"][i]) for i in order)
        return PreprocessedCase(case, data.astype(np.float32, copy=False), seg[0], spacing)
