"""The transfer-learning trainers, by the names users give `nnUNetv2_train -tr`.

nnU-Net finds them through nnUNet_extTrainer (`eval "$(nnunet-transfer env)"`): it imports this
folder's modules and takes the class of the requested name from them with getattr
(nnunetv2.utilities.find_class_by_name). So one class per strategy is made here, named by its
`trainer_name` (nnUNetTrainer_Scratch, nnUNetTrainer_FineTune, ...) and bound as a module
attribute; a strategy declared in nnunet_transfer/training/strategies.py is a trainer without
another line here. Each class only sets `strategy`; what it does is in TransferTrainer.
nnUNetTrainer_Custom has none: it reads its strategy from NNUNET_TRANSFER_STRATEGY_FILE.
Imports are absolute because nnU-Net imports this folder's modules as top-level modules.
"""

from nnunet_transfer.training.strategies import CUSTOM_TRAINER, STRATEGIES
from nnunet_transfer.training.trainer import TransferTrainer

__all__ = [strategy.trainer_name for strategy in STRATEGIES] + [CUSTOM_TRAINER]

for _strategy in STRATEGIES:
    globals()[_strategy.trainer_name] = type(_strategy.trainer_name, (TransferTrainer,), {
        "strategy": _strategy, "__module__": __name__, "__doc__": _strategy.summary})
del _strategy
globals()[CUSTOM_TRAINER] = type(CUSTOM_TRAINER, (TransferTrainer,), {
    "strategy": None, "__module__": __name__,
    "__doc__": "the strategy of the YAML file NNUNET_TRANSFER_STRATEGY_FILE names"})
