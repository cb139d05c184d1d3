"""Reading weight files without running code from them.

A plain ``pickle.load`` executes whatever callables the file names, so a weights file from the
internet is a program. The loaders here only ever build NumPy arrays: the pickle reader resolves a
short whitelist of NumPy reconstructors and refuses every other global; PyTorch files go through
``torch.load(weights_only=True)``; ``.npz`` files are read with ``allow_pickle=False``;
``.safetensors`` files hold no code at all. Both the evaluation networks (I3D, C3D) and the
pretrained image-diffusion converters (`vfjax.pretrained`) read their files through here.
"""

import hashlib
import os
import pickle
import zipfile
from collections import OrderedDict
from typing import Any

import numpy as np

try:  # NumPy >= 2 moved the array internals to numpy._core; pickles name either module.
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core import multiarray as _multiarray

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): OrderedDict,
}

_TORCH_SUFFIXES = (".pt", ".pth", ".bin")


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild NumPy arrays, dicts and lists, and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"Refusing to load {module}.{name} from a weights pickle: only NumPy arrays are "
                "allowed; convert the file to plain arrays (e.g. .npz) or check where it came from."
            ) from None


def load_array_pickle(path: str) -> Any:
    """Loads a pickle that holds only (nested dicts/lists of) NumPy arrays.

    Raises:
        pickle.UnpicklingError: if the file names any other Python global (e.g. ``os.system``).
    """
    with open(path, "rb") as f:
        return _ArrayOnlyUnpickler(f).load()


def is_torch_file(path: str) -> bool:
    """Whether a path looks like a ``torch.save`` file (zip container or a PyTorch suffix)."""
    return path.endswith(_TORCH_SUFFIXES) or zipfile.is_zipfile(path)


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
    """Loads a PyTorch state dict as float32 NumPy arrays, with ``weights_only=True``.

    Raises:
        ImportError: if torch is not installed.
    """
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"Reading the PyTorch file {path} needs torch: pip install torch (CPU is enough)."
        ) from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict of tensors.")
    return {
        k: v.detach().to(torch.float32).numpy() for k, v in state.items() if v.is_floating_point()
    }


def load_npz(path: str) -> dict[str, np.ndarray]:
    """Loads every array of an ``.npz`` file (object arrays refused)."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def load_safetensors(path: str) -> dict[str, np.ndarray]:
    """Loads every tensor of a ``.safetensors`` file as a float32 NumPy array."""
    from safetensors.numpy import load_file

    return {k: np.asarray(v, np.float32) for k, v in load_file(path).items()}


def sha256_file(path: str, chunk_bytes: int = 1 << 20) -> str:
    """Returns the hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def require_file(path: str, what: str) -> str:
    """Returns ``path`` if it is a file, else raises one readable FileNotFoundError."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{what} not found at {path}; pass the path of the downloaded file."
        )
    return path
