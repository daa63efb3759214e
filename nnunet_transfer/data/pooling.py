"""One source dataset pooled from several raw datasets, their labels mapped to a common set.

For "pretrain on the pool of all other centres": a pooling spec (JSON or YAML) names the common
labels and, per dataset, how its labels map onto them:

    labels: {background: 0, hippocampus: 1}
    channel_names: [MRI]               # optional; default: the datasets' own (they must agree)
    datasets:
      - dataset: 4                     # id or DatasetXXX_Name (in nnUNet_raw) or a folder
        prefix: hip                    # case ids become hip_<case>; default: the dataset's name
        label_map: {background: background, anterior: hippocampus, posterior: hippocampus}
        site: vanderbilt               # optional, see below
      - dataset: Dataset005_Other      # no label_map: labels are matched by name

A label_map maps every label the dataset declares (by name or value) to a common label (by name
or value); a label left out is an error, not silently background. The site of a pooled case is
the dataset entry's `site`, else its own sites.json entry, else the dataset's name. Every case is
checked and written as by the converter (convert.py), so re-running redoes only what changed.
"""

from __future__ import annotations

import json
import os

from nnunet_transfer.data import labels as label_rules
from nnunet_transfer.data.convert import ConversionReport, ConversionSettings, convert_cases
from nnunet_transfer.data.raw_dataset import find_dataset, name_of
from nnunet_transfer.data.sources import FoundCases, SourceCase, find_raw_dataset_cases
from nnunet_transfer.errors import UserError

SPEC_KEYS = {"labels", "channel_names", "datasets"}
DATASET_KEYS = {"dataset", "prefix", "label_map", "site"}


def load_spec(path: str) -> dict:
    """A pooling spec from a .json, .yaml or .yml file."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as error:
        raise UserError(f"cannot read the pooling spec {path}: {error.strerror}") from None
    if path.lower().endswith((".yaml", ".yml")):
        import yaml
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise UserError(f"{path} is not valid YAML: {error}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON: {error} (YAML files must end in .yaml or "
                        ".yml)") from None


def pool_datasets(spec: dict, raw_folder: str | None, out_folder: str,
                  where: str = "the pooling spec") -> ConversionReport:
    """Write the pooled dataset described by `spec` (see the module docstring) to `out_folder`."""
    if not isinstance(spec, dict) or not isinstance(spec.get("datasets"), list) or \
            not spec["datasets"] or not isinstance(spec.get("labels"), dict):
        raise UserError(f"{where} needs 'labels' ({{name: value}}) and a non-empty list "
                        "'datasets'; see `nnunet-transfer pool --help`")
    _refuse_unknown_keys(spec, SPEC_KEYS, where)
    labels = {str(k): _whole(v, f"{where}: labels.{k}") for k, v in spec["labels"].items()}
    label_rules.check_label_set(labels, f"{where}: labels")
    cases, channel_names, sources = [], None, []
    prefixes: dict[str, str] = {}
    for index, entry in enumerate(spec["datasets"]):
        at = f"{where}: datasets[{index}]"
        if not isinstance(entry, dict) or "dataset" not in entry:
            raise UserError(f"{at} needs a 'dataset' (id, DatasetXXX_Name or folder)")
        _refuse_unknown_keys(entry, DATASET_KEYS, at)
        folder = find_dataset(raw_folder, str(entry["dataset"]))
        found, dataset_json, own_sites = find_raw_dataset_cases(folder)
        prefix = str(entry.get("prefix") or name_of(folder))
        if prefix in prefixes:
            raise UserError(f"{at}: prefix {prefix!r} is also used for {prefixes[prefix]}; give "
                            "each dataset its own 'prefix'")
        prefixes[prefix] = folder
        label_map = _label_map(entry.get("label_map"), dataset_json["labels"], labels, at)
        names = {int(k): v for k, v in dataset_json["channel_names"].items()}
        if channel_names is None:
            channel_names, first = names, folder
        elif names != channel_names and "channel_names" not in spec:
            raise UserError(f"{at}: {folder} has channels {names} but {first} has "
                            f"{channel_names}; give 'channel_names' in the spec if they are the "
                            "same modalities")
        for case in found.cases:
            site = entry.get("site") or own_sites.get(case.case) or name_of(folder)
            cases.append(SourceCase(f"{prefix}_{case.case}", case.images, case.label,
                                    str(site), label_map))
        sources.append(folder)
    if "channel_names" in spec:
        channel_names = label_rules.parse_channel_names(
            [str(c) for c in spec["channel_names"]], f"{where}: channel_names")
    settings = ConversionSettings(labels, channel_names)
    return convert_cases(FoundCases(cases, [], [], os.path.commonpath(sources)), out_folder,
                         settings, name_of(out_folder), " + ".join(sources),
                         description=f"pooled from {', '.join(map(name_of, sources))} by "
                                     "nnunet-transfer",
                         nnunet_transfer={"pooled_from": sources})


def _label_map(mapping, source_labels: dict, target_labels: dict[str, int], at: str
               ) -> dict[int, int]:
    source = {str(k): _whole(v, f"{at}: its dataset.json label {k}")
              for k, v in source_labels.items()}
    if mapping is None:   # by name
        missing = sorted(set(source) - set(target_labels))
        if missing:
            raise UserError(f"{at}: its label(s) {', '.join(missing)} are not among the pooled "
                            f"labels {label_rules.declared(target_labels)}; give a 'label_map'")
        return {value: target_labels[name] for name, value in source.items()}
    if not isinstance(mapping, dict):
        raise UserError(f"{at}: 'label_map' must be a mapping {{source label: pooled label}}")
    resolved = label_rules.resolve_label_map(mapping, source, target_labels, f"{at}: label_map")
    unmapped = sorted(f"{name} ({value})" for name, value in source.items()
                      if value not in resolved)
    if unmapped:
        raise UserError(f"{at}: label_map does not say where {', '.join(unmapped)} go; map "
                        "every label of the dataset (e.g. to background)")
    return resolved


def _whole(value, what: str) -> int:
    if isinstance(value, bool) or not str(value).strip().lstrip("-").isdigit():
        raise UserError(f"{what}: {value!r} is not a whole number")
    return int(value)


def _refuse_unknown_keys(content: dict, known: set[str], where: str) -> None:
    unknown = sorted(set(map(str, content)) - known)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; known: "
                        f"{', '.join(sorted(known))}")
