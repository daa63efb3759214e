"""`nnunet-transfer add-architectures` through the real command, on a copy of real plans:
configurations added once, re-adding changes nothing, refusals leave the plans file intact."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_transfer.architectures.registry import ARCHITECTURES

from support.nnunet_workspace import SMALL_PLANS, SOURCE_ID
from support.refusals import assert_refused


@pytest.fixture
def plans(workspace, source, request):
    """A private copy of the source's small plans, named after the test."""
    identifier = "nnUNetPlansCli" + request.node.name.split("[")[0].title().replace("_", "")
    folder = os.path.join(workspace.preprocessed, source["name"])
    path = os.path.join(folder, identifier + ".json")
    shutil.copyfile(os.path.join(folder, SMALL_PLANS + ".json"), path)
    yield identifier, path
    os.remove(path)


def digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def add(workspace, identifier, *options, ok=True):
    return workspace.run("nnunet-transfer", "add-architectures", "-d", str(SOURCE_ID),
                         "-p", identifier, *options, ok=ok)


def test_adds_one_inheriting_configuration_per_architecture(workspace, plans):
    identifier, path = plans
    out = add(workspace, identifier).stdout
    manager = PlansManager(path)
    base = manager.get_configuration("3d_fullres")
    for name in ARCHITECTURES:
        assert f"3d_fullres_{name}" in out
        configuration = manager.get_configuration(f"3d_fullres_{name}")
        # Same data and patch: nnU-Net trains it on the preprocessed 3d_fullres data.
        assert configuration.data_identifier == base.data_identifier
        assert configuration.patch_size == base.patch_size
        assert configuration.network_arch_class_name.startswith("nnunet_transfer.architectures.")
    assert manager.get_configuration("3d_fullres").network_arch_class_name.endswith(
        "PlainConvUNet")


def test_re_adding_is_idempotent_and_leaves_the_file_untouched(workspace, plans):
    identifier, path = plans
    add(workspace, identifier, "--only", "hrnet,unetpp")
    before, mtime = digest(path), os.stat(path).st_mtime_ns
    out = add(workspace, identifier, "--only", "unetpp,hrnet").stdout
    assert out.count("already present, unchanged") == 2
    assert digest(path) == before and os.stat(path).st_mtime_ns == mtime


def test_a_changed_configuration_is_refused_unless_replaced(workspace, plans):
    identifier, path = plans
    add(workspace, identifier, "--only", "vnet")
    data = json.load(open(path))
    data["configurations"]["3d_fullres_vnet"]["architecture"]["arch_kwargs"]["n_stages"] = 2
    json.dump(data, open(path, "w"))
    before = digest(path)
    assert_refused(add(workspace, identifier, "--only", "vnet,karimi", ok=False),
                    "3d_fullres_vnet", "--replace", "nothing was written")
    assert digest(path) == before  # karimi not added either
    out = add(workspace, identifier, "--only", "vnet", "--replace").stdout
    assert "replaced" in out
    assert json.load(open(path))["configurations"]["3d_fullres_vnet"]["architecture"][
        "arch_kwargs"]["n_stages"] != 2


def test_unknown_architecture(workspace, plans):
    identifier, path = plans
    before = digest(path)
    assert_refused(add(workspace, identifier, "--only", "hrnet,unet3", ok=False),
                    "unknown architecture", "unet3", "karimi")
    assert digest(path) == before


def test_dataset_without_plans(workspace, source):
    assert_refused(add(workspace, "NoSuchPlans", ok=False), "plans NoSuchPlans", "Available:",
                    "nnUNetv2_plan_and_preprocess")


def test_patch_an_architecture_cannot_take_is_refused_before_writing(workspace, plans):
    identifier, path = plans
    data = json.load(open(path))
    data["configurations"]["3d_fullres"]["patch_size"] = [30, 32, 32]  # 30 / 8 is not whole
    json.dump(data, open(path, "w"))
    before = digest(path)
    assert_refused(add(workspace, identifier, ok=False), "patch size [30, 32, 32]", "divisible")
    assert digest(path) == before


def test_2d_configuration_isassert_refused(workspace, plans):
    identifier, path = plans
    data = json.load(open(path))
    data["configurations"]["2d_small"] = {"inherits_from": "3d_fullres", "architecture": {
        **data["configurations"]["3d_fullres"]["architecture"]}}
    data["configurations"]["2d_small"]["architecture"]["arch_kwargs"] = {
        **data["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"],
        "conv_op": "torch.nn.modules.conv.Conv2d"}
    json.dump(data, open(path, "w"))
    assert_refused(add(workspace, identifier, "-c", "2d_small", ok=False), "2D configuration")
