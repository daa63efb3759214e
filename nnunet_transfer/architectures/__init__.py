"""Network architectures: the seven extra networks and their shared contract (common.py), their
registry, the encoder / decoder / head split every strategy relies on (parts.py), and the one
checkpoint type that reads a saved network and rebuilds it (checkpoint.py; one reader module
per format users bring: model_folder, checkpoint_v1 + plans_v1, checkpoint_nnssl, all loading
through safe_loading)."""

from nnunet_transfer.architectures.parts import NetworkParts, partition, unwrap

__all__ = ["NetworkParts", "partition", "unwrap"]
