"""Checkpoints: reading a saved network back, whatever format a user brings, and `inspect`.

- `reader`: the one `Checkpoint` type (weights, plans, the network rebuilt from them) and
  `Checkpoint.read`, which reads nnU-Net v2 checkpoints and bare state dicts itself and hands
  the other formats to their readers.
- `content`: what a format reader hands back (`Content`, the `FORMAT_*` names).
- `nnunet_v1` (+ `plans_v1`): nnU-Net v1 models as nnU-Net v2 PlainConvUNet weights and plans.
- `nnssl`: self-supervised encoders from nnssl.
- `model_folder`: where a model folder's checkpoint file lies, and what lies beside it.
- `safe_loading`: torch and pickle files read without running pickled code.
- `lfs_pointer`: a Git LFS pointer saved in place of the file, named as such.
- `network_import`: whether the network class a model's plans name is installed here.
- `plans_format`: nnU-Net 2.0-2.2 plans converted to the current format, once, quietly.
- `inspection`: `nnunet-transfer inspect`: what a checkpoint is and which strategies it feeds.
  It judges the file against the strategies and the transferred plans, so the package shares
  its layer with `training` and `planning` (see scripts/check_layering.py).
"""
