"""The demo study: the embedded default study file, small enough for a 2-core CPU.

By default on data the package makes: a synthetic source and a low-quality synthetic "second
site" target. Given the folder of MSD Task04 Hippocampus, on that: the source is most of its
cases, the target a low-quality-site copy (`degrade`) of a few others. The study file is written
into the work folder (`study.yaml`), so the demo is also an example to edit and re-run with
`nnunet-transfer study run`; `nnunet-transfer study example` prints the synthetic one. Running it
is `commands`' part (`nnunet-transfer demo`).
"""

from __future__ import annotations

import os

from nnunet_transfer.analysis.defaults import CONVERGENCE_TOLERANCE
from nnunet_transfer.atomic_files import atomic_write_bytes
from nnunet_transfer.errors import UserError

SYNTHETIC_DATASETS = """\
datasets:
  source: {id: 901, name: DemoSource, synthetic: {cases: 10, seed: 0}}
  target: {id: 902, name: DemoLowQualitySite, synthetic: {cases: 11, low_quality: true, seed: 1}}
  unseen: {id: 903, name: DemoUnseenSite, synthetic: {cases: 4, low_quality: true, seed: 7}}
"""

HIPPOCAMPUS_DATASETS = """\
datasets:
  all: {{id: 904, name: HippocampusAll, msd: {msd}}}
  held: {{id: 905, name: HippocampusHeldFromSource, subset: all, count: 15, seed: 0}}
  source: {{id: 906, name: HippocampusSource, subset: all, exclude: held}}
  target_cases: {{id: 907, name: HippocampusTargetCases, subset: held, count: 11, seed: 0}}
  target: {{id: 908, name: HippocampusLowQualitySite, degrade: target_cases, seed: 0}}
  unseen_cases: {{id: 909, name: HippocampusUnseenCases, subset: held, exclude: target_cases}}
  unseen: {{id: 910, name: HippocampusUnseenSite, degrade: unseen_cases, seed: 1}}
"""

STUDY = """\
# A transfer-learning study for `nnunet-transfer study run` (written by nnunet-transfer demo).
study: {name}
workdir: .                 # nnU-Net's raw / preprocessed / results folders and study/ go here
device: auto               # cuda when torch sees a GPU, else cpu
executor: {{kind: local, jobs: {jobs}}}   # or submitit-local, slurm (+ slurm: {{partition: ...}})

{datasets}
source: source             # pretrained on (a key of datasets, or a list of keys)
target: target             # fine-tuned on
test_cases: 6              # held-out target cases no run trains or validates on
validation_cases: 2        # nnU-Net's validation cases per run (the rest of the pool is unused)
generalization: unseen     # a second, unseen test set for the generalisation table

plans: {{identifier: nnUNetPlans, configuration: 3d_fullres,
        small: {{patch: [32, 32, 32], features: 8, max_features: 64, batch: 2, stages: 4}}}}
sizes: [3]                 # target training cases per run; `all` = the whole pool but one
seeds: [0, 1]              # each seed: another draw of the n cases and another initialisation
strategies: [Scratch, FineTune, FrozenRandomEncoder, FrozenEncoder, FrozenDecoder, HeadOnly]
architectures: [unet]      # add karimi, hrnet, unetpp, tiramisu, autofocus, vnet, weatheritt
budget: {{epochs: {epochs}, iterations: {iters}, val_iterations: 2, snapshot_every: 1,
         source_epochs: {source_epochs}}}
analyses: [convergence, evolution, similarity, reuse, weights]
analysis: {{blocks: 8, voxels_per_block: 2048, tolerance: {tolerance}}}
"""


def study_text(name: str, epochs: int = 8, iters: int = 25, jobs: int = 2,
               hippocampus: str | None = None) -> str:
    datasets = HIPPOCAMPUS_DATASETS.format(msd=os.path.abspath(hippocampus)) if hippocampus \
        else SYNTHETIC_DATASETS
    return STUDY.format(name=name, jobs=jobs, datasets=datasets.rstrip("\n"), epochs=epochs,
                        iters=iters, source_epochs=2 * epochs,
                        tolerance=CONVERGENCE_TOLERANCE)


def example_study() -> str:
    return study_text("my_study")


def write_demo_study(workdir: str, epochs: int = 8, iters: int = 25, jobs: int = 2,
                     hippocampus: str | None = None) -> str:
    """Write <workdir>/study.yaml, or keep it when it exists with the same text (a re-run
    continues the same study); returns its path."""
    if hippocampus and not os.path.isdir(os.path.join(hippocampus, "imagesTr")):
        raise UserError(f"--hippocampus {hippocampus}: not an MSD task folder (no imagesTr/); "
                        "give the Task04_Hippocampus folder")
    path = os.path.join(os.path.abspath(workdir), "study.yaml")
    text = study_text("demo_hippocampus" if hippocampus else "demo", epochs, iters, jobs,
                      hippocampus)
    if os.path.isfile(path):
        with open(path) as f:
            if f.read() != text:
                raise UserError(f"{path} exists with other settings (an earlier demo with "
                                "another budget or data); use another --workdir, or run that "
                                f"study with `nnunet-transfer study run {path}`")
    else:
        atomic_write_bytes(path, text.encode())
    return path
