"""The transfer-learning trainers, by the names users give `nnUNetv2_train -tr`.

nnU-Net finds them through nnUNet_extTrainer (`eval "$(nnunet-transfer env)"`). Each one only
names its strategy; what the strategies do is in nnunet_transfer/training/strategies.py.
Imports are absolute because nnU-Net imports this folder's modules as top-level modules.
"""

from nnunet_transfer.training import strategies
from nnunet_transfer.training.trainer import TransferTrainer


class nnUNetTrainer_Scratch(TransferTrainer):
    strategy = strategies.SCRATCH


class nnUNetTrainer_FineTune(TransferTrainer):
    strategy = strategies.FINE_TUNE


class nnUNetTrainer_FrozenRandomEncoder(TransferTrainer):
    strategy = strategies.FROZEN_RANDOM_ENCODER


class nnUNetTrainer_FrozenEncoder(TransferTrainer):
    strategy = strategies.FROZEN_ENCODER


class nnUNetTrainer_FrozenDecoder(TransferTrainer):
    strategy = strategies.FROZEN_DECODER


class nnUNetTrainer_FrozenDecoderAndHead(TransferTrainer):
    strategy = strategies.FROZEN_DECODER_AND_HEAD


class nnUNetTrainer_HeadOnly(TransferTrainer):
    strategy = strategies.HEAD_ONLY
