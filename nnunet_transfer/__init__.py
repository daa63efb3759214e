"""nnunet-transfer: transfer learning as a first-class, measurable workflow in nnU-Net v2."""

__version__ = "0.1.0"
