"""Models as sources of a study (`models: {KEY: {path: PATH}}`): reading each one when the study
file is checked, and holding its files to what they were when the study started.

A model is read once, with `Checkpoint.read` (every format `-pretrained_weights` takes), into a
`spec.ModelSpec`: what the grid, the setup and the jobs need of it (its configuration, its plans'
identifier and digest, its labels), never the weights. Its `Checkpoint` stays beside it for the
(source, strategy) verdicts of `source_pairs`.

A study mixes the runs of one model only: the sha256 of each model's files (the checkpoint that
is loaded, the plans and dataset json beside it) is written to study/models.json when the study
first runs, and a later `study run` refuses a file whose hash changed, before anything runs.
"""

from __future__ import annotations

import hashlib
import json
import os

from nnunet_transfer.atomic_files import atomic_write_json
from nnunet_transfer.checkpoints.content import FORMAT_NNSSL
from nnunet_transfer.planning.nnssl_plans import NnsslArchitecture
from nnunet_transfer.planning.plans_files import read_json
from nnunet_transfer.checkpoints.reader import Checkpoint, CheckpointUse, file_sha256
from nnunet_transfer.errors import UserError
from nnunet_transfer import value_rules as rules
from nnunet_transfer.study.spec import ModelSpec
from nnunet_transfer.yaml_lines import Problems, Reader

# The files beside a model's fold folder that a run reads (v2: plans.json and dataset.json;
# v1: plans.pkl and a dataset.json).
_FOLDER_FILES = ("plans.json", "dataset.json", "plans.pkl")
# Keys of plans that name them and not what they compute (plans_transfer rewrites them).
_NAMING_KEYS = ("dataset_name", "plans_name", "transferred_from")

_MODEL_USE = CheckpointUse(
    noun="the model",
    advice=" (paths in models: are relative to the study file)",
    unreadable_advice="; give a model folder, fold folder or checkpoint file as nnU-Net (v1 or "
                      "v2) or nnssl wrote it",
    bare_refusal="a study rebuilds the model's network from its plans: give the model folder "
                 "with plans.json beside its fold folder")


def read_models(problems: Problems, value, base: str, datasets: dict
                ) -> tuple[dict[str, ModelSpec], dict[str, Checkpoint]]:
    """The study file's `models:` block (paths relative to the study file's folder `base`):
    every model that can be read, and its Checkpoint; each mistake recorded with its line."""
    models: dict[str, ModelSpec] = {}
    checkpoints: dict[str, Checkpoint] = {}
    if value is None:
        return models, checkpoints
    if not isinstance(value, dict) or not value:
        problems.add(("models",), "give the models as a mapping key: {path: PATH}")
        return models, checkpoints
    for key, entry in value.items():
        where = ("models", key)
        try:
            rules.NAME(key)
        except ValueError as error:
            problems.add(where, str(error))
            continue
        if key in datasets:
            problems.add(where, f"{key!r} is also a key of datasets; give the model another key "
                         "(source: names both kinds)")
            continue
        given = Reader(problems, entry, where, {"path"}).get("path", rules.TEXT, required=True)
        if given is None:
            continue
        path = os.path.normpath(os.path.join(base, os.path.expanduser(str(given))))
        try:
            models[key], checkpoints[key] = read_model(key, path)
        except UserError as error:
            problems.add(where + ("path",), str(error))
    return models, checkpoints


def read_model(key: str, path: str) -> tuple[ModelSpec, Checkpoint]:
    """The model at `path` (absolute) as a ModelSpec, with its Checkpoint. Raises UserError
    (naming the file and the fix) when it cannot be read or its network not be rebuilt."""
    checkpoint = Checkpoint.read(path, _MODEL_USE)
    nnssl = None
    if checkpoint.format == FORMAT_NNSSL:   # no plans: the target's own, with its network
        nnssl = NnsslArchitecture.of(checkpoint)
    else:
        if not checkpoint.plans or not checkpoint.configuration:
            raise UserError(f"{path} records no plans (no init_args in the checkpoint and no "
                            "plans.json beside its fold folder); give the model folder as "
                            "exported, with plans.json and dataset.json")
        checkpoint.require_installed_network()
    labels = tuple(checkpoint.labels) if checkpoint.labels else None
    return ModelSpec(
        key=key, path=path, format=checkpoint.format, checkpoint=checkpoint.path,
        files=model_files(checkpoint.path), configuration=checkpoint.configuration,
        plans_name=checkpoint.plans_name, plans_digest=plans_digest(checkpoint),
        labels=labels, encoder_only=checkpoint.encoder_only, nnssl=nnssl), checkpoint


def model_files(checkpoint_path: str) -> tuple[str, ...]:
    """The checkpoint file, its v1 `.pkl` companion, and, in a model folder (the checkpoint in
    a fold_X folder), the plans and dataset json of the trainer folder."""
    files = [checkpoint_path]
    if os.path.isfile(checkpoint_path + ".pkl"):
        files.append(checkpoint_path + ".pkl")
    fold = os.path.dirname(checkpoint_path)
    if os.path.basename(fold).startswith("fold_"):
        trainer = os.path.dirname(fold)
        files += [os.path.join(trainer, n) for n in _FOLDER_FILES
                  if os.path.isfile(os.path.join(trainer, n))]
    return tuple(files)


def plans_digest(checkpoint: Checkpoint) -> str | None:
    """sha256 of the model's plans without the keys that only name them (and of its
    configuration): equal for two models whose plans preprocess the target the same way."""
    if not checkpoint.plans:
        return None
    plans = {k: v for k, v in checkpoint.plans.items() if k not in _NAMING_KEYS}
    plans["configurations"] = {
        name: {k: v for k, v in c.items() if k != "data_identifier"}
        for name, c in checkpoint.plans.get("configurations", {}).items()}
    text = json.dumps([plans, checkpoint.configuration], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def hold_model_files(models: dict[str, ModelSpec], record: str) -> None:
    """Record the sha256 of every model's files in `record` (the first time), or refuse, naming
    the source, the file and both hashes, when one changed since (UserError: nothing runs)."""
    now = {key: {path: file_sha256(path) for path in model.files}
           for key, model in models.items()}
    if not os.path.isfile(record):
        if now:
            atomic_write_json(record, {"models": now})
        return
    recorded = read_json(record, "the record of the model files' sha256").get("models", {})
    changed = []
    for key, files in now.items():
        before = recorded.get(key)
        if before is None:
            continue   # a source added to the file since: held from now on
        if set(files) != set(before):
            changed.append(f"source {key!r} now reads {', '.join(sorted(files))} instead of "
                           f"{', '.join(sorted(before))}")
            continue
        for path, sha in files.items():
            if before[path] != sha:
                changed.append(f"source {key!r}: {path} had sha256 {before[path]} when the "
                               f"study started and has {sha} now")
    if changed:
        raise UserError(
            "a model file changed since the study started; its runs would mix two models:\n  "
            + "\n  ".join(changed) + "\nPut the original file back, or start a new study (another "
            f"workdir) for the new model; {record} holds the recorded hashes.")
    added = {key: files for key, files in now.items() if key not in recorded}
    if added:
        atomic_write_json(record, {"models": {**recorded, **added}})
