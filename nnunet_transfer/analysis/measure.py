"""The capture shared by the similarity analyses (evolution, similarity, reuse): blocks, one
pass of many networks, one tidy row per (layer, network pair), the null baseline, and the
per-layer summaries and text those analyses share.

Orientation and units: activations are (datapoints = voxels of the layer's map over all blocks,
channels); every measure (PWCCA = RSIM, SVCCA, linear CKA) is a dimensionless value in [0, 1].
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from nnunet_transfer.analysis.blocks import BlockSampler
from nnunet_transfer.analysis.capture import CapturedMoments, capture_moments
from nnunet_transfer.analysis.moments import LOW_RATIO
from nnunet_transfer.analysis.outputs import Notes
from nnunet_transfer.analysis.runs import AnalysedRun, DataSpec, NetworkSet, block_cases
from nnunet_transfer.analysis.summary import Summary, summarize
from nnunet_transfer.devices import torch_device
from nnunet_transfer.errors import UserError

MEASURES = ("pwcca", "svcca", "cka")
HEADLINE = "pwcca"
MEASURE_TITLES = {"pwcca": "RSIM (PWCCA)", "svcca": "SVCCA", "cka": "linear CKA"}
NULL = "null baseline"


@dataclass(frozen=True)
class CaptureOptions:
    """The shared options of the similarity analyses (their defaults: `options.AnalysisSettings`).

    Attributes:
        blocks: number of patch-sized input blocks.
        voxels_per_block: voxels kept per block and layer (None: all).
        seed: seed of the block locations, the voxel subsets and the null networks.
        cases: case ids blocks come from (None: see runs.block_cases).
        layers: module names (None: the architecture's default layers).
        measures: subset of MEASURES, in the order of the CSV columns.
        device: "cpu", "cuda" or "auto".
        batch_size: blocks per forward pass.
        null_networks: untrained networks of the null baseline (k networks give k(k-1)/2 pairs).
    """

    blocks: int
    voxels_per_block: int | None
    seed: int
    cases: tuple[str, ...] | None
    layers: tuple[str, ...] | None
    measures: tuple[str, ...]
    device: str
    batch_size: int
    null_networks: int

    @property
    def headline(self) -> str:
        return HEADLINE if HEADLINE in self.measures else self.measures[0]


def parse_measures(text: str) -> tuple[str, ...]:
    measures = tuple(dict.fromkeys(m.strip().lower() for m in text.split(",") if m.strip()))
    unknown = [m for m in measures if m not in MEASURES]
    if unknown or not measures:
        raise UserError(f"--measures {text!r}: give a comma-separated subset of "
                        f"{','.join(MEASURES)}")
    return measures


class Measurer:
    """Blocks of one data configuration and the captures of networks of a `NetworkSet` on them.

    Every capture uses the same blocks (a deterministic function of cases, patch, number and
    seed), so values from separate passes are on the same input.
    """

    def __init__(self, networks: NetworkSet, runs: Sequence[AnalysedRun], options: CaptureOptions,
                 notes: Notes):
        if networks.spec is None:
            raise UserError("load a run's snapshot before sampling blocks")
        self.networks, self.options, self.notes = networks, options, notes
        self.spec: DataSpec = networks.spec
        self.device = torch_device(options.device)
        cases, self.cases_text = block_cases(runs, self.spec, options.cases)
        self.sampler = BlockSampler(self.spec.folder, self.spec.patch_size, options.blocks,
                                    seed=options.seed, identifiers=cases)
        distinct = self.distinct_blocks = len(set(self.sampler.blocks))
        patch = "x".join(map(str, self.spec.patch_size))
        self.blocks_text = (f"{len(self.sampler)} blocks of {patch} "
                            f"voxels ({distinct} distinct) from {self.cases_text}, seed "
                            f"{options.seed}; at most {options.voxels_per_block or 'all'} voxels "
                            "per block and layer")
        if distinct < len(self.sampler):
            notes.add(f"only {distinct} of the {len(self.sampler)} blocks are distinct (cases "
                      "no larger than the patch have a single position): repeated blocks add "
                      "correlated datapoints, not information; use more cases (--cases)")
        self.layer_text: dict[str, str] = {}

    def section(self) -> str:
        """The Markdown sentence saying which measures, blocks, layers and networks."""
        options = self.options
        layers = ", ".join(f"{label} = `{module}`" for label, module in self.layer_text.items())
        measures = ", ".join(MEASURE_TITLES[m] for m in options.measures)
        return (f"Measures: {measures} of the layers' activations (datapoints = voxels, "
                f"neurons = channels), headline {MEASURE_TITLES[options.headline]}. Input: "
                f"{self.blocks_text}. Layers: {layers}. Networks: {self.spec.describe()}.")

    def capture(self, names: Sequence[str], pairs: Sequence[tuple[str, str]] | None = None
                ) -> CapturedMoments:
        """One pass of the networks `names` over the blocks; `pairs` None for all pairs."""
        with self.notes.warnings_as_notes():
            captured = capture_moments(
                {name: self.networks.networks[name] for name in names}, self.sampler,
                list(self.options.layers) if self.options.layers else None, pairs=pairs,
                voxels_per_block=self.options.voxels_per_block,
                batch_size=self.options.batch_size, device=self.device, seed=self.options.seed)
        for label in captured.labels:
            channels = max(captured.channels[label].values())
            count = captured.datapoints[label]
            # Repeated blocks give the same voxels again wherever a block's whole map is kept:
            # at most `distinct` x (voxels of one map) datapoints are distinct.
            distinct = min(count, self.distinct_blocks * math.prod(captured.feature_shape[label]))
            self.layer_text.setdefault(label, next(iter(captured.layers[label].values())))
            # Below LOW_RATIO datapoints per channel the library warns itself (the warning
            # becomes a note); repeated blocks can hide the shortage from its count.
            if distinct / channels < LOW_RATIO <= count / channels:
                self.notes.add(
                    f"layer {label} ({self.layer_text[label]}): {count} datapoints, at most "
                    f"{distinct} of them distinct (repeated blocks), for {channels} "
                    f"channels ({distinct / channels:.3g} per channel, below {LOW_RATIO:g}); "
                    "its values, null baseline included, are inflated. Use more blocks "
                    "(--blocks), cases (--cases) or voxels per block (--voxels-per-block)")
        return captured

    def row(self, captured: CapturedMoments, a: str, b: str, label: str) -> dict:
        """{layer, module, a, b, <measures>, datapoints, channels_a, channels_b} for a pair."""
        row = {"layer": label, "module": captured.layers[label][a], "a": a, "b": b}
        with self.notes.warnings_as_notes(f"layer {label}"):
            for measure in self.options.measures:
                method = {"pwcca": captured.pwcca, "svcca": captured.svcca,
                          "cka": captured.linear_cka}[measure]
                row[measure] = float(method(a, b, label))
        row.update(datapoints=captured.datapoints[label],
                   channels_a=captured.channels[label][a], channels_b=captured.channels[label][b])
        return row

    def null_rows(self, captured: CapturedMoments, null_names: Sequence[str]) -> list[dict]:
        """A row per layer and pair of untrained networks, comparison = NULL."""
        return [{**self.row(captured, a, b, label), "comparison": NULL}
                for label in captured.labels
                for a, b in itertools.combinations(null_names, 2)]


def null_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    return list(itertools.combinations(names, 2))


def null_summary(rows: Sequence[dict], label: str, measure: str) -> Summary:
    return summarize([r[measure] for r in rows if r["layer"] == label and
                      r.get("comparison") == NULL])


def null_by_layer(rows: Sequence[dict], layers: Sequence[str], measure: str
                  ) -> dict[str, Summary]:
    return {label: null_summary(rows, label, measure) for label in layers}


def layer_summaries(rows: Sequence[dict], key: str, measure: str
                    ) -> dict[str, dict[str, Summary]]:
    """{value of row[key]: {layer: Summary of row[measure]}}."""
    grouped: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        grouped.setdefault(row[key], {}).setdefault(row["layer"], []).append(row[measure])
    return {name: {layer: summarize(values) for layer, values in by_layer.items()}
            for name, by_layer in grouped.items()}


def null_text(options: CaptureOptions) -> str:
    k = options.null_networks
    return (f"Null baseline: the same measure between {k} independently initialised, untrained "
            f"networks of the same architecture ({k * (k - 1) // 2} pairs, nnU-Net's "
            "initialisation, seeds derived from --seed) on the same blocks: the value that "
            "means \"no more similar than chance\" at these datapoints per channel.")
