"""Activation capture: the second moments of named layers of many networks on the same blocks.

Orientation: a hooked layer's output (batch, C, z, y, x) becomes rows of a (datapoints, channels)
matrix: one row per voxel of the layer's feature map (over all blocks of a batch), one column per
channel, the orientation of `moments`. The rows are never kept: each batch is fed to
`MomentAccumulator`s, so memory is O(channels^2) whatever the number of blocks.

The blocks (`blocks.BlockSampler`) are a deterministic function of the cases, the patch size,
their number and the seed: every network compared sees exactly the same input, in one pass or
in separate calls.

Many networks at once (`capture_moments`): each batch of blocks is read once and run through
every network; the hooked activations of all networks for a layer label are on the same voxels,
so the co-moments between networks are exact. Memory layout, per layer label:

- "stacked" (the default whenever all pairs are wanted): one accumulator over the channels of
  all networks stacked side by side, blocks in the order of `networks`. Memory
  (sum of channels)^2 float64 and per voxel (sum of channels)^2 multiply-adds: every pair's
  Sxx, Sxy, Syy is a sub-block of it, and no diagonal block is computed twice, so for all pairs
  this is the least work and memory possible;
- "pairs": one accumulator per requested pair, (C_a + C_b)^2 each. Chosen when only some pairs
  are requested and their summed cost is below the stacked one (e.g. each of 20 snapshots
  against the converged network only: 19 x (2C)^2 against (20 C)^2, five times less).

Both give the same values up to rounding. Peak memory besides the accumulators: the hooked
activations of all networks for one batch (float32, sum over networks and labels of
C x voxels kept per block x batch size) plus one float64 chunk of about 32 MB; `voxels_per_block`
bounds both and the time.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from nnunet_transfer.analysis.blocks import Block, BlockSampler, voxel_indices
from nnunet_transfer.analysis.layers import default_layers, find_layer
from nnunet_transfer.analysis.moments import (
    MomentAccumulator, Moments, default_chunk_size, warn_if_few_datapoints)
from nnunet_transfer.analysis.pwcca import Weighting, pwcca_from_moments
from nnunet_transfer.analysis.svcca_cka import linear_cka_from_moments, svcca_from_moments
from nnunet_transfer.architectures.parts import unwrap
from nnunet_transfer.errors import UserError

Layout = Literal["stacked", "pairs"]
LayerSpec = Sequence[str] | Mapping[str, str]


# -- which layer of which network --------------------------------------------------------------


def layer_plan(networks: Mapping[str, nn.Module],
               layers: Sequence[str] | Mapping[str, LayerSpec] | None = None
               ) -> dict[str, dict[str, str]]:
    """{layer label: {network name: module name}}, labels in first-seen order.

    Args:
        networks: name -> network.
        layers: None for every network's default layers, labelled by role ("encoder-1" ...,
            see `layers.default_layers`); a list of module names present in every network
            (labels = the names); or per network name a list of module names (labels = names)
            or a {label: module name} dict, e.g. to pair layers of different architectures.
            A network missing from such a mapping gets its defaults.
    """
    if isinstance(layers, str):
        raise UserError(f"layers must be a list of module names, not the string {layers!r}")
    if layers is not None and not isinstance(layers, Mapping):
        layers = {name: list(layers) for name in networks}
    unknown = sorted(set(layers or {}) - set(networks))
    if unknown:
        raise UserError(f"layers are given for unknown networks {unknown}; the networks are "
                        f"{', '.join(networks)}")
    plan: dict[str, dict[str, str]] = {}
    for network_name, network in networks.items():
        spec = (layers or {}).get(network_name)
        if spec is None:
            labelled = default_layers(network)
        elif isinstance(spec, Mapping):
            labelled = dict(spec)
        else:
            labelled = {name: name for name in spec}
        for label, module_name in labelled.items():
            plan.setdefault(label, {})[network_name] = module_name
    return plan


# -- the result --------------------------------------------------------------------------------


@dataclass
class CapturedMoments:
    """Second moments of every captured (network, layer) on the same blocks.

    Every similarity is computed from these with the *_from_moments functions of `pwcca` and
    `svcca_cka`; `pwcca(a, b, label)` is that of x = network a's layer, y = network b's layer
    (the orientation is (datapoints = voxels, channels) throughout).

    Attributes:
        layers: {label: {network name: module name}}.
        channels: {label: {network name: number of channels}}.
        datapoints: {label: number of voxels accumulated per network}.
        feature_shape: {label: spatial shape of the layer's map for one block}.
        layout: {label: "stacked" or "pairs"} (see the module docstring).
        blocks: the blocks every network saw, in order.
        voxels_per_block: voxels kept per block and layer (None: all).
    """

    layers: dict[str, dict[str, str]]
    channels: dict[str, dict[str, int]]
    datapoints: dict[str, int]
    feature_shape: dict[str, tuple[int, ...]]
    layout: dict[str, Layout]
    blocks: tuple[Block, ...]
    voxels_per_block: int | None
    _sources: dict[tuple[str, str, str], tuple[Moments, int, int]] = field(repr=False)

    @property
    def labels(self) -> list[str]:
        return list(self.layers)

    def pairs(self, label: str) -> list[tuple[str, str]]:
        """The (unordered) network pairs whose similarity at `label` can be computed."""
        return sorted({tuple(sorted(key[1:])) for key in self._sources if key[0] == label})

    def moments(self, a: str, b: str, label: str) -> tuple[Moments, int, int]:
        """(moments, block of a, block of b) for the *_from_moments functions."""
        try:
            return self._sources[(label, a, b)]
        except KeyError:
            pass
        if label not in self.layers:
            raise UserError(f"no layer {label!r} was captured; captured: {', '.join(self.layers)}")
        missing = [n for n in (a, b) if n not in self.layers[label]]
        if missing:
            raise UserError(f"layer {label!r} was not captured for {', '.join(missing)}; it was "
                            f"for {', '.join(self.layers[label])}")
        raise UserError(f"the pair ({a}, {b}) was not requested for layer {label!r}; captured "
                        f"pairs: {self.pairs(label)}")

    def pwcca(self, a: str, b: str, label: str, *, weighting: Weighting = "google",
              epsilon: float = 0.0) -> float:
        """PWCCA (RSIM) of network a's and network b's layer `label`, in [0, 1]."""
        moments, x, y = self.moments(a, b, label)
        return pwcca_from_moments(moments, x, y, weighting=weighting, epsilon=epsilon)

    def svcca(self, a: str, b: str, label: str, *, keep: float = 0.99,
              n_components: int | None = None) -> float:
        """SVCCA of network a's and network b's layer `label`, in [0, 1]."""
        moments, x, y = self.moments(a, b, label)
        return svcca_from_moments(moments, x, y, keep=keep, n_components=n_components)

    def linear_cka(self, a: str, b: str, label: str) -> float:
        """Linear CKA of network a's and network b's layer `label`, in [0, 1]."""
        moments, x, y = self.moments(a, b, label)
        return linear_cka_from_moments(moments, x, y)


# -- the capture -------------------------------------------------------------------------------


class _Group:
    """One accumulator over the stacked channels of `members` (network names, in order)."""

    def __init__(self, members: Sequence[str]):
        self.members = tuple(members)
        self.accumulator = MomentAccumulator()


def _choose_groups(label_networks: Sequence[str], pairs: Sequence[tuple[str, str]] | None,
                   channels: Mapping[str, int]) -> tuple[Layout, list[_Group]]:
    """The accumulators of one layer label: stacked, or one per pair when that costs less."""
    if pairs is None:
        return "stacked", [_Group(label_networks)]
    wanted = sorted({tuple(sorted(p)) for p in pairs
                     if p[0] in channels and p[1] in channels and p[0] != p[1]})
    involved = [n for n in label_networks if any(n in p for p in wanted)]
    stacked_cost = sum(channels[n] for n in involved) ** 2
    pair_cost = sum((channels[a] + channels[b]) ** 2 for a, b in wanted)
    if pair_cost < stacked_cost:
        return "pairs", [_Group(p) for p in wanted]
    return "stacked", [_Group(involved)] if involved else []


class _Recorder:
    """Forward hooks that keep each hooked layer's output of the current batch as (C, voxels)."""

    def __init__(self, voxels_per_block: int | None, seed: int):
        self.voxels_per_block = voxels_per_block
        self.seed = seed
        self.block_indices: list[int] = []
        self.outputs: dict[str, torch.Tensor] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._index_cache: dict[tuple[int, int], torch.Tensor | None] = {}

    def start_batch(self, block_indices: list[int]) -> None:
        self.block_indices = block_indices
        self.outputs, self.shapes, self._index_cache = {}, {}, {}

    def hook(self, label: str, network_name: str, module_name: str):
        def record(module, inputs, output):
            if not isinstance(output, torch.Tensor) or output.ndim < 3:
                what = (f"a tensor of shape {tuple(output.shape)}"
                        if isinstance(output, torch.Tensor) else type(output).__name__)
                raise UserError(
                    f"layer {module_name} of {network_name} returns {what}, not a feature map "
                    "(batch, channels, *spatial); choose a module that returns one")
            if label in self.outputs:
                # A module called twice per forward pass (weights shared between branches)
                # has no single output to compare.
                raise UserError(
                    f"layer {module_name} of {network_name} runs more than once per forward "
                    "pass; choose a module that runs once, e.g. the block around it")
            self.outputs[label] = self._rows(output.detach())
            self.shapes[label] = tuple(output.shape[2:])
        return record

    def _rows(self, output: torch.Tensor) -> torch.Tensor:
        """(batch, C, *spatial) -> (C, voxels kept over the batch), a copy of the output.

        A copy, because a later in-place operation (nnU-Net's LeakyReLU(inplace=True) after a
        hooked norm, for one) would otherwise change what was recorded."""
        batch, channels = output.shape[:2]
        flat = output.reshape(batch, channels, -1)
        n_voxels = flat.shape[2]
        kept = []
        for sample, block_index in enumerate(self.block_indices):
            key = (block_index, n_voxels)
            if key not in self._index_cache:
                indices = voxel_indices(self.seed, block_index, n_voxels, self.voxels_per_block)
                self._index_cache[key] = (None if indices is None else
                                          torch.as_tensor(indices, device=output.device))
            indices = self._index_cache[key]
            kept.append(flat[sample] if indices is None else flat[sample][:, indices])
        rows = torch.cat(kept, dim=1)
        if rows.untyped_storage().data_ptr() == output.untyped_storage().data_ptr():
            rows = rows.clone()
        return rows


def capture_moments(
    networks: Mapping[str, nn.Module],
    blocks: BlockSampler,
    layers: Sequence[str] | Mapping[str, LayerSpec] | None = None,
    *,
    pairs: Sequence[tuple[str, str]] | None = None,
    voxels_per_block: int | None = None,
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> CapturedMoments:
    """Run every network on the same blocks and accumulate what every requested pair needs.

    Args:
        networks: name -> network (nnU-Net's U-Nets, the extra architectures, any module whose
            layers return (batch, C, *spatial) maps). Each is moved to `device` and run in eval
            mode under torch.no_grad; the training flag of every module is restored afterwards.
        blocks: the blocks (a `BlockSampler`); every network sees each one.
        layers: which layers, see `layer_plan` (default: each network's default layers).
        pairs: network pairs to compare; None for all pairs. Decides the memory layout only
            (module docstring); pairs are unordered.
        voxels_per_block: keep at most this many voxels per block of each layer's map (a seeded
            subset, the same for every network); None keeps all.
        batch_size: blocks per forward pass (nnU-Net's instance norm is per block, so this
            changes speed and memory; results only in the last bits of float32 convolutions).
        device: where the networks run and the moments are accumulated.
        seed: seed of the voxel subset.

    Returns:
        CapturedMoments: pwcca / svcca / linear_cka of any captured pair per layer label.

    Raises:
        UserError for a missing layer, a layer label whose maps differ in size between networks
        (its datapoints would not be the same voxels), a network failing on a block, and a
        layer that got no datapoint. A layer with fewer than LOW_RATIO datapoints per channel
        gets a warning with the ratio.
    """
    if not networks:
        raise UserError("no networks to capture")
    if voxels_per_block is not None and voxels_per_block < 1:
        raise UserError(f"voxels_per_block must be at least 1 (or None for all), got "
                        f"{voxels_per_block}")
    if batch_size < 1:
        raise UserError(f"batch_size must be at least 1, got {batch_size}")
    unknown = sorted({n for p in pairs or () for n in p} - set(networks))
    if unknown:
        raise UserError(f"pairs name unknown networks {unknown}; the networks are "
                        f"{', '.join(networks)}")
    device = torch.device(device)
    plan = layer_plan(networks, layers)
    modules = {label: {name: find_layer(networks[name], module_name, f"network {name}")
                       for name, module_name in members.items()}
               for label, members in plan.items()}

    recorders = {name: _Recorder(voxels_per_block, seed) for name in networks}
    handles = [module.register_forward_hook(recorders[name].hook(label, name, plan[label][name]))
               for label, members in modules.items() for name, module in members.items()]
    # Per module: a trainer keeps frozen parts in eval mode inside a network in train mode.
    was_training = [(module, module.training) for net in networks.values()
                    for module in unwrap(net).modules()]
    groups: dict[str, list[_Group]] | None = None
    layout: dict[str, Layout] = {}
    feature_shape: dict[str, tuple[int, ...]] = {}
    channels: dict[str, dict[str, int]] = {}
    try:
        for network in networks.values():
            network.to(device).eval()
        block_list = list(blocks)
        with torch.no_grad():
            for start in range(0, len(block_list), batch_size):
                indices = list(range(start, min(start + batch_size, len(block_list))))
                batch = torch.from_numpy(np.stack([blocks.read(block_list[i]) for i in indices])
                                         ).to(device)
                outputs = _run_all(networks, recorders, batch, indices, block_list)
                if groups is None:
                    channels = {label: {name: int(outputs[name][label].shape[0])
                                        for name in members} for label, members in plan.items()}
                    groups, layout = {}, {}
                    for label, members in plan.items():
                        layout[label], groups[label] = _choose_groups(
                            list(members), pairs, channels[label])
                _check_same_voxels(plan, recorders, feature_shape)
                for label, label_groups in groups.items():
                    for group in label_groups:
                        _feed(group, [outputs[name][label] for name in group.members])
    finally:
        for handle in handles:
            handle.remove()
        for module, training in was_training:
            module.training = training

    sources: dict[tuple[str, str, str], tuple[Moments, int, int]] = {}
    datapoints: dict[str, int] = {}
    for label, label_groups in groups.items():
        for group in label_groups:
            if group.accumulator.count == 0:
                raise UserError(f"layer {label!r} got no datapoints from {len(block_list)} "
                                "block(s); use more blocks or keep more voxels per block")
            moments = group.accumulator.moments()
            datapoints[label] = moments.count
            for (i, a), (j, b) in itertools.permutations(enumerate(group.members), 2):
                sources[(label, a, b)] = (moments, i, j)
        if label in datapoints:
            warn_if_few_datapoints(datapoints[label], max(channels[label].values()))
    return CapturedMoments(layers=plan, channels=channels, datapoints=datapoints,
                           feature_shape=feature_shape, layout=layout,
                           blocks=tuple(block_list), voxels_per_block=voxels_per_block,
                           _sources=sources)


def _run_all(networks: Mapping[str, nn.Module], recorders: Mapping[str, _Recorder],
             batch: torch.Tensor, indices: list[int], block_list: Sequence[Block]
             ) -> dict[str, dict[str, torch.Tensor]]:
    """Every network on one batch; returns {network: {label: (C, voxels)}}."""
    outputs = {}
    for name, network in networks.items():
        recorders[name].start_batch(indices)
        try:
            network(batch)
        except UserError:
            raise
        except RuntimeError as error:
            first = block_list[indices[0]]
            raise UserError(
                f"network {name} ({type(unwrap(network)).__name__}) failed on a batch of "
                f"blocks of shape {tuple(batch.shape)} (first block: case {first.case}): "
                f"{str(error).splitlines()[0]}. Do its input channels and patch size match "
                "the preprocessed data?") from None
        outputs[name] = recorders[name].outputs
    return outputs


def _check_same_voxels(plan: Mapping[str, Mapping[str, str]],
                       recorders: Mapping[str, _Recorder],
                       feature_shape: dict[str, tuple[int, ...]]) -> None:
    """Refuse a layer label whose maps differ in size between networks: their rows would not
    be the same voxels, and no similarity of them would mean anything."""
    for label, members in plan.items():
        shapes = {name: recorders[name].shapes[label] for name in members}
        reference_name = next(iter(shapes))
        for name, shape in shapes.items():
            if shape != shapes[reference_name]:
                raise UserError(
                    f"layer {label!r} has maps of {list(shapes[reference_name])} voxels in "
                    f"{reference_name} ({members[reference_name]}) but {list(shape)} in {name} "
                    f"({members[name]}); compare layers of the same resolution")
        feature_shape.setdefault(label, shapes[reference_name])


def _feed(group: _Group, rows: Sequence[torch.Tensor]) -> None:
    """Add one batch of (C_k, voxels) activations to the group's accumulator, in chunks of
    voxels so that the float64 copy the accumulator makes stays near 32 MB."""
    step = default_chunk_size(sum(r.shape[0] for r in rows))
    for start in range(0, rows[0].shape[1], step):
        group.accumulator.update(*(r[:, start:start + step].T for r in rows))
