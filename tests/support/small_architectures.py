"""Small networks of each extra architecture, built directly (not through nnU-Net's plans), for
the in-process architecture tests: a few features per stage, so a forward pass takes
milliseconds."""

from __future__ import annotations

import torch
from torch import nn

from nnunet_transfer.architectures.autofocus import AutofocusNet
from nnunet_transfer.architectures.hrnet import HRNet3D
from nnunet_transfer.architectures.karimi import KarimiNet
from nnunet_transfer.architectures.registry import template
from nnunet_transfer.architectures.tiramisu import Tiramisu
from nnunet_transfer.architectures.unetpp import UNetPlusPlus
from nnunet_transfer.architectures.vnet import VNet
from nnunet_transfer.architectures.weatheritt import WeatherittUNet


def autofocus(layers_per_block=1, strides=((1, 1, 1), (1, 2, 2), (2, 2, 2)),
              dilations=(1, 2, 3), **kwargs) -> AutofocusNet:
    n = len(strides)
    torch.manual_seed(0)
    network = AutofocusNet(input_channels=1, num_classes=2, n_stages=n,
                           features_per_stage=[4, 6, 8, 8][:n], strides=[list(s) for s in strides],
                           kernel_sizes=[[1, 3, 3]] + [[3, 3, 3]] * (n - 1), dilations=dilations,
                           layers_per_block=layers_per_block, **kwargs)
    network.apply(network.initialize)
    return network


HRNET_LAYERS = dict(conv_op="torch.nn.modules.conv.Conv3d",
                    norm_op="torch.nn.modules.instancenorm.InstanceNorm3d",
                    norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin="torch.nn.LeakyReLU",
                    nonlin_kwargs={"inplace": True}, conv_bias=True)
# Anisotropic plans: the first down-sampling leaves axis 0 alone, the first kernel is 1x3x3.
HRNET_STRIDES = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]
HRNET_KERNELS = [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
HRNET_PATCH = (12, 24, 24)  # streams 12x24x24, 12x12x12, 6x6x6, 3x3x3


def hrnet(in_channels=1, classes=2, widths=(4, 8, 12, 16), strides=HRNET_STRIDES,
          kernels=HRNET_KERNELS, **kwargs):
    n = len(widths)
    return HRNet3D(input_channels=in_channels, num_classes=classes, n_stages=n,
                   features_per_stage=list(widths), strides=strides[:n],
                   kernel_sizes=kernels[:n], **HRNET_LAYERS, **kwargs)


KARIMI_ISOTROPIC = dict(strides=[[1, 1, 1]] + [[2, 2, 2]] * 4, kernel_sizes=[[3, 3, 3]] * 5)


def karimi(n_stages=5, base=2, in_channels=1, classes=2, **kwargs):
    arch = {key: value[:n_stages] for key, value in KARIMI_ISOTROPIC.items()}
    arch.update(kwargs)
    spec = template("karimi")["arch_kwargs"]
    own = {k: v for k, v in spec.items() if k in ("units_per_stage", "decoder_convs_per_stage")}
    return KarimiNet(in_channels, classes, n_stages=n_stages,
                     features_per_stage=[base * 2 ** i for i in range(n_stages)],
                     nonlin=nn.ReLU, **{**own, **arch})


TIRAMISU_LAYERS = {"conv_op": nn.Conv3d, "norm_op": nn.InstanceNorm3d,
                  "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "nonlin": nn.ReLU,
                  "nonlin_kwargs": {"inplace": True}, "conv_bias": True}


def tiramisu(n_stages=3, first=6, growth_rate=3, layers=(2, 3, 2, 2, 2, 2), input_channels=1,
             num_classes=2, strides=None, kernel_sizes=None, **kwargs) -> Tiramisu:
    strides = strides or [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1)
    kernel_sizes = kernel_sizes or [[3, 3, 3]] * n_stages
    return Tiramisu(input_channels, num_classes, n_stages=n_stages,
                    features_per_stage=[first * 2 ** i for i in range(n_stages)],
                    strides=strides, kernel_sizes=kernel_sizes, growth_rate=growth_rate,
                    layers_per_block=list(layers), **{**TIRAMISU_LAYERS, **kwargs})


UNETPP_ANISOTROPIC = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]


def unetpp(strides=UNETPP_ANISOTROPIC, features=(2, 4, 6, 8), kernels=None, classes=3,
           deep_supervision=True) -> UNetPlusPlus:
    n = len(strides)
    kernels = kernels or [[1, 3, 3]] + [[3, 3, 3]] * (n - 1)
    torch.manual_seed(0)
    return UNetPlusPlus(input_channels=1, num_classes=classes, n_stages=n,
                        features_per_stage=list(features[:n]), strides=strides,
                        kernel_sizes=kernels, deep_supervision=deep_supervision)


VNET_LAYERS = {"conv_op": nn.Conv3d, "norm_op": nn.InstanceNorm3d,
              "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "nonlin": nn.PReLU,
              "nonlin_kwargs": {}, "conv_bias": True}


def vnet(n_stages=3, features=(4, 8, 16), input_channels=1, num_classes=2, strides=None,
         kernel_sizes=None, **kwargs) -> VNet:
    strides = strides or [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1)
    kernel_sizes = kernel_sizes or [[3, 3, 3]] * n_stages
    settings = {**VNET_LAYERS, **kwargs}
    return VNet(input_channels, num_classes, n_stages=n_stages,
                features_per_stage=list(features[:n_stages]), strides=strides,
                kernel_sizes=kernel_sizes, **settings)


WEATHERITT_ANISOTROPIC = dict(strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]],
                              kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]])


def weatheritt(in_channels=1, classes=2, n_stages=4, base=8, **kwargs):
    arch = dict(strides=[[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1),
                kernel_sizes=[[3, 3, 3]] * n_stages)
    arch.update(kwargs)
    own = {k: v for k, v in template("weatheritt")["arch_kwargs"].items()
           if k in ("convs_per_stage", "decoder_convs_per_stage")}
    return WeatherittUNet(in_channels, classes, n_stages=n_stages,
                          features_per_stage=[base * 2 ** i for i in range(n_stages)],
                          nonlin=nn.ReLU, **{**own, **arch})
