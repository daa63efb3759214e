"""Network architectures and the encoder / decoder / head split every strategy relies on."""

from nnunet_transfer.architectures.parts import NetworkParts, partition, unwrap

__all__ = ["NetworkParts", "partition", "unwrap"]
