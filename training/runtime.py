"""Where a run executes: one process, or one of several under ``torchrun`` (DDP); seeds; the commit."""

from __future__ import annotations

import os
import random
import subprocess
from dataclasses import dataclass

import numpy as np
import torch

from mmgenre_core.device import resolve_device

from training import REPO_ROOT


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def ddp(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.ddp:
            torch.distributed.barrier()


def setup_runtime(device_name: str) -> Runtime:
    """Single process, or DDP when launched by ``torchrun`` (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Runtime(resolve_device(device_name))
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    base = resolve_device(device_name)
    if base.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = base, "gloo"
    dist.init_process_group(backend=backend)
    return Runtime(device, rank, local_rank, world)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if torch.cuda.is_available():
            torch.backends.cudnn.benchmark = False
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=5, check=True)
        return out.stdout.strip() or None
    except Exception:  # noqa: BLE001 - no git, not a checkout...
        return None


__all__ = ["Runtime", "setup_runtime", "seed_everything", "git_commit"]
