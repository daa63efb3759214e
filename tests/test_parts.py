import pytest
from torch import nn

from nnunet_transfer.architectures import partition
from nnunet_transfer.errors import UserError

from support.networks import plain_unet, residual_unet


@pytest.mark.parametrize("build", [plain_unet, residual_unet], ids=["plain", "residual"])
def test_parts_cover_every_parameter_once_by_identity(build):
    network = build()
    parts = partition(network)
    ids = {part: {id(p) for p in parts.parameters(part)} for part in parts.modules}
    assert not ids["encoder"] & ids["decoder"]
    assert not ids["encoder"] & ids["head"] and not ids["decoder"] & ids["head"]
    assert set().union(*ids.values()) == {id(p) for p in network.parameters()}
    assert ids["encoder"] == {id(p) for p in network.encoder.parameters()}
    assert ids["head"] == {id(p) for p in network.decoder.seg_layers.parameters()}


def test_decoder_reference_to_encoder_does_not_count_twice():
    network = plain_unet()
    assert network.decoder.encoder is network.encoder  # what makes name filters wrong
    keys = partition(network).state_dict_parts(network)
    aliases = [k for k in keys if k.startswith("decoder.encoder.")]
    assert aliases and all(keys[k] == "encoder" for k in aliases)
    counts = partition(network).parameter_counts()
    total = sum(c["trainable"] + c["frozen"] for c in counts.values())
    assert total == sum(p.numel() for p in network.parameters())


def test_architecture_declaring_its_own_split():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.down, self.up, self.out = nn.Conv3d(1, 2, 3), nn.Conv3d(2, 2, 3), nn.Conv3d(2, 2, 1)

        def transfer_parts(self):
            return {"encoder": [self.down], "decoder": [self.up], "head": [self.out]}

    tiny = Tiny()
    parts = partition(tiny)
    assert parts.modules["decoder"] == (tiny.up,)
    assert parts.parameter_counts()["head"]["trainable"] == 2 * 2 + 2


def test_inconsistent_or_missing_split_is_a_user_error():
    class Leaky(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)

        def transfer_parts(self):
            return {"encoder": [self.a], "decoder": [], "head": []}

    with pytest.raises(UserError, match="in no part"):
        partition(Leaky())
    with pytest.raises(UserError, match="declares no encoder"):
        partition(nn.Sequential(nn.Linear(2, 2)))


def test_unwraps_compiled_network():
    class Compiled(nn.Module):  # torch.compile's OptimizedModule keeps the module as _orig_mod
        def __init__(self, module):
            super().__init__()
            self._orig_mod = module

    network = plain_unet()
    assert partition(Compiled(network)).modules["encoder"][0] is network.encoder
