"""The `nnunet-transfer` command: the subcommands each area registers, and the error handling.

Every area owns its subcommands in its `commands` module (`register(subparsers)`); this module
only puts them in order and runs the chosen one. A UserError or OSError from a handler becomes
one message line and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from nnunet_transfer.analysis import commands as analysis_commands
from nnunet_transfer.data import commands as data_commands
from nnunet_transfer.errors import UserError, exit_with_message
from nnunet_transfer.evaluation import commands as evaluation_commands
from nnunet_transfer.planning import commands as planning_commands
from nnunet_transfer.source_ranking import commands as source_ranking_commands
from nnunet_transfer.study import commands as study_commands
from nnunet_transfer.training import commands as training_commands

# The order of `nnunet-transfer --help`: the workflow from set-up to analysis, then the
# ready-made examples (synthetic data, the demo study).
REGISTRATIONS = (
    training_commands.register,
    planning_commands.register,
    source_ranking_commands.register,
    data_commands.register,
    evaluation_commands.register,
    study_commands.register,
    analysis_commands.register,
    data_commands.register_examples,
    study_commands.register_examples,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet-transfer",
        description="Transfer learning for nnU-Net v2: strategies as trainers, weight transfer "
                    "across datasets, and the bookkeeping the analysis needs.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for register in REGISTRATIONS:
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UserError as error:
        raise exit_with_message(error) from None
    except OSError as error:  # a folder that cannot be written, a file that vanished
        raise exit_with_message(UserError(
            f"{error.strerror or error}: {error.filename or ''}")) from None


if __name__ == "__main__":
    main(sys.argv[1:])
