"""Resuming a run: :class:`TrainState`, and ``RUN_DIR/last.pt`` written and read back.

``last.pt`` holds the state with the model, optimizer, schedule and grad-scaler
state_dicts, the vocabulary (a resumed run must see the same one), the RNG states and
the config, as plain values and tensors (``torch.load(weights_only=True)`` reads it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmgenre_core.errors import ConfigError
from mmgenre_core.storage import atomic_torch_save

RESUME_FORMAT = "mmgenre-train-state"


@dataclass
class TrainState:
    """Where a run stands after an epoch, besides the weights."""

    epoch: int = -1  # the last finished (0-based) epoch; -1: none yet
    best_value: float = math.inf  # selection value of the best epoch (lower is better)
    best_epoch: int = -1  # 0-based; -1: the linear probe ("epoch 0") or none
    bad_epochs: int = 0  # epochs since the best one (early stopping)
    best_val: dict[str, Any] = field(default_factory=dict)  # validation metrics of the best epoch
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch

    @property
    def next_epoch(self) -> int:
        return self.epoch + 1


def save_state(path: Path, state: TrainState, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               schedule: Any, scaler: torch.amp.GradScaler, vocab: list[str], config: dict[str, Any]) -> None:
    """Write ``path`` (``RUN_DIR/last.pt``) atomically."""
    payload = {
        "format": RESUME_FORMAT, "epoch": state.epoch, "model": model.state_dict(),
        "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else {},
        "best_value": state.best_value, "best_epoch": state.best_epoch, "bad_epochs": state.bad_epochs,
        "best_val": plain(state.best_val), "history": plain(state.history), "vocab": vocab,
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        "config": plain(config),
    }
    atomic_torch_save(path, payload)


def load_state(path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule: Any,
               scaler: torch.amp.GradScaler, vocab: list[str] | None) -> TrainState:
    """Read ``path`` back into the model, optimizer, schedule, scaler and RNGs; returns the state.

    Raises :class:`ConfigError` when there is no such file, it is not a training state,
    or the data now gives another vocabulary.
    """
    if not path.is_file():
        raise ConfigError(f"--resume: {path} not found")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("format") != RESUME_FORMAT:
        raise ConfigError(f"{path}: not an mmgenre training state")
    if vocab is not None and saved["vocab"] != vocab:
        raise ConfigError("--resume: the data gives another vocabulary than the saved run")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    if saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])
    torch.set_rng_state(saved["rng"]["torch"])
    if torch.cuda.is_available() and saved["rng"].get("cuda"):
        torch.cuda.set_rng_state_all(list(saved["rng"]["cuda"]))
    return TrainState(epoch=int(saved["epoch"]), best_value=float(saved["best_value"]),
                      best_epoch=int(saved["best_epoch"]), bad_epochs=int(saved["bad_epochs"]),
                      best_val=dict(saved["best_val"]), history=list(saved["history"]))


def plain(obj: Any) -> Any:
    """Plain values a weights-only checkpoint and strict JSON accept: numpy scalars -> Python,
    tuples -> lists, NaN/inf -> None."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return plain(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


__all__ = ["RESUME_FORMAT", "TrainState", "save_state", "load_state", "plain"]
