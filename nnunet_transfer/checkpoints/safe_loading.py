"""Reading the files users hand us without running code that is pickled in them.

Checkpoints are pickles: loading one with Python's full unpickler runs whatever functions it
names. Both loaders here admit only data: `load_torch` is torch's `weights_only` unpickler with
numpy's scalar, array and dtype constructors added (nnU-Net v1 and v2 checkpoints log numpy
floats, so torch's own list refuses them); `load_pickle` reads the `.pkl` files of nnU-Net v1
(plans.pkl, model_final_checkpoint.model.pkl) with an unpickler that admits only plain
containers and those numpy types. Anything else is refused, naming what the file asked for.
"""

from __future__ import annotations

import io
import pickle
import re

import numpy as np
import torch

from nnunet_transfer.checkpoints.lfs_pointer import refuse_lfs_pointer
from nnunet_transfer.errors import UserError

# numpy's pickling entry points, under numpy 2's module names and numpy 1's (files written by
# nnU-Net v1 were pickled with numpy 1).
_NUMPY_NAMES = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar"),
}
_PLAIN_NAMES = {("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"),
                ("builtins", "slice"), ("builtins", "complex"), ("builtins", "range")}


def _numpy_globals() -> list:
    """The numpy objects torch's weights_only unpickler may construct (dtype classes too: a
    pickled dtype names its class, e.g. numpy.dtypes.Float64DType)."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1
        from numpy.core import multiarray
    dtype_classes = {type(np.dtype(code)) for code in "?bhilqBHILQefdgFDGSUV"}
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype, *dtype_classes]


class RefusedPickle(UserError):
    """The file names a function or class a checkpoint does not need: loading it could run
    code, so it is not loaded."""


def load_torch(path: str):
    """What torch saved at `path`, on the CPU, read by torch's weights_only unpickler.

    Raises RefusedPickle when the file asks for anything beyond tensors, containers and numpy
    values, UserError when it is a Git LFS pointer; other exceptions (truncated file, not a torch file) propagate for the caller to word.
    """
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refuse_lfs_pointer(path)
        unsupported = _unsupported_global(str(error))
        if unsupported is None:  # damaged data; torch's own advice (weights_only=False) misleads
            raise pickle.UnpicklingError(_reason(str(error))) from None
        raise RefusedPickle(
            f"{path} asks to run {unsupported} when loaded; a checkpoint needs nothing beyond "
            "tensors, containers and numpy values, so it was not loaded. Load it only if you "
            "trust its source, in Python with torch.load(..., weights_only=False), and save "
            "the plain state dict (network_weights) again.") from None


def _unsupported_global(message: str) -> str | None:
    """The function or class torch's weights_only unpickler refused, from its message (None:
    the data was damaged, not refused)."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    return found.group(1) if found else None


def _reason(message: str) -> str:
    found = re.search(r"WeightsUnpickler error: \s*(.+)", message)
    return found.group(1).strip() if found else message.strip().splitlines()[-1]


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_NAMES | _PLAIN_NAMES or (
                module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name}")


def load_pickle(path: str):
    """The plain data pickled at `path`: dicts, lists, tuples, strings, numbers, numpy arrays,
    scalars and dtypes. Raises UserError naming the file when it is damaged or asks for
    anything else (which is never run)."""
    try:
        with open(path, "rb") as f:
            return _DataUnpickler(io.BytesIO(f.read())).load()
    except pickle.UnpicklingError as error:
        refuse_lfs_pointer(path)
        if "." in str(error) and " " not in str(error):
            raise RefusedPickle(
                f"{path} asks to run {error} when unpickled; plans and checkpoint information "
                "need only plain data, so it was not loaded.") from None
        raise UserError(f"{path} is not a readable pickle ({error}); copy it again") from None
    except (EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError,
            KeyError) as error:
        refuse_lfs_pointer(path)
        raise UserError(f"{path} is not a readable pickle ({type(error).__name__}: {error}); "
                        "the file may be truncated: copy it again") from None
