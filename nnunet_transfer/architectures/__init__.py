"""Network architectures: the seven extra networks and their shared contract (common.py), their
registry, the encoder / decoder / head split every strategy relies on (parts.py), and the one
checkpoint type that reads a saved network and rebuilds it (checkpoint.py)."""

from nnunet_transfer.architectures.parts import NetworkParts, partition, unwrap

__all__ = ["NetworkParts", "partition", "unwrap"]
