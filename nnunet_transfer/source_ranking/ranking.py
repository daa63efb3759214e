"""The result of a ranking: one frozen row per source, the table `rank-sources` prints, and the
CSV it writes and reads back.

CSV columns, one row per source, best first:

    source            NAME of NAME=PATH, else the path as given
    rank              1 = best, by `score` (ties keep the order given)
    score             mean LogME over the target's classes (higher = better)
    logme_per_class   class=LogME; ...
    voxels_per_class  class=voxels sampled; ...
    encoder_loaded, decoder_loaded, head_loaded
                      fraction of each part's parameter values that would load into the
                      network the target trains under the source's plans
    shared_labels, target_labels, shared_label_names
                      the target's label names the source has (background left out)
    channels_matched, target_channels, matched_channel_names
    spacing_ratio     source spacing / target median spacing, per axis ("a x b x c")
    patch_ratio       source patch / target median shape at the source's spacing, per axis
    dice_as_is_patches
                      the source's own Dice, mean over the shared labels, on the patches it saw
                      (empty when no label is shared)
    dice_as_is_patches_per_label
                      label=Dice; ...
    cases, seconds, path
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

from nnunet_transfer.atomic_files import atomic_write_bytes
from nnunet_transfer.errors import UserError
from nnunet_transfer.source_ranking.compatibility import Compatibility

COLUMNS = ("source", "rank", "score", "logme_per_class", "voxels_per_class", "encoder_loaded",
           "decoder_loaded", "head_loaded", "shared_labels", "target_labels",
           "shared_label_names", "channels_matched", "target_channels", "matched_channel_names",
           "spacing_ratio", "patch_ratio", "dice_as_is_patches", "dice_as_is_patches_per_label",
           "cases", "seconds", "path")


@dataclass(frozen=True)
class SourceResult:
    """One source's figures (see the module's docstring for each)."""

    source: str
    path: str
    rank: int
    score: float
    logme_per_class: dict[str, float]
    voxels_per_class: dict[str, int]
    compatibility: Compatibility
    dice_as_is: dict[str, float]
    cases: int
    seconds: float

    @property
    def mean_dice_as_is(self) -> float:
        values = [v for v in self.dice_as_is.values() if not math.isnan(v)]
        return sum(values) / len(values) if values else float("nan")


@dataclass(frozen=True)
class SourceRanking:
    """Every source ranked on one target: `results` best first."""

    target: str
    cases: tuple[str, ...]
    excluded: tuple[str, ...]
    results: tuple[SourceResult, ...]

    def table(self) -> str:
        return ranking_table(self)


def ranked(results: list[SourceResult]) -> tuple[SourceResult, ...]:
    """`results` ordered by score, best first (a NaN score last, ties in the order given), with
    their ranks set."""
    order = sorted(range(len(results)), key=lambda i: (
        math.isnan(results[i].score), -results[i].score if not math.isnan(results[i].score)
        else 0.0, i))
    out = []
    for rank, i in enumerate(order, 1):
        r = results[i]
        out.append(SourceResult(r.source, r.path, rank, r.score, r.logme_per_class,
                                r.voxels_per_class, r.compatibility, r.dice_as_is, r.cases,
                                r.seconds))
    return tuple(out)


def _ratio(values: tuple[float, ...]) -> str:
    return " x ".join(f"{v:.2f}" for v in values)


def _percent(value: float) -> str:
    return f"{100 * value:.0f}%"


def ranking_table(ranking: SourceRanking) -> str:
    """The table `rank-sources` prints: one line per source, best first."""
    header = ("rank", "source", "score", "enc/dec/head loaded", "labels shared", "channels",
              "spacing ratio", "patch ratio", "Dice as is (patches)")
    rows = []
    for r in ranking.results:
        c = r.compatibility
        dice = ("-" if not r.dice_as_is else ", ".join(
            f"{name} {value:.3f}" for name, value in r.dice_as_is.items()))
        rows.append((str(r.rank), r.source, f"{r.score:.4f}",
                     "/".join(_percent(c.loaded[p]) for p in ("encoder", "decoder", "head")),
                     f"{len(c.shared_labels)}/{c.target_labels}"
                     + (f" ({', '.join(c.shared_labels)})" if c.shared_labels else ""),
                     f"{len(c.channels_matched)}/{c.target_channels}",
                     _ratio(c.spacing_ratio), _ratio(c.patch_ratio), dice))
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
             for row in (header, *rows)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- CSV -------------------------------------------------------------------------------------

def _pairs(mapping: dict) -> str:
    return "; ".join(f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in mapping.items())


def _read_pairs(text: str, kind) -> dict:
    out = {}
    for item in filter(None, (p.strip() for p in text.split(";"))):
        key, _, value = item.rpartition("=")
        out[key] = kind(value)
    return out


def _row(r: SourceResult) -> dict[str, str]:
    c = r.compatibility
    mean = r.mean_dice_as_is
    return {"source": r.source, "rank": str(r.rank), "score": repr(r.score),
            "logme_per_class": _pairs(r.logme_per_class),
            "voxels_per_class": _pairs(r.voxels_per_class),
            **{f"{p}_loaded": repr(c.loaded[p]) for p in ("encoder", "decoder", "head")},
            "shared_labels": str(len(c.shared_labels)), "target_labels": str(c.target_labels),
            "shared_label_names": ";".join(c.shared_labels),
            "channels_matched": str(len(c.channels_matched)),
            "target_channels": str(c.target_channels),
            "matched_channel_names": ";".join(c.channels_matched),
            "spacing_ratio": " x ".join(map(repr, c.spacing_ratio)),
            "patch_ratio": " x ".join(map(repr, c.patch_ratio)),
            "dice_as_is_patches": "" if math.isnan(mean) else repr(mean),
            "dice_as_is_patches_per_label": _pairs(r.dice_as_is),
            "cases": str(r.cases), "seconds": repr(r.seconds), "path": r.path}


def ranking_csv(ranking: SourceRanking) -> str:
    """The CSV text of `ranking` (columns: COLUMNS), floats written exactly."""
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in ranking.results:
        writer.writerow(_row(r))
    return out.getvalue()


def write_ranking_csv(ranking: SourceRanking, path: str) -> None:
    atomic_write_bytes(path, ranking_csv(ranking).encode())


def _names(text: str) -> tuple[str, ...]:
    return tuple(n for n in text.split(";") if n)


def read_ranking_csv(path: str, target: str = "") -> SourceRanking:
    """The ranking a CSV of `write_ranking_csv` holds (its target and cases are not in the
    CSV: `target` names it, cases stay empty). Raises UserError naming the file when it is
    not such a CSV."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        results = []
        for row in rows:
            compatibility = Compatibility(
                {p: float(row[f"{p}_loaded"]) for p in ("encoder", "decoder", "head")},
                _names(row["shared_label_names"]), int(row["target_labels"]),
                _names(row["matched_channel_names"]), int(row["target_channels"]),
                tuple(float(v) for v in row["spacing_ratio"].split(" x ")),
                tuple(float(v) for v in row["patch_ratio"].split(" x ")))
            results.append(SourceResult(
                row["source"], row["path"], int(row["rank"]), float(row["score"]),
                _read_pairs(row["logme_per_class"], float),
                _read_pairs(row["voxels_per_class"], int), compatibility,
                _read_pairs(row["dice_as_is_patches_per_label"], float), int(row["cases"]),
                float(row["seconds"])))
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise UserError(f"{path} is not a rank-sources CSV ({type(error).__name__}: {error}); "
                        f"its columns are {', '.join(COLUMNS)}") from None
    return SourceRanking(target, (), (), tuple(results))
