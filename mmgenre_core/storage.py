"""Files written whole or not at all, and weights-only torch files read with clear errors.

Every file mmgenre writes for later runs (checkpoints, musicnn weights, training state,
prepared-data metadata, fetched lyrics) goes through :func:`atomic_write`: a temporary
file in the same folder, flushed and fsynced, then renamed over the target. A crash or
Ctrl-C leaves the old file or the new one, never half of one.

torch is imported on first use, so a command that only writes JSON stays light.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import CheckpointError, ModelNotFoundError


def _default_permissions(path: str) -> None:
    # mkstemp creates 0600 files; what we write is not secret: use the umask's default.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, text: bool = False) -> Iterator[IO]:
    """Open ``path`` for writing (binary, or UTF-8 text with ``text``) so that it appears
    only when the ``with`` block ends without an exception. Creates the parent folder.

    On any exception (Ctrl-C included) the temporary file is removed and an older file
    at ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w" if text else "wb", **({"encoding": "utf-8"} if text else {})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        _default_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, data: Any, *, indent: int = 2) -> Path:
    """Strict JSON (no NaN) of ``data`` to ``path`` via :func:`atomic_write`."""
    with atomic_write(path, text=True) as fh:
        fh.write(json.dumps(data, indent=indent, allow_nan=False) + "\n")
    return Path(path)


def atomic_torch_save(path: str | os.PathLike, payload: Any) -> Path:
    """``torch.save(payload)`` to ``path`` via :func:`atomic_write`: never half-written."""
    import torch

    with atomic_write(path) as fh:
        torch.save(payload, fh)
    return Path(path)


#: The largest model file mmgenre reads. The shipped model is 5.5 MB and one with a
#: 100,000-word vocabulary about 130 MB; a bigger file is not a model of ours, and
#: refusing it up front keeps its reading out of a user's memory.
MAX_MODEL_BYTES = 512 * 1024 * 1024


def read_weights_only(path: str | os.PathLike, *, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with clear errors for missing, empty, truncated,
    oversized or foreign files.

    The file's size is checked first (at most :data:`MAX_MODEL_BYTES`), and its tensors are
    memory-mapped rather than read into a second copy. Raises :class:`ModelNotFoundError`
    when there is no file and :class:`CheckpointError` when it cannot be read.
    """
    import torch

    from .bounded_read import file_size
    from .errors import InputFileError

    path = Path(path)
    where = str(path)
    if not path.exists() and not path.is_symlink():
        raise ModelNotFoundError(f"{where}: no model file there")
    try:
        size = file_size(path, max_bytes=MAX_MODEL_BYTES, what="model file")
    except InputFileError as exc:
        raise CheckpointError(str(exc)) from None
    if size is None:
        raise CheckpointError(f"{where}: a pipe or device, not a model file")
    if size == 0:
        raise CheckpointError(f"{where}: the file is empty")
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError as exc:
        raise CheckpointError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    if not is_zip:
        raise CheckpointError(f"{where}: not a PyTorch checkpoint (truncated or a different kind of file)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    except Exception as exc:  # torch raises RuntimeError/UnpicklingError/EOFError/...
        raise CheckpointError(f"{where}: cannot be read as a weights-only PyTorch checkpoint ({exc})") from exc


__all__ = ["atomic_write", "atomic_write_json", "atomic_torch_save", "read_weights_only"]
