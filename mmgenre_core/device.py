"""The one place that decides where the model runs and with which precision."""

from __future__ import annotations

import contextlib
import os
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


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat; None where there is none (not Linux)."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [float(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    total = sum(fields[:8])  # user..steal; guest time is already counted in user
    return total - idle, total


def free_cpus(*, sample_seconds: float = 0.2) -> float | None:
    """How many CPUs other processes leave idle right now (sampled over ``sample_seconds``)."""
    import time

    first = _cpu_times()
    if first is None:
        return None
    time.sleep(sample_seconds)
    second = _cpu_times()
    if second is None or second[1] <= first[1]:
        return None
    busy = (second[0] - first[0]) / (second[1] - first[1])
    return max(0.0, (1.0 - busy) * (os.cpu_count() or 1))


def cpu_threads(setting: str | int | None = "auto") -> int:
    """The number of intra-op threads for a CPU run: ``setting`` when it is a number, else
    (``"auto"``) the CPUs other processes leave free, at least 1.

    Why: OpenMP threads spin while they wait for each other. On 2 cores with one other
    busy process, 2 threads ran the default model at 2.2 full-length tracks/s and 1 thread
    at 4.3 (torch 2.13); on an idle machine 2 threads are the faster (7.6 against 4.7).
    """
    if setting is not None and str(setting).strip().lower() != "auto":
        try:
            n = int(setting)
        except (TypeError, ValueError):
            raise ConfigError(f"threads must be a positive number or 'auto', not {setting!r}") from None
        if n < 1:
            raise ConfigError(f"threads must be a positive number or 'auto', not {setting!r}")
        return n
    cores = os.cpu_count() or 1
    free = free_cpus()
    if free is None:
        return cores
    return max(1, min(cores, int(free + 0.5)))


def configure_cpu_threads(setting: str | int | None = "auto", *, device: str | torch.device = "cpu") -> int | None:
    """Set torch's intra-op threads from :func:`cpu_threads` when ``device`` resolves to
    the CPU; returns the number set (None on a GPU, where torch's threads are left alone)."""
    if resolve_device(device).type != "cpu":
        return None
    n = cpu_threads(setting)
    torch.set_num_threads(n)
    return n
