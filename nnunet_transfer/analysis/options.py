"""Command-line options shared by several analysis kinds: their value types, the option groups
(convergence rule, data and blocks, capture) and the readers turning parsed options into the
analyses' option objects.

Nothing heavy is imported here: every `nnunet-transfer` command builds the parser.
"""

from __future__ import annotations

import argparse

from nnunet_transfer.analysis.defaults import CONVERGENCE_TOLERANCE, DEFAULT_BLOCKS, TOLERANCE
from nnunet_transfer.arguments import argparse_type, case_ids, count_or_all, fraction, \
    positive_int
from nnunet_transfer.errors import UserError

RUN_HELP = "LABEL=FOLD_FOLDER or FOLD_FOLDER (a fold folder of a run of our trainers)"

def _measures(text: str) -> tuple[str, ...]:
    from nnunet_transfer.analysis.measure import parse_measures
    try:
        return parse_measures(text)
    except UserError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_runs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help=RUN_HELP)


def add_alpha(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--alpha", type=fraction, default=0.05, help="significance level (0.05)")


def add_convergence_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tolerance", type=argparse_type(TOLERANCE, "_tolerance"),
                        default=CONVERGENCE_TOLERANCE,
                        help="convergence: first epoch within this relative distance of the "
                             f"run's maximum ({CONVERGENCE_TOLERANCE} = "
                             f"{100 * CONVERGENCE_TOLERANCE:g} %%, Karimi et al.)")
    parser.add_argument("--column", default="pseudo_dice",
                        choices=["pseudo_dice", "ema_pseudo_dice"],
                        help="validation score the convergence rule reads (pseudo_dice)")


def add_capture_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--blocks", type=positive_int, default=DEFAULT_BLOCKS,
                        help="input blocks of the patch size at seeded random locations "
                             f"({DEFAULT_BLOCKS})")
    parser.add_argument("--voxels-per-block", type=count_or_all, default=1000,
                        help="voxels kept per block and layer, a seeded subset, or 'all' (1000)")
    add_data_options(parser)
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


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the blocks, voxel subsets and null networks (0)")
    parser.add_argument("--cases", type=case_ids, default=None, metavar="ID,ID",
                        help="preprocessed cases the blocks come from (default: test_cases.json "
                             "of the preprocessed dataset, else the validation cases of the "
                             "runs' folds, else all)")
    parser.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"],
                        help="where networks run (auto: cuda if available)")


def capture_options(args: argparse.Namespace):
    """The `measure.CaptureOptions` of the options `add_capture_options` added."""
    from nnunet_transfer.analysis.measure import CaptureOptions
    if args.null_networks < 2:
        raise UserError("--null-networks must be at least 2 (one pair)")
    return CaptureOptions(blocks=args.blocks, voxels_per_block=args.voxels_per_block,
                          seed=args.seed, cases=args.cases,
                          layers=tuple(args.layers) if args.layers else None,
                          measures=args.measures, device=args.device,
                          batch_size=args.batch_size, null_networks=args.null_networks)
