"""The `plans-transfer`, `small-plans` and `add-architectures` subcommands (`register` adds
them to the CLI)."""

from __future__ import annotations

import argparse

from nnunet_transfer.architectures.registry import ARCHITECTURES
from nnunet_transfer.arguments import add_command, positive_int


def _cmd_plans_transfer(args: argparse.Namespace) -> None:
    from nnunet_transfer.planning.transfer import transfer_plans
    plans, configurations = transfer_plans(
        args.source, args.target, args.p, args.target_plans, tuple(args.c) if args.c else None,
        args.np, source_model=args.source_model)
    # -pretrained_weights takes a model folder as well as a checkpoint file.
    weights = args.source_model or "<source fold folder>/checkpoint_final.pth"
    print(f"\nThe target is preprocessed with the source's plans. Train with -p {plans}, e.g.\n"
          f"  nnUNetv2_train {args.target} {configurations[0]} 0 "
          f"-p {plans} -tr nnUNetTrainer_FineTune -pretrained_weights {weights}")


def _cmd_small_plans(args: argparse.Namespace) -> None:
    from nnunet_transfer.planning.small_plans import make_small_plans
    path = make_small_plans(args.d, args.p, args.name, args.c, args.patch, args.features,
                            args.max_features, args.batch, args.stages)
    print(f"wrote {path}; train with -p {args.name}")


def _cmd_add_architectures(args: argparse.Namespace) -> None:
    from nnunet_transfer.planning.architecture_configurations import add_architectures
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    outcome = add_architectures(args.d, args.p, only, args.c, args.replace)
    for configuration, what in outcome:
        print(f"{configuration:<28} {what}")
    example = outcome[0][0]
    print(f"\nTrain one with e.g.\n  nnUNetv2_train {args.d} {example} 0 -p {args.p} "
          f"-tr nnUNetTrainer_Scratch")


def register(subparsers) -> None:
    """Add `plans-transfer`, `small-plans` and `add-architectures` to the subparsers."""
    pt = add_command(subparsers, "plans-transfer", _cmd_plans_transfer,
                     help="preprocess a target dataset with a source dataset's or model's plans")
    source = pt.add_mutually_exclusive_group(required=True)
    source.add_argument("--source", help="source dataset id or name (planned)")
    source.add_argument("--source-model", default=None,
                        help="a model folder (nnU-Net v2: plans.json, fold_X/checkpoint_final.pth; "
                             "v1: plans.pkl, fold_X/model_final_checkpoint.model) whose plans "
                             "the target takes, so that its network is rebuilt exactly")
    pt.add_argument("--target", required=True, help="target dataset id or name")
    pt.add_argument("-p", default="nnUNetPlans", help="source plans identifier (with --source)")
    pt.add_argument("--target-plans", default=None,
                    help="identifier of the plans written for the target "
                         "(default <source plans>_from<source id>)")
    pt.add_argument("-c", nargs="+", default=None,
                    help="configurations to preprocess (default 3d_fullres; with --source-model "
                         "the model's own)")
    pt.add_argument("-np", type=positive_int, default=2, help="processes for preprocessing")

    sp = add_command(subparsers, "small-plans", _cmd_small_plans,
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

    aa = add_command(subparsers, "add-architectures", _cmd_add_architectures,
                     help="add the extra architectures to a dataset's plans as configurations")
    aa.add_argument("-d", required=True, help="dataset id or name (planned)")
    aa.add_argument("-p", default="nnUNetPlans", help="plans identifier")
    aa.add_argument("-c", default="3d_fullres",
                    help="configuration the new ones inherit from (patch, spacing, data)")
    aa.add_argument("--only", default=None,
                    help=f"comma-separated architectures (default all: {','.join(ARCHITECTURES)})")
    aa.add_argument("--replace", action="store_true",
                    help="overwrite configurations that exist and differ")
