"""Conversion to nnU-Net's raw format: the real MSD Hippocampus folder with its defects, the
generic converter on hand-made NIfTI / NRRD / MHA / HDF5 files, re-runs, pooling, domain shift,
and the data commands' error messages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

from nnunet_transfer.data import raw_dataset_writer
from nnunet_transfer.data.convert import ConversionSettings, convert_cases
from nnunet_transfer.data.domain_shift import degrade_dataset
from nnunet_transfer.data.msd import convert_msd
from nnunet_transfer.data.pooling import load_spec, pool_datasets
from nnunet_transfer.data.raw_dataset import MANIFEST_NAME, dataset_folder
from nnunet_transfer.data.sources import find_pairs_in_csv, find_pairs_in_folder
from nnunet_transfer.data.synthetic import Domain
from nnunet_transfer.data.volumes import Hdf5Layout
from nnunet_transfer.errors import UserError

from support.data_commands import run_command

HIPPOCAMPUS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                           "msd_hippocampus")
HIPPO_LABELS = {"background": 0, "anterior": 1, "posterior": 2}
ORGAN_LABELS = {"background": 0, "organ": 1, "core": 2}
SHAPE = (6, 7, 8)   # (z, y, x)
needs_hippocampus = pytest.mark.skipif(not os.path.isdir(HIPPOCAMPUS),
                                       reason="MSD Hippocampus not present")


# -- helpers -----------------------------------------------------------------------------------

def volume(array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(np.asarray(array), isVector=False)
    image.SetSpacing(spacing + (1.0,) * (image.GetDimension() - 3))
    image.SetOrigin(origin + (0.0,) * (image.GetDimension() - 3))
    return image


def write(path, array, **geometry) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sitk.WriteImage(volume(array, **geometry), str(path))
    return str(path)


def sample_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, label uint8 with values 0, 1, 2) of SHAPE."""
    rng = np.random.default_rng(seed)
    label = np.zeros(SHAPE, np.uint8)
    label[1:5, 2:6, 2:7] = 1
    label[2:4, 3:5, 3:5] = 2
    return (rng.normal(100, 10, SHAPE) + 50 * label).astype(np.float32), label


def read(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def convert_folder(root, out, images, label, labels=ORGAN_LABELS, channels=("MRI",), **kw):
    discovery = find_pairs_in_folder(str(root), images, label, kw.pop("prefix_site", False))
    settings = ConversionSettings(labels, dict(enumerate(channels)), **kw)
    return convert_cases(discovery, str(out), settings, os.path.basename(out).split("_", 1)[1],
                         str(root))


def skipped(report) -> dict[str, str]:
    return {f.case: f.message for f in report.skipped}


# -- the real MSD Hippocampus --------------------------------------------------------------------

@pytest.fixture(scope="module")
def hippocampus(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    out = dataset_folder(str(raw), 4, "Hippocampus")
    return out, convert_msd(HIPPOCAMPUS, out, HIPPO_LABELS, {0: "MRI"})


@needs_hippocampus
def test_hippocampus_defects_are_reported_and_the_rest_converted(hippocampus):
    out, report = hippocampus
    assert len(report.training_cases()) == 260 and not report.removed
    problems = skipped(report)
    assert sorted(problems) == ["hippocampus_010", "hippocampus_118", "hippocampus_281"]
    assert "without a label (expected labelsTr/hippocampus_118.nii.gz)" in \
        problems["hippocampus_118"]
    assert "label labelsTr/hippocampus_010.nii.gz without an image" in problems["hippocampus_010"]
    assert "without an image" in problems["hippocampus_281"] and \
        "512x512x94 voxels" in problems["hippocampus_281"]   # the foreign volume, by its header
    notes = {f.case: f.message for f in report.notes}
    for case in ("hippocampus_003", "hippocampus_243"):
        assert "stored as float32" in notes[case] and "0, 1, 2" in notes[case]
    assert "identical content" in notes["hippocampus_010, hippocampus_011"]
    summary = report.summary()
    assert "260 training cases: 260 written" in summary and "3 skipped" in summary
    dataset = json.load(open(os.path.join(out, "dataset.json")))
    assert dataset["numTraining"] == 260 and dataset["labels"] == HIPPO_LABELS
    assert dataset["channel_names"] == {"0": "MRI"} and dataset["file_ending"] == ".nii.gz"
    assert len(os.listdir(os.path.join(out, "imagesTr"))) == 260
    assert json.load(open(os.path.join(out, "conversion_report.json")))["skipped"][0]["case"] \
        == "hippocampus_010"


@needs_hippocampus
def test_hippocampus_float_label_becomes_integers_and_clean_files_are_copied(hippocampus):
    out, _ = hippocampus
    source = sitk.ReadImage(os.path.join(HIPPOCAMPUS, "labelsTr", "hippocampus_003.nii.gz"))
    written = sitk.ReadImage(os.path.join(out, "labelsTr", "hippocampus_003.nii.gz"))
    assert source.GetPixelID() == sitk.sitkFloat32 and written.GetPixelID() == sitk.sitkUInt8
    assert np.array_equal(sitk.GetArrayFromImage(source), sitk.GetArrayFromImage(written))
    assert written.GetOrigin() == source.GetOrigin()
    for kind, name in (("imagesTr", "hippocampus_001_0000.nii.gz"),
                       ("labelsTr", "hippocampus_001.nii.gz")):
        original = os.path.join(HIPPOCAMPUS, kind, "hippocampus_001.nii.gz")
        assert open(original, "rb").read() == open(os.path.join(out, kind, name), "rb").read()


@needs_hippocampus
def test_hippocampus_rerun_converts_nothing(hippocampus):
    out, _ = hippocampus
    before = os.stat(os.path.join(out, "imagesTr", "hippocampus_001_0000.nii.gz")).st_mtime_ns
    again = convert_msd(HIPPOCAMPUS, out, HIPPO_LABELS, {0: "MRI"})
    assert again.written == [] and len(again.unchanged) == 260 and len(again.skipped) == 3
    assert os.stat(os.path.join(out, "imagesTr", "hippocampus_001_0000.nii.gz")).st_mtime_ns \
        == before


@needs_hippocampus
@pytest.mark.e2e    # nnU-Net's fingerprint command in a subprocess
def test_converted_subset_passes_nnunet_integrity_check(tmp_path):
    """nnU-Net's own check (the one of plan_and_preprocess) on 6 converted real cases, among
    them a float-stored label."""
    source = tmp_path / "Task04_Hippocampus"
    for case in ("001", "003", "004", "006", "007", "243"):
        for kind in ("imagesTr", "labelsTr"):
            os.makedirs(source / kind, exist_ok=True)
            name = f"hippocampus_{case}.nii.gz"
            os.symlink(os.path.abspath(os.path.join(HIPPOCAMPUS, kind, name)), source / kind / name)
    raw, preprocessed = tmp_path / "raw", tmp_path / "preprocessed"
    report = convert_msd(str(source), dataset_folder(str(raw), 904, "Hippocampus"),
                         HIPPO_LABELS, {0: "MRI"})
    assert len(report.training_cases()) == 6
    env = {**os.environ, "nnUNet_raw": str(raw), "nnUNet_preprocessed": str(preprocessed),
           "nnUNet_results": str(tmp_path / "results"), "nnUNet_def_n_proc": "1"}
    tool = os.path.join(os.path.dirname(sys.executable), "nnUNetv2_extract_fingerprint")
    result = subprocess.run([tool, "-d", "904", "--verify_dataset_integrity", "-np", "1"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "verify_dataset_integrity Done" in result.stdout
    assert "Error" not in result.stdout and "Warning" not in result.stdout
    assert os.path.isfile(preprocessed / "Dataset904_Hippocampus" / "dataset_fingerprint.json")


# -- the generic converter ------------------------------------------------------------------------

def test_site_templates_and_a_csv_of_three_formats(tmp_path):
    root = tmp_path / "collection"
    expected = {}
    rows = []
    for i, (site, ending) in enumerate([("A", ".nrrd"), ("A", ".mha"), ("B", ".nii.gz")]):
        image, label = sample_case(i)
        write(root / site / "img" / f"c{i}{ending}", image, spacing=(0.5, 0.6, 2.0))
        write(root / site / "seg" / f"c{i}{ending}", label, spacing=(0.5, 0.6, 2.0))
        expected[f"{site}_c{i}"] = (image, label)
        rows.append(f"{site}/img/c{i}{ending},{site}/seg/c{i}{ending},{site},{site}_c{i}\n")
    (root / "pairs.csv").write_text("image,label,center,case\n" + "".join(rows))
    # Templates: the NRRD files only, site from the folder, ids prefixed with it.
    out = dataset_folder(str(tmp_path / "raw"), 7, "Nrrd")
    report = convert_folder(root, out, ["{site}/img/{case}.nrrd"], "{site}/seg/{case}.nrrd",
                            prefix_site=True)
    assert report.training_cases() == ["A_c0"]
    assert json.load(open(os.path.join(out, "sites.json"))) == {"A_c0": "A"}
    # The CSV: all three formats.
    out = dataset_folder(str(tmp_path / "raw"), 8, "Multi")
    settings = ConversionSettings(ORGAN_LABELS, {0: "MRI"})
    report = convert_cases(find_pairs_in_csv(str(root / "pairs.csv")), out, settings, "Multi",
                           "pairs.csv")
    assert report.training_cases() == sorted(expected) and not report.skipped
    for case, (image, label) in expected.items():
        written = sitk.ReadImage(os.path.join(out, "imagesTr", f"{case}_0000.nii.gz"))
        assert np.array_equal(sitk.GetArrayFromImage(written), image)
        assert np.allclose(written.GetSpacing(), (0.5, 0.6, 2.0))
        assert np.array_equal(read(os.path.join(out, "labelsTr", f"{case}.nii.gz")), label)
    assert json.load(open(os.path.join(out, "sites.json"))) == \
        {"A_c0": "A", "A_c1": "A", "B_c2": "B"}


def test_specific_templates_pair_files_in_one_folder_and_report_unpaired(tmp_path):
    image, label = sample_case(0)
    write(tmp_path / "src" / "a.nii.gz", image)
    write(tmp_path / "src" / "a_seg.nii.gz", label)
    write(tmp_path / "src" / "b.nii.gz", image)                    # no label
    write(tmp_path / "src" / "c_seg.nii.gz", label)                # no image
    report = convert_folder(tmp_path / "src", dataset_folder(str(tmp_path / "raw"), 18, "X"),
                            ["{case}.nii.gz"], "{case}_seg.nii.gz")
    assert report.training_cases() == ["a"]
    problems = skipped(report)
    assert "without a label (expected b_seg.nii.gz)" in problems["b"]
    assert "label c_seg.nii.gz without an image (expected c.nii.gz)" in problems["c"]


def test_msd_4d_image_is_split_into_channels(tmp_path):
    source = tmp_path / "Task09_Two"
    image, label = sample_case(1)
    stack = np.stack([image, 2 * image + 1])           # (channels, z, y, x) = SimpleITK's 4D
    write(source / "imagesTr" / "two_001.nii.gz", stack, spacing=(1.0, 1.5, 3.0))
    write(source / "labelsTr" / "two_001.nii.gz", label, spacing=(1.0, 1.5, 3.0))
    write(source / "imagesTs" / "two_002.nii.gz", stack, spacing=(1.0, 1.5, 3.0))
    (source / "dataset.json").write_text(json.dumps({
        "name": "Two", "licence": "CC-BY-SA 4.0", "modality": {"0": "FLAIR", "1": "T1w"},
        "labels": {"0": "background", "1": "organ", "2": "core"}}))
    out = dataset_folder(str(tmp_path / "raw"), 9, "Two")
    report = convert_msd(str(source), out)
    assert report.training_cases() == ["two_001"] and "Ts/two_002" in report.written
    for c, expected in enumerate((image, 2 * image + 1)):
        channel = sitk.ReadImage(os.path.join(out, "imagesTr", f"two_001_{c:04d}.nii.gz"))
        assert channel.GetDimension() == 3 and np.allclose(channel.GetSpacing(), (1, 1.5, 3))
        assert np.array_equal(sitk.GetArrayFromImage(channel), expected)
        assert os.path.isfile(os.path.join(out, "imagesTs", f"two_002_{c:04d}.nii.gz"))
    dataset = json.load(open(os.path.join(out, "dataset.json")))
    assert dataset["channel_names"] == {"0": "FLAIR", "1": "T1w"}
    assert dataset["labels"] == ORGAN_LABELS and dataset["licence"] == "CC-BY-SA 4.0"


def test_hdf5_pairs_with_user_spacing_and_keys(tmp_path):
    image, label = sample_case(2)
    path = tmp_path / "h5" / "p1.h5"
    os.makedirs(path.parent)
    with h5py.File(path, "w") as f:
        f["scan"] = image
        f["mask"] = label.astype(bool) * 1
    out = dataset_folder(str(tmp_path / "raw"), 10, "H5")
    report = convert_folder(tmp_path / "h5", out, ["{case}.h5"], "{case}.h5",
                            hdf5=Hdf5Layout("scan", "mask", (3.0, 0.8, 0.7)))
    assert report.training_cases() == ["p1"]
    written = sitk.ReadImage(os.path.join(out, "imagesTr", "p1_0000.nii.gz"))
    assert np.allclose(written.GetSpacing(), (0.7, 0.8, 3.0))     # (x, y, z) = reversed axes
    assert np.array_equal(sitk.GetArrayFromImage(written), image)
    assert np.array_equal(read(os.path.join(out, "labelsTr", "p1.nii.gz")), label > 0)
    # A wrong key or no spacing: the case is refused with the reason.
    for layout, words in ((Hdf5Layout("image", "mask", (1, 1, 1)),
                           "has no dataset 'image' for the image; it holds mask, scan"),
                          (Hdf5Layout("scan", "mask", None), "no standard spacing")):
        with pytest.raises(UserError, match=words):
            convert_folder(tmp_path / "h5", dataset_folder(str(tmp_path / "raw"), 11, "H5b"),
                           ["{case}.h5"], "{case}.h5", hdf5=layout)


def test_geometry_and_label_problems_name_the_case(tmp_path):
    root = tmp_path / "src"
    image, label = sample_case(3)
    cases = {
        "good": (image, label, {}),
        "shifted": (image, label, {"origin": (0.0, 0.0, 2.0)}),              # 2 voxels
        "rounded": (image, label, {"origin": (1e-4, 0.0, 0.0)}),             # float noise
        "resized": (image, label[:, :, :-1], {}),
        "stretched": (image, label, {"spacing": (1.0, 1.0, 1.2)}),
        "value3": (image, np.where(label == 2, 3, label).astype(np.uint8), {}),
        "halves": (image, label * 0.5, {}),
        "floatok": (image, label.astype(np.float32), {}),
    }
    for case, (img, lab, geometry) in cases.items():
        write(root / "images" / f"{case}.nii.gz", img)
        write(root / "labels" / f"{case}.nii.gz", lab, **geometry)
    out = dataset_folder(str(tmp_path / "raw"), 12, "Checks")
    report = convert_folder(root, out, ["images/{case}.nii.gz"], "labels/{case}.nii.gz")
    assert report.training_cases() == ["floatok", "good", "rounded"]
    problems = skipped(report)
    assert "misaligned with the image by up to 2 voxels" in problems["shifted"]
    assert "origin (0, 0, 2) mm" in problems["shifted"]
    assert "size 7x7x6 but the image 8x7x6" in problems["resized"]
    assert "spacing (1, 1, 1.2) mm" in problems["stretched"]
    assert "value(s) [3] besides the declared labels" in problems["value3"]
    assert "not whole numbers (e.g. 0.5)" in problems["halves"]
    notes = {f.case: f.message for f in report.notes}
    assert "header differed slightly" in notes["rounded"]
    assert sitk.ReadImage(os.path.join(out, "labelsTr", "rounded.nii.gz")).GetOrigin() == \
        (0.0, 0.0, 0.0)
    assert json.load(open(os.path.join(out, "dataset.json")))["numTraining"] == 3


def test_nan_in_an_image_is_refused(tmp_path):
    # MHA: SimpleITK's NIfTI reader turns NaN into 0 (so nnU-Net never sees it there).
    image, label = sample_case(5)
    write(tmp_path / "src" / "a.mha", np.where(label == 1, np.nan, image).astype(np.float32))
    write(tmp_path / "src" / "a_seg.mha", label)
    write(tmp_path / "src" / "b.mha", image)
    write(tmp_path / "src" / "b_seg.mha", label)
    report = convert_folder(tmp_path / "src", dataset_folder(str(tmp_path / "raw"), 19, "Nan"),
                            ["{case}.mha"], "{case}_seg.mha")
    assert report.training_cases() == ["b"]
    assert skipped(report) == {"a": "channel 0 holds NaN or infinite values"}


def test_channel_count_and_label_map(tmp_path):
    root = tmp_path / "src"
    image, label = sample_case(4)
    write(root / "a_t1.nii.gz", image)
    write(root / "a_t2.nii.gz", image * 2)
    write(root / "a_seg.nii.gz", np.where(label == 2, 4, label).astype(np.uint8))  # 0, 1, 4
    out = dataset_folder(str(tmp_path / "raw"), 13, "Mapped")
    discovery = find_pairs_in_folder(str(root), ["{case}_t1.nii.gz", "{case}_t2.nii.gz"],
                                     "{case}_seg.nii.gz")
    for case in discovery.cases:
        case.label_map = {0: 0, 1: 1, 4: 2}
    report = convert_cases(discovery, out, ConversionSettings(ORGAN_LABELS, {0: "T1", 1: "T2"}),
                           "Mapped", str(root))
    assert report.training_cases() == ["a"]
    assert np.array_equal(read(os.path.join(out, "labelsTr", "a.nii.gz")), label)
    assert np.array_equal(read(os.path.join(out, "imagesTr", "a_0001.nii.gz")), image * 2)
    with pytest.raises(UserError, match="has 2 channel.*declares 1"):
        convert_cases(find_pairs_in_folder(str(root), ["{case}_t1.nii.gz", "{case}_t2.nii.gz"],
                                           "{case}_seg.nii.gz"),
                      dataset_folder(str(tmp_path / "raw"), 14, "One"),
                      ConversionSettings(ORGAN_LABELS, {0: "T1"}), "One", str(root))


# -- re-runs and atomic writes ----------------------------------------------------------------

def _three_cases(root):
    for i in range(3):
        image, label = sample_case(10 + i)
        write(root / "images" / f"k{i}.nii.gz", image)
        write(root / "labels" / f"k{i}.nii.gz", label)


def test_rerun_converts_only_what_changed_and_removes_what_vanished(tmp_path):
    root, out = tmp_path / "src", dataset_folder(str(tmp_path / "raw"), 15, "Rerun")
    _three_cases(root)
    args = (root, out, ["images/{case}.nii.gz"], "labels/{case}.nii.gz")
    assert len(convert_folder(*args).written) == 3
    again = convert_folder(*args)
    assert again.written == [] and len(again.unchanged) == 3
    image, _ = sample_case(99)
    write(root / "images" / "k1.nii.gz", image)                    # changed source
    os.remove(os.path.join(out, "labelsTr", "k2.nii.gz"))           # lost output
    os.remove(root / "images" / "k0.nii.gz")                        # case gone from the source
    third = convert_folder(*args)
    assert sorted(third.written) == ["Tr/k1", "Tr/k2"] and third.removed == ["k0"]
    assert "k0" in skipped(third)                                  # its label is now unpaired
    assert np.array_equal(read(os.path.join(out, "imagesTr", "k1_0000.nii.gz")), image)
    assert not os.path.exists(os.path.join(out, "imagesTr", "k0_0000.nii.gz"))
    assert json.load(open(os.path.join(out, "dataset.json")))["numTraining"] == 2
    # Other settings (a label declared differently) redo every case.
    assert len(convert_folder(*args, labels={"background": 0, "a": 1, "b": 2}).written) == 2


def test_interrupted_conversion_leaves_whole_files_and_resumes(tmp_path, monkeypatch):
    root, out = tmp_path / "src", dataset_folder(str(tmp_path / "raw"), 16, "Crash")
    _three_cases(root)
    # Make the label of k1 need re-encoding, then fail the second write of a volume.
    write(root / "labels" / "k1.nii.gz", sample_case(11)[1].astype(np.float32))
    write(root / "images" / "k2.nii.gz", sample_case(12)[0].astype(np.float64))
    calls = {"n": 0}
    real_copy = shutil.copyfile

    def failing_copy(src, dst, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device", dst)
        return real_copy(src, dst, **kw)
    monkeypatch.setattr(raw_dataset_writer.shutil, "copyfile", failing_copy)
    with pytest.raises(OSError):
        convert_folder(root, out, ["images/{case}.nii.gz"], "labels/{case}.nii.gz")
    monkeypatch.undo()
    leftovers = [n for sub in ("imagesTr", "labelsTr") for n in os.listdir(os.path.join(out, sub))
                 if n.startswith(".")]
    assert leftovers == []
    manifest = json.load(open(os.path.join(out, MANIFEST_NAME)))["cases"]
    assert manifest["Tr/k0"]["complete"] and not manifest["Tr/k1"]["complete"]
    resumed = convert_folder(root, out, ["images/{case}.nii.gz"], "labels/{case}.nii.gz")
    assert resumed.unchanged == ["Tr/k0"] and sorted(resumed.written) == ["Tr/k1", "Tr/k2"]


def test_foreign_files_in_the_dataset_folder_are_not_touched(tmp_path):
    root, out = tmp_path / "src", dataset_folder(str(tmp_path / "raw"), 17, "Foreign")
    _three_cases(root)
    write(os.path.join(out, "imagesTr", "mine_0000.nii.gz"), sample_case(0)[0])
    with pytest.raises(UserError, match="did not write.*imagesTr/mine_0000.nii.gz"):
        convert_folder(root, out, ["images/{case}.nii.gz"], "labels/{case}.nii.gz")
    assert os.path.isfile(os.path.join(out, "imagesTr", "mine_0000.nii.gz"))
    with pytest.raises(UserError, match="id 17 is taken by Dataset017_Foreign"):
        dataset_folder(str(tmp_path / "raw"), 17, "Other")


# -- pooling and domain shift -----------------------------------------------------------------

@pytest.fixture
def two_datasets(tmp_path):
    """Dataset021 (labels background/anterior/posterior, sites a and b) and Dataset022
    (background/organ), 3 cases each."""
    raw = tmp_path / "raw"
    for dataset_id, name, labels in ((21, "Hip", HIPPO_LABELS),
                                     (22, "Organ", {"background": 0, "organ": 1})):
        root = tmp_path / name
        for i in range(3):
            image, label = sample_case(dataset_id * 10 + i)
            write(root / "images" / f"c{i}.nii.gz", image)
            write(root / "labels" / f"c{i}.nii.gz", np.minimum(label, max(labels.values())))
        out = dataset_folder(str(raw), dataset_id, name)
        report = convert_folder(root, out, ["images/{case}.nii.gz"], "labels/{case}.nii.gz",
                                labels=labels)
        assert len(report.training_cases()) == 3
    (raw / "Dataset021_Hip" / "sites.json").write_text(json.dumps(
        {"c0": "a", "c1": "a", "c2": "b"}))
    return raw


def test_pooling_remaps_labels_prefixes_cases_and_records_sites(tmp_path, two_datasets):
    spec_path = tmp_path / "pool.yaml"
    spec_path.write_text(
        "labels: {background: 0, organ: 1}\n"
        "datasets:\n"
        "  - {dataset: 21, prefix: hip, label_map: {background: 0, anterior: organ,"
        " posterior: organ}}\n"
        "  - {dataset: Dataset022_Organ}\n")
    out = dataset_folder(str(two_datasets), 30, "Pool")
    report = pool_datasets(load_spec(str(spec_path)), str(two_datasets), out)
    assert report.training_cases() == ["Organ_c0", "Organ_c1", "Organ_c2",
                                       "hip_c0", "hip_c1", "hip_c2"]
    source = read(two_datasets / "Dataset021_Hip" / "labelsTr" / "c0.nii.gz")
    pooled = read(os.path.join(out, "labelsTr", "hip_c0.nii.gz"))
    assert set(np.unique(source)) == {0, 1, 2}
    assert np.array_equal(pooled, (source > 0).astype(np.uint8))
    assert json.load(open(os.path.join(out, "sites.json"))) == {
        "Organ_c0": "Organ", "Organ_c1": "Organ", "Organ_c2": "Organ",
        "hip_c0": "a", "hip_c1": "a", "hip_c2": "b"}
    assert json.load(open(os.path.join(out, "dataset.json")))["labels"] == \
        {"background": 0, "organ": 1}


def test_pooling_refuses_unmapped_labels_and_repeated_prefixes(tmp_path, two_datasets):
    out = dataset_folder(str(two_datasets), 31, "Pool")
    with pytest.raises(UserError, match=r"datasets\[0\]: label_map does not say where "
                                        r"posterior \(2\) go"):
        pool_datasets({"labels": {"background": 0, "organ": 1}, "datasets": [
            {"dataset": 21, "label_map": {"0": 0, "anterior": "organ"}}]},
            str(two_datasets), out)
    with pytest.raises(UserError, match="anterior, posterior are not among the pooled labels"):
        pool_datasets({"labels": {"background": 0, "organ": 1}, "datasets": [{"dataset": 21}]},
                      str(two_datasets), out)
    with pytest.raises(UserError, match="prefix 'x' is also used"):
        pool_datasets({"labels": {"background": 0, "organ": 1}, "datasets": [
            {"dataset": 22, "prefix": "x"}, {"dataset": 22, "prefix": "x"}]},
            str(two_datasets), out)


def test_degrade_changes_images_as_specified_and_keeps_labels(tmp_path, two_datasets):
    source = str(two_datasets / "Dataset022_Organ")
    original = read(os.path.join(source, "imagesTr", "c0_0000.nii.gz")).astype(np.float64)
    mean, std = original.mean(), original.std()

    def degraded(dataset_id, domain, seed=0):
        out = dataset_folder(str(two_datasets), dataset_id, f"Low{dataset_id}")
        degrade_dataset(source, out, domain, seed)
        return out, read(os.path.join(out, "imagesTr", "c0_0000.nii.gz")).astype(np.float64)

    out, contrast = degraded(40, Domain(contrast=0.5, noise=0.0))
    np.testing.assert_allclose(contrast, mean + 0.5 * (original - mean), rtol=1e-6)
    for case in ("c0", "c1", "c2"):
        assert open(os.path.join(source, "labelsTr", f"{case}.nii.gz"), "rb").read() == \
            open(os.path.join(out, "labelsTr", f"{case}.nii.gz"), "rb").read()
    assert json.load(open(os.path.join(out, "sites.json")))["c1"] == "Low40"
    _, blurred = degraded(41, Domain(contrast=1.0, noise=0.0, blur_sigma=1.5))
    np.testing.assert_allclose(blurred, gaussian_filter(original, 1.5), rtol=1e-5)
    _, noisy = degraded(42, Domain(contrast=1.0, noise=0.5), seed=3)
    assert abs((noisy - original).std() / (0.5 * std) - 1) < 0.15   # 336 voxels of noise
    _, same_seed = degraded(43, Domain(contrast=1.0, noise=0.5), seed=3)
    _, other_seed = degraded(44, Domain(contrast=1.0, noise=0.5), seed=4)
    assert np.array_equal(noisy, same_seed) and not np.array_equal(noisy, other_seed)
    rerun = degrade_dataset(source, dataset_folder(str(two_datasets), 44, "Low44"),
                            Domain(contrast=1.0, noise=0.5), 4)
    assert rerun.written == [] and len(rerun.unchanged) == 3


# -- the commands ----------------------------------------------------------------------------------

def test_convert_command_and_its_mistakes(tmp_path, capsys):
    root = tmp_path / "src"
    _three_cases(root)
    raw = str(tmp_path / "raw")
    base = ["convert", "--id", "50", "--name", "Cmd", "--raw", raw, "--label-names", "background",
            "organ", "core", "--channels", "MRI"]
    status, out, _ = run_command(base + ["--folder", str(root), "--images",
                                         "images/{case}.nii.gz", "--label",
                                         "labels/{case}.nii.gz"], capsys)
    assert status == 0 and "3 training cases: 3 written" in out
    assert "nnUNetv2_plan_and_preprocess -d 50" in out
    for extra, words in (
            ([], "give either --folder"),
            (["--folder", str(root), "--images", "images/{id}.nii.gz", "--label", "x/{case}"],
             "only {case} and {site}"),
            (["--folder", str(root), "--images", "nothing/{case}.nii.gz", "--label",
              "labels/{case}.nii.gz"], "no file in"),
            (["--csv", str(tmp_path / "missing.csv")], "cannot read the CSV"),
            (["--folder", str(root), "--images", "images/{case}.nii.gz", "--label",
              "labels/{case}.nii.gz", "--label-map", "4"], "give SOURCE=TARGET")):
        status, _, err = run_command(base + extra, capsys)
        assert status == 2 and words in err and "Traceback" not in err, err
    # --labels: the old spelling of --label-names, still accepted
    status, _, err = run_command(["convert", "--id", "51", "--name", "Bad", "--raw", raw,
                                  "--labels", "background=0", "organ=2", "--channels", "MRI",
                                  "--csv", "x.csv"], capsys)
    assert status == 2 and "without gaps" in err


def test_pool_and_degrade_commands(tmp_path, two_datasets, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"labels": {"background": 0, "organ": 1},
                                "datasets": [{"dataset": 22}], "colour": "red"}))
    status, _, err = run_command(["pool", "--spec", str(spec), "--id", "60", "--name", "P",
                                  "--raw", str(two_datasets)], capsys)
    assert status == 2 and "unknown key(s) colour" in err
    status, out, _ = run_command(["degrade", "-d", "22", "--id", "61", "--name", "OrganLow",
                                  "--raw", str(two_datasets), "--noise", "0.2"], capsys)
    assert status == 0 and "3 written" in out
    status, _, err = run_command(["degrade", "-d", "99", "--id", "62", "--name", "X", "--raw",
                                  str(two_datasets)], capsys)
    assert status == 2 and "no dataset with id or name '99'" in err and "Dataset022_Organ" in err
    status, _, err = run_command(["degrade", "-d", "22", "--id", "63", "--name", "X", "--raw",
                                  str(two_datasets), "--blur", "-1"], capsys)
    assert status == 2 and "--blur -1" in err


def test_a_dataset_is_never_written_over_its_own_sources(tmp_path, two_datasets):
    source = str(two_datasets / "Dataset022_Organ")
    with pytest.raises(UserError, match="inside the dataset being written"):
        degrade_dataset(source, source, Domain())
    assert len(os.listdir(os.path.join(source, "imagesTr"))) == 3
