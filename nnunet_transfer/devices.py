"""Which device a run or an analysis uses: `auto`, `cpu` or `cuda`, decided before any work.

torch is imported only when a GPU has to be looked for: every `nnunet-transfer` command imports
the modules that import this one, and a CPU study should not load CUDA.
"""

from __future__ import annotations

from nnunet_transfer.errors import UserError

CUDA_REFUSAL = "--device cuda: no CUDA device is available here; use cpu or auto"


def resolve_device(requested: str, refusal: str = CUDA_REFUSAL) -> str:
    """The torch device name for `requested`: "auto" is "cuda" when torch sees a GPU, else
    "cpu"; "cuda" without a GPU raises UserError(`refusal`) now rather than failing at the first
    tensor (or, in a study, at every training one after the other); other names pass through."""
    if requested == "cpu":
        return "cpu"
    import torch
    available = torch.cuda.is_available()
    if requested == "auto":
        return "cuda" if available else "cpu"
    if requested == "cuda" and not available:
        raise UserError(refusal)
    return requested


def torch_device(requested: str):
    """`resolve_device` as a torch.device, refusing with the `--device` option's message."""
    import torch
    return torch.device(resolve_device(requested))
