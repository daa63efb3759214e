"""nnunet-transfer: transfer learning as a first-class, measurable workflow in nnU-Net v2.

The package is built in layers, bottom-up; a module imports from its own layer or below, and
no modules import each other in a circle (`LAYERS` in scripts/check_layering.py is the one
written order; `python scripts/check_layering.py` and `tests/test_layering.py` check every
import against it):

0. the ground floor: `errors`, `atomic_files`, `arguments` (value and argparse types),
   `devices`, `discovery` (how nnU-Net finds the trainers), `document` (the Markdown / HTML /
   table builder), `yaml_lines`
1. `architectures` (the extra networks and their contract), `data` (conversion, pooling,
   domain shift, splits, synthetic datasets)
2. `planning` (plans for transfer and small plans), `training` (strategies, budget, the
   trainer), `checkpoints` (reading saved networks in every format users bring, `inspect`)
3. `evaluation` (metrics, comparison tables, generalisation)
4. `analysis` (convergence, similarity, reuse, weight change, their figures)
5. `study` (one file describes a study; one command runs it and writes the report)
6. `cli` (composes the subcommands each area registers in its `commands` module)

The trainer classes nnU-Net discovers (`trainers/`) sit on top of all of them.
"""

__version__ = "0.1.0"
