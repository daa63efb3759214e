"""Converting found cases (sources.py, msd.py) to nnU-Net's raw format, reporting every case
that is wrong.

Each case is checked before anything is written: readable (NIfTI, NRRD, MHA, HDF5: volumes.py),
the declared number of channels (a 4D multi-modal image is split into one file per channel:
_0000, _0001, ...), no NaN, the label a single 3D map of whole numbers (float-stored labels: see
labels.py) within the declared labels, and every channel and the label on the image's grid
(geometry.py). A case with a problem is skipped and reported with all its problems; the others
are converted. Unpaired files (found by sources.py) and files with identical content under two
names are reported too. The dataset is written by RawDatasetWriter: atomically per file, and a
re-run redoes only the cases that changed.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np
import SimpleITK as sitk

from nnunet_transfer.data import labels as label_rules
from nnunet_transfer.data.geometry import GeometryTolerance, adopt_grid, compare_grids
from nnunet_transfer.data.raw_dataset import case_id_problem
from nnunet_transfer.data.raw_dataset_writer import RawDatasetWriter, settings_digest, \
    source_stamp
from nnunet_transfer.data.sources import CaseRemark, FoundCases, SourceCase
from nnunet_transfer.data.volumes import Hdf5Layout, VolumeError, read_volume, split_channels, \
    strip_ending
from nnunet_transfer.errors import UserError
from nnunet_transfer.atomic_files import atomic_write_json

REPORT_NAME = "conversion_report.json"


@dataclass(frozen=True)
class ConversionSettings:
    """What every case is checked against, and how its files are read."""
    labels: dict[str, int]
    channel_names: dict[int, str]
    tolerance: GeometryTolerance = GeometryTolerance()
    hdf5: Hdf5Layout | None = None

    @classmethod
    def from_dataset_json(cls, dataset_json: dict) -> "ConversionSettings":
        """The labels and channels an nnU-Net dataset.json declares (its values as written)."""
        return cls({k: int(v) for k, v in dataset_json["labels"].items()},
                   {int(k): v for k, v in dataset_json["channel_names"].items()})


@dataclass
class ConversionReport:
    folder: str
    source: str
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[CaseRemark] = field(default_factory=list)
    notes: list[CaseRemark] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def training_cases(self) -> list[str]:
        return sorted(k[3:] for k in self.written + self.unchanged if k.startswith("Tr/"))

    def summary(self) -> str:
        def count(keys, split):
            return sum(1 for k in keys if k.startswith(split + "/"))
        lines = [f"{self.folder} (from {self.source})"]
        for split, what in (("Tr", "training cases"), ("Ts", "test images")):
            total = count(self.written + self.unchanged, split)
            if total or split == "Tr":
                lines.append(f"  {total} {what}: {count(self.written, split)} written, "
                             f"{count(self.unchanged, split)} already up to date")
        if self.removed:
            lines.append(f"  {len(self.removed)} case(s) converted earlier and no longer "
                         f"convertible, removed: {', '.join(self.removed)}")
        for title, findings in (("skipped", self.skipped), ("notes", self.notes)):
            if findings:
                lines.append(f"  {len(findings)} {title}:")
                lines += [f"    {f.case}: {f.message}" for f in findings]
        if self.ignored:
            lines.append(f"  {len(self.ignored)} other file(s) matched no pattern and were "
                         f"ignored, e.g. {', '.join(self.ignored[:3])}")
        lines.append(f"  report: {os.path.join(self.folder, REPORT_NAME)}")
        return "\n".join(lines)



@dataclass
class LoadedCase:
    """A checked case as it will be written. A volume that needs no change also has its source
    file (a .nii.gz holding exactly it), which the writer copies instead of re-encoding."""
    channels: list[sitk.Image]
    channel_files: list[str | None]
    label: sitk.Image | None
    label_file: str | None
    notes: list[str]

    def channel_outputs(self) -> list:
        return [f or c for c, f in zip(self.channels, self.channel_files)]

    def label_output(self):
        return self.label_file or self.label


class _CaseProblems(Exception):
    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def load_case(case: SourceCase, settings: ConversionSettings) -> LoadedCase:
    """Read and check one case; raises _CaseProblems with every problem found."""
    problems, notes, channels, files = [], [], [], []
    for path in case.images:
        try:
            volumes = split_channels(read_volume(path, "image", settings.hdf5))
        except VolumeError as error:
            problems.append(f"{_short(path)}: {error}")
            continue
        channels += volumes
        files += [path if _is_verbatim(path, volumes) else None] * len(volumes)
    if problems:
        raise _CaseProblems(problems)
    expected = len(settings.channel_names)
    if len(channels) != expected:
        problems.append(f"has {len(channels)} channel(s) but the dataset declares {expected} "
                        f"({', '.join(settings.channel_names.values())})")
    for index, channel in enumerate(channels):
        if index:
            grid = compare_grids(channels[0], channel, f"channel {index}", settings.tolerance)
            if grid.problem:
                problems.append(grid.problem)
            elif grid.headers_differ:
                notes.append(f"channel {index}'s header differed slightly from channel 0's "
                             f"(up to {grid.shift_voxels:.2g} voxels); channel 0's geometry used")
                channels[index], files[index] = adopt_grid(channel, channels[0]), None
        values = sitk.GetArrayViewFromImage(channel)
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            problems.append(f"channel {index} holds NaN or infinite values")
    label = label_file = None
    if case.label is not None:
        label, label_file, label_notes = _load_label(case, channels[0], settings, problems)
        notes += label_notes
    if problems:
        raise _CaseProblems(problems)
    return LoadedCase(channels, files, label, label_file, notes)


def _is_verbatim(path: str, volumes: list[sitk.Image]) -> bool:
    return len(volumes) == 1 and path.lower().endswith(".nii.gz")


def _load_label(case: SourceCase, reference: sitk.Image, settings: ConversionSettings,
                problems: list[str]) -> tuple[sitk.Image | None, str | None, list[str]]:
    notes = []
    try:
        volumes = split_channels(read_volume(case.label, "label", settings.hdf5))
    except VolumeError as error:
        problems.append(f"label {_short(case.label)}: {error}")
        return None, None, notes
    if len(volumes) != 1:
        problems.append(f"label {_short(case.label)} holds {len(volumes)} volumes; one 3D label "
                        "map expected")
        return None, None, notes
    grid = compare_grids(reference, volumes[0], "the label", settings.tolerance)
    if grid.problem:
        problems.append(grid.problem)
        return None, None, notes
    if grid.headers_differ:
        notes.append(f"the label's header differed slightly from the image's (up to "
                     f"{grid.shift_voxels:.2g} voxels); the image's geometry used")
    stored = sitk.GetArrayFromImage(volumes[0])
    try:
        array, note = label_rules.whole_number_labels(stored)
        if case.label_map is not None:
            array = label_rules.remap(array, case.label_map)
    except label_rules.LabelValueError as error:
        problems.append(str(error))
        return None, None, notes
    notes += [note] if note else []
    unexpected = label_rules.check_values(array, settings.labels)
    if unexpected:
        problems.append(f"label holds value(s) {unexpected} besides the declared labels "
                        f"{label_rules.declared(settings.labels)}")
        return None, None, notes
    if not array.any():
        notes.append("the label is empty (background only)")
    label = sitk.GetImageFromArray(array.astype(label_rules.smallest_label_dtype(array)))
    label.CopyInformation(reference)
    verbatim = (_is_verbatim(case.label, volumes) and not grid.headers_differ and
                stored.dtype.kind in "iu" and np.array_equal(array, stored))
    return label, case.label if verbatim else None, notes


def convert_cases(found: FoundCases, out_folder: str, settings: ConversionSettings,
                  name: str, source: str, transform=None, transform_settings: dict | None = None,
                  **dataset_json_fields) -> ConversionReport:
    """Write the found cases into `out_folder` (an nnU-Net raw dataset) and report.

    `transform(case, loaded)`, if given, changes a checked case before it is written (e.g. a
    domain shift); `transform_settings` are whatever shapes its result, so that a change in them
    redoes the cases.
    """
    label_rules.check_label_set(settings.labels, "labels")
    inside = os.path.abspath(out_folder) + os.sep
    if any(os.path.abspath(p).startswith(inside) for c in found.cases for p in c.images):
        raise UserError(f"the source files lie inside the dataset being written ({out_folder}); "
                        "write to another --id")
    report = ConversionReport(out_folder, source, skipped=list(found.skipped),
                              ignored=list(found.ignored))
    writer = RawDatasetWriter(out_folder)
    common = {"labels": settings.labels, "channels": settings.channel_names,
              "tolerance": asdict(settings.tolerance),
              "hdf5": asdict(settings.hdf5) if settings.hdf5 else None,
              "transform": transform_settings}
    todo, keep, sites = [], set(), {}
    for case in found.cases:
        problem = case_id_problem(case.case)
        if problem:
            report.skipped.append(CaseRemark(case.case, problem))
            continue
        try:
            stamp = source_stamp(case.images + ([case.label] if case.label else []),
                                 settings_digest({**common, "label_map": case.label_map}))
        except OSError as error:
            report.skipped.append(CaseRemark(case.case,
                                             f"{_short(error.filename)}: file not found"))
            continue
        key = RawDatasetWriter.key(case.split, case.case)
        if writer.is_current(case.split, case.case, stamp):
            report.unchanged.append(key)
            keep.add(key)
        else:
            todo.append((case, stamp))
        if case.site:
            sites[case.case] = case.site
    try:
        writer.mark_pending([(c.split, c.case, len(settings.channel_names)) for c, _ in todo])
        for case, stamp in todo:
            try:
                loaded = load_case(case, settings)
            except _CaseProblems as error:
                report.skipped.append(CaseRemark(case.case, "; ".join(error.problems)))
                sites.pop(case.case, None)
                continue
            if transform is not None:
                loaded = transform(case, loaded)
            writer.write_case(case.split, case.case, loaded.channel_outputs(),
                              loaded.label_output(), stamp)
            report.written.append(RawDatasetWriter.key(case.split, case.case))
            report.notes += [CaseRemark(case.case, n) for n in loaded.notes]
            keep.add(RawDatasetWriter.key(case.split, case.case))
        if not any(k.startswith("Tr/") for k in keep):
            raise UserError(f"no training case of {source} could be converted; first problems: "
                            + " | ".join(f"{f.case}: {f.message}" for f in report.skipped[:3]))
        report.removed = [k.split("/", 1)[1] for k in writer.remove_all_but(keep)]
        report.notes += duplicate_files(found)
        writer.finish(settings.channel_names, settings.labels, sites, name, **dataset_json_fields)
    finally:
        writer.close()
    report.skipped.sort(key=lambda f: f.case)
    atomic_write_json(os.path.join(out_folder, REPORT_NAME), asdict(report))
    return report


def duplicate_files(found: FoundCases) -> list[CaseRemark]:
    """Notes for files with identical bytes under different names (a copy filed as another case:
    a leak between training and test if left in). Only files of equal size are hashed."""
    paths = {p for c in found.cases for p in c.images + ([c.label] if c.label else [])}
    paths |= {p for f in found.skipped for p in f.files}
    by_size = defaultdict(list)
    for path in sorted(paths):
        if os.path.isfile(path):
            by_size[os.path.getsize(path)].append(path)
    by_hash = defaultdict(list)
    for same_size in by_size.values():
        if len(same_size) > 1:
            for path in same_size:
                with open(path, "rb") as f:
                    by_hash[hashlib.sha256(f.read()).hexdigest()].append(path)
    case_of = {p: c.case for c in found.cases
               for p in c.images + ([c.label] if c.label else [])}
    notes = []
    for same in by_hash.values():
        if len(same) > 1:
            names = [_display(p, found.root) for p in same]
            cases = sorted({case_of.get(p, strip_ending(os.path.basename(p))) for p in same})
            notes.append(CaseRemark(", ".join(cases), f"{' and '.join(names)} have identical "
                                 "content (a copy filed under another name?)", names))
    return notes


def _display(path: str, root: str) -> str:
    """`path` relative to `root` when it lies inside it, else as it is."""
    relative = os.path.relpath(path, root)
    return path if relative.startswith("..") else relative


def _short(path: str | None) -> str:
    """A path shortened to its last two parts (folder/file), enough to find it in a report."""
    if not path:
        return "?"
    parts = os.path.normpath(path).split(os.sep)
    return "/".join(parts[-2:])
