"""`nnunet-transfer inspect PATH [--target DATASET]`: what a checkpoint or model folder is,
which strategies it can feed, and the commands that fine-tune from it.

Everything is read offline by `Checkpoint.read` (every format it knows, no pickled code run).
The network is rebuilt from the checkpoint's plans where it has them, and split into
encoder / decoder / head as training splits it, so that the parameter counts and the parts
the file provides are those a strategy would see. The strategies are those of
`ONE_PHASE_STRATEGIES`, judged by what each declares (pretrained weights needed, parts frozen).
"""

from __future__ import annotations

import os

from nnunet_transfer.checkpoints.reader import Checkpoint
from nnunet_transfer.checkpoints.content import FORMAT_NNSSL
from nnunet_transfer.architectures.parts import PARTS, partition
from nnunet_transfer.planning.transfer import transferred_plans_name
from nnunet_transfer.training.strategies import CUSTOM_TRAINER, STRATEGIES, Strategy
from nnunet_transfer.training.strategy_file import read_strategy_file


def _join(values, separator: str = " x ") -> str:
    return separator.join(str(v) for v in values) if values else "?"


def part_coverage(checkpoint: Checkpoint) -> tuple[dict[str, int], dict[str, str]]:
    """Per part: its parameter count, and whether the file provides it ("all", "some
    tensors", "none"). Without plans to rebuild the network (nnssl), the counts are those
    of the file's own tensors, all in the encoder."""
    if not checkpoint.init_args.get("plans"):
        # A saved state dict repeats aliased tensors (all_modules); they share storage.
        unique = {(t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)): t.numel()
                  for t in checkpoint.weights.values()}
        total = sum(unique.values())
        provided = "all" if checkpoint.encoder_only else "unknown"
        return ({"encoder": total, "decoder": 0, "head": 0},
                {"encoder": provided, "decoder": "none", "head": "none"})
    # On the meta device: shapes only, nothing initialised (a 30M-parameter U-Net costs
    # seconds to initialise and nothing to lay out).
    network = checkpoint.network(load_weights=False, shapes_only=True)
    parts = partition(network)
    counts = {p: sum(t.numel() for t in parts.parameters(p)) for p in PARTS}
    part_of = parts.state_dict_parts(network)
    shapes = {k: tuple(t.shape) for k, t in network.state_dict().items()}
    found: dict[str, list[bool]] = {p: [] for p in PARTS}
    for key, part in part_of.items():
        tensor = checkpoint.weights.get(key)
        found[part].append(tensor is not None and tensor.shape[:2] == shapes[key][:2])
    coverage = {p: ("all" if all(f) else "some tensors" if any(f) else "none")
                for p, f in found.items()}
    return counts, coverage


def strategy_refusal(strategy: Strategy, checkpoint: Checkpoint,
                     coverage: dict[str, str]) -> str | None:
    """Why `strategy` cannot start from `checkpoint` (None: it can). A strategy needs whole
    from the file every part it keeps frozen or adapted in some phase
    (`Strategy.parts_needed`); a part it trains from the start may start fresh instead."""
    if not strategy.needs_pretrained:
        return None
    needed = strategy.parts_needed
    one_phase = len(strategy.schedule.phases) == 1
    lacking = [p for p in needed if coverage.get(p) != "all"]
    if lacking:
        holds = "freezes" if one_phase else "holds"
        when = "" if one_phase else f" (from phase {needed[lacking[0]]!r})"
        return f"{holds} the {', '.join(lacking)}{when}, which the file does not provide fully"
    if "head" in needed and checkpoint.labels is None:
        return "freezes the head, and the file's label names are unknown"
    return None


def strategy_verdict(strategy: Strategy, checkpoint: Checkpoint,
                     coverage: dict[str, str]) -> str:
    """Whether `strategy` can start from `checkpoint`, and how, in a few words: "no: " and
    `strategy_refusal`'s reason, or "yes" and what it takes."""
    if not strategy.needs_pretrained:
        return "trains from random weights (takes no -pretrained_weights)"
    refusal = strategy_refusal(strategy, checkpoint, coverage)
    if refusal:
        return f"no: {refusal}"
    if "head" in strategy.parts_needed:
        return "yes, on a target with the same labels (a frozen head must be the source's)"
    if checkpoint.encoder_only or coverage.get("decoder") != "all":
        return "yes, with NNUNET_TRANSFER_LOAD=encoder (decoder and head start fresh)"
    return "yes"


def _needed_column(strategy: Strategy) -> str:
    if not strategy.needs_pretrained:
        return "-"
    return ", ".join(strategy.parts_needed) or "nothing"


def strategy_lines(checkpoint: Checkpoint, coverage: dict[str, str],
                   custom: Strategy | None) -> list[str]:
    """The table of every strategy (and the custom one of `custom`'s file, or how to judge
    one): the parts each needs whole from the file, and its verdict."""
    rows = [(s.trainer_name, _needed_column(s), strategy_verdict(s, checkpoint, coverage))
            for s in STRATEGIES]
    if custom is not None:
        rows.append((f"{CUSTOM_TRAINER} ({custom.name})", _needed_column(custom),
                     strategy_verdict(custom, checkpoint, coverage)))
    else:
        rows.append((CUSTOM_TRAINER, "its file's",
                     "judged with --strategy-file FILE (the YAML it would train)"))
    width = max(len(r[0]) for r in rows) + 2
    return (["Strategies it can feed (needs: the parts a strategy keeps frozen or adapted in "
             "some phase, which the file must provide whole; a part it trains from the start "
             "may start fresh):",
             f"  {'trainer':<{width}}{'needs':<18}verdict"]
            + [f"  {name:<{width}}{needs:<18}{verdict}" for name, needs, verdict in rows])


def _plans_line(checkpoint: Checkpoint) -> dict[str, str]:
    if checkpoint.format == FORMAT_NNSSL:
        d = checkpoint.details
        return {"configuration": f"{d.get('configuration') or '?'} (pretraining)",
                "patch size": f"{_join(d.get('patch_size'))} (recommended downstream "
                              f"{_join(d.get('recommended_downstream_patchsize'))})",
                "spacing": _join(d.get("spacing")),
                "normalisation": _join(d.get("normalization_schemes"), ", ")}
    try:
        config = checkpoint.plans["configurations"][checkpoint.configuration]
    except (KeyError, TypeError):
        return {"configuration": checkpoint.configuration or "? (no plans recorded)"}
    return {"configuration": f"{checkpoint.configuration} of plans {checkpoint.plans_name}, "
                             f"dataset {checkpoint.dataset_name}",
            "patch size": _join(config.get("patch_size")),
            "spacing": _join(config.get("spacing")),
            "normalisation": _join(config.get("normalization_schemes"), ", ")}


def _format_line(checkpoint: Checkpoint) -> str:
    d = checkpoint.details
    extra = [f"{k} {d[k]}" for k in ("epoch", "stage") if d.get(k) is not None]
    if d.get("folds"):
        extra.append("folds " + ", ".join(d["folds"]))
    return checkpoint.format + (f" ({'; '.join(extra)})" if extra else "")


def _notes(checkpoint: Checkpoint) -> list[str]:
    d, notes = checkpoint.details, []
    if d.get("zero_biases"):
        notes.append(f"{len(d['zero_biases'])} bias(es) set to zero where v1 has none "
                     "(transposed convolutions, output layers): the function is unchanged")
    if d.get("other_kernels"):
        notes.append(f"{len(d['other_kernels'])} decoder kernel(s) differ from v2's layout "
                     f"(v1 convolves with the stage below's kernel): {d['other_kernels'][:2]}")
    converted = d.get("converted_configurations")
    if converted:
        notes.append(f"plans in nnU-Net's old format (2.0-2.2), converted to the current one "
                     f"as nnU-Net converts them (configuration{'s' * (len(converted) > 1)} "
                     f"{', '.join(converted)})")
    if d.get("labels_known") is False:
        notes.append("label names unknown: no v1 dataset.json beside the model (v1 plans keep "
                     "only class numbers); put it in the model folder to match heads by name")
    if checkpoint.format == FORMAT_NNSSL:
        notes.append(f"encoder and stem only ({len(checkpoint.weights)} tensor names, under "
                     f"{d.get('key_to_encoder')!r} / {d.get('key_to_stem')!r}); "
                     f"{d.get('set_aside', 0)} tensor(s) of the pretraining's decoder set aside")
    return notes


def next_commands(checkpoint: Checkpoint, given: str, target: str,
                  configuration: str | None) -> list[str]:
    """The commands that train `target` from the checkpoint at `given`."""
    weights = checkpoint.path or given
    if checkpoint.format == FORMAT_NNSSL:
        arch = checkpoint.architecture or "ResidualEncoderUNet"
        return [f"# plan {target} as usual, with a {arch} configuration (nnssl checkpoints "
                "carry no nnU-Net plans):",
                f"nnUNetv2_plan_and_preprocess -d {target} -c 3d_fullres -pl nnUNetPlannerResEncL",
                f"NNUNET_TRANSFER_LOAD=encoder nnUNetv2_train {target} 3d_fullres 0 "
                f"-p nnUNetResEncUNetLPlans -tr nnUNetTrainer_FrozenEncoder "
                f"-pretrained_weights {weights}"]
    plans = transferred_plans_name(checkpoint.plans_name or "plans", checkpoint.dataset_name)
    folder = os.path.dirname(os.path.dirname(weights))
    configuration = configuration or checkpoint.configuration or "3d_fullres"
    return [f"nnunet-transfer plans-transfer --source-model {folder} --target {target}",
            f"nnUNetv2_train {target} {configuration} 0 -p {plans} "
            f"-tr nnUNetTrainer_FrozenEncoder -pretrained_weights {weights}"]


def _labels_line(checkpoint: Checkpoint) -> str:
    labels, classes = checkpoint.labels, checkpoint.details.get("classes")
    if labels:
        return ", ".join(f"{k} {v}" for k, v in labels.items())
    if classes:
        return (f"unknown names; {classes} output classes (background and {classes - 1} "
                "more), from the output layer's weights")
    return "unknown"


def inspect_text(path: str, target: str | None = None,
                 strategy_file: str | None = None) -> str:
    """The report `nnunet-transfer inspect` prints; `strategy_file` adds the custom strategy
    of that YAML file to the strategies judged."""
    custom = read_strategy_file(strategy_file) if strategy_file else None
    checkpoint = Checkpoint.read(path)
    counts, coverage = part_coverage(checkpoint)
    rows = {
        "file": f"{checkpoint.path}",
        "format": _format_line(checkpoint),
        "trainer": checkpoint.trainer_name or "?",
        "network": (f"{checkpoint.architecture} ({checkpoint.network_class})"
                    if checkpoint.network_class else "?"),
        **_plans_line(checkpoint),
        "labels": _labels_line(checkpoint),
        "channels": (", ".join(f"{k} {v}" for k, v in checkpoint.channel_names.items())
                     if checkpoint.channel_names else "unknown"),
        "parameters": ", ".join(f"{p} {counts[p]:,} ({coverage[p]} in the file)"
                                for p in PARTS),
    }
    lines = [f"{k + ':':<15}{v}" for k, v in rows.items()]
    lines += [f"{'note:':<15}{n}" for n in _notes(checkpoint)]
    lines += [""] + strategy_lines(checkpoint, coverage, custom)
    if target is not None:
        lines += ["", f"Next commands for target {target}:"]
        lines += [f"  {c}" for c in next_commands(checkpoint, path, target, None)]
    else:
        lines += ["", "Give --target DATASET for the commands that fine-tune on it."]
    return "\n".join(lines)

