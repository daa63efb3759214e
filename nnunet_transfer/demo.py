"""`nnunet-transfer demo`: a small, real transfer study on CPU with no data to download.

A synthetic source dataset and a low-quality "second site" target with few training cases are
generated; the source is planned and pretrained with nnUNetTrainer_Scratch; the target is
preprocessed with the source's plans; every strategy is trained on the target and predicts its
held-out test cases with nnUNetv2_predict; the test Dice and the training time of each strategy
are tabulated in <workdir>/report.md. Every step runs the real nnU-Net command in a subprocess
and is skipped when its output already exists, so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from nnunet_transfer.data.synthetic import LOW_QUALITY_DOMAIN, write_synthetic_dataset
from nnunet_transfer.errors import UserError
from nnunet_transfer.training.strategies import ALL_STRATEGIES, Pretrained

SOURCE_ID, TARGET_ID = 901, 902
SOURCE, TARGET = f"Dataset{SOURCE_ID}_DemoSource", f"Dataset{TARGET_ID}_DemoLowQualitySite"
SMALL_PLANS = "nnUNetPlansSmallCPU"
TRANSFERRED_PLANS = f"{SMALL_PLANS}_from{SOURCE_ID}"


class Demo:
    def __init__(self, workdir: str, epochs: int, iters: int, source_epochs: int):
        self.workdir = os.path.abspath(workdir)
        self.epochs, self.iters, self.source_epochs = epochs, iters, source_epochs
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("NNUNET_TRANSFER_")}
        self.env.update(nnUNet_raw=self.path("raw"), nnUNet_preprocessed=self.path("preprocessed"),
                        nnUNet_results=self.path("results"), nnUNet_compile="f",
                        nnUNet_def_n_proc="1", NNUNET_TRANSFER_SEED="0",
                        NNUNET_TRANSFER_SNAPSHOT_EVERY="1", NNUNET_TRANSFER_VAL_ITERS="2")
        from nnunet_transfer.discovery import trainers_folder
        self.env["nnUNet_extTrainer"] = trainers_folder()

    def path(self, *parts: str) -> str:
        return os.path.join(self.workdir, *parts)

    def run(self, *command: str, **extra_env: str) -> None:
        binary = os.path.join(os.path.dirname(sys.executable), command[0])
        binary = binary if os.path.exists(binary) else shutil.which(command[0]) or command[0]
        print("$ " + " ".join(command), flush=True)
        log = self.path("logs", f"{int(time.time() * 1000)}_{command[0]}.log")
        os.makedirs(os.path.dirname(log), exist_ok=True)
        with open(log, "w") as out:
            try:
                result = subprocess.run([binary, *command[1:]], env={**self.env, **extra_env},
                                        stdout=out, stderr=subprocess.STDOUT)
            except FileNotFoundError:
                raise UserError(f"{command[0]} is not installed in this environment; install "
                                "the package with its dependencies (make setup)") from None
        if result.returncode != 0:
            tail = open(log).read()[-3000:]
            raise UserError(f"{command[0]} failed (exit {result.returncode}); its log is {log}:\n"
                            f"{tail}")

    def fold(self, dataset: str, trainer: str, plans: str) -> str:
        return self.path("results", dataset, f"{trainer}__{plans}__3d_fullres", "fold_0")

    def prepare_data(self) -> None:
        if not os.path.isdir(self.path("raw", SOURCE)):
            write_synthetic_dataset(self.path("raw"), SOURCE_ID, "DemoSource", num_training=10,
                                    seed=0)
        if not os.path.isdir(self.path("raw", TARGET)):
            write_synthetic_dataset(self.path("raw"), TARGET_ID, "DemoLowQualitySite",
                                    num_training=4, num_test=6, domain=LOW_QUALITY_DOMAIN, seed=1)
        # splits_final.json is written last: its presence marks a finished step.
        if not os.path.isfile(self.path("preprocessed", SOURCE, "splits_final.json")):
            self.run("nnUNetv2_plan_and_preprocess", "-d", str(SOURCE_ID), "-c", "3d_fullres",
                     "-np", "2", "--verify_dataset_integrity")
            self.run("nnunet-transfer", "small-plans", "-d", str(SOURCE_ID))
            self._write_split(SOURCE)
        if not os.path.isfile(self.path("preprocessed", TARGET, "splits_final.json")):
            self.run("nnunet-transfer", "plans-transfer", "--source", str(SOURCE_ID), "--target",
                     str(TARGET_ID), "-p", SMALL_PLANS)
            self._write_split(TARGET)

    def _write_split(self, dataset: str) -> None:
        # One fold with one validation case keeps nnU-Net's final validation short.
        cases = sorted(f[:-7] for f in os.listdir(self.path("preprocessed", dataset,
                                                            "gt_segmentations")))
        with open(self.path("preprocessed", dataset, "splits_final.json"), "w") as f:
            json.dump([{"train": cases[1:], "val": cases[:1]}], f)

    def train(self, dataset_id: int, dataset: str, trainer: str, plans: str, epochs: int,
              pretrained: str | None = None) -> str:
        fold = self.fold(dataset, trainer, plans)
        if not os.path.isfile(os.path.join(fold, "checkpoint_final.pth")):
            extra = ["-pretrained_weights", pretrained] if pretrained else []
            self.run("nnUNetv2_train", str(dataset_id), "3d_fullres", "0", "-p", plans, "-tr",
                     trainer, "-device", "cpu", *extra, NNUNET_TRANSFER_EPOCHS=str(epochs),
                     NNUNET_TRANSFER_ITERS=str(self.iters), nnUNet_n_proc_DA="0")
        return fold

    def predict_and_score(self, trainer: str) -> float:
        out = self.path("predictions", trainer)
        if not os.path.isfile(os.path.join(out, "summary.json")):
            self.run("nnUNetv2_predict", "-i", self.path("raw", TARGET, "imagesTs"), "-o", out,
                     "-d", str(TARGET_ID), "-c", "3d_fullres", "-f", "0", "-p", TRANSFERRED_PLANS,
                     "-tr", trainer, "-device", "cpu", "-npp", "1", "-nps", "1")
            from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder_simple
            compute_metrics_on_folder_simple(self.path("raw", TARGET, "labelsTs"), out, [1],
                                             num_processes=1)
        with open(os.path.join(out, "summary.json")) as f:
            return float(json.load(f)["foreground_mean"]["Dice"])

    def report(self, rows: list[dict]) -> str:
        lines = [
            "# nnunet-transfer demo",
            "",
            f"Source {SOURCE} (10 cases) pretrained {self.source_epochs} epochs x {self.iters} "
            f"iterations with nnUNetTrainer_Scratch; target {TARGET} (3 training cases, "
            f"low quality: lower contrast, noise, blur, bias field), every strategy "
            f"{self.epochs} epochs x {self.iters} iterations; Dice on the target's 6 test cases "
            "predicted with nnUNetv2_predict. Small CPU plans; one seed; a demo, not a study.",
            "",
            "| strategy | frozen | pretrained | test Dice | training time (s) | s / iteration |",
            "|---|---|---|---:|---:|---:|",
        ]
        for r in rows:
            lines.append(f"| {r['trainer']} | {r['frozen']} | {r['pretrained']} | {r['dice']:.3f} "
                         f"| {r['train_time']:.1f} | {r['per_iteration']:.3f} |")
        return "\n".join(lines) + "\n"

    def run_all(self) -> str:
        started = time.time()
        os.makedirs(self.workdir, exist_ok=True)
        self.prepare_data()
        source_fold = self.train(SOURCE_ID, SOURCE, "nnUNetTrainer_Scratch", SMALL_PLANS,
                                 self.source_epochs)
        checkpoint = os.path.join(source_fold, "checkpoint_final.pth")
        rows = []
        for strategy in ALL_STRATEGIES:
            pretrained = checkpoint if strategy.pretrained is Pretrained.REQUIRED else None
            fold = self.train(TARGET_ID, TARGET, strategy.trainer_name, TRANSFERRED_PLANS,
                              self.epochs, pretrained)
            with open(os.path.join(fold, "transfer", "settings.json")) as f:
                settings = json.load(f)
            iterations = settings["epochs_done"] * settings["iterations_per_epoch"]
            rows.append({"trainer": strategy.trainer_name,
                         "frozen": ", ".join(sorted(strategy.frozen_parts)) or "-",
                         "pretrained": "yes" if pretrained else "no",
                         "dice": self.predict_and_score(strategy.trainer_name),
                         "train_time": settings["cumulative_train_time_s"],
                         "per_iteration": settings["cumulative_train_time_s"] / iterations})
        report = self.report(rows)
        with open(self.path("report.md"), "w") as f:
            f.write(report)
        print("\n" + report)
        print(f"Demo finished in {time.time() - started:.0f} s. Report: {self.path('report.md')}")
        return self.path("report.md")


def run_demo(workdir: str, epochs: int = 8, iters: int = 25) -> str:
    return Demo(workdir, epochs=epochs, iters=iters, source_epochs=2 * epochs).run_all()
