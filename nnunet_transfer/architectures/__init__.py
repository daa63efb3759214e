"""Network architectures: the seven extra networks, their shared contract (`TransferNetwork`,
transfer_network.py) and what they build from (conv_settings: the plans' layer ops;
stage_settings: per-stage kernels, strides, features and their checks; blocks: the residual
block and the U-Net decoder; analysis_layer_rules: how each picks its default analysis
layers), their registry, and the encoder / decoder / head split every strategy relies on
(parts.py). Reading a saved network back is `nnunet_transfer.checkpoints`."""

from nnunet_transfer.architectures.parts import NetworkParts, partition, unwrap

__all__ = ["NetworkParts", "partition", "unwrap"]
