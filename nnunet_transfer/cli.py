"""The `nnunet-transfer` command."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from nnunet_transfer.analysis.commands import register as register_analysis_commands
from nnunet_transfer.architectures.registry import ARCHITECTURES
from nnunet_transfer.data.commands import register as register_data_commands
from nnunet_transfer.discovery import ext_trainer_value
from nnunet_transfer.evaluation.commands import register as register_evaluation_commands
from nnunet_transfer.study.commands import register as register_study_commands
from nnunet_transfer.errors import UserError, exit_with_message
from nnunet_transfer.training.budget import KNOBS, parse_knob
from nnunet_transfer.training.strategies import ALL_STRATEGIES


def env_lines(args: argparse.Namespace) -> list[str]:
    value = ext_trainer_value(os.environ.get("nnUNet_extTrainer"))
    lines = [f"export nnUNet_extTrainer={shlex.quote(value)}"]
    for knob in KNOBS:
        value = getattr(args, knob.field)
        if value is not None:
            parse_knob(knob, str(value), f"{knob.option} {value}", "give another value")
            lines.append(f"export {knob.variable}={shlex.quote(str(value))}")
    return lines


def _cmd_env(args):
    print("\n".join(env_lines(args)))


def _cmd_strategies(args):
    for s in ALL_STRATEGIES:
        frozen = ", ".join(sorted(s.frozen_parts)) or "nothing"
        print(f"{s.trainer_name:<36} pretrained {s.pretrained.value:<9} frozen: {frozen:<18} "
              f"LR x{s.lr_factor:<4} {s.summary}")


def _cmd_plans_transfer(args):
    from nnunet_transfer.planning import transfer_plans
    plans = transfer_plans(args.source, args.target, args.p, args.target_plans,
                           tuple(args.c), args.np)
    print(f"\nThe target is preprocessed with the source's plans. Train with -p {plans}, e.g.\n"
          f"  nnUNetv2_train {args.target} {args.c[0]} 0 -p {plans} -tr nnUNetTrainer_FineTune "
          f"-pretrained_weights <source fold folder>/checkpoint_final.pth")


def _cmd_small_plans(args):
    from nnunet_transfer.planning import make_small_plans
    path = make_small_plans(args.d, args.p, args.name, args.c, args.patch, args.features,
                            args.max_features, args.batch, args.stages)
    print(f"wrote {path}; train with -p {args.name}")


def _cmd_add_architectures(args):
    from nnunet_transfer.planning import add_architectures
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    outcome = add_architectures(args.d, args.p, only, args.c, args.replace)
    for configuration, what in outcome:
        print(f"{configuration:<28} {what}")
    example = outcome[0][0]
    print(f"\nTrain one with e.g.\n  nnUNetv2_train {args.d} {example} 0 -p {args.p} "
          f"-tr nnUNetTrainer_Scratch")


def _cmd_synthetic(args):
    from nnunet_transfer.data.synthetic import LOW_QUALITY_DOMAIN, SOURCE_DOMAIN, \
        write_synthetic_dataset
    raw = args.raw or os.environ.get("nnUNet_raw")
    if not raw:
        raise UserError("give --raw or export nnUNet_raw")
    folder = write_synthetic_dataset(
        raw, args.id, args.name, num_training=args.cases, num_test=args.test_cases,
        shape=tuple(args.shape), domain=LOW_QUALITY_DOMAIN if args.low_quality else SOURCE_DOMAIN,
        with_core=args.core, seed=args.seed)
    print(folder)


def _cmd_demo(args):
    from nnunet_transfer.study.demo import run_demo
    run_demo(args.workdir, epochs=args.epochs, iters=args.iters, jobs=args.jobs,
             hippocampus=args.hippocampus)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet-transfer",
        description="Transfer learning for nnU-Net v2: strategies as trainers, weight transfer "
                    "across datasets, and the bookkeeping the analysis needs.")
    sub = parser.add_subparsers(dest="command", required=True)

    env = sub.add_parser(
        "env", help="print the exports that let nnU-Net find our trainers (use with eval)",
        description='eval "$(nnunet-transfer env [--epochs N ...])" sets nnUNet_extTrainer and '
                    "the budget knobs the trainers read.")
    for knob in KNOBS:
        env.add_argument(knob.option, dest=knob.field, default=None,
                         help=f"{knob.help} (sets {knob.variable})")
    env.set_defaults(func=_cmd_env)

    sub.add_parser("strategies", help="list the strategies and their trainer names"
                   ).set_defaults(func=_cmd_strategies)

    pt = sub.add_parser("plans-transfer",
                        help="preprocess a target dataset with a source dataset's plans")
    pt.add_argument("--source", required=True, help="source dataset id or name")
    pt.add_argument("--target", required=True, help="target dataset id or name")
    pt.add_argument("-p", default="nnUNetPlans", help="source plans identifier")
    pt.add_argument("--target-plans", default=None,
                    help="identifier of the plans written for the target "
                         "(default <source plans>_from<source id>)")
    pt.add_argument("-c", nargs="+", default=["3d_fullres"], help="configurations to preprocess")
    pt.add_argument("-np", type=positive_int, default=2, help="processes for preprocessing")
    pt.set_defaults(func=_cmd_plans_transfer)

    sp = sub.add_parser("small-plans",
                        help="write a small plans variant that trains in seconds on a CPU")
    sp.add_argument("-d", required=True, help="dataset id or name (planned and preprocessed)")
    sp.add_argument("-p", default="nnUNetPlans", help="base plans identifier")
    sp.add_argument("--name", default="nnUNetPlansSmallCPU", help="identifier of the new plans")
    sp.add_argument("-c", default="3d_fullres", help="configuration to shrink")
    sp.add_argument("--patch", type=int, nargs="+", default=None,
                    help="patch size (default: the base's, at most 32 per axis)")
    sp.add_argument("--features", type=int, default=8, help="features of the first stage")
    sp.add_argument("--max-features", type=int, default=64, help="cap on features per stage")
    sp.add_argument("--batch", type=int, default=2, help="batch size")
    sp.add_argument("--stages", type=int, default=4, help="most resolution stages")
    sp.set_defaults(func=_cmd_small_plans)

    aa = sub.add_parser("add-architectures",
                        help="add the extra architectures to a dataset's plans as configurations")
    aa.add_argument("-d", required=True, help="dataset id or name (planned)")
    aa.add_argument("-p", default="nnUNetPlans", help="plans identifier")
    aa.add_argument("-c", default="3d_fullres",
                    help="configuration the new ones inherit from (patch, spacing, data)")
    aa.add_argument("--only", default=None,
                    help=f"comma-separated architectures (default all: {','.join(ARCHITECTURES)})")
    aa.add_argument("--replace", action="store_true",
                    help="overwrite configurations that exist and differ")
    aa.set_defaults(func=_cmd_add_architectures)

    register_data_commands(sub)
    register_evaluation_commands(sub)
    register_study_commands(sub)
    register_analysis_commands(sub)

    sy = sub.add_parser("make-synthetic", help="write a synthetic dataset in nnU-Net raw format")
    sy.add_argument("--id", type=int, required=True)
    sy.add_argument("--name", required=True)
    sy.add_argument("--raw", default=None, help="raw folder (default $nnUNet_raw)")
    sy.add_argument("--cases", type=int, default=8, help="training cases")
    sy.add_argument("--test-cases", type=int, default=0)
    sy.add_argument("--shape", type=int, nargs=3, default=[32, 32, 32])
    sy.add_argument("--low-quality", action="store_true",
                    help="lower contrast, more noise, blur and bias field")
    sy.add_argument("--core", action="store_true", help="add a second label inside the organ")
    sy.add_argument("--seed", type=int, default=0)
    sy.set_defaults(func=_cmd_synthetic)

    demo = sub.add_parser(
        "demo", help="run a small real transfer study on CPU (synthetic data, or Hippocampus)",
        description="Writes <workdir>/study.yaml and runs it like `study run`: pretraining, six "
                    "strategies x 2 seeds on a low-quality target, predictions, evaluation, "
                    "analyses, report.html. Re-running continues an interrupted demo.")
    demo.add_argument("--workdir", default="nnunet_transfer_demo",
                      help="folder for the datasets, runs and report (default ./nnunet_transfer_demo)")
    demo.add_argument("--hippocampus", default=None, metavar="TASK04_FOLDER",
                      help="run on MSD Task04 Hippocampus instead of synthetic data: the source is "
                           "most cases, the target a low-quality-site copy of 11 others")
    demo.add_argument("--epochs", type=positive_int, default=8,
                      help="epochs of each run on the target (the source gets twice as many)")
    demo.add_argument("--iters", type=positive_int, default=25, help="iterations per epoch")
    demo.add_argument("--jobs", type=positive_int, default=2,
                      help="runs at a time (each gets cores / jobs threads)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive whole number")
    return value


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
