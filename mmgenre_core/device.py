"""The one place that decides where the model runs and with which precision."""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from .errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``/``"cpu"``/``"cuda"``/``"cuda:1"``/``"mps"`` into a usable device.

    ``auto`` prefers CUDA, then Apple MPS, then the CPU. Asking for a device that is
    not there is a :class:`ConfigError`, not a silent fallback: a user who says
    ``--device cuda`` wants to know that no GPU was found.
    """
    if isinstance(device, torch.device):
        name = str(device)
    else:
        name = (device or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":", 1)[0]
    if kind not in DEVICE_CHOICES:
        raise ConfigError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA GPU is available (use the device 'auto' or 'cpu')")
    if kind == "mps" and not _mps_available():
        raise ConfigError("device 'mps' requested but Apple MPS is not available (use the device 'auto' or 'cpu')")
    return torch.device(name)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype used on ``device``, or None for full float32.

    Only CUDA gets mixed precision: on the CPU autocast to bfloat16 is slower than
    float32 for these small convolutions and GRUs, and MPS autocast is still partial.
    """
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device) -> ContextManager:
    """``torch.autocast`` on CUDA, a no-op context elsewhere (nanoGPT's pattern)."""
    dtype = autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
