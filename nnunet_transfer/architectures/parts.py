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

Within the encoder and the decoder, an architecture may also declare ordered *stages* (for a
layer-wise learning rate or a gradual unfreezing): `transfer_stages(self) -> dict[str,
list[list[nn.Module]]]` with keys encoder and decoder, stages in the order data flows (the
encoder's shallowest first, the decoder's deepest first). nnU-Net's U-Nets need no declaration:
their encoder stages (the stem joins the first) and decoder stages (each with the transposed
convolution that feeds it) are found. Where nothing is declared, the whole part is one stage;
the head is always one stage.
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
    # part -> its stages in the order data flows, each a tuple of root modules
    stages: dict[str, tuple[tuple[nn.Module, ...], ...]] = None

    def parameters(self, part: str) -> list[nn.Parameter]:
        return _unique(p for m in self.modules[part] for p in m.parameters())

    def stage_modules(self, part: str) -> tuple[tuple[nn.Module, ...], ...]:
        """The stages of `part` (one stage, the whole part, where none are declared)."""
        return (self.stages or {}).get(part) or (self.modules[part],)

    def stage_parameters(self, part: str) -> list[list[nn.Parameter]]:
        return [_unique(p for m in stage for p in m.parameters())
                for stage in self.stage_modules(part)]

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


def _unet_stages(network: nn.Module) -> dict[str, list[list[nn.Module]]]:
    encoder, decoder = network.encoder, network.decoder
    stages = {}
    if isinstance(getattr(encoder, "stages", None), nn.Module):
        stem = [encoder.stem] if isinstance(getattr(encoder, "stem", None), nn.Module) else []
        encoder_stages = [[stage] for stage in encoder.stages]
        encoder_stages[0] = stem + encoder_stages[0]
        stages["encoder"] = encoder_stages
    transpconvs = getattr(decoder, "transpconvs", None)
    if isinstance(getattr(decoder, "stages", None), nn.Module) and transpconvs is not None:
        stages["decoder"] = [[up, stage] for up, stage in zip(transpconvs, decoder.stages)]
    return stages


def _checked_stages(name: str, parts: NetworkParts, declared: dict) -> dict:
    """The declared stages of each part, if they hold exactly the part's parameters."""
    stages = {}
    for part, part_stages in declared.items():
        if part not in ("encoder", "decoder"):
            raise UserError(f"{name}.transfer_stages() may declare the stages of the encoder "
                            f"and the decoder only, not of {part!r}")
        held = [id(p) for stage in part_stages for m in stage for p in m.parameters()]
        if sorted(held) != sorted({id(p) for p in parts.parameters(part)}):
            raise UserError(f"the {part} stages of {name} do not hold each parameter of the "
                            f"{part} exactly once; fix {name}.transfer_stages()")
        stages[part] = tuple(tuple(stage) for stage in part_stages)
    return stages


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
    if hasattr(network, "transfer_stages"):
        stages = _checked_stages(name, parts, network.transfer_stages())
    elif hasattr(network, "transfer_parts"):
        stages = {}
    else:
        stages = _checked_stages(name, parts, _unet_stages(network))
    return NetworkParts(parts.modules, stages)
