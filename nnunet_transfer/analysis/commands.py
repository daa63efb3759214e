"""`nnunet-transfer analyze <kind>` (`register` adds it to the CLI).

Kinds: convergence, evolution, similarity, reuse, weights. Each writes <kind>.csv (and
<kind>_*.csv), <kind>*.png and <kind>.md into -o. torch, pandas and matplotlib are imported by
the handlers, not here: every `nnunet-transfer` command builds this parser.
"""

from __future__ import annotations

import argparse
import os
import shlex

from nnunet_transfer.arguments import case_ids, count_or_all, fraction, non_negative_float, \
    positive_int
from nnunet_transfer.errors import UserError

RUN_HELP = "LABEL=FOLD_FOLDER or FOLD_FOLDER (a fold folder of a run of our trainers)"


def _measures(text: str) -> tuple[str, ...]:
    from nnunet_transfer.analysis.measure import parse_measures
    try:
        return parse_measures(text)
    except UserError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def command_line(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The command with every option's effective value (defaults included), for the summary."""
    words = ["nnunet-transfer", "analyze", args.kind]
    for action in parser._actions:  # argparse keeps no public list of a parser's options
        if isinstance(action, argparse._HelpAction) or action.dest in ("kind",):
            continue
        value = getattr(args, action.dest, None)
        if value is None or value is False:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        if not action.option_strings:
            words += [str(v) for v in values]
        elif action.nargs == 0:
            words.append(action.option_strings[0])
        elif action.dest == "group":
            for group in value:
                words += [action.option_strings[0], *group]
        elif action.dest == "cases":
            words += [action.option_strings[0], ",".join(value)]
        elif action.dest == "measures":
            words += [action.option_strings[0], ",".join(value)]
        else:
            words += [action.option_strings[0], *(str(v) for v in values)]
    return shlex.join(words)


def _apply_cpu_threads() -> None:
    """NNUNET_TRANSFER_CPU_THREADS sets torch's CPU threads here as in training (runs and
    analyses sharing a machine)."""
    text = os.environ.get("NNUNET_TRANSFER_CPU_THREADS")
    if text:
        import torch
        from nnunet_transfer.training.budget import KNOBS, parse_knob
        knob = next(k for k in KNOBS if k.field == "cpu_threads")
        torch.set_num_threads(parse_knob(knob, text, "NNUNET_TRANSFER_CPU_THREADS",
                                         "set a positive number"))


def _capture_options(args: argparse.Namespace):
    from nnunet_transfer.analysis.measure import CaptureOptions
    if args.null_networks < 2:
        raise UserError("--null-networks must be at least 2 (one pair)")
    return CaptureOptions(blocks=args.blocks, voxels_per_block=args.voxels_per_block,
                          seed=args.seed, cases=args.cases,
                          layers=tuple(args.layers) if args.layers else None,
                          measures=args.measures, device=args.device,
                          batch_size=args.batch_size, null_networks=args.null_networks)


def _analysis(args: argparse.Namespace, notes):
    from nnunet_transfer.analysis import analyses, weight_analysis
    from nnunet_transfer.analysis.runs import parse_run, parse_runs

    if args.kind == "convergence":
        return analyses.convergence_analysis(parse_runs(args.runs), args.tolerance,
                                             args.column, args.clock)
    if args.kind == "evolution":
        return analyses.evolution_analysis(parse_runs(args.runs), _capture_options(args),
                                           args.tolerance, args.column, notes)
    if args.kind == "similarity":
        groups = {}
        for name, *folders in args.group:
            if not folders:
                raise UserError(f"--group {name}: give the group's runs after its name")
            if name in groups:
                raise UserError(f"--group {name} is given twice")
            groups[name] = [parse_run(folder) for folder in folders]
        return analyses.similarity_analysis(groups, _capture_options(args), args.alpha, notes)
    if args.kind == "reuse":
        return analyses.reuse_analysis(parse_runs(args.transfer), parse_runs(args.scratch),
                                       _capture_options(args), args.alpha, notes)
    if args.kind == "weights":
        pictures = weight_analysis.PictureOptions(
            filter_layer=args.filter_layer, filters=args.filters,
            feature_layer=args.feature_layer, seed=args.seed, cases=args.cases,
            device=args.device)
        return weight_analysis.weights_analysis(parse_runs(args.runs), args.start, args.end,
                                                pictures, notes, args.tolerance, args.column)
    raise UserError(f"unknown analysis {args.kind}")


def _cmd_analyze(args: argparse.Namespace) -> None:
    from nnunet_transfer.analysis.report import Notes, prepare_output_folder, write_output

    prepare_output_folder(args.o)
    _apply_cpu_threads()
    notes = Notes()
    with notes.warnings_as_notes():
        output = _analysis(args, notes)
    paths = write_output(args.kind, args.o, output, notes, command_line(args.parser, args))
    print("wrote " + ", ".join(paths))


def _add_convergence_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tolerance", type=non_negative_float, default=0.005,
                        help="convergence: first epoch within this relative distance of the "
                             "run's maximum (0.005 = 0.5 %%, Karimi et al.)")
    parser.add_argument("--column", default="pseudo_dice",
                        choices=["pseudo_dice", "ema_pseudo_dice"],
                        help="validation score the convergence rule reads (pseudo_dice)")


def _add_capture_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--blocks", type=positive_int, default=16,
                        help="input blocks of the patch size at seeded random locations (16)")
    parser.add_argument("--voxels-per-block", type=count_or_all, default=1000,
                        help="voxels kept per block and layer, a seeded subset, or 'all' (1000)")
    _add_data_options(parser)
    parser.add_argument("--layers", nargs="+", default=None, metavar="NAME",
                        help="module names (default: the architecture's 3 encoder and 3 "
                             "decoder analysis layers)")
    parser.add_argument("--measures", type=_measures, default=("pwcca", "svcca", "cka"),
                        help="comma-separated: pwcca (RSIM, the headline), svcca, cka "
                             "(default all three)")
    parser.add_argument("--batch-size", type=positive_int, default=2,
                        help="blocks per forward pass (2)")
    parser.add_argument("--null-networks", type=positive_int, default=3,
                        help="untrained networks of the null baseline, k give k(k-1)/2 pairs (3)")


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the blocks, voxel subsets and null networks (0)")
    parser.add_argument("--cases", type=case_ids, default=None, metavar="ID,ID",
                        help="preprocessed cases the blocks come from (default: test_cases.json "
                             "of the preprocessed dataset, else the validation cases of the "
                             "runs' folds, else all)")
    parser.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"],
                        help="where networks run (auto: cuda if available)")


def register(subparsers) -> None:
    """Add `analyze` with its kinds to the `nnunet-transfer` subparsers."""
    analyze = subparsers.add_parser(
        "analyze", help="analyse finished runs: convergence, layer evolution, similarity, "
                        "feature reuse, weight change",
        description="Each kind writes <kind>.csv, <kind>*.png and a Markdown summary "
                    "<kind>.md into -o. " + RUN_HELP + ".")
    kinds = analyze.add_subparsers(dest="kind", required=True)

    def kind(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = kinds.add_parser(name, help=help_text, description=help_text)
        parser.add_argument("-o", required=True, help="output folder")
        parser.set_defaults(func=_cmd_analyze, parser=parser)
        return parser

    co = kind("convergence", "validation pseudo-Dice against iterations and wall time; epoch, "
                             "iterations and time to convergence per run")
    co.add_argument("runs", nargs="+", metavar="RUN", help=RUN_HELP)
    _add_convergence_options(co)
    co.add_argument("--clock", default="train", choices=["train", "total"],
                    help="wall time of training iterations only (train, default) or "
                         "everything incl. validation (total)")

    ev = kind("evolution", "RSIM of every snapshot vs the snapshot at the convergence epoch, "
                           "per layer, a curve per run (Karimi et al. Figs 6-7)")
    ev.add_argument("runs", nargs="+", metavar="RUN", help=RUN_HELP)
    _add_convergence_options(ev)
    _add_capture_options(ev)

    si = kind("similarity", "RSIM of final networks within and across groups of runs, "
                            "Welch t-tests (Karimi et al. Table 8)")
    si.add_argument("--group", nargs="+", action="append", required=True,
                    metavar=("NAME", "FOLD"),
                    help="a group: its name, then its runs (" + RUN_HELP + "); repeat per group")
    si.add_argument("--alpha", type=fraction, default=0.05, help="significance level (0.05)")
    _add_capture_options(si)

    re_ = kind("reuse", "feature reuse per layer: mean RSIM(epoch 0, final) of transfer runs "
                        "minus that of scratch runs (Karimi et al. Table 9)")
    re_.add_argument("--transfer", nargs="+", required=True, metavar="RUN", help=RUN_HELP)
    re_.add_argument("--scratch", nargs="+", required=True, metavar="RUN", help=RUN_HELP)
    re_.add_argument("--alpha", type=fraction, default=0.05, help="significance level (0.05)")
    _add_capture_options(re_)

    we = kind("weights", "relative weight and filter-norm change per convolution; filters and "
                         "feature maps at start and end (Karimi et al. Figs 8-10)")
    we.add_argument("runs", nargs="+", metavar="RUN", help=RUN_HELP)
    we.add_argument("--start", default="0",
                    help="start snapshot: epochs done, 'convergence' or 'final' (0)")
    we.add_argument("--end", default="final",
                    help="end snapshot: epochs done, 'convergence' or 'final' (final)")
    we.add_argument("--filter-layer", default=None, metavar="NAME",
                    help="convolution whose filters are drawn (default: the first of the "
                         "encoder)")
    we.add_argument("--filters", type=positive_int, default=8,
                    help="filters (and feature-map channels) drawn (8)")
    we.add_argument("--feature-layer", default=None, metavar="NAME",
                    help="layer whose feature maps are drawn (default: the first encoder "
                         "analysis layer)")
    _add_convergence_options(we)
    _add_data_options(we)
