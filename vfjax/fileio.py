"""The one path layer: every file vfjax reads or writes goes through here.

Paths are `etils.epath.Path`, which speaks local paths and bucket paths (`gs://...`, and others
its backends know) with one API, as Orbax and tfds do. So a workdir, a data directory or a
feature cache on a bucket holds every file of a run, not only the checkpoints.

What epath alone does not give, and is added here:
- writes that never leave a half-written file behind (local: a temporary file, then an atomic
  rename; a bucket object appears whole or not at all), local files with the permissions the
  umask allows, as `open()` gives them (0644 under the usual umask 022), so others can read them;
- appending to a bucket object (objects cannot be appended to: read, then write back whole);
- NumPy arrays and files that a library can only write to or read from a local file name
  (imageio, PyAV) copied to or from the destination.
"""

import contextlib
import functools
import io
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np
from etils import epath

PathLike = str | os.PathLike


def is_local(p: PathLike) -> bool:
    """Whether `p` is a path of this machine's filesystem (no `scheme://`)."""
    return "://" not in os.fspath(p)


def path(p: PathLike) -> epath.Path:
    """`p` as an `epath.Path`; local paths get `~` expanded and are made absolute."""
    if is_local(p):
        return epath.Path(os.path.abspath(os.path.expanduser(os.fspath(p))))
    return epath.Path(os.fspath(p))


def join(p: PathLike, *parts: str) -> epath.Path:
    return path(p).joinpath(*parts)


_PROC_STATUS = "/proc/self/status"


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it in /proc."""
    with contextlib.suppress(OSError):
        with open(_PROC_STATUS) as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    return _umask_by_setting()


@functools.cache
def _umask_by_setting() -> int:
    """The umask where /proc does not show it: reading it means setting it, so it is read once,
    and for that instant set to the strictest mask (a file another thread creates then is
    private, not exposed)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def write_bytes(p: PathLike, data: bytes) -> None:
    """Writes `data` to `p` whole: a reader never sees a half-written file."""
    p = path(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    if not is_local(p):
        p.write_bytes(data)  # An object upload is all or nothing.
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=os.fspath(p.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp makes the file 0600; it gets what `open()` would give it instead (where
            # the filesystem keeps modes at all: a bucket mount may refuse, and decides them).
            with contextlib.suppress(OSError):
                os.fchmod(f.fileno(), 0o666 & ~_umask())
            f.write(data)
        os.replace(tmp, os.fspath(p))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(p: PathLike, text: str) -> None:
    write_bytes(p, text.encode())


def read_text(p: PathLike) -> str:
    return path(p).read_text()


def write_json(p: PathLike, obj: Any) -> None:
    write_text(p, json.dumps(obj, indent=2) + "\n")


def read_json(p: PathLike) -> Any:
    return json.loads(read_text(p))


def read_jsonl(p: PathLike) -> list:
    """The objects of a JSON-lines file, one per non-empty line (none when there is no file)."""
    p = path(p)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def append_text(p: PathLike, text: str) -> None:
    """Appends `text` to `p` (created if missing)."""
    p = path(p)
    if is_local(p):
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(os.fspath(p), "a") as f:
            f.write(text)
        return
    # Bucket objects cannot be appended to: rewrite the object whole.
    old = p.read_text() if p.exists() else ""
    write_text(p, old + text)


def save_npy(p: PathLike, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    write_bytes(p, buffer.getvalue())


def load_npy(p: PathLike) -> np.ndarray:
    return np.load(io.BytesIO(path(p).read_bytes()), allow_pickle=False)


@contextlib.contextmanager
def local_file_for_writing(p: PathLike) -> Iterator[str]:
    """A local file name for a library that writes files by name (imageio, PyAV); what it
    writes there ends up at `p`, whole."""
    suffix = path(p).suffix
    with tempfile.TemporaryDirectory(prefix="vfjax-") as tmp:
        local = os.path.join(tmp, "file" + suffix)
        yield local
        with open(local, "rb") as f:
            write_bytes(p, f.read())


@contextlib.contextmanager
def local_file_for_reading(p: PathLike) -> Iterator[str]:
    """A local file name holding the contents of `p` (the path itself when local)."""
    if is_local(p):
        yield os.fspath(path(p))
        return
    with tempfile.TemporaryDirectory(prefix="vfjax-") as tmp:
        local = os.path.join(tmp, "file" + path(p).suffix)
        with open(local, "wb") as f:
            f.write(path(p).read_bytes())
        yield local
