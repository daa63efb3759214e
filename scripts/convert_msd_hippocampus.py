"""Convert MSD Task04 Hippocampus to nnU-Net's raw format and print what was wrong with it.

    python scripts/convert_msd_hippocampus.py [--source FOLDER] [--id 4] [--raw $nnUNet_raw]

The copy in ../shared/data/msd_hippocampus has no dataset.json, so the labels and the channel
are declared here (those of MSD's own dataset.json). Re-running converts only what changed.
"""

from __future__ import annotations

import argparse
import os
import sys

from nnunet_transfer.data.msd import convert_msd
from nnunet_transfer.data.raw_dataset import dataset_folder
from nnunet_transfer.errors import UserError, exit_with_message

DEFAULT_SOURCE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                              "msd_hippocampus")
HIPPOCAMPUS_LABELS = {"background": 0, "anterior": 1, "posterior": 2}
HIPPOCAMPUS_CHANNELS = {0: "MRI"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=os.path.normpath(DEFAULT_SOURCE))
    parser.add_argument("--id", type=int, default=4)
    parser.add_argument("--name", default="Hippocampus")
    parser.add_argument("--raw", default=os.environ.get("nnUNet_raw"),
                        help="nnU-Net raw folder (default $nnUNet_raw)")
    args = parser.parse_args(argv)
    try:
        if not args.raw:
            raise UserError("give --raw or export nnUNet_raw")
        out = dataset_folder(args.raw, args.id, args.name)
        report = convert_msd(args.source, out, HIPPOCAMPUS_LABELS, HIPPOCAMPUS_CHANNELS)
    except UserError as error:
        raise exit_with_message(error, "convert_msd_hippocampus") from None
    print(report.summary())


if __name__ == "__main__":
    main(sys.argv[1:])
