"""Which source to fine-tune from, before any fine-tuning: `rank_sources` scores candidate
models on a target's labelled training cases (compatibility, LogME of the decoder's features,
Dice as is) and ranks them; `nnunet-transfer rank-sources` is its command."""
