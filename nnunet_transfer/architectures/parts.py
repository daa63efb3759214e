"""The encoder / decoder / head split of a network, by module identity.

Names are not enough: in dynamic_network_architectures' U-Nets `network.decoder.encoder` is the
very module `network.encoder`, so `state_dict()` lists the encoder twice and a filter on the
word "decoder" counts encoder weights as decoder weights. Every part here is a set of modules,
and a parameter belongs to the part whose modules hold it.

An architecture declares its split in one of two ways:
- it defines `transfer_parts(self) -> dict[str, list[nn.Module]]` with keys encoder, decoder,
  head (the extra architectures of this package do);
- or it is shaped like nnU-Net's U-Nets (PlainConvUNet, ResidualEncoderUNet, ...): an
  `encoder`, a `decoder` that keeps a reference to it, and `decoder.seg_layers` as the head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nnunet_transfer.errors import UserError

PARTS = ("encoder", "decoder", "head")


def unwrap(network: nn.Module) -> nn.Module:
    """The plain module under DistributedDataParallel and torch.compile wrappers."""
    if isinstance(network, nn.parallel.DistributedDataParallel):
        network = network.module
    return getattr(network, "_orig_mod", network)


@dataclass(frozen=True)
class NetworkParts:
    """The root modules of each part; every parameter of the network lies in exactly one part."""

    modules: dict[str, tuple[nn.Module, ...]]

    def parameters(self, part: str) -> list[nn.Parameter]:
        return _unique(p for m in self.modules[part] for p in m.parameters())

    def tensors(self, part: str) -> list[torch.Tensor]:
        """Parameters and buffers (e.g. running statistics of batch norm) of `part`."""
        return _unique(t for m in self.modules[part]
                       for t in (*m.parameters(), *m.buffers()))

    def part_of(self) -> dict[int, str]:
        """Map id(parameter or buffer) -> part name."""
        return {id(t): part for part in PARTS for t in self.tensors(part)}

    def state_dict_parts(self, network: nn.Module) -> dict[str, str]:
        """Map every key of `network.state_dict()` (aliases included) to its part."""
        part_of = self.part_of()
        return {key: part_of[id(t)]
                for key, t in unwrap(network).state_dict(keep_vars=True).items()}

    def parameter_counts(self) -> dict[str, dict[str, int]]:
        """Per part: number of trainable and of frozen parameter values."""
        counts = {}
        for part in PARTS:
            params = self.parameters(part)
            counts[part] = {
                "trainable": sum(p.numel() for p in params if p.requires_grad),
                "frozen": sum(p.numel() for p in params if not p.requires_grad),
            }
        return counts


def _unique(tensors) -> list:
    seen: set[int] = set()
    unique = []
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            unique.append(t)
    return unique


def _unet_parts(network: nn.Module) -> dict[str, list[nn.Module]]:
    encoder, decoder = network.encoder, network.decoder
    head = decoder.seg_layers
    decoder_modules = [child for child in decoder.children()
                       if child is not encoder and child is not head]
    return {"encoder": [encoder], "decoder": decoder_modules, "head": [head]}


def partition(network: nn.Module) -> NetworkParts:
    """Split `network` (possibly wrapped by DDP / torch.compile) into encoder, decoder and head.

    Raises UserError when the architecture declares no split or its split leaves a parameter
    out or puts one in two parts.
    """
    network = unwrap(network)
    name = type(network).__name__
    if hasattr(network, "transfer_parts"):
        declared = network.transfer_parts()
    elif all(hasattr(network, a) for a in ("encoder", "decoder")) and hasattr(
            network.decoder, "seg_layers"):
        declared = _unet_parts(network)
    else:
        raise UserError(
            f"the architecture {name} declares no encoder / decoder / head split; give it a "
            "transfer_parts() method (see nnunet_transfer/architectures/parts.py)")
    if set(declared) != set(PARTS):
        raise UserError(f"{name}.transfer_parts() must return exactly the keys {PARTS}, "
                        f"not {sorted(declared)}")
    parts = NetworkParts({p: tuple(declared[p]) for p in PARTS})

    owners: dict[int, list[str]] = {}
    for part in PARTS:
        for p in parts.parameters(part):
            owners.setdefault(id(p), []).append(part)
    names = {id(p): n for n, p in network.named_parameters()}
    overlapping = [n for i, n in names.items() if len(owners.get(i, [])) > 1]
    missing = [n for i, n in names.items() if i not in owners]
    if overlapping or missing:
        raise UserError(
            f"the encoder / decoder / head split of {name} is inconsistent: "
            f"in two parts: {overlapping[:5]}; in no part: {missing[:5]}")
    return parts
