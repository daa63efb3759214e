"""The `env`, `strategies` and `inspect` subcommands (`register` adds them to the CLI): how
nnU-Net finds our trainers and the budget knobs they read, which strategies there are, and what
a checkpoint or model folder can feed."""

from __future__ import annotations

import argparse
import os
import shlex

from nnunet_transfer.arguments import add_command
from nnunet_transfer.discovery import ext_trainer_value
from nnunet_transfer.training.budget import KNOBS, parse_knob
from nnunet_transfer.training.strategies import CUSTOM_TRAINER, STRATEGIES


def env_lines(args: argparse.Namespace) -> list[str]:
    """The `export` lines: nnUNet_extTrainer, then each knob given (checked as the trainer
    would check it)."""
    value = ext_trainer_value(os.environ.get("nnUNet_extTrainer"))
    lines = [f"export nnUNet_extTrainer={shlex.quote(value)}"]
    for knob in KNOBS:
        value = getattr(args, knob.field)
        if value is not None:
            parse_knob(knob, str(value), f"{knob.option} {value}", "give another value")
            lines.append(f"export {knob.variable}={shlex.quote(str(value))}")
    return lines


def _cmd_env(args: argparse.Namespace) -> None:
    print("\n".join(env_lines(args)))


def _cmd_strategies(args: argparse.Namespace) -> None:
    for s in STRATEGIES:
        frozen = ", ".join(sorted(s.frozen_parts)) or "nothing"
        phases = " -> ".join(p.name for p in s.schedule.phases)
        print(f"{s.trainer_name:<40} pretrained {s.pretrained.value:<9} frozen at the start: "
              f"{frozen:<18} LR x{s.lr_factor:<4} phases: {phases}. {s.summary}")
    print(f"{CUSTOM_TRAINER:<40} the strategy of the YAML file NNUNET_TRANSFER_STRATEGY_FILE")


def _cmd_inspect(args: argparse.Namespace) -> None:
    from nnunet_transfer.checkpoints.inspection import inspect_text
    print(inspect_text(args.path, args.target, args.strategy_file))


def register(subparsers) -> None:
    """Add `env`, `strategies` and `inspect` to the `nnunet-transfer` subparsers."""
    env = add_command(
        subparsers, "env", _cmd_env,
        help="print the exports that let nnU-Net find our trainers (use with eval)",
        description='eval "$(nnunet-transfer env [--epochs N ...])" sets nnUNet_extTrainer and '
                    "the budget knobs the trainers read.")
    for knob in KNOBS:
        env.add_argument(knob.option, dest=knob.field, default=None,
                         help=f"{knob.described}; sets {knob.variable}")
    add_command(subparsers, "strategies", _cmd_strategies,
                help="list the strategies and their trainer names")
    inspect = add_command(
        subparsers, "inspect", _cmd_inspect,
        help="say what a checkpoint or model folder is and which strategies it can feed",
        description="Reads an nnU-Net v2 checkpoint or model folder, an nnU-Net v1 model "
                    "(.model + .model.pkl, plans.pkl) or an nnssl checkpoint offline, without "
                    "running pickled code, and prints its format, trainer, network, plans, "
                    "labels, channels, parameters per part and, for every strategy, the parts it "
                    "needs from the file and whether it can start from it.")
    inspect.add_argument("path", help="a checkpoint file, a fold folder or a model folder")
    inspect.add_argument("--target", default=None,
                         help="dataset id or name to print the fine-tuning commands for")
    inspect.add_argument("--strategy-file", default=None, metavar="FILE",
                         help=f"also judge the custom strategy of this YAML file (what "
                              f"{CUSTOM_TRAINER} trains with NNUNET_TRANSFER_STRATEGY_FILE)")
