"""Training: what a transfer run does inside `nnUNetv2_train`.

- `strategies`: the strategies as data (`Strategy`: pretrained weights required or refused,
  learning-rate factor, and a schedule); one trainer class per strategy is made from them in
  `trainers/`.
- `schedule`: phases and the rules that say what trains in each (`Schedule`, `Phase`, `Rule`).
- `selection`: each parameter's part, stage and kind; a network set up for one phase.
- `phase_optimizer`: nnU-Net's SGD and poly schedule with one group per LR multiplier.
- `strategy_file`: a custom strategy read from YAML (`nnUNetTrainer_Custom`).
- `adapter_files`: LoRA adapters and their untouched base saved beside nnU-Net's checkpoints.
- `budget`: the budget knobs, declared once as the fields of `Budget` (`KNOBS` lists them):
  read from the environment by the trainer, offered and printed by `env`, written into a
  study job's environment by `Budget.environment`.
- `freezing`: freezing parts (no gradient, not in the optimizer, norms in eval mode).
- `pretrained`: loading `-pretrained_weights` tensor by tensor, and when a load is refused.
- `pretrained_routing`: nnU-Net's `-pretrained_weights` sent to the transfer trainers, installed
  and checked by the trainer when nnU-Net makes it.
- `tensor_matching`: the rules that fit a checkpoint tensor to the network's (output channels by
  label name, input channels by channel name, kernels, decoder levels by resolution).
- `load_report`: each tensor's fate (loaded / adapted / fresh / unused), the preflight table.
- `bookkeeping`: the run's snapshots, epochs.csv and settings.json.
- `trainer`: `TransferTrainer`, the nnU-Net trainer all strategies share.
- `low_rank`: low-rank adapters (LoRA) on convolution weights, as torch parametrizations.
- `commands`: `env` and `strategies` on the command line.
"""
