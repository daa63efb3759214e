"""Low-rank adapters (LoRA) on convolution weights, as torch parametrizations.

Every adapted convolution weight W of shape (d0, d1, *k) reads as

    W + (alpha / rank) * (B @ A).view(d0, d1, *k),   B: d0 x rank,   A: rank x (d1 * prod(k))

d0, d1 are (out, in / groups) for a convolution and (in, out / groups) for a transposed one:
the kernel is flattened to a matrix with its first dimension as rows, the usual LoRA
factorisation of a conv kernel (each output channel's update is a combination of `rank` full
kernels). B starts at zero, so the network computes exactly what it did before; A starts
Kaiming-uniform (bound 1 / sqrt(fan_in), as torch initialises a convolution), drawn from a
generator seeded by the caller, so a run is reproducible. alpha is fixed (ALPHA), so that the
scale of the update, and with it the learning rate that suits it, does not change with the rank.

Why parametrizations and not Hugging Face `peft`: peft's LoRA for convolutions replaces the
module with a wrapper whose forward adds the low-rank branch to the base module's output. An
architecture that reads a convolution's weight itself and convolves with it (`autofocus` applies
one shared weight at several dilation rates through F.conv3d) would then compute with the
unadapted weight and its adapter would never act. A parametrization sits on the weight: every
read of `conv.weight`, from the module's forward or anywhere else, is the adapted weight. (peft
also pulls in `transformers`, a large dependency this package does not otherwise need.)

Cost: a parametrized weight that requires grad (through B and A) makes every convolution
compute the full weight gradient, as full fine-tuning does. Where a module's own forward is the
plain convolution and the base weight is frozen, the forward is replaced by the same sum
computed factorised, conv(x, W) + conv(conv(x, A), B): autograd then needs no gradient of the
full kernel, only the input gradient and the small ones of A and B. That pays only where the
convolution is wide: the branch reads the whole input to produce `rank` channels, and on CPU
(oneDNN) such a narrow convolution and its gradients cost about as much as the full weight
gradient they replace when the convolution has fewer than FACTORISE_WIDTH_PER_RANK channels per
unit of rank (measured: 32 channels, rank 4 at 40x56x40: factorised 0.45 s against 0.34 s
merged per forward + backward; 64 channels at 20x28x20: 0.18 s against 0.20 s; 256 channels:
0.024 s against 0.036 s). Narrower convolutions keep the merged weight. Reads of `conv.weight`
elsewhere still get the merged weight, and without gradients (inference) the forward
convolves once with the merged weight.

The base weight stays in `<module>.parametrizations.weight.original` and the adapter in
`<module>.parametrizations.weight.0.{A,B}`; `merged_state_dict` gives what a plain network
loads (the keys it has without adapters, the weights merged), which is what gets saved for
nnUNetv2_predict and the analyses.
"""

from __future__ import annotations

import math
import types
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize

from nnunet_transfer.architectures.parts import unwrap
from nnunet_transfer.errors import UserError

ALPHA = 8.0
FACTORISE_WIDTH_PER_RANK = 16
_MARK = "parametrizations."
_PLAIN_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d,
                nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


class LowRankAdapter(nn.Module):
    """The parametrization W -> W + scale * (B @ A).view(W.shape) of one weight."""

    def __init__(self, weight: torch.Tensor, rank: int, alpha: float,
                 generator: torch.Generator):
        super().__init__()
        self.shape = tuple(weight.shape)
        self.rank, self.scale = rank, alpha / rank
        a = torch.empty(rank, math.prod(self.shape[1:]), dtype=weight.dtype)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
        self.A = nn.Parameter(a.to(weight.device))
        self.B = nn.Parameter(torch.zeros(self.shape[0], rank, dtype=weight.dtype,
                                          device=weight.device))

    def delta(self) -> torch.Tensor:
        return (self.B @ self.A).view(self.shape) * self.scale

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.delta()


def _factorised_forward(conv: nn.modules.conv._ConvNd, x: torch.Tensor, *args, **kwargs
                        ) -> torch.Tensor:
    """conv(x) with the adapted weight; factorised while the base is frozen and the adapter
    trains (bound to the module, so that a deep copy of the network binds to the copy)."""
    base = conv.parametrizations.weight.original
    adapter: LowRankAdapter = conv.parametrizations.weight[0]
    if args or kwargs or not (torch.is_grad_enabled() and adapter.B.requires_grad
                              and not base.requires_grad):
        return type(conv).forward(conv, x, *args, **kwargs)
    dims = base.dim() - 2
    ones = (1,) * dims
    convolve = getattr(nn.functional, f"conv{dims}d")
    b = (adapter.B * adapter.scale).view(*adapter.shape[:1], adapter.rank, *ones)
    a = adapter.A.view(adapter.rank, *adapter.shape[1:])
    if conv.transposed:
        transpose = getattr(nn.functional, f"conv_transpose{dims}d")
        options = dict(stride=conv.stride, padding=conv.padding,
                       output_padding=conv.output_padding, dilation=conv.dilation)
        # (in, out, *k): B mixes the input channels down to `rank`, A transposes them up.
        return (transpose(x, base, conv.bias, **options)
                + transpose(convolve(x, b.transpose(0, 1)), a, None, **options))
    options = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation)
    return convolve(x, base, conv.bias, **options) + convolve(convolve(x, a, None, **options), b)


def _factorises(module: nn.Module, rank: int) -> bool:
    """The module's forward is torch's own convolution, ungrouped, zero-padded, and wide enough
    that the factorised sum is the cheaper (see the module's docstring)."""
    return (type(module) in _PLAIN_CONVS and "forward" not in vars(module)
            and module.groups == 1 and module.padding_mode == "zeros"
            and min(module.in_channels, module.out_channels) >= FACTORISE_WIDTH_PER_RANK * rank)


def _adapters(network: nn.Module) -> list[LowRankAdapter]:
    seen, found = set(), []
    for module in unwrap(network).modules():
        if isinstance(module, LowRankAdapter) and id(module) not in seen:
            seen.add(id(module))
            found.append(module)
    return found


def add_adapters(modules: Iterable[nn.Module], rank: int, seed: int,
                 alpha: float = ALPHA) -> list[nn.Parameter]:
    """Give every convolution weight under `modules` (each weight once, however many modules
    or aliases reach it) a low-rank adapter of `rank`; return the adapters' parameters (A, B
    per weight, in module order). The network computes exactly what it did before."""
    if rank < 1:
        raise UserError(f"the LoRA rank must be a positive integer, not {rank}")
    generator = torch.Generator().manual_seed(seed)
    by_weight: dict[int, LowRankAdapter] = {}
    done: set[int] = set()
    added: list[nn.Parameter] = []
    for root in modules:
        for module in unwrap(root).modules():
            if not isinstance(module, nn.modules.conv._ConvNd) or id(module) in done:
                continue
            done.add(id(module))
            if parametrize.is_parametrized(module, "weight"):
                raise UserError(f"{type(module).__name__} already has a parametrization on its "
                                "weight; adapters are added once")
            weight = module.weight
            adapter = by_weight.get(id(weight))
            if adapter is None:
                adapter = by_weight[id(weight)] = LowRankAdapter(weight, rank, alpha, generator)
                added += [adapter.A, adapter.B]
            factorise = _factorises(module, rank)
            parametrize.register_parametrization(module, "weight", adapter)
            if factorise:
                module.forward = types.MethodType(_factorised_forward, module)
    return added


def has_adapters(network: nn.Module) -> bool:
    return bool(_adapters(network))


def adapter_parameters(network: nn.Module) -> list[nn.Parameter]:
    return [p for adapter in _adapters(network) for p in (adapter.A, adapter.B)]


def _split(key: str) -> tuple[str, str, str] | None:
    """'a.b.parametrizations.weight.0.A' -> ('a.b', 'weight', '0.A'); None for a plain key."""
    if key.startswith(_MARK):
        head, tail = "", key[len(_MARK):]
    elif "." + _MARK in key:
        head, _, tail = key.partition("." + _MARK)
    else:
        return None
    name, _, rest = tail.partition(".")
    return head, name, rest


def _plain_state_dict(network: nn.Module, merged: bool) -> dict[str, torch.Tensor]:
    network = unwrap(network)
    state = {}
    with torch.no_grad():
        for key, value in network.state_dict().items():
            split = _split(key)
            if split is None:
                state[key] = value
            elif split[2] == "original":
                prefix, name, _ = split
                if merged:
                    value = getattr(network.get_submodule(prefix), name).detach().clone()
                state[f"{prefix}.{name}" if prefix else name] = value
    return state


def merged_state_dict(network: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of the same network without adapters, every adapted weight merged
    (W + scale * B @ A): what the network computes, loadable by a plain network."""
    return _plain_state_dict(network, merged=True)


def base_state_dict(network: nn.Module) -> dict[str, torch.Tensor]:
    """The same keys as merged_state_dict, with the untouched base weights."""
    return _plain_state_dict(network, merged=False)


def adapter_state_dict(network: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters only (A and B of each adapted weight, under its first key)."""
    seen, state = set(), {}
    for key, value in unwrap(network).state_dict(keep_vars=True).items():
        split = _split(key)
        if split is not None and split[2] != "original" and id(value) not in seen:
            seen.add(id(value))
            state[key] = value.detach().clone()
    return state


def load_adapter_state_dict(network: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy saved adapters into `network`, which has adapters of the same ranks already."""
    ours = {k: v for k, v in unwrap(network).state_dict(keep_vars=True).items()
            if (s := _split(k)) is not None and s[2] != "original"}
    unknown = sorted(set(state) - set(ours))
    covered = {id(ours[k]) for k in state if k in ours}
    missing = sorted(k for k, v in ours.items() if id(v) not in covered)
    if unknown or missing:
        raise UserError(f"the saved adapters do not fit this network: unknown keys "
                        f"{unknown[:3]}, adapters without a saved value {missing[:3]}")
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(ours[k].shape)]
    if wrong:
        raise UserError(f"the saved adapters have other shapes (another LoRA rank?) than "
                        f"this network's: {wrong[0]} is {tuple(state[wrong[0]].shape)}, "
                        f"expected {tuple(ours[wrong[0]].shape)}")
    with torch.no_grad():
        for key, value in state.items():
            ours[key].copy_(value)
