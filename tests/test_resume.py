"""A run continued with nnU-Net's --c keeps its start and continues its log."""

import csv
import json
import os

from support.nnunet_workspace import BUDGET


def test_continued_run_keeps_epoch_zero_and_appends_to_the_log(workspace, target):
    args = ["nnUNetv2_train", str(target["id"]), "3d_fullres", "all", "-p", target["plans"],
            "-tr", "nnUNetTrainer_FrozenRandomEncoder", "-device", "cpu"]
    env = {**BUDGET, "nnUNet_n_proc_DA": "0", "NNUNET_TRANSFER_EPOCHS": "1"}
    workspace.run(*args, extra_env=env)
    folder = os.path.join(workspace.run_folder(target["name"], "nnUNetTrainer_FrozenRandomEncoder",
                                               target["plans"], fold="all"), "transfer")
    start = os.path.join(folder, "snapshots", "epoch_0000.pth")
    start_bytes = open(start, "rb").read()

    # A new shell: only the longer budget is set; iterations and seed come from the record.
    workspace.run(*args, "--c", extra_env={"nnUNet_n_proc_DA": "0", "NNUNET_TRANSFER_EPOCHS": "2"})

    assert open(start, "rb").read() == start_bytes
    rows = list(csv.DictReader(open(os.path.join(folder, "epochs.csv"))))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert [int(r["iterations"]) for r in rows] == [3, 6]
    assert float(rows[1]["cumulative_time_s"]) > float(rows[0]["cumulative_time_s"])
    settings = json.load(open(os.path.join(folder, "settings.json")))
    assert settings["resumed_at_epoch"] == [1] and settings["epochs_done"] == 2
    assert settings["budget"]["seed"] == 3 and settings["iterations_per_epoch"] == 3
    assert sorted(os.listdir(os.path.join(folder, "snapshots"))) == [
        "epoch_0000.pth", "epoch_0001.pth", "epoch_0002.pth"]

    # A checkpoint cut off mid-write (our trainers write whole ones; nnU-Net's own do not):
    # --c names it and the way on, no traceback; the file is put back for the other tests.
    final = os.path.join(os.path.dirname(folder), "checkpoint_final.pth")
    whole = open(final, "rb").read()
    with open(final, "wb") as f:
        f.write(whole[:len(whole) // 2])
    try:
        cut = workspace.run(*args, "--c", ok=False, extra_env={"nnUNet_n_proc_DA": "0"})
    finally:
        with open(final, "wb") as f:
            f.write(whole)
    assert cut.returncode == 2 and "Traceback" not in cut.stderr, cut.stderr[-3000:]
    assert "checkpoint_final.pth cannot be read" in cut.stderr
    assert not [n for n in os.listdir(os.path.dirname(folder)) if n.endswith(".partial")]
