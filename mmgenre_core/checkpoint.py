"""Checkpoints: one file with everything inference needs.

A checkpoint is a plain dict of tensors and plain values, so it loads with
``torch.load(weights_only=True)`` (no pickled classes, no code execution)::

    {"format": "mmgenre-checkpoint", "format_version": 1,
     "model_config": {...}, "audio_config": {...}, "text_config": {...},
     "genres": [...], "vocab": [...], "state_dict": {...},
     "metadata": {...}, "metrics": {...}}

Saving is atomic: the file is written beside the target, flushed to disk and
renamed over it, so a crash never leaves a half-written model behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from .config import AudioConfig, ModelConfig, TextConfig
from .errors import CheckpointError, ConfigError
from .storage import atomic_torch_save, read_weights_only

FORMAT = "mmgenre-checkpoint"
FORMAT_VERSION = 1
_PLAIN = (str, int, float, bool, type(None))


@dataclass
class Checkpoint:
    """A loaded (or to-be-saved) checkpoint."""

    model_config: ModelConfig
    audio_config: AudioConfig
    text_config: TextConfig
    genres: list[str]
    vocab: list[str]
    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    @property
    def model_id(self) -> str:
        """A short id for tagging (``name@version``), from the metadata when present."""
        name = self.metadata.get("name") or (Path(self.path).stem if self.path else "mmgenre")
        version = self.metadata.get("version")
        return f"{name}@{version}" if version else str(name)

    @classmethod
    def from_model(
        cls,
        model: Any,
        *,
        text_config: TextConfig,
        genres: list[str],
        vocab: list[str],
        metadata: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> "Checkpoint":
        """Snapshot a :class:`~mmgenre_core.model.GenreModel` (its configs come from the model)."""
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return cls(model.config, model.audio_config, text_config, list(genres), list(vocab), state,
                   dict(metadata or {}), dict(metrics or {}))

    def build_model(self):
        """A :class:`~mmgenre_core.model.GenreModel` holding these weights, in eval mode."""
        from .model import GenreModel

        where = self.path or "checkpoint"
        try:
            model = GenreModel(self.model_config, self.audio_config)
            missing, unexpected = model.load_state_dict(self.state_dict, strict=False)
        except (RuntimeError, ValueError, TypeError) as exc:  # shapes that do not fit, odd sizes
            first = " ".join(str(exc).split())[:300]
            raise CheckpointError(f"{where}: weights do not fit the model config ({first})") from exc
        # Non-persistent buffers (mel basis, window) are rebuilt from the config.
        if missing or unexpected:
            raise CheckpointError(
                f"{where}: weights do not fit the model config "
                f"(missing: {', '.join(missing[:5]) or '-'}; unexpected: {', '.join(unexpected[:5]) or '-'})"
            )
        return model.eval()


def _check_plain(value: Any, where: str) -> None:
    """Reject values ``weights_only`` loading could not read back (objects, numpy scalars...)."""
    if isinstance(value, _PLAIN) or isinstance(value, torch.Tensor):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise CheckpointError(f"{where}: key {k!r} is not a str or int")
            _check_plain(v, f"{where}.{k}")
        return
    raise CheckpointError(f"{where}: {type(value).__name__} cannot be stored in a weights-only checkpoint")


def checkpoint_to_dict(ckpt: Checkpoint) -> dict[str, Any]:
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": ckpt.model_config.to_dict(),
        "audio_config": ckpt.audio_config.to_dict(),
        "text_config": ckpt.text_config.to_dict(),
        "genres": list(ckpt.genres),
        "vocab": list(ckpt.vocab),
        "state_dict": {k: v.detach().cpu() for k, v in ckpt.state_dict.items()},
        "metadata": dict(ckpt.metadata),
        "metrics": dict(ckpt.metrics),
    }
    _check_plain({k: v for k, v in payload.items() if k != "state_dict"}, "checkpoint")
    _validate(payload, where="checkpoint")
    return payload


def save_checkpoint(path: str | os.PathLike, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    return atomic_torch_save(path, checkpoint_to_dict(ckpt))


def _validate(payload: Any, *, where: str) -> None:
    """Every structural rule a checkpoint must meet; any breach is a :class:`CheckpointError`.

    Run on every load (and save), so that a damaged or hand-edited file fails here
    with its reason instead of deep inside the model or, worse, mid-way through a
    library-wide run.
    """
    if not isinstance(payload, Mapping) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{where}: not an mmgenre checkpoint (no '{FORMAT}' marker)")
    version = payload.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{where}: format_version must be a whole number >= 1, not {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{where}: checkpoint format version {version} is newer than this mmgenre "
            f"understands ({FORMAT_VERSION}); upgrade mmgenre"
        )
    for key in ("model_config", "audio_config", "text_config", "genres", "vocab", "state_dict"):
        if key not in payload:
            raise CheckpointError(f"{where}: checkpoint lacks '{key}'")
    for key in ("model_config", "audio_config", "text_config", "state_dict"):
        if not isinstance(payload[key], Mapping):
            raise CheckpointError(f"{where}: '{key}' must be a mapping, not {type(payload[key]).__name__}")
    for key in ("metadata", "metrics"):
        if payload.get(key) is not None and not isinstance(payload[key], Mapping):
            raise CheckpointError(f"{where}: '{key}' must be a mapping, not {type(payload[key]).__name__}")
    genres, vocab = payload["genres"], payload["vocab"]
    if not isinstance(genres, (list, tuple)) or not genres:
        raise CheckpointError(f"{where}: 'genres' must be a non-empty list of names, not {genres!r:.60}")
    if not all(isinstance(g, str) and g.strip() for g in genres) or len(set(genres)) != len(genres):
        raise CheckpointError(f"{where}: genre labels must be distinct, non-blank strings")
    if not isinstance(vocab, (list, tuple)) or not all(isinstance(w, str) for w in vocab):
        raise CheckpointError(f"{where}: 'vocab' must be a list of strings")
    model_config = payload["model_config"]
    n_genres = model_config.get("n_genres")
    if n_genres != len(genres):
        raise CheckpointError(f"{where}: {len(genres)} genre labels for a model of {n_genres} outputs")
    if model_config.get("use_lyrics", True):
        if model_config.get("vocab_size") != len(vocab):
            raise CheckpointError(f"{where}: vocabulary of {len(vocab)} words for an embedding of "
                                  f"{model_config.get('vocab_size')}")
    for name, tensor in payload["state_dict"].items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{where}: weight {name!r} is a {type(tensor).__name__}, not a tensor")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{where}: weight {name!r} holds NaN or infinite values (a diverged or damaged model)")


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load and validate a checkpoint with ``torch.load(weights_only=True)``.

    Raises :class:`ModelNotFoundError` when the file does not exist and
    :class:`CheckpointError` with a clear reason when it is truncated, foreign or
    inconsistent.
    """
    where = str(path)
    payload = read_weights_only(path, map_location=map_location)
    _validate(payload, where=where)
    try:
        return Checkpoint(
            model_config=ModelConfig.from_dict(payload["model_config"]),
            audio_config=AudioConfig.from_dict(payload["audio_config"]),
            text_config=TextConfig.from_dict(payload["text_config"]),
            genres=list(payload["genres"]),
            vocab=list(payload["vocab"]),
            state_dict=dict(payload["state_dict"]),
            metadata=dict(payload.get("metadata") or {}),
            metrics=dict(payload.get("metrics") or {}),
            path=where,
        )
    except (ConfigError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: {exc}") from exc
