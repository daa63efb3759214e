"""Network architectures: the seven extra networks and their shared contract (common.py), their
registry, and the encoder / decoder / head split every strategy relies on (parts.py). Reading a
saved network back is `nnunet_transfer.checkpoints`."""

from nnunet_transfer.architectures.parts import NetworkParts, partition, unwrap

__all__ = ["NetworkParts", "partition", "unwrap"]
