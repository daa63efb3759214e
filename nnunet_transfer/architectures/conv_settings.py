"""The plans' layer settings (`ConvSettings`: conv, norm and non-linearity ops, as nnU-Net writes
them in `arch_kwargs`) and the layers every extra architecture builds from them."""

from __future__ import annotations

import pydoc
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from torch import nn

from nnunet_transfer.architectures.stage_settings import triple
from nnunet_transfer.errors import UserError


def _locate(op):
    if isinstance(op, str):
        located = pydoc.locate(op)
        if located is None:
            raise UserError(f"cannot import {op!r} named in the plans' arch_kwargs")
        return located
    return op


@dataclass
class ConvSettings:
    """The plans' layer settings: 3D convolution, normalisation and non-linearity ops."""

    conv_op: Any = nn.Conv3d
    norm_op: Any = nn.InstanceNorm3d
    norm_op_kwargs: dict = field(default_factory=lambda: {"eps": 1e-5, "affine": True})
    nonlin: Any = nn.LeakyReLU
    nonlin_kwargs: dict = field(default_factory=lambda: {"inplace": True})
    conv_bias: bool = True

    def __post_init__(self):
        self.conv_op = _locate(self.conv_op)
        self.norm_op = _locate(self.norm_op)
        self.nonlin = _locate(self.nonlin)
        if self.norm_op_kwargs is None:  # as nnU-Net's plans: affine instance norm
            self.norm_op_kwargs = {"eps": 1e-5, "affine": True}
        self.norm_op_kwargs = dict(self.norm_op_kwargs)
        self.nonlin_kwargs = dict(self.nonlin_kwargs or {})
        if self.conv_op is not nn.Conv3d:
            raise UserError(f"the extra architectures are 3D networks; the plans ask for "
                            f"{getattr(self.conv_op, '__name__', self.conv_op)}. Add them to a "
                            "3d_fullres (or 3d_lowres) configuration")

    @classmethod
    def from_plans(cls, arch_kwargs: Mapping[str, Any]) -> "ConvSettings":
        """The settings named in the plans' arch_kwargs (or among a constructor's arguments,
        its locals()); an op given as None or left out keeps the default above, nnU-Net's
        own."""
        return cls(**{f.name: arch_kwargs[f.name] for f in fields(cls)
                      if arch_kwargs.get(f.name) is not None})

    def conv(self, in_channels: int, out_channels: int, kernel_size, stride=1,
             dilation=1, bias: bool | None = None) -> nn.Conv3d:
        """A 3D convolution that keeps the size (padding = dilation * (kernel - 1) / 2) when
        stride is 1, and divides it by `stride` when the size is a multiple of it."""
        kernel = triple(kernel_size)
        dilation = triple(dilation)
        padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
        return nn.Conv3d(in_channels, out_channels, kernel, stride=triple(stride),
                         padding=padding, dilation=dilation,
                         bias=self.conv_bias if bias is None else bias)

    def norm(self, channels: int) -> nn.Module:
        return self.norm_op(channels, **self.norm_op_kwargs)

    def activation(self, channels: int | None = None) -> nn.Module:
        """The plans' non-linearity; a PReLU gets one slope per channel when `channels` is
        given (V-Net's), one shared slope otherwise."""
        if self.nonlin is nn.PReLU:  # PReLU takes no inplace flag
            kwargs = {k: v for k, v in self.nonlin_kwargs.items() if k != "inplace"}
            if channels is not None:
                kwargs.setdefault("num_parameters", channels)
            return nn.PReLU(**kwargs)
        return self.nonlin(**self.nonlin_kwargs)

    def conv_norm_act(self, in_channels: int, out_channels: int, kernel_size, stride=1,
                      dilation=1) -> nn.Sequential:
        return nn.Sequential(self.conv(in_channels, out_channels, kernel_size, stride, dilation),
                             self.norm(out_channels), self.activation(out_channels))

    def head(self, in_channels: int, num_classes: int) -> nn.Conv3d:
        """1x1x1 output convolution (with bias, as nnU-Net's seg layers)."""
        return nn.Conv3d(in_channels, num_classes, 1, bias=True)
