"""Input blocks for the activation capture: patch-sized boxes of preprocessed images, and the
voxels of each block's feature maps that are kept.

Blocks (`BlockSampler`): boxes of the network's patch size at random locations of preprocessed
images, read with nnU-Net's own dataset class (blosc2 or numpy), padded with zeros where an image
is smaller than the patch, centred, as nnU-Net's data loader does. The blocks are a
deterministic function of the cases, the patch size, the number of blocks and the seed: every
network compared sees exactly the same input, in one pass or in separate calls. So is the subset
of voxels kept per block (`voxel_indices`), so every network keeps the same voxels.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from nnunet_transfer.errors import UserError


@dataclass(frozen=True)
class Block:
    """One input block: a patch-sized box of one preprocessed case.

    Attributes:
        case: the case identifier in the preprocessed folder.
        bbox: per spatial axis of the preprocessed image (nnU-Net's axis order, the one its
            networks take), the half-open interval [start, stop) in voxels. It extends beyond the
            image (start < 0 or stop > size) only where the image is smaller than the patch;
            that part is zero, as nnU-Net pads.
    """

    case: str
    bbox: tuple[tuple[int, int], ...]

    @property
    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(start, stop) for start, stop in self.bbox)


def _dataset_class(folder: str):
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    if not os.path.isdir(folder):
        raise UserError(f"the preprocessed data folder {folder} does not exist; it is "
                        "$nnUNet_preprocessed/<dataset>/<data identifier of the configuration>, "
                        "e.g. .../Dataset502_X/nnUNetPlans_3d_fullres")
    try:
        return infer_dataset_class(folder)
    except (AssertionError, KeyError):
        endings = sorted({name.rsplit(".", 1)[-1] for name in os.listdir(folder)})
        raise UserError(f"{folder} is not a folder of nnU-Net preprocessed cases (file endings "
                        f"{endings}; expected .b2nd or .npz with .pkl files)") from None


class BlockSampler:
    """Patch-sized blocks at seeded random locations of preprocessed images.

    Cases are visited in rounds, each round a seeded permutation of all cases, so every image
    contributes nearly the same number of blocks (neighbouring voxels are correlated: many
    images give more independent datapoints than many blocks of one). Per spatial axis the
    block's start is uniform over the positions that keep it inside the image; an axis shorter
    than the patch is padded on both sides (the extra voxel after, when odd), as
    nnU-Net's data loader does.

    Args:
        folder: preprocessed data of a configuration, $nnUNet_preprocessed/<dataset>/<data
            identifier> (see `preprocessed_folder`), read with nnU-Net's dataset class.
        patch_size: spatial block size (3 axes), the configuration's patch size.
        n_blocks: number of blocks.
        seed: seed of numpy's default_rng; same seed, cases and patch size, same blocks.
        identifiers: the cases to sample from (e.g. the test or validation cases); all cases of
            the folder by default.
    """

    def __init__(self, folder: str, patch_size: Sequence[int], n_blocks: int, *, seed: int = 0,
                 identifiers: Sequence[str] | None = None):
        if n_blocks < 1:
            raise UserError(f"the number of blocks must be at least 1, got {n_blocks}")
        self.folder = folder
        self.patch_size = tuple(int(p) for p in patch_size)
        if any(p < 1 for p in self.patch_size):
            raise UserError(f"the patch size must be positive, got {list(self.patch_size)}")
        self.seed = seed
        available = sorted(_dataset_class(folder).get_identifiers(folder))
        if identifiers is None:
            identifiers = available
        unknown = sorted(set(identifiers) - set(available))
        if unknown:
            raise UserError(f"no preprocessed case {unknown[:5]} in {folder}; it holds "
                            f"{len(available)} cases: {', '.join(available[:10])}"
                            f"{', ...' if len(available) > 10 else ''}")
        if not identifiers:
            raise UserError(f"no preprocessed cases to sample blocks from in {folder}")
        self.identifiers = sorted(identifiers)
        self._dataset = _dataset_class(folder)(folder, list(self.identifiers))
        self._shapes: dict[str, tuple[int, ...]] = {}
        self.blocks = self._draw(n_blocks)

    def __len__(self) -> int:
        return len(self.blocks)

    def __iter__(self) -> Iterator[Block]:
        return iter(self.blocks)

    def shape(self, case: str) -> tuple[int, ...]:
        """(channels, *spatial) of a preprocessed case, read from its header only."""
        if case not in self._shapes:
            data = self._dataset.load_case(case)[0]
            self._shapes[case] = tuple(int(s) for s in data.shape)
        return self._shapes[case]

    def _draw(self, n_blocks: int) -> tuple[Block, ...]:
        rng = np.random.default_rng(self.seed)
        blocks = []
        cases: list[str] = []
        for _ in range(n_blocks):
            if not cases:
                cases = [self.identifiers[i] for i in rng.permutation(len(self.identifiers))]
            case = cases.pop(0)
            spatial = self.shape(case)[1:]
            if len(spatial) != len(self.patch_size):
                raise UserError(
                    f"the patch size {list(self.patch_size)} has {len(self.patch_size)} axes, "
                    f"the preprocessed case {case} {len(spatial)} ({list(spatial)}); 2D "
                    "configurations are not supported by the activation capture")
            bbox = []
            for size, patch in zip(spatial, self.patch_size):
                if size >= patch:
                    start = int(rng.integers(0, size - patch + 1))
                else:  # nnU-Net pads (patch - size) // 2 before and the rest after
                    start = -((patch - size) // 2)
                bbox.append((start, start + patch))
            blocks.append(Block(case, tuple(bbox)))
        return tuple(blocks)

    def read(self, block: Block) -> np.ndarray:
        """The block's image data, (channels, *patch_size) float32, zero outside the image."""
        from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd

        data = self._dataset.load_case(block.case)[0]
        return np.asarray(crop_and_pad_nd(data, [list(b) for b in block.bbox], 0),
                          dtype=np.float32)


def preprocessed_folder(plans: dict, configuration: str,
                        preprocessed_root: str | None = None) -> tuple[str, tuple[int, ...]]:
    """The preprocessed data folder and patch size of `configuration` in `plans`.

    Args:
        plans: a plans dict (e.g. a checkpoint's init_args["plans"]).
        configuration: its configuration name, e.g. "3d_fullres".
        preprocessed_root: $nnUNet_preprocessed by default.

    Returns:
        (folder, patch_size): <root>/<dataset name>/<data identifier>, and the patch size.
    """
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    root = preprocessed_root or os.environ.get("nnUNet_preprocessed")
    if not root:
        raise UserError("nnUNet_preprocessed is not set; set it or pass the preprocessed root")
    manager = PlansManager(plans)
    if configuration not in manager.available_configurations:
        available = ", ".join(manager.available_configurations)
        raise UserError(f"the plans {manager.plans_name} have no configuration "
                        f"{configuration!r}; they have {available}")
    config = manager.get_configuration(configuration)
    return (os.path.join(root, manager.dataset_name, config.data_identifier),
            tuple(int(p) for p in config.patch_size))


def voxel_indices(seed: int, block_index: int, n_voxels: int, keep: int | None
                   ) -> np.ndarray | None:
    """Sorted indices of the voxels kept in one block's flattened feature map (None: all).

    A function of the seed, the block and the map's size only, so every network (and every
    layer of the same resolution) keeps the same voxels of a block."""
    if keep is None or keep >= n_voxels:
        return None
    rng = np.random.default_rng([seed, block_index, n_voxels])
    return np.sort(rng.choice(n_voxels, size=keep, replace=False))
