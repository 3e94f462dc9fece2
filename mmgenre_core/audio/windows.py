"""Windows: where the analysed windows of a track lie, and decoding just those.

Decoding reads only the analysed windows of a track (FMA-style: ``window_seconds``
from the middle, or ``num_windows`` evenly spaced windows), never the whole file, so
a long track costs no more than a 30-s clip. Windows are sample exact (equal to slices
of a whole-file decode) wherever the container has sample-accurate timestamps: WAV,
FLAC, AIFF, Ogg, MP3, MP4/M4A. Matroska, WebM and ASF (WMA) time frames in
milliseconds, so there a window may be off by < 1 ms.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..config import AudioConfig
from ..errors import AudioDecodeError, AudioError, AudioTooShortError, EmptyAudioError, SilentAudioError
from .decoders import (
    _BACKEND_NAMES,
    _backends,
    _check_file,
    _Decoder,
    _describe,
    _LengthUnknown,
    _resample,
    _SoundFileDecoder,
)

# Extra seconds decoded on both sides of a window, so the resampler's filter sees real
# signal instead of zeros at the window edges (soxr HQ needs < 5 ms).
_EDGE_SECONDS = 0.05
# A window read that comes back at most this much short (a header length off by a
# frame or two) is zero-padded; more than that and the file is read whole instead.
_SHORT_READ_SECONDS = 0.5
# A file of unknown length (or one that ends before its header says) is decoded from the
# start; up to this much audio is kept whole, a longer one is counted and then decoded
# again for its windows only, so memory stays bounded whatever the file (10 min of
# 48 kHz mono float32 is 115 MB).
_KEEP_WHOLE_SECONDS = 600.0


def window_offsets(duration: float, *, config: AudioConfig, slots: Sequence[int] | None = None) -> list[float]:
    """Start times (s) of the analysed windows of a ``duration``-second track.

    One window: the centre ``window_seconds`` (as FMA's clips). ``num_windows = n > 1``:
    the track is cut into n equal parts and each window is centred in one of them (so
    the windows spread over the whole track but skip its very start and end).
    ``slots``: only those windows (by index in time order), in that order. A track no
    longer than one window has the single window ``[0.0]`` (it is tiled to fill it),
    whatever ``slots`` asks for.
    """
    slack = duration - config.window_seconds
    if not slack > 0:  # also catches NaN
        return [0.0]
    n = config.num_windows
    centres = [duration * (2 * k + 1) / (2 * n) for k in range(n)]
    offsets = [min(max(c - config.window_seconds / 2, 0.0), slack) for c in centres]
    return offsets if slots is None else [offsets[k] for k in slots]


def listening_order(config: AudioConfig) -> tuple[list[int], list[int]]:
    """The order a track's windows are heard in, and the rounds.

    Returns (order, ends): window indices of :func:`window_offsets` in listening order,
    and the cumulative window count at the end of each round. The default model's 12
    windows (one per twelfth of the track) are heard as order [3, 8, 1, 5, 10, 0, 2,
    4, 6, 7, 9, 11], ends [2, 5, 12]: about 30% and 70% into the track first, then
    three more spread between and around them, then the rest. A model without rounds
    hears all its windows at once, in time order.
    """
    n = config.num_windows
    if not config.in_rounds:
        return list(range(n)), [n]
    return list(config.window_order), list(config.window_rounds)


def _read_window(decoder: _Decoder, offset: float, *, config: AudioConfig) -> np.ndarray | None:
    """One window [shape=(window_samples,)] at ``offset`` s, or None if the file ends early.

    Decodes from an input frame that sits on the output sample grid (so soxr's output
    samples fall exactly where they fall when the whole file is resampled) plus a
    short margin on both sides, which is resampled and cut away.
    """
    sr_in, sr_out = decoder.sample_rate, config.sample_rate
    width = config.window_samples
    total = decoder.num_frames
    assert total is not None
    start_in, end_in, skip = _window_input_range(offset, total, sr_in, config=config)
    x = decoder.read(start_in, end_in - start_in)
    if len(x) < end_in - start_in - _SHORT_READ_SECONDS * sr_in:
        return None  # the header promised more than the file holds
    y = _resample(x, sr_in, sr_out)[skip : skip + width]
    if len(y) < width:
        if width - len(y) > _SHORT_READ_SECONDS * sr_out:
            return None
        y = np.pad(y, (0, width - len(y)))
    return y


def _windows_from_whole(
    audio: np.ndarray, sr_in: int, *, config: AudioConfig, path: str, slots: Sequence[int] | None = None
) -> np.ndarray:
    """Windows [shape=(n, window_samples)] of a whole decoded track, tiled when short."""
    if len(audio) == 0:
        raise EmptyAudioError("decodes to no audio samples (truncated or empty stream?)", path=path)
    y = _resample(audio, sr_in, config.sample_rate)
    seconds = len(audio) / sr_in
    if seconds < config.min_seconds:
        raise AudioTooShortError(
            f"{seconds:.1f} s of audio, need at least {config.min_seconds:.1f} s", path=path
        )
    width = config.window_samples
    if len(y) < width:
        # Short track: repeat it so every example of a batch has one length.
        return np.resize(y, width)[None, :]
    starts = [min(int(round(o * config.sample_rate)), len(y) - width)
              for o in window_offsets(len(y) / config.sample_rate, config=config, slots=slots)]
    return np.stack([y[s : s + width] for s in starts])


def _decode_windows(decoder: _Decoder, *, config: AudioConfig, path: str,
                    slots: Sequence[int] | None = None) -> np.ndarray:
    """Windows [shape=(n, window_samples)] from ``decoder``, seeking when the length is known."""
    total = decoder.num_frames
    window_in = config.window_seconds * decoder.sample_rate
    if total is not None and total >= window_in:
        windows: list[np.ndarray | None]
        try:
            windows = [
                _read_window(decoder, offset, config=config)
                for offset in window_offsets(total / decoder.sample_rate, config=config, slots=slots)
            ]
        except (AudioError, MemoryError):
            raise
        except Exception:  # noqa: BLE001 - damaged somewhere: read what is there instead
            windows = [None]
        if all(w is not None for w in windows):
            return np.stack(windows)  # type: ignore[arg-type]
    # Short track, unknown length, damaged, or the file ends before its header says:
    # take the windows from what is really there, in bounded memory.
    return _windows_streaming(decoder, config=config, path=path, slots=slots)


class _CollectedRanges:
    """A read-only "decoder" over the input ranges a linear pass kept (see _windows_streaming)."""

    def __init__(self, ranges: list[tuple[int, np.ndarray]], total: int, sample_rate: int) -> None:
        self._ranges = ranges  # [(first frame, mono float32 samples)]
        self.num_frames = total
        self.sample_rate = sample_rate

    def read(self, start: int, count: int) -> np.ndarray:
        for first, data in self._ranges:
            if first <= start and start + count <= first + len(data):
                return data[start - first : start - first + count]
        raise AssertionError("window outside the collected ranges")  # pragma: no cover


def _window_input_range(offset: float, total: int, sr_in: int, *, config: AudioConfig) -> tuple[int, int, int]:
    """(start, end, skip): the input frames [start, end) that :func:`_read_window` reads for a
    window at ``offset``, and the window's first sample in that range once resampled.

    The start sits on the output sample grid (so soxr's output samples fall exactly
    where they fall when the whole file is resampled), a short margin before the window.
    """
    sr_out = config.sample_rate
    k0 = int(round(offset * sr_out))  # window start, output samples
    edge = int(math.ceil(_EDGE_SECONDS * sr_out))
    step_out = sr_out // math.gcd(sr_in, sr_out)  # output samples per whole number of input samples
    ks = max(k0 - edge, 0)
    if step_out <= edge:
        ks -= ks % step_out
    start = int(round(ks * sr_in / sr_out))
    end = min(total, int(math.ceil((k0 + config.window_samples + edge) * sr_in / sr_out)))
    return start, end, k0 - ks


def _windows_streaming(decoder: _Decoder, *, config: AudioConfig, path: str,
                       slots: Sequence[int] | None = None) -> np.ndarray:
    """Windows [shape=(n, window_samples)] of a file decoded from its start, in bounded memory.

    Up to ``_KEEP_WHOLE_SECONDS`` of audio is kept whole (one pass, as before). A longer
    stream is only counted in that first pass, then decoded again keeping just the
    input ranges of its windows: a 3-hour FLAC without a length in its header costs
    two decodes and a few windows of memory instead of gigabytes.
    """
    sr_in = decoder.sample_rate
    keep_limit = int(_KEEP_WHOLE_SECONDS * sr_in)
    kept: list[np.ndarray] | None = []
    total = 0
    for block in decoder.iter_blocks():
        total += len(block)
        if kept is not None:
            if total <= keep_limit:
                kept.append(block)
            else:
                kept = None  # too long to hold: count only, collect the windows in a second pass
    if kept is not None:
        whole = np.concatenate(kept) if kept else np.zeros(0, np.float32)
        return _windows_from_whole(whole, sr_in, config=config, path=path, slots=slots)
    offsets = window_offsets(total / sr_in, config=config, slots=slots)
    wanted = [_window_input_range(o, total, sr_in, config=config)[:2] for o in offsets]
    buffers = [np.zeros(end - start, np.float32) for start, end in wanted]
    filled = [0] * len(wanted)
    position = 0
    for block in decoder.iter_blocks():
        block_end = position + len(block)
        for i, (start, end) in enumerate(wanted):
            lo, hi = max(start, position), min(end, block_end)
            if lo < hi:
                buffers[i][lo - start : hi - start] = block[lo - position : hi - position]
                filled[i] += hi - lo
        position = block_end
        if position >= max(end for _, end in wanted):
            break  # past the last window: stop decoding
    if any(f < end - start for f, (start, end) in zip(filled, wanted)):
        raise AudioDecodeError("decodes differently on a second pass (unstable stream)", path=path)
    collected = _CollectedRanges([(start, buf) for (start, _), buf in zip(wanted, buffers)], total, sr_in)
    windows = [_read_window(collected, o, config=config) for o in offsets]
    if any(w is None for w in windows):  # pragma: no cover - the ranges are exact
        raise AudioDecodeError("window outside the decoded audio", path=path)
    return np.stack(windows)  # type: ignore[arg-type]


def _decode_any(p: Path, *, config: AudioConfig, slots: Sequence[int] | None = None) -> np.ndarray:
    """Windows of ``p`` from the first back end that decodes it (see :func:`load_windows`)."""
    name = str(p)
    failures: list[str] = []
    verdict: AudioError | None = None  # "too short"/"empty" from a back end that did decode
    backends: list[Callable[[Path], _Decoder]] = list(_backends(p))
    for backend in backends:
        try:
            decoder = backend(p)
            try:
                return _decode_windows(decoder, config=config, path=name, slots=slots)
            finally:
                decoder.close()
        except (AudioTooShortError, EmptyAudioError) as exc:
            # The other back end may get more out of a damaged file; keep the most
            # informative verdict in case it does not.
            if verdict is None or isinstance(verdict, EmptyAudioError):
                verdict = exc
        except _LengthUnknown:
            backends.append(functools.partial(_SoundFileDecoder, allow_unknown_length=True))
        except AudioDecodeError as exc:
            failures.append(_describe(exc))
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - any library error means "cannot decode"
            backend_name = _BACKEND_NAMES.get(getattr(backend, "func", backend), "decoder")
            failures.append(f"{backend_name}: {_describe(exc)}")
    if verdict is not None:
        raise verdict
    raise AudioDecodeError("not decodable audio (" + "; ".join(failures) + ")", path=name)


def load_windows(path: str | os.PathLike[str], *, config: AudioConfig,
                 slots: Sequence[int] | None = None) -> np.ndarray:
    """Decode the analysed windows of an audio file (``slots``: only those, by index of
    :func:`window_offsets`, in that order; the decoder seeks to each and reads nothing else).

    Returns
    -------
    np.ndarray
        float32 [shape=(n, config.window_samples)], mono, at ``config.sample_rate``;
        ``n = len(window_offsets(duration, slots=slots))``: ``config.num_windows`` (or
        ``len(slots)``), or 1 for a track no longer than a window (tiled to fill it).

    Raises
    ------
    EmptyAudioError
        0-byte file, or no samples decode (truncated).
    AudioDecodeError
        Not audio, unknown codec, unreadable, NaN samples; :class:`AudioFileNotFoundError`
        (also a ``FileNotFoundError``) when the file does not exist.
    AudioTooShortError
        Less than ``config.min_seconds`` of audio.
    SilentAudioError
        The RMS of the decoded audio is below ``config.silence_rms``.
    """
    p = _check_file(path)
    windows = _decode_any(p, config=config, slots=slots)
    if not np.isfinite(windows).all():
        raise AudioDecodeError(
            "decodes to NaN or infinite samples (corrupt float data?)", path=str(p)
        )
    flat = windows.ravel()
    rms = math.sqrt(float(np.dot(flat, flat)) / flat.size)
    if not rms >= config.silence_rms:  # also catches NaN
        raise SilentAudioError(
            f"digital silence (RMS {rms:.1e} < {config.silence_rms:.1e})", path=str(p)
        )
    return windows



__all__ = ["listening_order", "load_windows", "window_offsets"]
