"""Training: what a transfer run does inside `nnUNetv2_train`.

- `strategies`: the strategies as data (`Strategy`: frozen parts, pretrained weights required or
  refused, learning-rate factor); one trainer class per strategy is made from them in `trainers/`.
- `budget`: the budget knobs (`KNOBS`, one table): read from the environment by the trainer,
  printed by `env`, written into a study job's environment by `Budget.environment`.
- `freezing`: freezing parts (no gradient, not in the optimizer, norms in eval mode).
- `pretrained`: loading `-pretrained_weights` tensor by tensor, with the preflight table.
- `bookkeeping`: the run's snapshots, epochs.csv and settings.json.
- `trainer`: `TransferTrainer`, the nnU-Net trainer all strategies share.
- `step_cost`: timing training steps (the benchmarks), a network set up for one phase.
- `low_rank`: low-rank adapters (LoRA) on convolution weights, as torch parametrizations.
- `commands`: `env` and `strategies` on the command line.
"""
