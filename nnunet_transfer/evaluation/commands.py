"""The `evaluate`, `compare` and `generalize` subcommands (`register` adds them to the CLI).

The evaluation modules (scipy, pandas, SimpleITK, MONAI) are imported by the handlers, not
here: every `nnunet-transfer` command builds this parser.
"""

from __future__ import annotations

import argparse
import os

from nnunet_transfer.arguments import add_command, fraction, positive_int
from nnunet_transfer.errors import UserError


def _lesion_rule(text: str):
    from nnunet_transfer.evaluation.metrics import LesionRule
    try:
        return LesionRule.parse(text)
    except UserError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _labels(args: argparse.Namespace, predictions: str, references: str):
    from nnunet_transfer.evaluation.labels import resolve_labels
    return resolve_labels(predictions, references, args.dataset_json, args.label_values)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from nnunet_transfer.evaluation.evaluate import evaluate_folder, format_summary
    for role, folder in (("prediction", args.predictions), ("reference", args.references)):
        if not os.path.isdir(folder):
            raise UserError(f"the {role} folder {folder} does not exist")
    evaluation = evaluate_folder(
        args.predictions, args.references, args.o,
        _labels(args, args.predictions, args.references), lesion_rule=args.lesion_rule,
        connectivity=args.lesion_connectivity, workers=args.workers,
        missing_as_empty=args.missing_as_empty, file_ending=args.file_ending)
    print(format_summary(evaluation))


def _cmd_compare(args: argparse.Namespace) -> None:
    from nnunet_transfer.evaluation.stats import (
        check_test,
        collect_runs,
        comparison_table,
        parse_run_item,
        to_markdown,
        write_comparison,
    )
    check_test(args.test)
    runs = collect_runs([parse_run_item(item) for item in args.runs])
    table = comparison_table(runs, args.reference, tuple(args.metrics) if args.metrics else None,
                             args.test, args.alpha)
    markdown = to_markdown(table, args.reference, args.test, args.alpha)
    paths = write_comparison(args.o, table, markdown)
    print(markdown)
    print("wrote " + ", ".join(paths))


def _cmd_generalize(args: argparse.Namespace) -> None:
    from nnunet_transfer.evaluation.generalize import generalize, resolve_model
    from nnunet_transfer.evaluation.labels import labels_from_dataset_json, labels_from_items
    from nnunet_transfer.evaluation.stats import parse_run_item, to_markdown
    models = [resolve_model(*parse_run_item(item), args.f, args.chk) for item in args.models]
    labels = labels_from_items(args.label_values) if args.label_values else \
        labels_from_dataset_json(args.dataset_json) if args.dataset_json else None
    table = generalize(models, args.i, args.references, args.o, labels=labels,
                       reference=args.reference, checkpoint=args.chk, device=args.device,
                       disable_tta=args.disable_tta, lesion_rule=args.lesion_rule,
                       connectivity=args.lesion_connectivity,
                       workers=args.workers, missing_as_empty=args.missing_as_empty,
                       test=args.test)
    print(to_markdown(table, args.reference, args.test))


def _add_evaluation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset-json", default=None,
                        help="nnU-Net dataset.json giving the labels / regions (default: the one "
                             "in the prediction folder, else next to the reference folder)")
    parser.add_argument("--label-values", "--labels", dest="label_values", nargs="+",
                        default=None, metavar="LABEL",
                        help="the labels' values instead of a dataset.json: VALUE, NAME=VALUE "
                             "or a region NAME=V1,V2; --labels is the old, deprecated spelling")
    parser.add_argument("--lesion-rule", type=_lesion_rule, default="any",
                        help="when a predicted lesion detects a reference lesion: any (overlap, "
                             "default), iou:T or dsc:T (IoU / DSC of the two >= T)")
    parser.add_argument("--lesion-connectivity", type=int, default=26,
                        help="neighbours that join voxels into one lesion: 6, 18 or 26 (26)")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="processes (default $nnUNet_def_n_proc, else the number of CPUs)")
    parser.add_argument("--missing-as-empty", action="store_true",
                        help="score a reference case without prediction as an empty prediction "
                             "(default: stop and list the missing cases)")


def _add_test_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reference", default=None, metavar="STRATEGY",
                        help="strategy the others are tested against (asterisk where p < alpha)")
    parser.add_argument("--test", default="ttest",
                        help="paired test behind the asterisk: ttest (default) or wilcoxon; "
                             "both p-values are in the CSV")


def register(subparsers) -> None:
    """Add `evaluate`, `compare` and `generalize` to the `nnunet-transfer` subparsers."""
    ev = add_command(
        subparsers, "evaluate", _cmd_evaluate,
        help="DSC, IoU, HD95, ASSD and lesion F1 of a prediction folder",
        description="Score every reference case against its prediction (same file name); "
                    "writes evaluation_per_case.csv, evaluation_summary.csv and .json to -o.")
    ev.add_argument("predictions", help="folder of predicted label maps")
    ev.add_argument("references", help="folder of reference label maps (e.g. labelsTs)")
    ev.add_argument("-o", required=True, help="output folder")
    ev.add_argument("--file-ending", default=None,
                    help="only files with this ending (default: dataset.json's, else any "
                         "SimpleITK format)")
    _add_evaluation_options(ev)

    co = add_command(
        subparsers, "compare", _cmd_compare,
        help="table of several evaluations: mean +- std, paired tests",
        description="Runs are LABEL=PATH, LABEL = STRATEGY[:N[:SEED]], PATH = an evaluation "
                    "folder or its evaluation_per_case.csv. Seeds of one strategy and N are "
                    "averaged per case. Writes comparison.csv and comparison.md to -o.")
    co.add_argument("runs", nargs="+", metavar="LABEL=PATH")
    co.add_argument("-o", required=True, help="output folder")
    co.add_argument("--metrics", nargs="+", default=None,
                    help="metrics to tabulate (default dsc iou hd95_mm assd_mm lesion_f1)")
    co.add_argument("--alpha", type=fraction, default=0.05, help="significance level (0.05)")
    _add_test_options(co)

    ge = add_command(
        subparsers, "generalize", _cmd_generalize,
        help="predict an unseen test set with trained models, evaluate, compare",
        description="For each model (LABEL=FOLDER, FOLDER = a trained nnU-Net model folder or "
                    "one of its fold_N folders) runs nnUNetv2_predict_from_modelfolder on -i, "
                    "evaluates against --references and writes comparison.csv / .md to -o.")
    ge.add_argument("--models", nargs="+", required=True, metavar="LABEL=FOLDER")
    ge.add_argument("-i", required=True, help="images of the unseen test set (imagesTs)")
    ge.add_argument("--references", required=True, help="its reference labels (labelsTs)")
    ge.add_argument("-o", required=True, help="output folder")
    ge.add_argument("-f", nargs="+", default=None,
                    help="folds of every model folder (default: its only fold)")
    ge.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint file name")
    ge.add_argument("-device", "--device", default="cuda", choices=["cuda", "cpu", "mps"])
    ge.add_argument("--disable-tta", action="store_true", help="no mirroring at prediction")
    _add_evaluation_options(ge)
    _add_test_options(ge)
