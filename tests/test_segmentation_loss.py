"""The plain-torch training loss equals nnU-Net's (value and gradient), with and without deep
supervision, also where a class is absent from the target."""

import pytest
import torch
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

from support.script_modules import SegmentationLoss


def nnunet_loss(n_outputs: int):
    """nnUNetTrainer._build_loss for a dataset without regions or ignore label."""
    loss = DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": False},
                          {}, weight_ce=1, weight_dice=1, ignore_label=None,
                          dice_class=MemoryEfficientSoftDiceLoss)
    if n_outputs == 1:
        return loss
    weights = [1 / 2 ** i for i in range(n_outputs)]
    weights[-1] = 0
    return DeepSupervisionWrapper(loss, [w / sum(weights) for w in weights])


@pytest.mark.parametrize("n_outputs", [1, 3])
@pytest.mark.parametrize("absent_class", [False, True])
def test_loss_and_gradient_equal_nnunets(n_outputs, absent_class):
    generator = torch.Generator().manual_seed(n_outputs + 10 * absent_class)
    shapes = [(2, 4, 8 // 2 ** i, 10 // 2 ** i, 6 // 2 ** i) for i in range(n_outputs)]
    logits = [torch.randn(s, generator=generator, requires_grad=True) for s in shapes]
    targets = [torch.randint(0, 3 if absent_class else 4, (s[0], 1, *s[2:]),
                             generator=generator).float() for s in shapes]
    ours, theirs = SegmentationLoss(n_outputs), nnunet_loss(n_outputs)
    if n_outputs == 1:
        expected = theirs(logits[0], targets[0])
        value = ours(logits[0], targets)
    else:
        expected = theirs(logits, targets)
        value = ours(logits, targets)
    assert torch.allclose(value, expected, rtol=1e-6, atol=1e-7)
    # the lowest resolution has weight 0 in both: no gradient reaches it
    ours_grad = torch.autograd.grad(value, logits, allow_unused=True)
    theirs_grad = torch.autograd.grad(expected, logits, allow_unused=True)
    for a, b in zip(ours_grad, theirs_grad):
        assert (a is None) == (b is None)
        assert a is None or torch.allclose(a, b, rtol=1e-5, atol=1e-8)
    assert ours_grad[0].abs().sum() > 0
