"""Converting image/label collections to nnU-Net's raw format, reporting every case that is wrong.

Three ways to find the cases:
- an MSD task folder: imagesTr/, labelsTr/, optional imagesTs/ and MSD's dataset.json, whose
  4D multi-modal images are split into one file per channel (_0000, _0001, ...);
- any folder with path templates, e.g. images "{site}/img/{case}.nrrd", label
  "{site}/seg/{case}_seg.nrrd" (one image template per channel; {site} optional);
- a CSV with columns image (or image_0000, image_0001, ... per channel), label, and optionally
  case and site (or center); paths relative to the CSV's folder.
Files: NIfTI, NRRD, MHA (SimpleITK) and HDF5 (h5py; keys and spacing given by the user).

Each case is checked before anything is written: readable, the declared number of channels, no
NaN, the label a single 3D map of whole numbers (float-stored labels: see labels.py) within the
declared labels, and every channel and the label on the image's grid (geometry.py). A case with
a problem is skipped and reported with all its problems; the others are converted. Unpaired
files and files with identical content under two names are reported too. The dataset is written
by RawDatasetWriter: atomically per file, and a re-run redoes only the cases that changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import SimpleITK as sitk

from nnunet_transfer.data import labels as label_rules
from nnunet_transfer.data.geometry import GeometryTolerance, adopt_grid, compare_grids
from nnunet_transfer.data.raw_dataset import RawDatasetWriter, case_id_problem, name_of, \
    read_dataset_json, read_sites, settings_digest, source_stamp
from nnunet_transfer.data.volumes import SITK_ENDINGS, Hdf5Layout, VolumeError, read_header, \
    read_volume, split_channels, strip_ending
from nnunet_transfer.errors import UserError
from nnunet_transfer.atomic_files import atomic_write_json

REPORT_NAME = "conversion_report.json"
_PLACEHOLDER = re.compile(r"\{(case|site)\}")


@dataclass
class SourceCase:
    """One case to convert: files in channel order, its label (None: an unlabelled test case)."""
    case: str
    images: list[str]
    label: str | None
    site: str | None = None
    label_map: dict[int, int] | None = None   # source value -> dataset value, None: as stored

    @property
    def split(self) -> str:
        return "Tr" if self.label is not None else "Ts"


@dataclass
class Finding:
    """A problem (the case is skipped) or a note (it is converted) about a case or files."""
    case: str
    message: str
    files: list[str] = field(default_factory=list)


@dataclass
class Discovery:
    cases: list[SourceCase]
    skipped: list[Finding]          # unpaired files, found before reading anything
    ignored: list[str]              # files that match no template, relative to the root
    root: str


@dataclass(frozen=True)
class ConversionSettings:
    labels: dict[str, int]
    channel_names: dict[int, str]
    tolerance: GeometryTolerance = GeometryTolerance()
    hdf5: Hdf5Layout | None = None


@dataclass
class ConversionReport:
    folder: str
    source: str
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)
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


# -- finding the cases ----------------------------------------------------------------------------

def list_files(root: str) -> tuple[list[str], list[str]]:
    """Files under `root` as relative POSIX paths, and the hidden ones left out (names starting
    with "." such as macOS's "._case.nii.gz" copies, which real MSD archives hold)."""
    files, hidden = [], []
    for folder, dirs, names in os.walk(root):
        hidden += [os.path.join(folder, d) for d in dirs if d.startswith(".")]
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            relative = os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")
            (hidden if name.startswith(".") else files).append(relative)
    return files, hidden


@dataclass(frozen=True)
class _Template:
    text: str
    regex: re.Pattern
    literal: int            # characters outside placeholders: the more, the more specific
    placeholders: frozenset

    @classmethod
    def parse(cls, text: str, option: str) -> "_Template":
        pattern, seen, literal = [], set(), 0
        for part in re.split(r"(\{[^{}]*\})", text):
            match = _PLACEHOLDER.fullmatch(part)
            if match:
                name = match.group(1)
                pattern.append(f"(?P={name})" if name in seen else f"(?P<{name}>[^/]+?)")
                seen.add(name)
            elif "{" in part or "}" in part:
                raise UserError(f"{option} {text!r}: only {{case}} and {{site}} can be used as "
                                "placeholders")
            else:
                pattern.append(re.escape(part))
                literal += len(part)
        if "case" not in seen:
            raise UserError(f"{option} {text!r} needs a {{case}} placeholder, e.g. "
                            "'images/{case}.nii.gz'")
        return cls(text, re.compile("".join(pattern)), literal, frozenset(seen))

    def fill(self, values: dict[str, str]) -> str:
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.text)


def find_pairs_in_folder(root: str, image_templates: list[str], label_template: str | None,
                         prefix_site: bool = False, files: list[str] | None = None,
                         hidden: list[str] = ()) -> Discovery:
    """Cases whose files follow path templates relative to `root` (see the module docstring).

    A file that several templates match belongs to the most specific one (most literal
    characters), so "{case}.nii.gz" and "{case}_seg.nii.gz" can share a folder. Without a label
    template the cases are unlabelled (test images).
    """
    if not os.path.isdir(root):
        raise UserError(f"folder not found: {root}")
    images = [_Template.parse(t, "--images") for t in image_templates]
    label = _Template.parse(label_template, "--label") if label_template else None
    for template in images[1:] + ([label] if label else []):
        if not template.placeholders <= images[0].placeholders:
            raise UserError(f"{template.text!r} uses a placeholder that the first image template "
                            f"{images[0].text!r} does not have")
    if files is None:
        files, hidden = list_files(root)
    distinct: dict[str, _Template] = {}   # one HDF5 file can be image and label: same template
    for template in images + ([label] if label else []):
        distinct.setdefault(template.text, template)
    owner: dict[str, tuple[_Template, dict]] = {}
    for path in files:
        matches = [(t, m.groupdict()) for t in distinct.values() if (m := t.regex.fullmatch(path))]
        if not matches:
            continue
        best = max(t.literal for t, _ in matches)
        top = [(t, g) for t, g in matches if t.literal == best]
        if len(top) > 1:
            raise UserError(f"{path} fits both {top[0][0].text!r} and {top[1][0].text!r}; make "
                            "the image and label patterns distinguishable")
        owner[path] = top[0]
    anchors = {path: groups for path, (t, groups) in owner.items() if t is images[0]}
    if not anchors:
        raise UserError(f"no file in {root} matches the image pattern {images[0].text!r}"
                        f"{'; files there include ' + ', '.join(files[:3]) if files else ''}")
    cases, skipped, used, ids = [], [], set(), {}
    for path, groups in sorted(anchors.items()):
        channels = [t.fill(groups) for t in images]
        label_path = label.fill(groups) if label else None
        case = _case_id(groups, prefix_site)
        if case in ids:
            raise UserError(f"case id {case!r} comes from both {ids[case]} and {path}"
                            f"{'; add --prefix-site' if 'site' in groups else ''}")
        ids[case] = path
        used.update(channels + ([label_path] if label_path else []))
        missing = [f"channel {i} (expected {p})" for i, p in enumerate(channels)
                   if not os.path.isfile(os.path.join(root, p))]
        if label_path and not os.path.isfile(os.path.join(root, label_path)):
            missing.insert(0, f"a label (expected {label_path})")
        if missing:
            present = [os.path.join(root, p) for p in channels]
            skipped.append(Finding(case, f"image {path} without {' and '.join(missing)}",
                                   [p for p in present if os.path.isfile(p)]))
            continue
        cases.append(SourceCase(case, [os.path.join(root, p) for p in channels],
                                os.path.join(root, label_path) if label_path else None,
                                groups.get("site")))
    for path, (template, groups) in sorted(owner.items()):
        if path in used:
            continue
        role = "label" if template is label else f"channel {images.index(template)}"
        header = read_header(os.path.join(root, path))
        skipped.append(Finding(_case_id(groups, prefix_site),
                               f"{role} {path} without an image (expected "
                               f"{images[0].fill(groups)}){'; ' + header if header else ''}",
                               [os.path.join(root, path)]))
    ignored = [p for p in files if p not in owner] + list(hidden)
    return Discovery(cases, skipped, ignored, root)


def _case_id(groups: dict[str, str], prefix_site: bool) -> str:
    return f"{groups['site']}_{groups['case']}" if prefix_site and "site" in groups \
        else groups["case"]


def find_pairs_in_csv(csv_path: str, prefix_site: bool = False) -> Discovery:
    """Cases listed in a CSV (see the module docstring); rows are numbered as in a spreadsheet."""
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read the CSV {csv_path}: {error}") from None
    table.columns = [str(c).strip().lower() for c in table.columns]
    image_columns = ["image"] if "image" in table.columns else sorted(
        (c for c in table.columns if re.fullmatch(r"image_\d+", c)), key=lambda c: int(c[6:]))
    if not image_columns or "label" not in table.columns:
        raise UserError(f"{csv_path} needs the columns 'image' (or image_0000, image_0001, ... "
                        f"per channel) and 'label'; it has {', '.join(table.columns)}")
    site_column = next((c for c in ("site", "center", "centre") if c in table.columns), None)
    case_column = next((c for c in ("case", "case_id") if c in table.columns), None)
    root = os.path.dirname(os.path.abspath(csv_path))
    cases, skipped, rows_of = [], [], {}
    for index, row in table.iterrows():
        line = index + 2   # the header is line 1
        images = [row[c].strip() for c in image_columns]
        site = row[site_column].strip() if site_column else ""
        case = (row[case_column].strip() if case_column else "") or \
            strip_ending(os.path.basename(images[0]))
        if prefix_site and site:
            case = f"{site}_{case}"
        if not all(images) or not row["label"].strip():
            skipped.append(Finding(case or f"row {line}", f"row {line} of {csv_path} has an "
                                   "empty image or label cell"))
            continue
        if case in rows_of:
            raise UserError(f"{csv_path}: rows {rows_of[case]} and {line} both give case "
                            f"{case!r}; give a unique 'case' column"
                            f"{' or add --prefix-site' if site else ''}")
        rows_of[case] = line
        cases.append(SourceCase(case, [os.path.join(root, p) for p in images],
                                os.path.join(root, row["label"].strip()), site or None))
    return Discovery(cases, skipped, [], root)


def find_msd_cases(folder: str) -> tuple[Discovery, dict]:
    """The cases of an MSD task folder, and what its dataset.json (if any) declares."""
    if not os.path.isdir(os.path.join(folder, "imagesTr")):
        raise UserError(f"{folder} has no imagesTr/ folder; an MSD task folder holds imagesTr/, "
                        "labelsTr/ and optionally imagesTs/ and dataset.json")
    files, hidden = list_files(folder)
    training = find_pairs_in_folder(folder, ["imagesTr/{case}.nii.gz"], "labelsTr/{case}.nii.gz",
                                    files=[f for f in files if not f.startswith("imagesTs/")],
                                    hidden=hidden)
    test_files = [f for f in files if f.startswith("imagesTs/")]
    test = find_pairs_in_folder(folder, ["imagesTs/{case}.nii.gz"], None, files=test_files) \
        if any(f.endswith(".nii.gz") for f in test_files) else None
    info = _read_msd_dataset_json(folder)
    ignored = [f for f in training.ignored if f != "dataset.json" and not f.startswith("imagesTs/")]
    if test:
        ignored += test.ignored
    discovery = Discovery(training.cases + (test.cases if test else []),
                          training.skipped + (test.skipped if test else []), ignored, folder)
    return discovery, info


def _read_msd_dataset_json(folder: str) -> dict:
    """labels {name: value}, channel_names {index: name} and descriptive fields, if present.
    MSD writes labels as {value: name}; an nnU-Net v2 dataset.json as {name: value}."""
    path = os.path.join(folder, "dataset.json")
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            content = json.load(f)
        info = {}
        if "labels" in content:
            labels = content["labels"]
            msd_style = all(str(key).isdigit() for key in labels)
            info["labels"] = {str(name): int(value) for value, name in labels.items()} \
                if msd_style else {str(name): int(value) for name, value in labels.items()}
        if "channel_names" in content:
            info["channel_names"] = {int(k): str(v) for k, v in content["channel_names"].items()}
        if "modality" in content:
            info["channel_names"] = {int(k): str(v) for k, v in content["modality"].items()}
    except (OSError, ValueError, AttributeError, TypeError) as error:
        raise UserError(f"cannot use {path} ({error}); fix it, or move it away and give "
                        "--labels and --channels") from None
    for key in ("name", "description", "reference", "licence", "release"):
        if isinstance(content.get(key), str):
            info[key] = content[key]
    return info


def find_raw_dataset_cases(folder: str) -> tuple[Discovery, dict, dict[str, str]]:
    """The training cases of an nnU-Net raw dataset (nnU-Net's own file listing), its
    dataset.json and its sites ({case: site}, empty without sites.json)."""
    from batchgenerators.utilities.file_and_folder_operations import subfiles
    from nnunetv2.utilities.utils import create_paths_fn, \
        get_filenames_of_train_images_and_targets, get_identifiers_from_splitted_dataset_folder
    dataset_json = read_dataset_json(folder)
    ending = dataset_json["file_ending"]
    if ending not in SITK_ENDINGS:
        raise UserError(f"{folder}: files ending in {ending} cannot be read here; "
                        f"supported: {', '.join(SITK_ENDINGS)}")
    if any(isinstance(v, (list, tuple)) for v in dataset_json["labels"].values()):
        raise UserError(f"{folder} declares region labels (tuples); only plain label maps can "
                        "be pooled or derived")
    if "dataset" in dataset_json:   # files listed in dataset.json
        files = get_filenames_of_train_images_and_targets(folder, dataset_json)
        cases = [SourceCase(case, list(entry["images"]), entry["label"])
                 for case, entry in sorted(files.items())]
    else:   # nnU-Net's own listing, minus the process pool it starts for it
        images = os.path.join(folder, "imagesTr")
        names = subfiles(images, suffix=ending, join=False)
        cases = [SourceCase(str(case), create_paths_fn(images, names, ending, case),
                            os.path.join(folder, "labelsTr", case + ending))
                 for case in sorted(get_identifiers_from_splitted_dataset_folder(images, ending))]
    return Discovery(cases, [], [], folder), dataset_json, read_sites(folder)


# -- converting -----------------------------------------------------------------------------------

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


def convert_cases(discovery: Discovery, out_folder: str, settings: ConversionSettings,
                  name: str, source: str, transform=None, transform_settings: dict | None = None,
                  **dataset_json_fields) -> ConversionReport:
    """Write the discovered cases into `out_folder` (an nnU-Net raw dataset) and report.

    `transform(case, loaded)`, if given, changes a checked case before it is written (e.g. a
    domain shift); `transform_settings` are whatever shapes its result, so that a change in them
    redoes the cases.
    """
    label_rules.check_label_set(settings.labels, "labels")
    inside = os.path.abspath(out_folder) + os.sep
    if any(os.path.abspath(p).startswith(inside) for c in discovery.cases for p in c.images):
        raise UserError(f"the source files lie inside the dataset being written ({out_folder}); "
                        "write to another --id")
    report = ConversionReport(out_folder, source, skipped=list(discovery.skipped),
                              ignored=list(discovery.ignored))
    writer = RawDatasetWriter(out_folder)
    common = {"labels": settings.labels, "channels": settings.channel_names,
              "tolerance": asdict(settings.tolerance),
              "hdf5": asdict(settings.hdf5) if settings.hdf5 else None,
              "transform": transform_settings}
    todo, keep, sites = [], set(), {}
    for case in discovery.cases:
        problem = case_id_problem(case.case)
        if problem:
            report.skipped.append(Finding(case.case, problem))
            continue
        try:
            stamp = source_stamp(case.images + ([case.label] if case.label else []),
                                 settings_digest({**common, "label_map": case.label_map}))
        except OSError as error:
            report.skipped.append(Finding(case.case, f"{_short(error.filename)}: file not found"))
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
                report.skipped.append(Finding(case.case, "; ".join(error.problems)))
                sites.pop(case.case, None)
                continue
            if transform is not None:
                loaded = transform(case, loaded)
            writer.write_case(case.split, case.case, loaded.channel_outputs(),
                              loaded.label_output(), stamp)
            report.written.append(RawDatasetWriter.key(case.split, case.case))
            report.notes += [Finding(case.case, n) for n in loaded.notes]
            keep.add(RawDatasetWriter.key(case.split, case.case))
        if not any(k.startswith("Tr/") for k in keep):
            raise UserError(f"no training case of {source} could be converted; first problems: "
                            + " | ".join(f"{f.case}: {f.message}" for f in report.skipped[:3]))
        report.removed = [k.split("/", 1)[1] for k in writer.remove_all_but(keep)]
        report.notes += duplicate_files(discovery)
        writer.finish(settings.channel_names, settings.labels, sites, name, **dataset_json_fields)
    finally:
        writer.close()
    report.skipped.sort(key=lambda f: f.case)
    atomic_write_json(os.path.join(out_folder, REPORT_NAME), asdict(report))
    return report


def duplicate_files(discovery: Discovery) -> list[Finding]:
    """Notes for files with identical bytes under different names (a copy filed as another case:
    a leak between training and test if left in). Only files of equal size are hashed."""
    paths = {p for c in discovery.cases for p in c.images + ([c.label] if c.label else [])}
    paths |= {p for f in discovery.skipped for p in f.files}
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
    case_of = {p: c.case for c in discovery.cases
               for p in c.images + ([c.label] if c.label else [])}
    notes = []
    for same in by_hash.values():
        if len(same) > 1:
            names = [_display(p, discovery.root) for p in same]
            cases = sorted({case_of.get(p, strip_ending(os.path.basename(p))) for p in same})
            notes.append(Finding(", ".join(cases), f"{' and '.join(names)} have identical "
                                 "content (a copy filed under another name?)", names))
    return notes


def convert_msd(source_folder: str, out_folder: str, labels: dict[str, int] | None = None,
                channel_names: dict[int, str] | None = None,
                tolerance: GeometryTolerance | None = None) -> ConversionReport:
    """Convert an MSD task folder; labels and channel names default to its dataset.json's."""
    discovery, info = find_msd_cases(source_folder)
    labels = labels or info.get("labels")
    channel_names = channel_names or info.get("channel_names")
    if not labels or not channel_names:
        raise UserError(f"{source_folder} has no dataset.json declaring labels and modalities; "
                        "give them, e.g. --labels background anterior posterior --channels MRI")
    settings = ConversionSettings(labels, channel_names, tolerance or GeometryTolerance())
    fields = {k: info[k] for k in ("description", "reference", "release") if k in info}
    if "licence" in info:
        fields["license"] = info["licence"]
    return convert_cases(discovery, out_folder, settings, name_of(out_folder), source_folder,
                         **fields)


def msd_task_name(source_folder: str) -> str | None:
    """The name in an MSD folder's dataset.json or "TaskNN_Name" folder name, if any."""
    name = _read_msd_dataset_json(source_folder).get("name")
    match = re.fullmatch(r"Task\d+_(\w+)", os.path.basename(os.path.normpath(source_folder)))
    candidate = name or (match.group(1) if match else None)
    return re.sub(r"[^A-Za-z0-9_-]", "", candidate) if candidate else None


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

