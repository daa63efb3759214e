"""What every extra architecture promises alike, checked once per architecture on a small
network of it built directly (the contract through nnU-Net's plans is test_architectures.py;
what one architecture alone promises is in its test_arch_<name>.py)."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from nnunet_transfer.architectures.autofocus import AutofocusNet
from nnunet_transfer.architectures.hrnet import HRNet3D
from nnunet_transfer.architectures.karimi import KarimiNet
from nnunet_transfer.architectures.tiramisu import Tiramisu
from nnunet_transfer.architectures.unetpp import UNetPlusPlus
from nnunet_transfer.architectures.vnet import VNet
from nnunet_transfer.architectures.weatheritt import WeatherittUNet

from support.architecture_checks import (assert_analysis_layers_in_their_parts,
                                         assert_finite_logits_under_autocast)
from support.small_architectures import (HRNET_PATCH, WEATHERITT_ANISOTROPIC, autofocus, hrnet,
                                         karimi, tiramisu, unetpp, vnet, weatheritt)

# name: (class, a builder of a small two-class network, a patch it takes). Anisotropic strides
# and odd patch sizes where the architecture allows them.
SMALL = {
    "autofocus": (AutofocusNet, autofocus, (4, 16, 16)),
    "hrnet-trilinear": (HRNet3D, partial(hrnet, upsampling="trilinear"), HRNET_PATCH),
    "hrnet-nearest": (HRNet3D, partial(hrnet, upsampling="nearest"), HRNET_PATCH),
    "karimi": (KarimiNet, partial(karimi, n_stages=4, base=4,
                                  strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
                                  kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]),
               (12, 24, 16)),
    "tiramisu": (Tiramisu, partial(tiramisu, 3), (8, 12, 8)),
    "unetpp": (UNetPlusPlus, partial(unetpp, strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                                     kernels=[[3, 3, 3]] * 3, classes=2), (8, 8, 8)),
    "vnet": (VNet, partial(vnet, 3), (8, 12, 8)),
    "weatheritt": (WeatherittUNet, partial(weatheritt, n_stages=3, base=4,
                                           **WEATHERITT_ANISOTROPIC), (12, 20, 28)),
}
WITHOUT_DEEP_SUPERVISION = [name for name, (cls, _, _) in SMALL.items()
                            if not cls.has_deep_supervision]


@pytest.mark.parametrize("name", SMALL)
def test_runs_under_autocast(name):
    """Full-resolution logits, all finite, under bfloat16 autocast on the CPU."""
    _, build, patch = SMALL[name]
    torch.manual_seed(0)
    assert_finite_logits_under_autocast(build(deep_supervision=False), patch)


@pytest.mark.parametrize("name", WITHOUT_DEEP_SUPERVISION)
def test_no_deep_supervision_and_the_flag_lives_on_the_decoder(name):
    """An architecture without deep supervision says so; nnU-Net's switch (on the decoder) then
    gives a one-element list when on and the logits alone when off, at full resolution."""
    cls, build, patch = SMALL[name]
    assert cls.has_deep_supervision is False
    torch.manual_seed(0)
    network = build(deep_supervision=True)
    assert network.decoder.deep_supervision is True
    x = torch.randn(1, 1, *patch)
    with torch.no_grad():
        outputs = network(x)
        assert isinstance(outputs, list) and len(outputs) == 1
        assert outputs[0].shape == (1, 2, *patch)
        network.decoder.deep_supervision = False
        assert network(x).shape == (1, 2, *patch)


# name: (a builder of a small network with n stages, its analysis layers at five stages)
BY_STAGES = {
    "karimi": (lambda n: karimi(n_stages=n),
               {"encoder": ["encoder.stages.0", "encoder.stages.1", "encoder.stages.2"],
                "decoder": ["decoder.stages.1", "decoder.stages.2", "decoder.stages.3"]}),
    "tiramisu": (lambda n: tiramisu(n, first=2, growth_rate=2),
                 {"encoder": ["encoder.blocks.0", "encoder.blocks.2", "encoder.blocks.4"],
                  "decoder": ["decoder.blocks.0", "decoder.blocks.2", "decoder.blocks.3"]}),
    "vnet": (lambda n: vnet(n, features=(2, 4, 4, 4, 4)),
             {"encoder": ["encoder.stages.0", "encoder.stages.2", "encoder.stages.4"],
              "decoder": ["decoder.stages.0", "decoder.stages.2", "decoder.stages.3"]}),
}


@pytest.mark.parametrize("n_stages", [2, 3, 5])
@pytest.mark.parametrize("name", BY_STAGES)
def test_analysis_layers_for_few_and_many_stages(name, n_stages):
    """Three distinct analysis layers per part, each within its part, however few the stages;
    at five stages the ones the architecture's docstring names."""
    build, at_five = BY_STAGES[name]
    layers = assert_analysis_layers_in_their_parts(build(n_stages))
    if n_stages == 5:
        assert layers == at_five
