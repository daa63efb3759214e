"""The `rank-sources` subcommand (`register` adds it to the CLI)."""

from __future__ import annotations

import argparse
import sys

from nnunet_transfer.arguments import add_command, positive_int
from nnunet_transfer.source_ranking.target import DEFAULT_MAX_CASES


def _cmd_rank_sources(args: argparse.Namespace) -> None:
    from nnunet_transfer.source_ranking.rank import rank_sources
    from nnunet_transfer.source_ranking.ranking import write_ranking_csv
    from nnunet_transfer.source_ranking.sources import CandidateSource

    ranking = rank_sources(args.target, [CandidateSource.parse(s) for s in args.sources],
                           max_cases=args.max_cases, device=args.device,
                           exclude_file=args.exclude_cases,
                           progress=lambda line: print(line, file=sys.stderr, flush=True))
    excluded = f", {len(ranking.excluded)} excluded" if ranking.excluded else ""
    print(f"Sources ranked on {ranking.target}: {len(ranking.cases)} training case(s)"
          f"{excluded}; score = mean LogME of the decoder's features over the target's classes "
          "(higher = better)\n")
    print(ranking.table())
    if args.csv:
        write_ranking_csv(ranking, args.csv)
        print(f"\nwrote {args.csv}")


def register(subparsers) -> None:
    """Add `rank-sources` to the subparsers."""
    rs = add_command(
        subparsers, "rank-sources", _cmd_rank_sources,
        help="rank candidate source models for a target before fine-tuning",
        description="Score each source model on the target's labelled training cases: the "
                    "fraction of each part that would load, labels and channels shared, "
                    "spacing and patch ratios, LogME of the decoder's full-resolution features "
                    "(class-balanced voxels, one-vs-rest per target class) and, where labels "
                    "match by name, the source's own Dice as is. Nothing is written to "
                    "nnUNet_preprocessed.")
    rs.add_argument("sources", nargs="+", metavar="SOURCE",
                    help="a model (v2 model folder, fold folder or checkpoint file; v1 model "
                         "folder or .model), optionally NAME=PATH")
    rs.add_argument("--target", required=True,
                    help="the target: a raw dataset id or name in nnUNet_raw (or its folder)")
    rs.add_argument("--csv", default=None, help="write the ranking to this CSV file")
    rs.add_argument("--exclude-cases", default=None, metavar="FILE",
                    help="a text file of case ids (one a line) never to read, e.g. the held-out "
                         "test cases")
    rs.add_argument("--max-cases", type=positive_int, default=DEFAULT_MAX_CASES,
                    help=f"most training cases scored (a seeded draw; default "
                         f"{DEFAULT_MAX_CASES})")
    rs.add_argument("-device", "--device", default="cpu", choices=("cpu", "cuda", "auto"),
                    help="where the source networks run (default cpu)")
