"""Files written whole or not at all: a writer that fails or is killed mid-write leaves the
previous file as it was."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from nnunet_transfer.atomic_files import written_whole
from nnunet_transfer.errors import UserError
from nnunet_transfer.training.bookkeeping import read_run_checkpoint


def test_written_file_replaces_the_previous_one(tmp_path):
    path = str(tmp_path / "checkpoint_best.pth")
    torch.save({"epoch": 1}, path)
    with written_whole(path) as partial:
        assert os.path.dirname(partial) == str(tmp_path) and partial != path
        torch.save({"epoch": 2}, partial)
    assert torch.load(path)["epoch"] == 2 and os.listdir(tmp_path) == ["checkpoint_best.pth"]
    with written_whole(str(tmp_path / "never.pth")):
        pass   # a writer that writes nothing (nnU-Net's other ranks) leaves nothing
    assert os.listdir(tmp_path) == ["checkpoint_best.pth"]


def test_failed_or_killed_writer_leaves_the_previous_file(tmp_path):
    path = str(tmp_path / "checkpoint_best.pth")
    torch.save({"epoch": 1}, path)
    with pytest.raises(KeyboardInterrupt):
        with written_whole(path) as partial:
            with open(partial, "wb") as f:
                f.write(b"half a checkpoint")
            raise KeyboardInterrupt
    assert torch.load(path)["epoch"] == 1 and os.listdir(tmp_path) == ["checkpoint_best.pth"]
    killed = subprocess.run([sys.executable, "-c", (
        "import os, signal\n"
        "from nnunet_transfer.atomic_files import written_whole\n"
        f"with written_whole({path!r}) as partial:\n"
        "    open(partial, 'wb').write(b'half a checkpoint')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n")])
    assert killed.returncode == -9
    assert torch.load(path)["epoch"] == 1


def test_cut_off_checkpoint_is_named_with_the_way_on(tmp_path):
    path = tmp_path / "checkpoint_latest.pth"
    torch.save({"network_weights": {"w": torch.ones(100)}}, path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(UserError, match="checkpoint_latest.pth cannot be read.*cut off.*--c"):
        read_run_checkpoint(str(path), "cpu")
