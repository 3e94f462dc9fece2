"""Audio front end, in modules that each do one job:

* :mod:`.files`: find audio files in files and folders (no decoding, no torch, so a
  command that only lists files stays light);
* :mod:`.decoders`: libsndfile and FFmpeg decoders, mono float32 at the file's rate,
  seekable, and soxr resampling;
* :mod:`.windows`: where the analysed windows of a track lie and
  :func:`load_windows`, which decodes only those;
* :mod:`.logmel`: :class:`LogMel`, the model's log-mel front end (torch);
* :mod:`.fingerprint`: :func:`decoding_fingerprint`, what caches of decoded audio key on.

Every problem with a file is raised as an :class:`~mmgenre_core.errors.AudioError`
subclass carrying the path. Decoding is thread-safe: each call opens its own handles
and no state is shared.

The public names below are importable from here; each is loaded on first use
(librosa's lazy-loading habit), so ``from mmgenre_core.audio import find_audio_files``
imports neither the decoders nor torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AUDIO_EXTENSIONS": "files",
    "find_audio_files": "files",
    "AudioFileNotFoundError": "decoders",
    "RESAMPLE_QUALITY": "decoders",
    "probe_duration": "decoders",
    "load_windows": "windows",
    "window_offsets": "windows",
    "listening_order": "windows",
    "LogMel": "logmel",
    "slaney_mel_filterbank": "logmel",
    "decoding_fingerprint": "fingerprint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
