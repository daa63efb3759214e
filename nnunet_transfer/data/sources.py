"""Finding a source's cases: the image file of each channel and the label of every case.

Three ways to find them:
- any folder with path templates, e.g. images "{site}/img/{case}.nrrd", label
  "{site}/seg/{case}_seg.nrrd" (one image template per channel; {site} optional);
- a CSV with columns image (or image_0000, image_0001, ... per channel), label, and optionally
  case and site (or center); paths relative to the CSV's folder;
- an nnU-Net raw dataset (its training cases, for pooling, degrading and subsets).
An MSD task folder is a folder with fixed templates (msd.py). Nothing is read here but file
names (and, for a file without its image, its header): unpaired files are set aside as
findings, and files that match no template are listed as ignored. Reading and checking the
cases is convert.py's.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import pandas as pd

from nnunet_transfer.data.raw_dataset import read_dataset_json, read_sites
from nnunet_transfer.data.volumes import SITK_ENDINGS, read_header, strip_ending
from nnunet_transfer.errors import UserError

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
class CaseRemark:
    """A problem (the case is skipped) or a note (it is converted) about a case or files."""
    case: str
    message: str
    files: list[str] = field(default_factory=list)


@dataclass
class FoundCases:
    """The cases found in a source, and what was set aside before reading anything."""
    cases: list[SourceCase]
    skipped: list[CaseRemark]          # unpaired files, found before reading anything
    ignored: list[str]              # files that match no template, relative to the root
    root: str


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
                         hidden: list[str] = ()) -> FoundCases:
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
            skipped.append(CaseRemark(case, f"image {path} without {' and '.join(missing)}",
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
        skipped.append(CaseRemark(_case_id(groups, prefix_site),
                               f"{role} {path} without an image (expected "
                               f"{images[0].fill(groups)}){'; ' + header if header else ''}",
                               [os.path.join(root, path)]))
    ignored = [p for p in files if p not in owner] + list(hidden)
    return FoundCases(cases, skipped, ignored, root)


def _case_id(groups: dict[str, str], prefix_site: bool) -> str:
    return f"{groups['site']}_{groups['case']}" if prefix_site and "site" in groups \
        else groups["case"]


def find_pairs_in_csv(csv_path: str, prefix_site: bool = False) -> FoundCases:
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
            skipped.append(CaseRemark(case or f"row {line}", f"row {line} of {csv_path} has an "
                                   "empty image or label cell"))
            continue
        if case in rows_of:
            raise UserError(f"{csv_path}: rows {rows_of[case]} and {line} both give case "
                            f"{case!r}; give a unique 'case' column"
                            f"{' or add --prefix-site' if site else ''}")
        rows_of[case] = line
        cases.append(SourceCase(case, [os.path.join(root, p) for p in images],
                                os.path.join(root, row["label"].strip()), site or None))
    return FoundCases(cases, skipped, [], root)


def find_raw_dataset_cases(folder: str) -> tuple[FoundCases, dict, dict[str, str]]:
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
    return FoundCases(cases, [], [], folder), dataset_json, read_sites(folder)
