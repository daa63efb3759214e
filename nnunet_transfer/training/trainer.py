"""`TransferTrainer`: nnU-Net's trainer with a transfer strategy and the run's bookkeeping.

The strategy trainers users type (`trainers/nnUNetTrainer_transfer.py`) only set `strategy`.
Everything else is nnU-Net's own training loop; this class hooks in where nnU-Net lets it:

- `initialize`: seeds the network initialisation (same seed, same init);
- `configure_optimizers`: splits the network into encoder / decoder / head (and stages),
  places the strategy's schedule in the run and sets up its phase (`_enter_phase`): what trains,
  at which learning rates, with what frozen; each epoch start moves to the next phase when it
  is due (the optimizer rebuilt, see phase_optimizer.py), and `load_checkpoint` (--c) sets up
  the phase of the checkpoint before nnU-Net loads the optimizer state into it;
- `__init__` installs the routing of `-pretrained_weights` (pretrained_routing.py), and
  `load_pretrained_weights` is where it lands,
  with a preflight report instead of nnU-Net's bare assertion;
- the epoch hooks: frozen parts kept in eval mode, per-epoch log, snapshots, settings;
- `perform_actual_validation`: skipped after training a fold-`all` (pretraining) run.
"""

from __future__ import annotations

import os
import pydoc
import random
import sys
import time
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_transfer.architectures.parts import PARTS, partition, unwrap
from nnunet_transfer.atomic_files import written_whole
from nnunet_transfer.checkpoints.reader import Checkpoint
from nnunet_transfer.errors import UserError, user_errors_exit
from nnunet_transfer.training.adapter_files import AdapterFiles
from nnunet_transfer.training.bookkeeping import RunRecord, package_versions, read_run_checkpoint
from nnunet_transfer.training.budget import Budget
from nnunet_transfer.training.freezing import activate_zero_initialised_norms
from nnunet_transfer.training.low_rank import has_adapters, merged_state_dict
from nnunet_transfer.training.phase_optimizer import PhasePolyLR, describe_groups, phase_optimizer
from nnunet_transfer.training.pretrained_routing import (
    install_pretrained_routing, route_pretrained_weights_of)
from nnunet_transfer.training.pretrained import (
    PRETRAINED, apply_load, frozen_part_refusal, plan_load, refusal_message)
from nnunet_transfer.training.schedule import ResolvedPhase, phase_at
from nnunet_transfer.training.selection import set_up_phase, wholly_frozen_parts
from nnunet_transfer.training.strategies import SCRATCH, Pretrained, Strategy
from nnunet_transfer.training.strategy_file import read_strategy_file

# nnU-Net's default initial learning rate, the base of every strategy's lr_factor.
NNUNET_INITIAL_LR = 1e-2


def architecture_has_deep_supervision(class_name: str) -> bool:
    """False for the extra architectures without deep supervision, True for all others
    (nnU-Net's U-Nets)."""
    network_class = pydoc.locate(class_name)
    return bool(getattr(network_class, "has_deep_supervision", True))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class TransferTrainer(nnUNetTrainer):
    strategy: Strategy | None = SCRATCH   # None: read from NNUNET_TRANSFER_STRATEGY_FILE

    @user_errors_exit
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        # before nnU-Net's run_training loads -pretrained_weights into this trainer's network
        install_pretrained_routing()
        continuing = bool(plans.get("continue_training"))  # nnU-Net's --c; popped by super()
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.record = RunRecord(self.output_folder)
        self.budget = Budget.from_environment(recorded=self._recorded_budget(continuing))
        if self.strategy is None:
            self.strategy = read_strategy_file(self.budget.strategy_file)
        if self.device.type == "cpu" and self.budget.cpu_threads:
            # nnUNetv2_train gives a CPU run every core; runs side by side would then
            # oversubscribe the cores, which slows OpenMP down many times over.
            torch.set_num_threads(self.budget.cpu_threads)
        self.num_epochs = self.budget.epochs or self.num_epochs
        self.num_iterations_per_epoch = self.budget.iters or self.num_iterations_per_epoch
        self.num_val_iterations_per_epoch = (self.budget.val_iters
                                             or self.num_val_iterations_per_epoch)
        self.initial_lr = (self.budget.lr if self.budget.lr is not None
                           else NNUNET_INITIAL_LR * self.strategy.lr_factor)
        # nnU-Net always trains with deep supervision; an extra architecture whose original
        # has none is trained on its full-resolution output alone, as its paper did.
        self.enable_deep_supervision = architecture_has_deep_supervision(
            self.configuration_manager.network_arch_class_name)
        self.parts = None
        self.phases: tuple[ResolvedPhase, ...] = ()
        self.phase: ResolvedPhase | None = None
        self._frozen_modules: list[torch.nn.Module] = []
        # Adapters change the network's state-dict keys: they are added once the pretrained
        # weights are in (on_train_start), or by load_checkpoint for --c.
        self._adapters_allowed = False
        self.adapter_files = AdapterFiles(self.record)
        self.pretrained_report = None
        self._epoch_rows: list[dict] = []
        self._train_started = 0.0
        self._train_time = 0.0
        self.bookkeeping_time = 0.0  # seconds spent in this class's own work, for the benchmark

    @contextmanager
    def _bookkeeping(self):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.bookkeeping_time += time.perf_counter() - started

    def _recorded_budget(self, continuing: bool) -> Budget | None:
        """A continued run keeps the budget it started with (epochs, LR, seed...), so that a
        --c from a fresh shell does not fall back to 1000 epochs; knobs set now still win."""
        if not continuing or not os.path.isfile(self.record.settings_path):
            return None
        return Budget(**self.record.read_settings()["budget"])

    # -- network, freezing, optimizer ------------------------------------------------------------
    def initialize(self):
        seed_everything(self.budget.seed)
        super().initialize()
        route_pretrained_weights_of(self.network, self)

    @user_errors_exit
    def configure_optimizers(self):
        self.parts = partition(self.network)
        self.phases = self.strategy.schedule.resolve(self.num_epochs, {
            part: len(self.parts.stage_modules(part)) for part in PARTS})
        optimizer, scheduler = self._enter_phase(phase_at(self.phases, self.current_epoch))
        if self.strategy.pretrained is Pretrained.REFUSED:
            # frozen at their random init for good: see activate_zero_initialised_norms
            for part in wholly_frozen_parts(self.parts):
                activate_zero_initialised_norms(self.parts, part)
        return optimizer, scheduler

    def _enter_phase(self, phase: ResolvedPhase, previous=None):
        """Set the network up for `phase`; return nnU-Net's optimizer and LR schedule for it
        (momentum of `previous`, the last phase's optimizer, carried over)."""
        groups, self._frozen_modules = set_up_phase(
            self.network, self.parts, phase, self.budget.lora_rank, self.budget.layerwise_decay,
            self.budget.seed, adapters_allowed=self._adapters_allowed)
        if not groups:
            raise UserError(f"phase {phase.name!r} of strategy {self.strategy.name} trains no "
                            "parameter of this network; give it a rule that selects some")
        self.phase = phase
        optimizer = phase_optimizer(groups, self.initial_lr, self.weight_decay, previous)
        return optimizer, PhasePolyLR(optimizer, self.initial_lr, self.num_epochs, phase)

    def _move_to_phase(self, phase: ResolvedPhase, carry_momentum: bool) -> None:
        self.optimizer, self.lr_scheduler = self._enter_phase(
            phase, self.optimizer if carry_momentum else None)
        if self.local_rank == 0 and self.parts is not None:
            self.print_to_log_file(f"Phase {phase.name} (epochs {phase.start} to {phase.end - 1})"
                                   f": {self._describe_groups()}")

    def _describe_groups(self) -> str:
        return describe_groups(self.optimizer)

    @user_errors_exit
    def load_checkpoint(self, filename_or_checkpoint) -> None:
        """nnU-Net's, into the phase the checkpoint's optimizer state belongs to (that of its
        last finished epoch); with adapters, base and adapters from their own files."""
        if not self.was_initialized:
            self.initialize()
        checkpoint = filename_or_checkpoint
        if isinstance(checkpoint, str):
            checkpoint = read_run_checkpoint(checkpoint, self.device)
        self._adapters_allowed = True
        self._move_to_phase(phase_at(self.phases, max(0, checkpoint["current_epoch"] - 1)),
                            carry_momentum=False)
        if not has_adapters(self.network):
            return super().load_checkpoint(filename_or_checkpoint)
        # nnU-Net's load_checkpoint reads only files: the adapted weights go through one
        with self.adapter_files.adapted_checkpoint(self.network, filename_or_checkpoint,
                                                   checkpoint) as adapted:
            super().load_checkpoint(adapted)

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's, written whole or not at all: a job ended while saving (scancel, a time
        limit, preemption) keeps its previous checkpoint for --c, not a truncated one. With
        adapters, the merged weights in it and the adapters beside it."""
        adapters = (has_adapters(self.network) and self.local_rank == 0
                    and not self.disable_checkpointing)   # nnU-Net writes nothing otherwise
        with (self.adapter_files.merged_state_while_saving(self.network) if adapters
              else nullcontext()), written_whole(filename) as partial:
            super().save_checkpoint(partial)
        if adapters:
            self.adapter_files.save(self.network, filename)

    # -- pretrained weights ------------------------------------------------------------------------
    @user_errors_exit
    def load_pretrained_weights(self, path: str) -> None:
        name = type(self).__name__
        if self.strategy.pretrained is Pretrained.REFUSED:
            alternative = ("nnUNetTrainer_FineTune" if not self.strategy.frozen_parts
                           else "nnUNetTrainer_FrozenEncoder")
            raise UserError(
                f"{name} ({self.strategy.summary}) does not take -pretrained_weights. Drop "
                f"-pretrained_weights, or use {alternative} to start from {path}.")
        report = plan_load(self.network, self.parts, Checkpoint.read(path, PRETRAINED),
                           num_input_channels=self.num_input_channels,
                           target_dataset_json=self.dataset_json,
                           load=self.budget.load, head=self.budget.head)
        if report.problems:  # none of the encoder's weights loaded: not the source's network
            raise UserError(refusal_message(
                report, self._describe_run(), self.configuration_manager.network_arch_class_name))
        for part in sorted(self.strategy.frozen_parts):
            if not report.fully_loaded(part):
                raise UserError(frozen_part_refusal(name, part, report))
        apply_load(self.network, report)
        self.pretrained_report = report
        self.print_to_log_file(report.table(), add_timestamp=False)

    def _describe_run(self) -> str:
        return (f"{self.plans_manager.dataset_name}, plans {self.plans_manager.plans_name}, "
                f"configuration {self.configuration_name}")

    # -- the training loop's hooks ------------------------------------------------------------------
    @user_errors_exit
    def on_train_start(self):
        fresh = self.current_epoch == 0
        if "-pretrained_weights" in sys.argv and self.pretrained_report is None:
            raise UserError(
                "-pretrained_weights did not reach the transfer trainer; start training with the "
                "nnUNetv2_train command (python -m nnunetv2.run.run_training bypasses it)")
        if (fresh and self.strategy.pretrained is Pretrained.REQUIRED
                and self.pretrained_report is None):
            raise UserError(
                f"{type(self).__name__} ({self.strategy.summary}) needs the source network: add "
                "-pretrained_weights <source fold folder>/checkpoint_final.pth (without --c: "
                "nnU-Net loads weights only into a new run), and train with the source's plans "
                "(nnunet-transfer plans-transfer --help).")
        if not self.was_initialized:   # nnU-Net initialises here when nothing was loaded
            self.initialize()
        if not self._adapters_allowed:
            self._adapters_allowed = True
            if self.phase.adapters:
                self._move_to_phase(self.phase, carry_momentum=False)
        super().on_train_start()
        if self.local_rank != 0:
            return
        with self._bookkeeping():
            self._epoch_rows = self.record.keep_epochs_before(self.current_epoch)
            if fresh:
                self.record.clear_snapshots()  # of an earlier run in this folder
                self._save_snapshot(0)
                self.record.write_settings(self._settings())
            else:
                settings = self.record.read_settings()
                settings.setdefault("resumed_at_epoch", []).append(self.current_epoch)
                self.record.write_settings(settings)
        counts = self.parts.parameter_counts()
        self.print_to_log_file(
            f"Strategy {self.strategy.name}: {self.strategy.summary}. Initial LR {self.initial_lr}, "
            f"seed {self.budget.seed}. Phase {self.phase.name}: {self._describe_groups()}. "
            "Parameters trainable / frozen: " + ", ".join(
                f"{p} {c['trainable']} / {c['frozen']}" for p, c in counts.items()))

    @user_errors_exit
    def on_train_epoch_start(self):
        with self._bookkeeping():
            phase = phase_at(self.phases, self.current_epoch)
            if phase != self.phase:
                self._move_to_phase(phase, carry_momentum=True)
        super().on_train_epoch_start()
        with self._bookkeeping():
            for module in self._frozen_modules:  # network.train() switched them to train
                module.eval()
        self._train_started = time.perf_counter()

    def on_train_epoch_end(self, train_outputs):
        self._train_time = time.perf_counter() - self._train_started
        super().on_train_epoch_end(train_outputs)

    def on_epoch_end(self):
        epoch = self.current_epoch
        super().on_epoch_end()
        if self.local_rank != 0:
            return
        with self._bookkeeping():
            self._log_epoch(epoch)
            epochs_done = epoch + 1
            every = self.budget.snapshot_every
            if every and epochs_done % every == 0 and epochs_done != self.num_epochs:
                self._save_snapshot(epochs_done)

    def on_train_end(self):
        super().on_train_end()
        if self.local_rank != 0:
            return
        with self._bookkeeping():
            self._save_snapshot(self.current_epoch)
            settings = self.record.read_settings()
        last = self._epoch_rows[-1] if self._epoch_rows else {}
        settings.update(finished=_now(), epochs_done=self.current_epoch,
                        cumulative_train_time_s=float(last.get("cumulative_train_time_s", 0)),
                        cumulative_time_s=float(last.get("cumulative_time_s", 0)),
                        bookkeeping_time_s=round(self.bookkeeping_time, 4))
        self.record.write_settings(settings)

    def perform_actual_validation(self, save_probabilities: bool = False):
        # Fold `all` validates on its own training cases: on a real source that is most of the
        # pretraining job's time for a number nobody reads. The weights are saved before this
        # (checkpoint_final), so skipping it changes nothing else; --val still validates.
        if self.fold == "all" and "--val" not in sys.argv:
            self.print_to_log_file("Fold 'all': nnU-Net's final validation (on the training "
                                   "cases) skipped; run nnUNetv2_train ... all --val for it.")
            return
        super().perform_actual_validation(save_probabilities)

    # -- bookkeeping -------------------------------------------------------------------------------
    def _log_epoch(self, epoch: int) -> None:
        value = self.logger.get_value
        previous = self._epoch_rows[-1] if self._epoch_rows else None

        def so_far(column: str, now: float) -> float:
            return now + (float(previous[column]) if previous else 0.0)

        epoch_time = value("epoch_end_timestamps", epoch) - value("epoch_start_timestamps", epoch)
        row = {
            "epoch": epoch,
            "iterations": int(so_far("iterations", self.num_iterations_per_epoch)),
            "train_loss": float(value("train_losses", epoch)),
            "val_loss": float(value("val_losses", epoch)),
            "pseudo_dice": float(value("mean_fg_dice", epoch)),
            "ema_pseudo_dice": float(value("ema_fg_dice", epoch)),
            "learning_rate": float(value("lrs", epoch)),
            "phase": self.phase.name,
            "train_time_s": round(self._train_time, 4),
            "epoch_time_s": round(epoch_time, 4),
            "cumulative_train_time_s": round(so_far("cumulative_train_time_s", self._train_time), 4),
            "cumulative_time_s": round(so_far("cumulative_time_s", epoch_time), 4),
        }
        self.record.append_epoch(row)
        self._epoch_rows.append(row)

    def _save_snapshot(self, epochs_done: int) -> None:
        if not self.disable_checkpointing:
            path = self.record.save_snapshot(epochs_done, self._snapshot(epochs_done))
            if has_adapters(self.network):
                self.adapter_files.save(self.network, path, with_base=False)

    def _snapshot(self, epochs_done: int) -> dict:
        weights = (merged_state_dict(self.network) if has_adapters(self.network)
                   else unwrap(self.network).state_dict())
        return {
            "network_weights": weights,
            "init_args": self.my_init_kwargs,
            "trainer_name": type(self).__name__,
            "current_epoch": epochs_done,
            "inference_allowed_mirroring_axes": self.inference_allowed_mirroring_axes,
            "strategy": self.strategy.name,
        }

    def _settings(self) -> dict:
        return {
            "strategy": self.strategy.name,
            "trainer": type(self).__name__,
            "summary": self.strategy.summary,
            "frozen_parts": sorted(self.strategy.frozen_parts),
            "schedule": self.strategy.as_json(),
            "phases": [phase.as_json() for phase in self.phases],
            "layerwise_decay": self.budget.layerwise_decay,
            "dataset": self.plans_manager.dataset_name,
            "plans": self.plans_manager.plans_name,
            "configuration": self.configuration_name,
            "fold": self.fold,
            "device": str(self.device),
            "initial_lr": self.initial_lr,
            "lr_rule": ("NNUNET_TRANSFER_LR" if self.budget.lr is not None
                        else f"{NNUNET_INITIAL_LR} x {self.strategy.lr_factor}"),
            "weight_decay": self.weight_decay,
            "num_epochs": self.num_epochs,
            "iterations_per_epoch": self.num_iterations_per_epoch,
            "val_iterations_per_epoch": self.num_val_iterations_per_epoch,
            "batch_size": self.configuration_manager.batch_size,
            "patch_size": list(self.configuration_manager.patch_size),
            "budget": self.budget.as_dict(),
            "pretrained": self.pretrained_report.as_json() if self.pretrained_report else None,
            "parameters": self.parts.parameter_counts(),
            "versions": package_versions(),
            "started": _now(),
        }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
