import pytest

from nnunet_transfer.errors import UserError
from nnunet_transfer.planning.small_plans import small_topology
from nnunet_transfer.planning.transfer import _fit_plans_to_channels


def _plans(schemes):
    return {"configurations": {"3d_fullres": {"normalization_schemes": schemes,
                                              "use_mask_for_norm": [False] * len(schemes)}},
            "foreground_intensity_properties_per_channel": {
                str(i): {"mean": float(i)} for i in range(len(schemes))}}


def test_one_source_channel_fits_several_target_channels():
    plans = _plans(["ZScoreNormalization"])
    notes = _fit_plans_to_channels(plans, 3)
    config = plans["configurations"]["3d_fullres"]
    assert config["normalization_schemes"] == ["ZScoreNormalization"] * 3
    assert config["use_mask_for_norm"] == [False] * 3
    assert set(plans["foreground_intensity_properties_per_channel"]) == {"0", "1", "2"}
    assert notes and "3 channels" in notes[0]


def test_same_channel_count_is_left_alone():
    plans = _plans(["CTNormalization", "ZScoreNormalization"])
    assert _fit_plans_to_channels(plans, 2) == []
    assert plans == _plans(["CTNormalization", "ZScoreNormalization"])


def test_mixed_normalisations_cannot_be_mapped():
    with pytest.raises(UserError, match="normalises its 2 channels differently"):
        _fit_plans_to_channels(_plans(["CTNormalization", "ZScoreNormalization"]), 1)


@pytest.mark.parametrize("patch, stages, expected_patch, expected_strides", [
    ([32, 32, 32], 4, [32, 32, 32], [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]),
    ([40, 56, 40], 4, [40, 56, 40], [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]),
    ([17, 33, 9], 4, [16, 32, 8], [[1, 1, 1], [2, 2, 2], [2, 2, 1], [1, 2, 1]]),
    ([8, 64, 64], 3, [8, 64, 64], [[1, 1, 1], [2, 2, 2], [1, 2, 2]]),
])
def test_small_topology_divides_the_patch(patch, stages, expected_patch, expected_strides):
    rounded, strides = small_topology(patch, stages)
    assert rounded == expected_patch and strides == expected_strides
