"""The analysis kinds of `nnunet-transfer analyze`, each declared once (`ANALYSIS_KINDS`).

An `AnalysisKind` holds all that is known about a kind outside its own module: its name (the
subcommand and the stem of its output files), its help, the title of its section in a study
report, its command-line options, how it runs from parsed arguments, what a study job passes
it, and which study grids it could not produce a number for. `commands` builds the CLI from
`ANALYSIS_KINDS`; the study's spec check, jobs and report loop over it. Adding a kind is one
declaration here plus the module of its analysis.

The study side is given plain data (`StudyCell`, the study's `AnalysisSettings`, strategy
names and seeds), never the study's own classes: the study sits above this package.

Every `nnunet-transfer` command builds the parser, so the analyses themselves (pandas,
matplotlib, nnU-Net's data) are not imported here: each kind's `run` imports its analysis
module when called. The strategies are (the CLI already has them, with torch, for its help).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nnunet_transfer.analysis.options import (
    CAPTURE_SETTINGS, CONVERGENCE_SETTINGS, DATA_SETTINGS, RUN_HELP, AnalysisSettings, add_alpha,
    add_arguments, add_runs)
from nnunet_transfer.arguments import positive_int
from nnunet_transfer.errors import UserError
from nnunet_transfer.training.run_folder import RunId
from nnunet_transfer.training.strategies import FINE_TUNE, SCRATCH

if TYPE_CHECKING:
    from nnunet_transfer.analysis.outputs import Notes, Output

@dataclass(frozen=True)
class CellRun:
    """A run of a study cell whose training succeeded."""

    id: RunId
    folder: str  # its nnU-Net fold folder


@dataclass(frozen=True)
class StudyCell:
    """What an analysis job of a study knows of its cell (one source, architecture and n).

    Attributes:
        finished: the cell's runs whose training succeeded, in the study's order.
        first_seed: the smallest seed of all the cell's runs, finished or not.
        transfer_strategies: the study's strategies that start from pretrained weights, in the
            study file's order.
    """

    finished: tuple[CellRun, ...]
    first_seed: int
    transfer_strategies: tuple[str, ...]


def _no_grid_problem(strategies: Sequence[str], seeds: Sequence[int]) -> str | None:
    return None


@dataclass(frozen=True)
class AnalysisKind:
    """One kind of analysis.

    Attributes:
        name: the subcommand (`analyze NAME`), the stem of its output files and its name in a
            study file's `analyses`.
        summary: its words in the help of `analyze` ("layer evolution").
        help: its help and description on the command line.
        title: the title of its section in a study report.
        add_options: adds its own arguments (all but -o and its settings) to its subparser.
        run: its results from the parsed arguments; warnings go to the notes.
        study_arguments: its arguments (the runs) for a study cell, or why it cannot run yet.
        settings: the fields of `AnalysisSettings` it takes (options of its subcommand, given
            by a study job).
        uses_accelerator: whether a study job of it may use the GPU.
        grid_problem: why a study with these strategy names and seeds could never give it a
            number (None: it could).
        report_figure: the suffix of its figure that a study report shows (the one that
            compares the runs at a glance; "" is <name>.png); the others are folded there.

    The declarations below give the fields up to `settings` by position, in this order.
    """

    name: str
    summary: str
    help: str
    title: str
    add_options: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Notes], Output]
    study_arguments: Callable[[StudyCell], list[str] | str]
    settings: tuple[str, ...]
    uses_accelerator: bool = True
    grid_problem: Callable[[Sequence[str], Sequence[int]], str | None] = _no_grid_problem
    report_figure: str = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add its arguments, all but -o, to its subparser."""
        self.add_options(parser)
        add_arguments(parser, self.settings)

    def study_command(self, cell: StudyCell, settings: AnalysisSettings) -> list[str] | str:
        """What follows `analyze NAME -o OUT` in a study job's command, or why it cannot run."""
        arguments = self.study_arguments(cell)
        if isinstance(arguments, str):
            return arguments
        return [*arguments, *settings.to_argv(self.settings)]


# -- what a study job passes -------------------------------------------------------------------


def _labelled(runs: Sequence[CellRun]) -> list[str]:
    return [f"{run.id.strategy}_seed{run.id.seed}={run.folder}" for run in runs]


def _all_finished(cell: StudyCell) -> list[str] | str:
    return _labelled(cell.finished) if cell.finished else "no run of this cell finished"


def _first_seed_runs(cell: StudyCell) -> list[str] | str:
    chosen = [run for run in cell.finished if run.id.seed == cell.first_seed]
    return _labelled(chosen) if chosen else f"no run with seed {cell.first_seed} finished"


# -- convergence -------------------------------------------------------------------------------


def _convergence_options(parser: argparse.ArgumentParser) -> None:
    add_runs(parser)
    parser.add_argument("--clock", default="train", choices=["train", "total"],
                        help="wall time of training iterations only (train, default) or "
                             "everything incl. validation (total)")


def _run_convergence(args: argparse.Namespace, notes: Notes) -> Output:
    from nnunet_transfer.analysis.convergence import convergence_analysis
    from nnunet_transfer.analysis.runs import parse_runs
    settings = AnalysisSettings.from_args(args)
    return convergence_analysis(parse_runs(args.runs), settings.tolerance, settings.column,
                                args.clock)


CONVERGENCE = AnalysisKind(
    "convergence", "convergence", "validation pseudo-Dice against iterations and wall time; "
    "epoch, iterations and time to convergence per run",
    "Convergence: validation Dice against iterations and time",
    _convergence_options, _run_convergence, _all_finished, CONVERGENCE_SETTINGS,
    uses_accelerator=False)


# -- evolution ---------------------------------------------------------------------------------


def _run_evolution(args: argparse.Namespace, notes: Notes) -> Output:
    from nnunet_transfer.analysis.evolution import evolution_analysis
    from nnunet_transfer.analysis.runs import parse_runs
    settings = AnalysisSettings.from_args(args)
    return evolution_analysis(parse_runs(args.runs), settings.capture_options(),
                              settings.tolerance, settings.column, notes)


EVOLUTION = AnalysisKind(
    "evolution", "layer evolution", "RSIM of every snapshot vs the snapshot at the convergence "
    "epoch, per layer, a curve per run (Karimi et al. Figs 6-7)",
    "Evolution of each layer (RSIM of every snapshot vs the converged network)",
    add_runs, _run_evolution, _first_seed_runs, (*CONVERGENCE_SETTINGS, *CAPTURE_SETTINGS))


# -- similarity within and across groups -------------------------------------------------------


def _similarity_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--group", nargs="+", action="append", required=True,
                        metavar=("NAME", "FOLD"),
                        help="a group: its name, then its runs (" + RUN_HELP + "); repeat per "
                             "group")
    add_alpha(parser)


def _run_similarity(args: argparse.Namespace, notes: Notes) -> Output:
    from nnunet_transfer.analysis.cross_network import similarity_analysis
    from nnunet_transfer.analysis.runs import parse_run
    groups = {}
    for name, *folders in args.group:
        if not folders:
            raise UserError(f"--group {name}: give the group's runs after its name")
        if name in groups:
            raise UserError(f"--group {name} is given twice")
        groups[name] = [parse_run(folder) for folder in folders]
    return similarity_analysis(groups, AnalysisSettings.from_args(args).capture_options(),
                               args.alpha, notes)


def _strategy_groups(cell: StudyCell) -> list[str] | str:
    """A group per strategy with at least two finished seeds."""
    groups: dict[str, list[str]] = {}
    for run in cell.finished:
        groups.setdefault(run.id.strategy, []).append(run.folder)
    groups = {s: folders for s, folders in groups.items() if len(folders) >= 2}
    if not groups:
        return "no strategy has two finished seeds"
    return [a for s, folders in groups.items() for a in ("--group", s, *folders)]


def _needs_two_seeds(strategies: Sequence[str], seeds: Sequence[int]) -> str | None:
    if len(seeds) < 2:
        return ("similarity compares networks within a strategy: it needs at least two seeds "
                "(seeds: [0, 1]), or drop similarity")
    return None


SIMILARITY = AnalysisKind(
    "similarity", "similarity", "RSIM of final networks within and across groups of runs, "
    "Welch t-tests (Karimi et al. Table 8)",
    "Similarity between networks (RSIM within and across strategies)",
    _similarity_options, _run_similarity, _strategy_groups, CAPTURE_SETTINGS,
    # every pair of groups' mean in one grid; the bars stay readable for two or three groups only
    grid_problem=_needs_two_seeds, report_figure="heatmap")


# -- feature reuse -----------------------------------------------------------------------------

def _reuse_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--transfer", nargs="+", required=True, metavar="RUN", help=RUN_HELP)
    parser.add_argument("--scratch", nargs="+", required=True, metavar="RUN", help=RUN_HELP)
    add_alpha(parser)


def _run_reuse(args: argparse.Namespace, notes: Notes) -> Output:
    from nnunet_transfer.analysis.reuse import reuse_analysis
    from nnunet_transfer.analysis.runs import parse_runs
    return reuse_analysis(parse_runs(args.transfer), parse_runs(args.scratch),
                          AnalysisSettings.from_args(args).capture_options(), args.alpha, notes)


def _transfer_and_scratch(cell: StudyCell) -> list[str] | str:
    """FineTune's runs (else those of the first transfer strategy) against Scratch's."""
    transfer_strategy = FINE_TUNE.name if FINE_TUNE.name in cell.transfer_strategies else next(
        iter(cell.transfer_strategies), None)
    transfer = [run for run in cell.finished if run.id.strategy == transfer_strategy]
    scratch = [run for run in cell.finished if run.id.strategy == SCRATCH.name]
    if not transfer or not scratch:
        return f"reuse needs finished {transfer_strategy} and {SCRATCH.name} runs"
    return ["--transfer", *_labelled(transfer), "--scratch", *_labelled(scratch)]


def _needs_scratch_and_transfer(strategies: Sequence[str], seeds: Sequence[int]) -> str | None:
    if not (SCRATCH.name in strategies and len(strategies) > 1):
        return (f"reuse compares transfer runs with {SCRATCH.name} runs: add {SCRATCH.name} and "
                "at least one transfer strategy, or drop reuse")
    return None


REUSE = AnalysisKind(
    "reuse", "feature reuse", "feature reuse per layer: mean RSIM(epoch 0, final) of transfer "
    "runs minus that of scratch runs (Karimi et al. Table 9)", "Feature reuse per layer",
    _reuse_options, _run_reuse, _transfer_and_scratch, CAPTURE_SETTINGS,
    grid_problem=_needs_scratch_and_transfer)


# -- weights -----------------------------------------------------------------------------------


def _weights_options(parser: argparse.ArgumentParser) -> None:
    add_runs(parser)
    parser.add_argument("--start", default="0",
                        help="start snapshot: epochs done, 'convergence' or 'final' (0)")
    parser.add_argument("--end", default="final",
                        help="end snapshot: epochs done, 'convergence' or 'final' (final)")
    parser.add_argument("--filter-layer", default=None, metavar="NAME",
                        help="convolution whose filters are drawn (default: the first of the "
                             "encoder)")
    parser.add_argument("--filters", type=positive_int, default=8,
                        help="filters (and feature-map channels) drawn (8)")
    parser.add_argument("--feature-layer", default=None, metavar="NAME",
                        help="layer whose feature maps are drawn (default: the first encoder "
                             "analysis layer)")


def _run_weights(args: argparse.Namespace, notes: Notes) -> Output:
    from nnunet_transfer.analysis.runs import parse_runs
    from nnunet_transfer.analysis.weight_analysis import PictureOptions, weights_analysis
    settings = AnalysisSettings.from_args(args)
    pictures = PictureOptions(filter_layer=args.filter_layer, filters=args.filters,
                              feature_layer=args.feature_layer, seed=settings.seed,
                              cases=settings.cases, device=settings.device)
    return weights_analysis(parse_runs(args.runs), args.start, args.end, pictures, notes,
                            settings.tolerance, settings.column)


WEIGHTS = AnalysisKind(
    "weights", "weight change", "relative weight and filter-norm change per convolution; "
    "filters and feature maps at start and end (Karimi et al. Figs 8-10)",
    "Weight change, filters and feature maps",
    _weights_options, _run_weights, _first_seed_runs, (*CONVERGENCE_SETTINGS, *DATA_SETTINGS))


ANALYSIS_KINDS: dict[str, AnalysisKind] = {
    kind.name: kind for kind in (CONVERGENCE, EVOLUTION, SIMILARITY, REUSE, WEIGHTS)}
