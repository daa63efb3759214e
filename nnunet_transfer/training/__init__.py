"""Training: what a transfer run does inside `nnUNetv2_train`.

- `strategies`: the strategies as data (`Strategy`: frozen parts, pretrained weights required or
  refused, learning-rate factor); one trainer class per strategy is made from them in `trainers/`.
- `budget`: the budget knobs (`KNOBS`, one table): read from the environment by the trainer,
  printed by `env`, written into a study job's environment by `Budget.environment`.
- `freezing`: freezing parts (no gradient, not in the optimizer, norms in eval mode).
- `pretrained`: loading `-pretrained_weights` tensor by tensor, with the preflight table.
- `bookkeeping`: the run's snapshots, epochs.csv and settings.json.
- `trainer`: `TransferTrainer`, the nnU-Net trainer all strategies share.
- `step_cost`: timing training steps (the benchmarks, the GPU check).
- `segmentation_loss`: nnU-Net's Dice + CE training loss in plain torch (steps without nnU-Net).
- `commands`: `env` and `strategies` on the command line.
"""
