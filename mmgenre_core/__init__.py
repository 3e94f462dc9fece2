"""mmgenre_core: the fused CNN-HAN genre model, its front ends and fast inference.

Nothing heavy is imported here: ``import mmgenre_core`` must not import torch, so
the beets plugin can be enabled without slowing ``beet ls``. The public names are
resolved lazily on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "GenreClassifier": "mmgenre_core.predict",
    "TrackPrediction": "mmgenre_core.predict",
    "AudioConfig": "mmgenre_core.config",
    "TextConfig": "mmgenre_core.config",
    "ModelConfig": "mmgenre_core.config",
    "MMGenreError": "mmgenre_core.errors",
    "AudioError": "mmgenre_core.errors",
    "CheckpointError": "mmgenre_core.errors",
    "ModelNotFoundError": "mmgenre_core.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mmgenre_core' has no attribute {name!r}")
