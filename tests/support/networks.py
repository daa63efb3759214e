"""Small networks built directly, for in-process tests: nnU-Net's U-Nets and one autofocus layer."""

from __future__ import annotations

import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from torch import nn

from nnunet_transfer.architectures.autofocus import AutofocusConv, AutofocusNet, AutofocusOptions
from nnunet_transfer.architectures.conv_settings import ConvSettings

# the dilation rates of the autofocus paper
AUTOFOCUS_RATES = (2, 6, 10, 14)


def _common(n_stages: int, features: int) -> dict:
    return dict(n_stages=n_stages, features_per_stage=[features * 2 ** i for i in range(n_stages)],
                conv_op=nn.Conv3d, kernel_sizes=[[3, 3, 3]] * n_stages,
                strides=[[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1), conv_bias=True,
                norm_op=nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=True)


def plain_unet(in_channels: int = 1, classes: int = 2, n_stages: int = 3, features: int = 4,
               norm_op=nn.InstanceNorm3d, kernel_sizes=None, strides=None) -> PlainConvUNet:
    kwargs = _common(n_stages, features)
    kwargs["norm_op"] = norm_op
    kwargs["kernel_sizes"] = kernel_sizes or kwargs["kernel_sizes"]
    kwargs["strides"] = strides or kwargs["strides"]
    if norm_op is nn.BatchNorm3d:
        kwargs["norm_op_kwargs"] = {"eps": 1e-5, "affine": True}
    return PlainConvUNet(in_channels, num_classes=classes, n_conv_per_stage=[2] * n_stages,
                         n_conv_per_stage_decoder=[2] * (n_stages - 1), **kwargs)


def residual_unet(in_channels: int = 1, classes: int = 2, n_stages: int = 3,
                  features: int = 4) -> ResidualEncoderUNet:
    return ResidualEncoderUNet(in_channels, num_classes=classes, n_blocks_per_stage=[1] * n_stages,
                               n_conv_per_stage_decoder=[1] * (n_stages - 1),
                               **_common(n_stages, features))


def checkpoint_of(network: nn.Module, labels: dict | None = None) -> dict:
    """A checkpoint in nnU-Net's layout (the parts the loader reads)."""
    init_args = {"dataset_json": {"labels": labels}} if labels is not None else {}
    return {"network_weights": network.state_dict(), "init_args": init_args,
            "trainer_name": "nnUNetTrainer"}


def batch(in_channels: int = 1, size: int = 8) -> torch.Tensor:
    return torch.randn(2, in_channels, size, size, size)


def autofocus_layer(in_channels=4, out_channels=3, kernel=(3, 3, 3), rates=AUTOFOCUS_RATES,
                    stop_gradient=True) -> AutofocusConv:
    """One seeded autofocus convolution, initialised as AutofocusNet initialises its layers."""
    torch.manual_seed(0)
    conv = AutofocusConv(ConvSettings(), AutofocusOptions(rates, stop_gradient), in_channels,
                         out_channels, kernel)
    conv.apply(AutofocusNet.initialize)
    return conv
