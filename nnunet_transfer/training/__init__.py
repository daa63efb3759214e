"""Transfer strategies, weight transfer and the bookkeeping of a training run; `commands` adds
`env` (the exports that let nnU-Net find the trainers, with the budget knobs) and `strategies`
to the CLI."""
