"""The analyses' settings, declared once (`AnalysisSettings`): each setting's name, default,
option and help. The `analyze` parser is generated from it (`add_arguments`), the parsed
options are read back into it (`from_args`), and a study writes its analysis jobs' options
from it (`to_argv`), so the command line and a study file cannot disagree on a name or a
default. Options that belong to one kind alone (`--clock`, `--start`, ...) stay with the kind.

Nothing heavy is imported here: every `nnunet-transfer` command builds the parser.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field, fields

from nnunet_transfer.analysis.defaults import CONVERGENCE_TOLERANCE, DEFAULT_BLOCKS, TOLERANCE
from nnunet_transfer.arguments import argparse_type, case_ids, count_or_all, fraction, \
    positive_int
from nnunet_transfer.errors import UserError

RUN_HELP = "LABEL=FOLD_FOLDER or FOLD_FOLDER (a fold folder of a run of our trainers)"


def _measures(text: str) -> tuple[str, ...]:
    from nnunet_transfer.analysis.measure import parse_measures
    try:
        return parse_measures(text)
    except UserError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _joined(value: Sequence[str]) -> list[str]:
    return [",".join(value)]


def _words(value: Sequence[str]) -> list[str]:
    return [str(v) for v in value]


def _setting(default, help: str, type: Callable | None = None, choices: Sequence[str] = (),
             nargs: str | None = None, metavar: str | None = None,
             words: Callable[[object], list[str]] = lambda value: [str(value)]):
    """A field of `AnalysisSettings` with what its command-line option needs: its help (the
    default is appended), how argparse reads it, and how it is written back as words."""
    return field(default=default, metadata=dict(
        help=help, type=type, choices=tuple(choices), nargs=nargs, metavar=metavar, words=words))


@dataclass(frozen=True)
class AnalysisSettings:
    """The settings shared by several analysis kinds, with their defaults.

    A study file's `analysis` sets `STUDY_FILE_KEYS`; the study sets `device` to its own.
    """

    # the convergence rule
    tolerance: float = _setting(
        CONVERGENCE_TOLERANCE, "convergence: first epoch within this relative distance of the "
                               "run's maximum, a fraction (Karimi et al.)",
        type=argparse_type(TOLERANCE, "_tolerance"))
    column: str = _setting(
        "pseudo_dice", "validation score the convergence rule reads",
        choices=("pseudo_dice", "ema_pseudo_dice"))
    # the blocks, the data they come from and where the networks run
    blocks: int = _setting(
        DEFAULT_BLOCKS, "input blocks of the patch size at seeded random locations",
        type=positive_int)
    voxels_per_block: int | None = _setting(
        1000, "voxels kept per block and layer, a seeded subset, or 'all'", type=count_or_all,
        words=lambda value: ["all" if value is None else str(value)])
    seed: int = _setting(0, "seed of the blocks, voxel subsets and null networks", type=int)
    cases: tuple[str, ...] | None = _setting(
        None, "preprocessed cases the blocks come from (default: test_cases.json of the "
              "preprocessed dataset, else the validation cases of the runs' folds, else all)",
        type=case_ids, metavar="ID,ID", words=_joined)
    device: str = _setting("auto", "where networks run, auto: cuda if available",
                           choices=("cpu", "cuda", "auto"))
    # the capture
    layers: tuple[str, ...] | None = _setting(
        None, "module names (default: the architecture's 3 encoder and 3 decoder analysis "
              "layers)", nargs="+", metavar="NAME", words=_words)
    measures: tuple[str, ...] = _setting(
        ("pwcca", "svcca", "cka"), "comma-separated: pwcca (RSIM, the headline), svcca, cka",
        type=_measures, words=_joined)
    batch_size: int = _setting(2, "blocks per forward pass", type=positive_int)
    null_networks: int = _setting(
        3, "untrained networks of the null baseline, k give k(k-1)/2 pairs", type=positive_int)

    def __post_init__(self) -> None:
        if self.null_networks < 2:
            raise UserError(f"{option('null_networks')} must be at least 2 (one pair)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "AnalysisSettings":
        """The settings parsed by a parser `add_arguments` filled; the others keep their
        defaults."""
        given = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        if given.get("layers") is not None:
            given["layers"] = tuple(given["layers"])
        return cls(**given)

    def to_argv(self, names: Sequence[str]) -> list[str]:
        """The options giving these settings their values, in the order of `names`; a setting
        whose value is None (its default: the analysis chooses) is left out."""
        declared = {f.name: f for f in fields(self)}
        words: list[str] = []
        # options of several values last: they would swallow what follows them
        for name in sorted(names, key=lambda name: bool(declared[name].metadata["nargs"])):
            value = getattr(self, name)
            if value is None and declared[name].default is None:
                continue
            words += [option(name), *declared[name].metadata["words"](value)]
        return words

    def capture_options(self):
        """The `measure.CaptureOptions` of these settings."""
        from nnunet_transfer.analysis.measure import CaptureOptions
        return CaptureOptions(blocks=self.blocks, voxels_per_block=self.voxels_per_block,
                              seed=self.seed, cases=self.cases, layers=self.layers,
                              measures=self.measures, device=self.device,
                              batch_size=self.batch_size, null_networks=self.null_networks)


DEFAULT_SETTINGS = AnalysisSettings()
SETTING_NAMES = tuple(f.name for f in fields(AnalysisSettings))
# What a study file's `analysis` may set.
STUDY_FILE_KEYS = ("blocks", "voxels_per_block", "seed", "layers", "tolerance")

# The groups of settings the kinds take.
CONVERGENCE_SETTINGS = ("tolerance", "column")
DATA_SETTINGS = ("seed", "cases", "device")
CAPTURE_SETTINGS = ("blocks", "voxels_per_block", *DATA_SETTINGS, "layers", "measures",
                    "batch_size", "null_networks")


def option(name: str) -> str:
    """The command-line option of a setting."""
    return "--" + name.replace("_", "-")


def _default_words(setting) -> str:
    if setting.default is None:
        return ""
    return " (" + " ".join(setting.metadata["words"](setting.default)) + ")"


def add_arguments(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    """Add the options of these settings to a kind's parser."""
    declared = {f.name: f for f in fields(AnalysisSettings)}
    for name in names:
        setting = declared[name]
        meta = setting.metadata
        keywords = {key: meta[key] for key in ("type", "nargs", "metavar") if meta[key]}
        if meta["choices"]:
            keywords["choices"] = list(meta["choices"])
        default = setting.default if setting.default is not MISSING else None
        parser.add_argument(option(name), dest=name, default=default,
                            help=meta["help"] + _default_words(setting), **keywords)


def add_runs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help=RUN_HELP)


def add_alpha(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--alpha", type=fraction, default=0.05, help="significance level (0.05)")
