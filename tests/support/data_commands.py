"""Running the data subcommands in-process, as `nnunet-transfer` runs them, for the tests."""

from __future__ import annotations

import argparse

from nnunet_transfer.data.commands import register
from nnunet_transfer.errors import UserError, exit_with_message


def run_command(argv: list[str], capsys) -> tuple[int, str, str]:
    """Parse and run a data command as cli.main does; returns (exit status, stdout, stderr)."""
    parser = argparse.ArgumentParser(prog="nnunet-transfer")
    register(parser.add_subparsers(dest="command", required=True))
    status = 0
    try:
        args = parser.parse_args(argv)
        try:
            args.func(args)
        except UserError as error:
            raise exit_with_message(error) from None
    except SystemExit as stop:
        status = stop.code
    out = capsys.readouterr()
    return status, out.out, out.err
