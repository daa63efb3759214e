"""`nnunet-transfer analyze <kind>` (`register` adds it to the CLI), a subcommand per kind of
`kinds.ANALYSIS_KINDS`.

Each kind writes <kind>.csv (and <kind>_*.csv), <kind>*.png and <kind>.md into -o. torch, pandas
and matplotlib are imported by the handlers, not here: every `nnunet-transfer` command builds
this parser.
"""

from __future__ import annotations

import argparse
import os
import shlex

from nnunet_transfer.analysis.kinds import ANALYSIS_KINDS
from nnunet_transfer.analysis.options import RUN_HELP, SETTING_NAMES, AnalysisSettings
from nnunet_transfer.training.budget import KNOB_OF_FIELD, parse_knob


def command_line(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The command with every option's effective value (defaults included), for the summary."""
    words = ["nnunet-transfer", "analyze", args.kind]
    settings = AnalysisSettings.from_args(args)
    for action in parser._actions:  # argparse keeps no public list of a parser's options
        if isinstance(action, argparse._HelpAction) or action.dest in ("kind",):
            continue
        if action.dest in SETTING_NAMES:
            words += settings.to_argv([action.dest])
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
        else:
            words += [action.option_strings[0], *(str(v) for v in values)]
    return shlex.join(words)


def _apply_cpu_threads() -> None:
    """NNUNET_TRANSFER_CPU_THREADS sets torch's CPU threads here as in training (runs and
    analyses sharing a machine)."""
    knob = KNOB_OF_FIELD["cpu_threads"]
    text = os.environ.get(knob.variable)
    if text:
        import torch
        torch.set_num_threads(parse_knob(knob, text, knob.variable,
                                         "set a positive number"))


def _cmd_analyze(args: argparse.Namespace) -> None:
    from nnunet_transfer.analysis.outputs import Notes, prepare_output_folder, write_output

    prepare_output_folder(args.o)
    _apply_cpu_threads()
    notes = Notes()
    with notes.warnings_as_notes():
        output = ANALYSIS_KINDS[args.kind].run(args, notes)
    paths = write_output(args.kind, args.o, output, notes, command_line(args.parser, args))
    print("wrote " + ", ".join(paths))


def register(subparsers) -> None:
    """Add `analyze` with its kinds to the `nnunet-transfer` subparsers."""
    analyze = subparsers.add_parser(
        "analyze", help="analyse finished runs: "
                        + ", ".join(kind.summary for kind in ANALYSIS_KINDS.values()),
        description="Each kind writes <kind>.csv, <kind>*.png and a Markdown summary "
                    "<kind>.md into -o. " + RUN_HELP + ".")
    subcommands = analyze.add_subparsers(dest="kind", required=True)
    for kind in ANALYSIS_KINDS.values():
        parser = subcommands.add_parser(kind.name, help=kind.help, description=kind.help)
        parser.add_argument("-o", required=True, help="output folder")
        parser.set_defaults(func=_cmd_analyze, parser=parser)
        kind.add_arguments(parser)
