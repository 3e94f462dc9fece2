"""What decoding is: a fingerprint of the code and libraries between a file and its log-mels.

The caches of decoded audio (training's prepared log-mels, the feature cache of
inference) key their entries on it, so a change to how audio is decoded, resampled,
windowed or turned into log-mels (this package's code, or libsndfile, soxr, FFmpeg,
numpy or torch) gives new entries instead of silently reusing stale ones. A stale
prepared cache is how the default model 0.4.0 stopped being reproduced bit for bit.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
from pathlib import Path

#: The modules between a file's bytes and the model's log-mels (files.py only lists files).
DECODING_MODULES = ("decoders.py", "windows.py", "logmel.py")
#: The distributions those modules call (av bundles FFmpeg, soundfile usually libsndfile).
DECODING_DISTRIBUTIONS = ("soundfile", "soxr", "av", "numpy", "torch")


@functools.cache
def decoding_fingerprint() -> str:
    """16 hex digits over the source of :data:`DECODING_MODULES`, the versions of
    :data:`DECODING_DISTRIBUTIONS` and the libsndfile soundfile loads."""
    import soundfile

    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in DECODING_MODULES:
        digest.update(f"{name}\0".encode())
        digest.update((here / name).read_bytes())
    for dist in DECODING_DISTRIBUTIONS:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = "absent"
        digest.update(f"{dist}={version}\0".encode())
    digest.update(f"libsndfile={soundfile.__libsndfile_version__}".encode())
    return digest.hexdigest()[:16]


__all__ = ["DECODING_MODULES", "DECODING_DISTRIBUTIONS", "decoding_fingerprint"]
