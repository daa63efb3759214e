"""Generalisation (Weatheritt et al.'s protocol): trained models on a second, unseen test set.

For every model: `nnUNetv2_predict_from_modelfolder` on the new images (resumable: it skips
cases already predicted), evaluation against the new references, then one comparison table.
Layout under the output folder:

    <run>/predictions/        nnU-Net's predictions (run = FineTune_n5_seed0 etc.)
    <run>/evaluation/         evaluation_per_case.csv, evaluation_summary.csv / .json
    comparison.csv, comparison.md
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass

import pandas as pd

from nnunet_transfer.discovery import console_script, ext_trainer_value
from nnunet_transfer.errors import UserError
from nnunet_transfer.evaluation.evaluate import evaluate_folder
from nnunet_transfer.evaluation.labels import LabelSet, labels_from_dataset_json
from nnunet_transfer.evaluation.metrics import ANY_OVERLAP, LesionRule, check_connectivity
from nnunet_transfer.evaluation.stats import (
    check_test,
    comparison_table,
    to_markdown,
    write_comparison,
)
from nnunet_transfer.training.run_folder import FOLD_PREFIX, RunFolder, RunId

PREDICT_TOOL = "nnUNetv2_predict_from_modelfolder"


@dataclass(frozen=True)
class Model:
    spec: RunId
    folder: str                 # nnU-Net's trained model folder (Trainer__Plans__configuration)
    folds: tuple[str, ...]      # folds to predict with (ensembled by nnU-Net if several)


def _folds_with(folder: str, checkpoint: str) -> list[str]:
    return [RunFolder(os.path.join(folder, name)).fold for name in RunFolder.fold_folders(folder)
            if os.path.isfile(RunFolder(os.path.join(folder, name)).checkpoint(checkpoint))]


def resolve_model(spec: RunId, path: str, folds: list[str] | None, checkpoint: str) -> Model:
    """A model from a trained model folder (with -f folds, or its only fold) or a fold folder."""
    path = os.path.abspath(path.rstrip(os.sep))
    if os.path.basename(path).startswith(FOLD_PREFIX) and not folds:
        path, folds = os.path.dirname(path), [RunFolder(path).fold]
    if not os.path.isfile(os.path.join(path, "dataset.json")) \
            or not os.path.isfile(os.path.join(path, "plans.json")):
        raise UserError(f"{spec}: {path} is not a trained nnU-Net model folder (no dataset.json "
                        "and plans.json); give $nnUNet_results/DatasetX/<Trainer>__<Plans>__"
                        "<configuration> or one of its fold_N folders")
    available = _folds_with(path, checkpoint)
    if not folds:
        if len(available) != 1:
            raise UserError(f"{spec}: {path} has {len(available)} folds with {checkpoint} "
                            f"({', '.join(available) or 'none'}); choose with -f or give the "
                            "fold folder itself")
        folds = available
    missing = [f for f in folds if f not in available]
    if missing:
        raise UserError(f"{spec}: no {checkpoint} in fold(s) {', '.join(missing)} of {path} "
                        f"(folds with it: {', '.join(available) or 'none'}); train them or "
                        "choose other folds with -f / -chk")
    return Model(spec, path, tuple(folds))


def predict_environment() -> dict[str, str]:
    """This environment with our trainers on nnUNet_extTrainer: nnU-Net looks a model's trainer
    class up by name, and ours live outside nnU-Net."""
    env = dict(os.environ)
    env["nnUNet_extTrainer"] = ext_trainer_value(env.get("nnUNet_extTrainer"))
    return env


def predict_command(model: Model, images_folder: str, output_folder: str, checkpoint: str,
                    device: str, disable_tta: bool) -> list[str]:
    command = [console_script(PREDICT_TOOL), "-i", images_folder, "-o", output_folder, "-m", model.folder,
               "-f", *model.folds, "-chk", checkpoint, "-device", device,
               "--continue_prediction", "--disable_progress_bar"]
    return command + (["--disable_tta"] if disable_tta else [])


def run_prediction(model: Model, command: list[str]) -> None:
    print(f"[{model.spec}] {shlex.join(command)}", flush=True)
    result = subprocess.run(command, env=predict_environment(), check=False)
    if result.returncode != 0:
        raise UserError(f"{PREDICT_TOOL} failed for {model.spec} (exit {result.returncode}, its "
                        f"output is above); the command was: {shlex.join(command)}")


def generalize(models: list[Model], images_folder: str, references_folder: str,
               output_folder: str, *, labels: LabelSet | None = None,
               reference: str | None = None, checkpoint: str = "checkpoint_final.pth",
               device: str = "cuda", disable_tta: bool = False,
               lesion_rule: LesionRule = ANY_OVERLAP, connectivity: int = 26,
               workers: int | None = None, missing_as_empty: bool = False,
               test: str = "ttest") -> pd.DataFrame:
    """Predict the unseen images with every model, evaluate, compare; returns the table."""
    check_test(test)
    check_connectivity(connectivity)
    for folder, role in ((images_folder, "images"), (references_folder, "references")):
        if not os.path.isdir(folder):
            raise UserError(f"{role} folder {folder} does not exist; give the unseen test set's "
                            f"{'imagesTs' if role == 'images' else 'labelsTs'} folder")
    names = [m.spec.folder_name for m in models]
    if len(set(names)) != len(names):
        raise UserError("two models have the same label; label each as STRATEGY[:N[:SEED]]=FOLDER")
    if reference is not None and reference not in {m.spec.strategy for m in models}:
        raise UserError(f"--reference {reference}: no model has that strategy "
                        f"({', '.join(sorted({m.spec.strategy for m in models}))})")
    per_case = []
    for model in models:
        predictions = os.path.join(output_folder, model.spec.folder_name, "predictions")
        run_prediction(model, predict_command(model, images_folder, predictions, checkpoint,
                                              device, disable_tta))
        model_labels = labels or labels_from_dataset_json(os.path.join(model.folder,
                                                                       "dataset.json"))
        evaluation = evaluate_folder(
            predictions, references_folder,
            os.path.join(output_folder, model.spec.folder_name, "evaluation"), model_labels,
            lesion_rule=lesion_rule, connectivity=connectivity, workers=workers,
            missing_as_empty=missing_as_empty)
        per_case.append(evaluation.per_case.assign(strategy=model.spec.strategy, n=model.spec.n,
                                                   seed=model.spec.seed))
    table = comparison_table(pd.concat(per_case, ignore_index=True), reference, test=test)
    write_comparison(output_folder, table, to_markdown(table, reference, test))
    return table
