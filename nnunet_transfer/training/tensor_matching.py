"""The rules that fit one checkpoint tensor to a tensor of another shape, and find it by name.

Each rule returns the fitted tensor and a short note for the preflight table, or None where no
rule applies (the tensor then starts fresh, at the network's own init).

- Output channels by label name (`output_channel_names`, `pick_by_name` on dim 0): a label (or
  region) the source has keeps its trained channel; a new label keeps the network's init.
- Input channels by channel name (`pick_by_name` on dim 1): a modality the source has keeps its
  kernels; a new one gets the mean rule of `adapt_input_channels`.
- Kernels (`fit_kernel`), per spatial axis:
  convolution, smaller kernel (3 -> 1): the central slice(s) kept, each outer slice added onto
      the nearest kept one. The kernel's sum is unchanged, so an input constant along that axis
      (a constant input in particular) gives the same response away from the borders;
  convolution, larger kernel (1 -> 3): the kernel placed centrally, zeros around it. nnU-Net
      pads by kernel // 2, so the layer computes exactly what the source's did, on any input;
  transposed convolution (kernel = stride, nnU-Net issue #2760), 2 -> 1: the mean of the taps,
      i.e. the source's output averaged over each block of 2; 1 -> 2: the tap repeated, i.e.
      the source's output repeated (nearest-neighbour), the same response to any input.
- Stages (`stage_key`): nnU-Net's U-Nets number encoder stages from full resolution and decoder
  stages (with their transposed convolutions and output layers) from the bottom. With another
  number of stages the decoder's names shift, so they are matched by resolution level: the
  matching levels load, a level only one side has starts fresh (or goes unused).
"""

from __future__ import annotations

import re

import torch

_DECODER_LEVEL = re.compile(r"^decoder\.(stages|transpconvs|seg_layers)\.(\d+)\.")
_ENCODER_STAGE = re.compile(r"^encoder\.stages\.(\d+)\.")


def adapt_input_channels(weight: torch.Tensor, num_input_channels: int) -> torch.Tensor:
    """Input-layer weights (out, in_source, *kernel) for `num_input_channels` input channels.

    The kernels are averaged over the source's input channels and repeated, scaled by
    in_source / in_target so that an image repeated on every channel gives the same response
    as before (1 -> n channels divides each by n, n -> 1 sums them).
    """
    mean = weight.mean(dim=1, keepdim=True)
    repeats = (1, num_input_channels) + (1,) * (weight.ndim - 2)
    return mean.repeat(*repeats) * (weight.shape[1] / num_input_channels)


# -- names ----------------------------------------------------------------------------------------

def output_channel_names(labels: dict | None, regions_class_order=None) -> list[str] | None:
    """The label (or region) name of each output channel, as nnU-Net's LabelManager orders
    them: labels by value, regions in the order of dataset.json (background and the ignore
    label have no channel of their own there). None when the labels are unknown."""
    if not labels:
        return None
    entries = [(name, value) for name, value in labels.items() if name != "ignore"]
    if any(isinstance(v, (list, tuple)) and len(v) > 1 for _, v in entries):
        return ["region " + name for name, value in entries
                if set(value if isinstance(value, (list, tuple)) else [value]) != {0}]
    names_of_value: dict[int, str] = {}
    for name, value in entries:
        names_of_value.setdefault(int(value[0] if isinstance(value, (list, tuple)) else value),
                                  name)
    return [names_of_value[v] for v in sorted(names_of_value)]


def input_channel_names(channel_names: dict | None) -> list[str] | None:
    """The channel names of dataset.json ({"0": "T2", "1": "ADC"}) in channel order, compared
    without case and surrounding blanks. None when unknown."""
    if not channel_names:
        return None
    return [str(channel_names[k]).strip().casefold()
            for k in sorted(channel_names, key=lambda k: int(k))]


def pick_by_name(source: torch.Tensor, fresh: torch.Tensor, dim: int, source_names: list[str],
                 target_names: list[str], fill: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, list[str], list[str]] | None:
    """`fresh` (the network's tensor) with each slice along `dim` whose name the source has
    replaced by the source's slice of that name; the others come from `fill` (same shape as
    `fresh`) when given, else stay as they are. Returns (tensor, names taken, names new), or
    None when the other dimensions do not agree."""
    if (source.shape[dim] != len(source_names) or fresh.shape[dim] != len(target_names)
            or _without(source.shape, dim) != _without(fresh.shape, dim)):
        return None
    index = {name: i for i, name in enumerate(source_names)}
    picked = (fill if fill is not None else fresh).detach().clone().to(source.dtype)
    taken, new = [], []
    for t, name in enumerate(target_names):
        if name in index:
            picked.select(dim, t).copy_(source.select(dim, index[name]))
            taken.append(name)
        else:
            new.append(name)
    return picked, taken, new


def _without(shape, dim: int) -> tuple[int, ...]:
    return tuple(s for i, s in enumerate(shape) if i != dim)


# -- kernels --------------------------------------------------------------------------------------

def fit_kernel(weight: torch.Tensor, kernel: tuple[int, ...], transposed: bool
               ) -> tuple[torch.Tensor, str] | None:
    """`weight` (dims 0 and 1 channels, then the kernel) fitted to the spatial size `kernel`
    by the rules of this module's docstring; None when no rule fits (e.g. 3 -> 2)."""
    if weight.ndim != 2 + len(kernel):
        return None
    rules = set()
    for axis, size in enumerate(kernel):
        dim, have = axis + 2, weight.shape[axis + 2]
        if have == size:
            continue
        fitted = (_transposed_axis if transposed else _conv_axis)(weight, dim, have, size)
        if fitted is None:
            return None
        weight, how = fitted
        rules.add(how)
    return weight, ", ".join(sorted(rules))


def _conv_axis(weight: torch.Tensor, dim: int, have: int, size: int
               ) -> tuple[torch.Tensor, str] | None:
    if (have - size) % 2:
        return None  # no centre to keep or place on
    shape = list(weight.shape)
    shape[dim] = size
    if size < have:
        lo = (have - size) // 2
        nearest_kept = torch.arange(have).clamp(lo, lo + size - 1) - lo
        return (torch.zeros(shape, dtype=weight.dtype).index_add_(dim, nearest_kept, weight),
                "central slice, outer slices summed in")
    placed = torch.zeros(shape, dtype=weight.dtype)
    placed.narrow(dim, (size - have) // 2, have).copy_(weight)
    return placed, "placed centrally, zeros around"


def _transposed_axis(weight: torch.Tensor, dim: int, have: int, size: int
                     ) -> tuple[torch.Tensor, str] | None:
    if size < have and have % size == 0:
        group = have // size
        shape = list(weight.shape)
        shape[dim] = size
        return (torch.zeros(shape, dtype=weight.dtype)
                .index_add_(dim, torch.arange(have) // group, weight) / group,
                "transposed-conv taps averaged")
    if size > have and size % have == 0:
        return (weight.index_select(dim, torch.arange(size) // (size // have)),
                "transposed-conv taps repeated")
    return None


# -- stages ---------------------------------------------------------------------------------------

def count_stages(keys) -> int | None:
    """The number of encoder stages of an nnU-Net U-Net's state dict; None for another shape."""
    stages = {int(m.group(1)) for k in keys if (m := _ENCODER_STAGE.match(k))}
    return max(stages) + 1 if stages else None


def stage_key(key: str, network_stages: int | None, source_stages: int | None) -> str | None:
    """The checkpoint's name for the network's tensor `key`: the same unless the two have
    another number of stages, where a decoder level moves by the difference; None for a
    level the source does not have."""
    match = _DECODER_LEVEL.match(key)
    if match is None or not network_stages or not source_stages:
        return key
    level = int(match.group(2)) + source_stages - network_stages
    if level < 0:
        return None
    return f"decoder.{match.group(1)}.{level}.{key[match.end():]}"
