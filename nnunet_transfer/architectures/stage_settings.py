"""The per-stage settings of the plans an extra architecture is built from: 3D kernel and stride
values, the down-sampling they add up to, features per stage, and the checks that refuse
per-stage settings a network could not be built from (or would fail on in training)."""

from __future__ import annotations

from collections.abc import Sequence

from nnunet_transfer.errors import UserError


def triple(value) -> tuple[int, int, int]:
    if isinstance(value, int):
        return (value,) * 3
    value = tuple(int(v) for v in value)
    if len(value) != 3:
        raise UserError(f"expected a 3D kernel / stride, got {list(value)}")
    return value


def cumulative_strides(strides: Sequence[Sequence[int]]) -> list[tuple[int, int, int]]:
    """Down-sampling factor of each stage relative to the input, per axis."""
    total, factors = (1, 1, 1), []
    for s in strides:
        total = tuple(t * si for t, si in zip(total, triple(s)))
        factors.append(total)
    return factors


def features_for_stages(n_stages: int, base: int, maximum: int) -> list[int]:
    """nnU-Net's rule: `base` features doubling per stage, capped at `maximum`."""
    return [min(base * 2 ** i, maximum) for i in range(n_stages)]


def check_stage_lists(name: str, n_stages: int, features, strides, kernel_sizes,
                      patch_size: Sequence[int] | None = None) -> None:
    """Refuse plans with fewer than 2 stages, or whose per-stage lists do not have one entry per
    stage: the network could not be built from them, or would fail on them in training.

    A list given as None (absent from the arch_kwargs being checked) is not checked; with
    `patch_size` (at plan time) the message names the patch that gave too few stages."""
    if n_stages < 2:
        source = (f"the plans' patch size {list(patch_size)} gives" if patch_size is not None
                  else "the plans give")
        raise UserError(f"{name}: {source} {n_stages} stage(s), but the network needs at least "
                        "2 stages, that is at least 2 resolutions (one down-sampling step). Use "
                        "plans with a larger patch size")
    for label, values in (("features_per_stage", features), ("strides", strides),
                          ("kernel_sizes", kernel_sizes)):
        if values is not None and len(values) != n_stages:
            raise UserError(f"{name}: {label} has {len(values)} entries for {n_stages} stages; "
                            "the plans' arch_kwargs are inconsistent: give one entry per stage")


def check_counts_per_stage(name: str, key: str, counts, n_stages: int, unit: str,
                           template: str) -> None:
    """Refuse the per-stage counts `counts` (arch_kwargs[key], e.g. convolutions per stage)
    when they are fewer than the stages or one is not a positive integer; the message points
    to the template plans/<template>.json."""
    counts = list(counts)
    if len(counts) < n_stages or any(not isinstance(c, int) or c < 1 for c in counts):
        raise UserError(
            f"{name}: {key} {counts} must give at least one {unit} for each of the {n_stages} "
            f"stages; add entries to arch_kwargs.{key} in plans/{template}.json or lower its "
            "max_stages")


def check_output_at_patch_size(name: str, strides, kernel_sizes) -> None:
    """Refuse a first stage that down-samples, and even kernels: for a network whose logits
    come from its first stage through size-keeping ('same') convolutions, either would make
    the logits miss the patch size."""
    if any(s != 1 for s in triple(strides[0])):
        raise UserError(f"{name}: the first stage must not down-sample: it keeps the full "
                        f"resolution (strides[0] = [1, 1, 1], as nnU-Net plans it), not "
                        f"{list(strides[0])}; the logits would not match the patch size")
    for kernel in kernel_sizes or ():
        if any(k % 2 == 0 for k in triple(kernel)):
            raise UserError(f"{name}: kernel size {list(kernel)} is even; a convolution that "
                            "keeps the size ('same' padding) needs odd kernel sizes")
