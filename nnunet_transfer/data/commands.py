"""The data subcommands of `nnunet-transfer`: convert-msd, convert, pool, degrade, splits, and
make-synthetic.

`register(subparsers)` adds the first five to the main parser, `register_examples` the last;
each sets `func` to its handler, which raises UserError for a user's mistake (cli.main prints
it and exits with status 2).
"""

from __future__ import annotations

import argparse
import os

from nnunet_transfer.arguments import add_command
from nnunet_transfer.errors import UserError

_NEXT = ("next: nnUNetv2_plan_and_preprocess -d {id} -c 3d_fullres --verify_dataset_integrity")


def _raw_folder(args, why: str = " (nnU-Net's raw data folder)") -> str:
    raw = args.raw or os.environ.get("nnUNet_raw")
    if not raw:
        raise UserError(f"give --raw or export nnUNet_raw{why}")
    return raw


def _tolerance(args):
    from nnunet_transfer.data.geometry import GeometryTolerance
    if not args.max_shift >= 0:
        raise UserError(f"--max-shift {args.max_shift}: a distance in voxels, >= 0")
    return GeometryTolerance(args.max_shift)


def _print_report(report, dataset_id: int) -> None:
    print(report.summary())
    print(_NEXT.format(id=dataset_id))


def _cmd_convert_msd(args):
    from nnunet_transfer.data.msd import convert_msd, msd_task_name
    from nnunet_transfer.data.labels import parse_channel_names, parse_label_names
    from nnunet_transfer.data.raw_dataset import dataset_folder
    if not os.path.isdir(args.source):
        raise UserError(f"the MSD task folder {args.source} does not exist (it should hold "
                        "imagesTr/ and labelsTr/)")
    name = args.name or msd_task_name(args.source)
    if not name:
        raise UserError(f"cannot tell the dataset name from {args.source}; give --name")
    out = dataset_folder(_raw_folder(args), args.id, name)
    report = convert_msd(args.source, out,
                         parse_label_names(args.label_names) if args.label_names else None,
                         parse_channel_names(args.channels) if args.channels else None,
                         _tolerance(args))
    _print_report(report, args.id)


def _cmd_convert(args):
    from nnunet_transfer.data.convert import ConversionSettings, convert_cases
    from nnunet_transfer.data.labels import parse_channel_names, parse_label_names, \
        resolve_label_map
    from nnunet_transfer.data.raw_dataset import dataset_folder
    from nnunet_transfer.data.sources import find_pairs_in_csv, find_pairs_in_folder
    from nnunet_transfer.data.volumes import Hdf5Layout
    if bool(args.folder) == bool(args.csv):
        raise UserError("give either --folder (with --images and --label) or --csv")
    labels = parse_label_names(args.label_names)
    channels = parse_channel_names(args.channels)
    if args.folder:
        if not args.images or not args.label:
            raise UserError("--folder needs --images TEMPLATE [TEMPLATE ...] and --label "
                            "TEMPLATE, e.g. --images 'img/{case}.nrrd' --label "
                            "'seg/{case}.nrrd'")
        found = find_pairs_in_folder(args.folder, args.images, args.label, args.prefix_site)
        source = args.folder
    else:
        found = find_pairs_in_csv(args.csv, args.prefix_site)
        source = args.csv
    if args.label_map:
        mapping = dict(_pair(item, "--label-map") for item in args.label_map)
        label_map = resolve_label_map(mapping, None, labels, "--label-map")
        for case in found.cases:
            case.label_map = label_map
    hdf5 = None
    if args.h5_spacing is not None:
        if len(args.h5_spacing) != 3 or min(args.h5_spacing) <= 0:
            raise UserError(f"--h5-spacing {args.h5_spacing}: three spacings > 0 in mm, one per "
                            "array axis in storage order")
        hdf5 = Hdf5Layout(args.h5_image_key, args.h5_label_key, tuple(args.h5_spacing))
    elif (args.h5_image_key, args.h5_label_key) != ("image", "label"):
        hdf5 = Hdf5Layout(args.h5_image_key, args.h5_label_key)
    out = dataset_folder(_raw_folder(args), args.id, args.name)
    settings = ConversionSettings(labels, channels, _tolerance(args), hdf5)
    _print_report(convert_cases(found, out, settings, args.name, source), args.id)


def _pair(item: str, option: str) -> tuple[str, str]:
    source, sep, target = item.partition("=")
    if not sep or not source.strip() or not target.strip():
        raise UserError(f"{option} {item!r}: give SOURCE=TARGET, e.g. 4=3 or 2=tumour")
    return source.strip(), target.strip()


def _cmd_pool(args):
    from nnunet_transfer.data.pooling import load_spec, pool_datasets
    from nnunet_transfer.data.raw_dataset import dataset_folder
    raw = _raw_folder(args)
    out = dataset_folder(raw, args.id, args.name)
    _print_report(pool_datasets(load_spec(args.spec), raw, out, args.spec), args.id)


def _cmd_degrade(args):
    from nnunet_transfer.data.domain_shift import degrade_dataset
    from nnunet_transfer.data.raw_dataset import dataset_folder, find_dataset
    from nnunet_transfer.data.synthetic import Domain
    raw = _raw_folder(args)
    source = find_dataset(raw, args.d)
    out = dataset_folder(raw, args.id, args.name)
    if os.path.abspath(out) == os.path.abspath(source):
        raise UserError("--id/--name name the source dataset itself; the copy needs its own")
    domain = Domain(contrast=args.contrast, noise=args.noise, blur_sigma=args.blur,
                    bias=args.bias)
    _print_report(degrade_dataset(source, out, domain, args.seed, args.site), args.id)


def _splits_folders(args) -> tuple[str, str]:
    from nnunet_transfer.data.raw_dataset import find_dataset
    source = find_dataset(args.raw or os.environ.get("nnUNet_raw"), args.d)
    out = args.out
    if not out:
        preprocessed = os.environ.get("nnUNet_preprocessed")
        if not preprocessed:
            raise UserError("give --out or export nnUNet_preprocessed (the splits go where "
                            "nnU-Net reads them: $nnUNet_preprocessed/DatasetXXX_Name)")
        out = os.path.join(preprocessed, os.path.basename(os.path.normpath(source)))
    return source, out


def _cmd_few_shot(args):
    from nnunet_transfer.data.splits import few_shot_splits
    source, out = _splits_folders(args)
    print(few_shot_splits(source, out, args.n, args.seeds, args.test_count, args.test_seed,
                          args.test_file, args.sites, args.max_val, args.force).summary())


def _cmd_cross_site(args):
    from nnunet_transfer.data.splits import cross_site_splits
    source, out = _splits_folders(args)
    print(cross_site_splits(source, out, args.test_site, args.train_sites, args.val_fraction,
                            args.seed, force=args.force).summary())


def _cmd_loso(args):
    from nnunet_transfer.data.splits import cross_site_splits
    source, out = _splits_folders(args)
    print(cross_site_splits(source, out, None, None, args.val_fraction, args.seed,
                            args.test_count, args.test_seed, args.test_file,
                            args.force).summary())


def _cmd_synthetic(args):
    from nnunet_transfer.data.synthetic import LOW_QUALITY_DOMAIN, SOURCE_DOMAIN, \
        write_synthetic_dataset
    folder = write_synthetic_dataset(
        _raw_folder(args, why=""), args.id, args.name, num_training=args.cases,
        num_test=args.test_cases, shape=tuple(args.shape),
        domain=LOW_QUALITY_DOMAIN if args.low_quality else SOURCE_DOMAIN, with_core=args.core,
        seed=args.seed)
    print(folder)


def _target_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--id", type=int, required=True, help="id of the dataset to write")
    parser.add_argument("--raw", default=None, help="nnU-Net raw folder (default $nnUNet_raw)")


def _check_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-shift", type=float, default=0.1, metavar="VOXELS",
                        help="largest misalignment between image and label grids (spacing, "
                             "origin and direction together), in voxels (default 0.1)")


def _test_list_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--test-count", type=int, default=None,
                        help="draw this many held-out test cases")
    parser.add_argument("--test-seed", type=int, default=0, help="seed of that draw (0)")
    parser.add_argument("--test-file", default=None,
                        help="held-out test cases: a JSON list or one case id per line")


def register(subparsers) -> None:
    """Add convert-msd, convert, pool, degrade and splits to `subparsers`."""
    msd = add_command(
        subparsers, "convert-msd", _cmd_convert_msd,
        help="convert a Medical Segmentation Decathlon task folder",
        description="Convert an MSD task folder (imagesTr/, labelsTr/, optional imagesTs/ and "
                    "dataset.json) to nnU-Net's raw format. 4D images are split into channels. "
                    "Unpaired or faulty cases are reported and skipped; a re-run converts only "
                    "what changed.")
    msd.add_argument("source", help="the task folder, e.g. Task04_Hippocampus")
    _target_options(msd)
    msd.add_argument("--name", default=None,
                     help="dataset name (default: from dataset.json or TaskNN_Name)")
    msd.add_argument("--label-names", "--labels", dest="label_names", nargs="+", default=None,
                     metavar="NAME[=VALUE]",
                     help="label names (default: MSD's dataset.json); --labels is the old, "
                          "deprecated spelling")
    msd.add_argument("--channels", nargs="+", default=None, metavar="NAME",
                     help="channel names, e.g. MRI or CT (default: MSD's dataset.json)")
    _check_options(msd)

    conv = add_command(
        subparsers, "convert", _cmd_convert, help="convert any folder or CSV of image/label pairs",
        description="Convert image/label pairs (NIfTI, NRRD, MHA, HDF5) to nnU-Net's raw "
                    "format. Pairs come from path templates with {case} (and optionally "
                    "{site}) placeholders, or from a CSV with columns image (or image_0000, "
                    "image_0001, ...), label, and optionally case and site. Every case is "
                    "checked (channels, label values, grids); faulty ones are reported and "
                    "skipped.")
    source = conv.add_argument_group("where the pairs are")
    source.add_argument("--folder", default=None, help="folder the templates are relative to")
    source.add_argument("--images", nargs="+", default=None, metavar="TEMPLATE",
                        help="one template per channel, e.g. '{site}/img/{case}_t1.nii.gz'")
    source.add_argument("--label", default=None, metavar="TEMPLATE",
                        help="label template, e.g. '{site}/seg/{case}.nii.gz'")
    source.add_argument("--csv", default=None, help="CSV of pairs (paths relative to it)")
    source.add_argument("--prefix-site", action="store_true",
                        help="case ids become <site>_<case> (when ids repeat across sites)")
    _target_options(conv)
    conv.add_argument("--name", required=True, help="dataset name, e.g. Prostate")
    conv.add_argument("--label-names", "--labels", dest="label_names", nargs="+",
                      required=True, metavar="NAME[=VALUE]",
                      help="label names, e.g. background liver tumour (values 0, 1, 2) or "
                           "background=0 liver=1; --labels is the old, deprecated spelling")
    conv.add_argument("--channels", nargs="+", required=True, metavar="NAME",
                      help="channel names in order, e.g. T1 T2 (CT selects CT normalisation)")
    conv.add_argument("--label-map", nargs="+", default=None, metavar="SOURCE=TARGET",
                      help="map stored label values to the labels, e.g. 4=3; every stored "
                           "value must then be mapped")
    h5 = conv.add_argument_group("HDF5 files")
    h5.add_argument("--h5-image-key", default="image", help="dataset of the image (image)")
    h5.add_argument("--h5-label-key", default="label", help="dataset of the label (label)")
    h5.add_argument("--h5-spacing", type=float, nargs="+", default=None, metavar="MM",
                    help="spacing in mm of the array axes in storage order (required for HDF5)")
    _check_options(conv)

    pool = add_command(
        subparsers, "pool", _cmd_pool,
        help="pool several raw datasets into one, labels mapped to a common set",
        description="Build one dataset from several nnU-Net raw datasets. The spec (JSON or "
                    "YAML) gives 'labels' {name: value}, optionally 'channel_names' [..], and "
                    "'datasets': a list of {dataset: id|name|folder, prefix: ..., label_map: "
                    "{source label: pooled label}, site: ...}. Case ids are prefixed to stay "
                    "unique; sites go to sites.json.")
    pool.add_argument("--spec", required=True, help="the pooling spec (.json, .yaml)")
    _target_options(pool)
    pool.add_argument("--name", required=True, help="name of the pooled dataset")

    degrade = add_command(
        subparsers, "degrade", _cmd_degrade,
        help="derive a low-quality-site copy of a dataset (domain shift)",
        description="Copy a raw dataset with lower contrast, blur, a bias field and noise "
                    "(seeded per case); labels are copied unchanged. Defaults are the synthetic "
                    "low-quality domain.")
    degrade.add_argument("-d", required=True, help="source dataset: id, name or folder")
    _target_options(degrade)
    degrade.add_argument("--name", required=True, help="name of the copy")
    degrade.add_argument("--contrast", type=float, default=0.6,
                         help="factor on intensity differences around the mean (0.6)")
    degrade.add_argument("--noise", type=float, default=0.3,
                         help="Gaussian noise std, in units of the image's std (0.3)")
    degrade.add_argument("--blur", type=float, default=1.0, help="Gaussian blur sigma, voxels (1)")
    degrade.add_argument("--bias", type=float, default=0.25,
                         help="amplitude of a smooth multiplicative bias field (0.25)")
    degrade.add_argument("--seed", type=int, default=0)
    degrade.add_argument("--site", default=None, help="site name in sites.json (default: --name)")

    splits = subparsers.add_parser(
        "splits", help="few-shot and cross-site folds in nnU-Net's splits_final.json",
        description="Write splits_final.json, test_cases.json (held-out cases no fold touches) "
                    "and fold_index.json (which fold is which) into the preprocessed dataset "
                    "folder. A differing existing file is only replaced with --force.")
    kinds = splits.add_subparsers(dest="splits_kind", required=True)
    few = add_command(kinds, "few-shot", _cmd_few_shot,
                      help="a fold per training-set size n and seed (nested)")
    few.add_argument("--n", type=int, nargs="+", required=True, help="training-set sizes")
    few.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (0)")
    _test_list_options(few)
    few.add_argument("--sites", nargs="+", default=None, help="use only these sites' cases")
    few.add_argument("--max-val", type=int, default=None,
                     help="validate on at most this many of the remaining cases")
    cross = add_command(kinds, "cross-site", _cmd_cross_site,
                        help="train on some sites, test on another")
    cross.add_argument("--test-site", required=True)
    cross.add_argument("--train-sites", nargs="+", default=None,
                       help="default: every other site")
    loso = add_command(kinds, "loso", _cmd_loso, help="leave-one-site-out: one fold per site")
    _test_list_options(loso)
    for kind in (few, cross, loso):
        kind.add_argument("-d", required=True, help="dataset: id, name or raw folder")
        kind.add_argument("--raw", default=None, help="nnU-Net raw folder (default $nnUNet_raw)")
        kind.add_argument("--out", default=None,
                          help="where to write (default $nnUNet_preprocessed/DatasetXXX_Name)")
        kind.add_argument("--force", action="store_true",
                          help="replace differing existing files (kept as .bak)")
    for kind in (cross, loso):
        kind.add_argument("--val-fraction", type=float, default=0.2,
                          help="validation share of each training site (0.2)")
        kind.add_argument("--seed", type=int, default=0, help="seed of the validation draw (0)")


def register_examples(subparsers) -> None:
    """Add make-synthetic (data for the tests, the demo and trying things) to `subparsers`."""
    sy = add_command(subparsers, "make-synthetic", _cmd_synthetic,
                     help="write a synthetic dataset in nnU-Net raw format")
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
