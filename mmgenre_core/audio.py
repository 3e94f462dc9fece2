"""Audio front end: find audio files, decode the analysed windows, log-mel spectrograms.

Decoding reads only the analysed windows of a track (FMA-style: ``window_seconds``
from the middle, or ``num_windows`` evenly spaced windows), never the whole file, so
a long track costs no more than a 30-s clip. Two back ends:

* libsndfile (``soundfile``) for WAV, FLAC, AIFF, Ogg Vorbis/Opus and MP3: sample
  exact seeking, and the same decoder ``librosa.load`` uses, so the windows equal
  the matching slices of ``librosa.load`` of the whole file.
* FFmpeg (``av``) for M4A/AAC/ALAC, WMA, APE, WavPack... and for anything libsndfile
  refuses.

Both decode to mono float32 at the file's own rate; one resampler (soxr "HQ", what
``librosa.load`` uses by default) brings every format to ``AudioConfig.sample_rate``,
so all formats go through identical resampling.

Windows are sample exact (equal to slices of a whole-file decode) wherever the
container has sample-accurate timestamps: WAV, FLAC, AIFF, Ogg, MP3, MP4/M4A. Matroska,
WebM and ASF (WMA) time frames in milliseconds, so there a window may be off by < 1 ms.

Every problem with a file is raised as an :class:`~mmgenre_core.errors.AudioError`
subclass carrying the path. Decoding is thread-safe: each call opens its own handles
and no state is shared. libsndfile releases the GIL while decoding (threads scale);
PyAV holds it for much of its per-frame work, so AAC decoding does not scale across
threads (ALAC does: its frames are 4x larger).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import Protocol

import av
import numpy as np
import soundfile as sf
import soxr
import torch

from .config import AudioConfig
from .errors import (
    AudioDecodeError,
    AudioError,
    AudioTooShortError,
    EmptyAudioError,
    SilentAudioError,
)

AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {
        # libsndfile
        ".mp3", ".flac", ".ogg", ".oga", ".opus", ".wav", ".wave", ".aif", ".aiff", ".aifc",
        # FFmpeg
        ".m4a", ".m4b", ".mp4", ".aac", ".alac", ".wma", ".ape", ".wv", ".mpc", ".mka",
        ".webm", ".dsf",
    }
)

# Extensions libsndfile decodes (FFmpeg is the fallback). The other audio extensions go
# to FFmpeg first; an unknown one (a file named explicitly) tries libsndfile, then FFmpeg.
_SNDFILE_EXTENSIONS = frozenset(
    {".mp3", ".flac", ".ogg", ".oga", ".opus", ".wav", ".wave", ".aif", ".aiff", ".aifc"}
)

# soxr quality: "HQ" is librosa's default ("soxr_hq"), so windows match librosa.load
# exactly; resampling costs ~3 ms per 30-s window at any quality, decoding 30-70 ms.
RESAMPLE_QUALITY = "HQ"

# Extra seconds decoded on both sides of a window, so the resampler's filter sees real
# signal instead of zeros at the window edges (soxr HQ needs < 5 ms).
_EDGE_SECONDS = 0.05
# FFmpeg seeks this far before the window and decodes into it: the first frames after a
# seek can be garbage (MP3 bit reservoir, AAC overlap) and are thrown away.
_AV_PREROLL_SECONDS = 0.5
# A window read that comes back at most this much short (a header length off by a
# frame or two) is zero-padded; more than that and the file is read whole instead.
_SHORT_READ_SECONDS = 0.5
# Block size of whole-file reads: soundfile's read(-1) would allocate the header's
# (possibly absurd) frame count at once, and an error (a truncated FLAC "loses sync")
# only costs the block it happens in.
_BLOCK_SECONDS = 1.0
# A file of unknown length (or one that ends before its header says) is decoded from the
# start; up to this much audio is kept whole, a longer one is counted and then decoded
# again for its windows only, so memory stays bounded whatever the file (10 min of
# 48 kHz mono float32 is 115 MB).
_KEEP_WHOLE_SECONDS = 600.0
# FFmpeg packets that may fail to decode before a file counts as undecodable.
_MAX_BAD_PACKETS = 20


class AudioFileNotFoundError(AudioDecodeError, FileNotFoundError):
    """The audio file does not exist: an :class:`AudioError` *and* a ``FileNotFoundError``."""


# ---------------------------------------------------------------------------
# Finding files


def _normalise_extensions(extensions: Collection[str]) -> frozenset[str]:
    return frozenset(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)


def _walk_audio(folder: Path, extensions: frozenset[str]) -> list[Path]:
    """Audio files under ``folder`` (recursive), hidden files and folders skipped, sorted."""
    found: list[Path] = []
    seen_dirs: set[str] = set()
    # followlinks: music libraries often link folders in; realpaths stop link loops.
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen_dirs:
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(
            Path(root, f)
            for f in files
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in extensions
        )
    return sorted(found)


def find_audio_files(
    paths: Iterable[str | os.PathLike[str]],
    *,
    extensions: Collection[str] = AUDIO_EXTENSIONS,
) -> list[Path]:
    """Expand files and folders into a list of audio files.

    Files named explicitly are kept whatever their extension (a bad one gets its own
    error when decoded); folders are searched recursively for ``extensions``, skipping
    hidden files and folders, and their files come sorted. Order of ``paths`` is kept
    and duplicates are dropped.

    Raises
    ------
    FileNotFoundError
        A path does not exist.
    """
    exts = _normalise_extensions(extensions)
    out: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            candidates = _walk_audio(path, exts)
        elif path.exists():
            candidates = [path]
        elif path.is_symlink():
            raise FileNotFoundError(2, "a symbolic link that points nowhere or in a loop", str(path))
        else:
            raise FileNotFoundError(2, "no such file or folder", str(path))
        for c in candidates:
            if c not in seen:
                seen.add(c)
                out.append(c)
    return out


# ---------------------------------------------------------------------------
# Windows


def window_offsets(duration: float, *, config: AudioConfig) -> list[float]:
    """Start times (s) of the analysed windows of a ``duration``-second track.

    One window: the centre ``window_seconds`` (as FMA's clips). ``num_windows = n > 1``:
    the track is cut into n equal parts and each window is centred in one of them (so
    the windows spread over the whole track but skip its very start and end). A track
    no longer than one window has the single window ``[0.0]`` (it is tiled to fill it).
    """
    slack = duration - config.window_seconds
    if not slack > 0:  # also catches NaN
        return [0.0]
    n = config.num_windows
    centres = [duration * (2 * k + 1) / (2 * n) for k in range(n)]
    return [min(max(c - config.window_seconds / 2, 0.0), slack) for c in centres]


# ---------------------------------------------------------------------------
# Decoders: mono float32 at the file's own rate, read from any frame


class _Decoder(Protocol):
    sample_rate: int
    # Header length in frames at sample_rate; None when unknown.
    num_frames: int | None

    def read(self, start: int, count: int) -> np.ndarray:
        """Mono float32 [shape=(<= count,)] from frame ``start``; shorter at the end."""

    def iter_blocks(self) -> Iterator[np.ndarray]:
        """The whole file from its start, as mono float32 blocks [shape=(frames,)]."""

    def close(self) -> None: ...


def _mix_to_mono(data: np.ndarray) -> np.ndarray:
    """[shape=(frames, channels)] -> [shape=(frames,)] float32, the channel mean (as librosa)."""
    if data.shape[1] == 1:
        return np.ascontiguousarray(data[:, 0], dtype=np.float32)
    if data.shape[1] == 2:
        # np.mean over the strided channel axis costs ~2.5 ms per 3-s window of
        # 44.1 kHz stereo (a fifth of a window's decode); this is 20x faster and
        # the same floats: (l + r) / 2 with the halving exact.
        mono = data[:, 0] + data[:, 1]
        mono *= np.float32(0.5)
        return mono
    return data.mean(axis=1, dtype=np.float32)


class _SoundFileDecoder:
    """libsndfile back end: seeks to the exact frame, reads only ``count`` frames."""

    def __init__(self, path: Path, *, allow_unknown_length: bool = False) -> None:
        self._path = str(path)
        self._file = sf.SoundFile(self._path)
        self.sample_rate = int(self._file.samplerate)
        frames = int(self._file.frames)
        # libsndfile reports SF_COUNT_MAX-like values when it cannot tell.
        self.num_frames = frames if 0 < frames < 2**40 else None
        if self.num_frames is None and not allow_unknown_length:
            # Such files (FLAC written to a pipe) lose their last half second in
            # libsndfile and cannot be rewound; FFmpeg reads them whole, so it goes first.
            self._file.close()
            raise _LengthUnknown(self._path)

    def read(self, start: int, count: int) -> np.ndarray:
        self._file.seek(start)
        data = self._file.read(count, dtype="float32", always_2d=True)
        return _mix_to_mono(data)

    def iter_blocks(self) -> Iterator[np.ndarray]:
        try:
            self._file.seek(0)
        except sf.LibsndfileError:  # a stream that cannot seek: reopen it instead
            self._file.close()
            self._file = sf.SoundFile(self._path)
        block = max(int(_BLOCK_SECONDS * self.sample_rate), 1)
        decoded_any = False
        while True:
            try:
                data = self._file.read(block, dtype="float32", always_2d=True)
            except sf.LibsndfileError:
                if not decoded_any:
                    raise
                return  # damaged or truncated tail: keep what decoded
            if len(data):
                decoded_any = True
                yield _mix_to_mono(data)
            if len(data) < block:
                return

    def close(self) -> None:
        self._file.close()


class _LengthUnknown(Exception):
    """libsndfile cannot tell the file's length: try FFmpeg first, libsndfile last."""


class _NoTimestamps(Exception):
    """FFmpeg gave frames without timestamps after a seek: fall back to a linear read."""


class _SeekedTooFar(Exception):
    """The first frame after a seek starts after the wanted sample."""


# Scale of FFmpeg's integer sample formats to [-1, 1) floats.
_INT_SCALE = {
    np.dtype(np.int16): 2.0**-15,
    np.dtype(np.int32): 2.0**-31,
    np.dtype(np.int64): 2.0**-63,
}


def _frame_to_mono(frame: av.AudioFrame) -> np.ndarray:
    """An FFmpeg audio frame of any sample format -> mono float32 [shape=(samples,)].

    Converted here rather than with ``av.AudioResampler`` (a filter graph per frame
    costs as much as the decoding); the channel mean is the one libsndfile's path uses.
    """
    if frame.format.name == "fltp":
        # Most lossy codecs' native format: read the planes in place. to_ndarray()
        # and np.mean cost more than decoding a 1024-sample AAC frame.
        n = frame.samples
        planes = [np.frombuffer(plane, dtype=np.float32, count=n) for plane in frame.planes]
        if len(planes) == 1:
            return planes[0].copy()
        if len(planes) == 2:
            mono = planes[0] + planes[1]
            mono *= np.float32(0.5)  # == (l + r) / 2 exactly, as np.mean
            return mono
        return np.mean(planes, axis=0, dtype=np.float32)
    data = frame.to_ndarray()  # planar: (channels, samples); packed: (1, samples * channels)
    if not frame.format.is_planar:
        data = data.reshape(-1, len(frame.layout.channels)).T
    if data.dtype == np.uint8:
        return (data.mean(axis=0, dtype=np.float32) - 128.0) / 128.0
    mono = data.mean(axis=0, dtype=np.float32)
    scale = _INT_SCALE.get(data.dtype)
    if scale is not None:
        mono *= np.float32(scale)
    return mono


# Raw elementary streams with no length in any header: FFmpeg guesses their duration from
# the bit rate (seen 8% too long for a 12-s ADTS AAC file with FFmpeg 8 / PyAV 18), so
# they are decoded whole and the windows are placed on what is really there.
_ESTIMATED_LENGTH_FORMATS = frozenset({"aac", "ac3", "eac3", "dts", "truehd", "mlp", "loas"})


class _AVDecoder:
    """FFmpeg back end: seeks a little before the window, trims by frame timestamps.

    Timestamps are taken relative to the stream's start time, so sample 0 is the first
    sample FFmpeg outputs (for MP3 that is after the encoder delay, as in libsndfile).
    """

    def __init__(self, path: Path) -> None:
        self._path = str(path)
        self._container = av.open(self._path)
        self._fresh = True  # nothing decoded yet: no need to rewind
        try:
            if not self._container.streams.audio:
                raise AudioDecodeError("no audio stream", path=str(path))
            self._stream = self._container.streams.audio[0]
            rate = self._stream.codec_context.sample_rate or self._stream.rate
            if not rate:
                raise AudioDecodeError("audio stream without a sample rate", path=str(path))
            self.sample_rate = int(rate)
            self.num_frames = self._header_frames()
            self._single_thread()
        except BaseException:
            self._container.close()
            raise

    def _single_thread(self) -> None:
        # FFmpeg's codec threads only add overhead for audio, and callers parallelise
        # over files already.
        self._stream.codec_context.thread_count = 1
        self._stream.thread_type = "NONE"

    def _header_frames(self) -> int | None:
        if self._container.format.name in _ESTIMATED_LENGTH_FORMATS:
            return None  # read it all: windows placed by a guessed length land off target
        stream = self._stream
        if stream.duration and stream.time_base:
            seconds = float(stream.duration * stream.time_base)
        elif self._container.duration:
            seconds = self._container.duration / av.time_base
        else:
            return None
        return int(round(seconds * self.sample_rate)) if seconds > 0 else None

    def _start_pts(self) -> int:
        start = self._stream.start_time
        return int(start) if start is not None else 0

    def _decoded(self) -> Iterator[av.AudioFrame]:
        """Decoded frames; corrupt packets are skipped and a damaged tail ends the stream."""
        packets = self._container.demux(self._stream)
        bad = 0
        decoded_any = False
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError:
                if decoded_any:
                    return  # truncated container: keep what decoded
                raise
            try:
                frames = packet.decode()  # the final empty packet drains the decoder
            except av.FFmpegError:
                bad += 1
                if bad > _MAX_BAD_PACKETS:
                    raise
                continue
            decoded_any = decoded_any or bool(frames)
            yield from frames

    def _frames(self) -> Iterator[tuple[int | None, np.ndarray]]:
        """Decoded frames as (index of the frame's first sample or None, mono float32)."""
        time_base = self._stream.time_base
        start_pts = self._start_pts()
        # pts -> sample index in integers: Fraction arithmetic per frame is slow.
        num = time_base.numerator * self.sample_rate if time_base else 0
        den = time_base.denominator if time_base else 1
        self._fresh = False
        for frame in self._decoded():
            if frame.sample_rate != self.sample_rate:
                # Would silently change the pitch of what follows; never seen in
                # practice (FFmpeg reports HE-AAC's output rate up front).
                raise AudioDecodeError(
                    "sample rate changes mid-stream "
                    f"({self.sample_rate} -> {frame.sample_rate} Hz)",
                    path=self._path,
                )
            pts = frame.pts
            index = None
            if pts is not None and num:
                index = ((pts - start_pts) * num * 2 + den) // (2 * den)  # rounded
            yield index, _frame_to_mono(frame)

    def _rewind(self) -> None:
        """Back to the first frame by reopening: works for streams that cannot seek."""
        if self._fresh:
            return
        self._container.close()
        self._container = av.open(self._path)
        self._stream = self._container.streams.audio[0]
        self._single_thread()

    def read(self, start: int, count: int) -> np.ndarray:
        seek_seconds = start / self.sample_rate - _AV_PREROLL_SECONDS
        try:
            for attempt in range(3):
                if seek_seconds <= 0:
                    break
                try:
                    return self._read_from(start, count, seek_seconds)
                except _SeekedTooFar:
                    # Demuxers seek to a nearby keyframe, not always one before the target.
                    seek_seconds -= 10.0 * (attempt + 1)
            self._rewind()
            return self._read_from(start, count, None)
        except _NoTimestamps:
            self._rewind()
            return self._read_from(start, count, None, timed=False)

    def _read_from(
        self, start: int, count: int, seek_seconds: float | None, *, timed: bool = True
    ) -> np.ndarray:
        """Frames ``start`` to ``start + count`` after seeking to ``seek_seconds``.

        ``seek_seconds=None`` decodes from where the container is (just rewound);
        ``timed=False`` ignores timestamps and counts samples from the first one.
        """
        stream = self._stream
        if seek_seconds is not None:
            seek_pts = self._start_pts() + int(seek_seconds / stream.time_base)
            self._container.seek(seek_pts, stream=stream, backward=True, any_frame=False)
        parts: list[np.ndarray] = []
        got = 0
        position: int | None = None  # sample index of the next decoded sample
        for index, mono in self._frames():
            if position is None:
                if not timed:
                    index = 0
                elif index is None:
                    raise _NoTimestamps
                if index > start:
                    if seek_seconds is not None:
                        raise _SeekedTooFar
                    # The stream's first sample comes a little late: pad the gap.
                    parts.append(np.zeros(min(index - start, count), np.float32))
                    got = len(parts[0])
                position = index
            skip = max(start + got - position, 0)  # samples before the window
            position += len(mono)
            if skip >= len(mono):
                continue
            piece = mono[skip : skip + count - got]
            parts.append(piece)
            got += len(piece)
            if got >= count:
                break  # window filled: stop decoding
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def iter_blocks(self) -> Iterator[np.ndarray]:
        self._rewind()
        for _, mono in self._frames():
            yield mono

    def close(self) -> None:
        self._container.close()


# ---------------------------------------------------------------------------
# From decoder to windows


def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return x
    return soxr.resample(x, sr_in, sr_out, quality=RESAMPLE_QUALITY).astype(np.float32, copy=False)


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
    audio: np.ndarray, sr_in: int, *, config: AudioConfig, path: str
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
              for o in window_offsets(len(y) / config.sample_rate, config=config)]
    return np.stack([y[s : s + width] for s in starts])


def _decode_windows(decoder: _Decoder, *, config: AudioConfig, path: str) -> np.ndarray:
    """Windows [shape=(n, window_samples)] from ``decoder``, seeking when the length is known."""
    total = decoder.num_frames
    window_in = config.window_seconds * decoder.sample_rate
    if total is not None and total >= window_in:
        windows: list[np.ndarray | None]
        try:
            windows = [
                _read_window(decoder, offset, config=config)
                for offset in window_offsets(total / decoder.sample_rate, config=config)
            ]
        except (AudioError, MemoryError):
            raise
        except Exception:  # noqa: BLE001 - damaged somewhere: read what is there instead
            windows = [None]
        if all(w is not None for w in windows):
            return np.stack(windows)  # type: ignore[arg-type]
    # Short track, unknown length, damaged, or the file ends before its header says:
    # take the windows from what is really there, in bounded memory.
    return _windows_streaming(decoder, config=config, path=path)


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


def _windows_streaming(decoder: _Decoder, *, config: AudioConfig, path: str) -> np.ndarray:
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
        return _windows_from_whole(whole, sr_in, config=config, path=path)
    offsets = window_offsets(total / sr_in, config=config)
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
        if position >= wanted[-1][1]:
            break  # past the last window: stop decoding
    if any(f < end - start for f, (start, end) in zip(filled, wanted)):
        raise AudioDecodeError("decodes differently on a second pass (unstable stream)", path=path)
    collected = _CollectedRanges([(start, buf) for (start, _), buf in zip(wanted, buffers)], total, sr_in)
    windows = [_read_window(collected, o, config=config) for o in offsets]
    if any(w is None for w in windows):  # pragma: no cover - the ranges are exact
        raise AudioDecodeError("window outside the decoded audio", path=path)
    return np.stack(windows)  # type: ignore[arg-type]


def _check_file(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise AudioFileNotFoundError("no such file", path=str(p)) from None
    except OSError as exc:
        raise AudioDecodeError(f"cannot read: {exc.strerror or exc}", path=str(p)) from exc
    if p.is_dir():
        raise AudioDecodeError("is a folder, not an audio file", path=str(p))
    if size == 0:
        raise EmptyAudioError("empty file (0 bytes)", path=str(p))
    return p


def _backends(path: Path) -> tuple[type, ...]:
    if path.suffix.lower() in _SNDFILE_EXTENSIONS:
        return (_SoundFileDecoder, _AVDecoder)
    if path.suffix.lower() in AUDIO_EXTENSIONS:
        return (_AVDecoder, _SoundFileDecoder)
    return (_SoundFileDecoder, _AVDecoder)


_BACKEND_NAMES = {_SoundFileDecoder: "libsndfile", _AVDecoder: "FFmpeg"}


def _describe(exc: BaseException) -> str:
    """One short line about ``exc``, without the path (the final error adds it)."""
    if isinstance(exc, sf.LibsndfileError):
        text = exc.error_string.strip()
        if "does not exist or is not a regular file" in text:
            text = "format not recognised"  # libsndfile's odd words for it; the file exists
    elif isinstance(exc, av.FFmpegError) and exc.strerror:
        text = exc.strerror
    else:
        text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, AudioError) and exc.path and text.startswith(exc.path + ": "):
        text = text[len(exc.path) + 2 :]
    return text.splitlines()[0][:200]


def _decode_any(p: Path, *, config: AudioConfig) -> np.ndarray:
    """Windows of ``p`` from the first back end that decodes it (see :func:`load_windows`)."""
    name = str(p)
    failures: list[str] = []
    verdict: AudioError | None = None  # "too short"/"empty" from a back end that did decode
    backends: list[Callable[[Path], _Decoder]] = list(_backends(p))
    for backend in backends:
        try:
            decoder = backend(p)
            try:
                return _decode_windows(decoder, config=config, path=name)
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


def load_windows(path: str | os.PathLike[str], *, config: AudioConfig) -> np.ndarray:
    """Decode the analysed windows of an audio file.

    Returns
    -------
    np.ndarray
        float32 [shape=(n, config.window_samples)], mono, at ``config.sample_rate``;
        ``n = len(window_offsets(duration))``: ``config.num_windows``, or 1 for a track
        no longer than a window (tiled to fill it).

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
    windows = _decode_any(p, config=config)
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


def probe_duration(path: str | os.PathLike[str]) -> float:
    """Duration in seconds from the file's headers (cheap: nothing is decoded).

    NaN when the headers do not tell. May be off for MP3s without a Xing/LAME header.
    Raises the same :class:`AudioError` subclasses as :func:`load_windows` for files
    that are missing, empty or not audio.
    """
    p = _check_file(path)
    failures: list[str] = []
    for backend in _backends(p):
        try:
            decoder = backend(p)
        except _LengthUnknown:
            failures.append("libsndfile: length unknown")
            continue
        except AudioDecodeError as exc:
            failures.append(_describe(exc))
            continue
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001
            failures.append(f"{_BACKEND_NAMES[backend]}: {_describe(exc)}")
            continue
        try:
            frames = decoder.num_frames
            return frames / decoder.sample_rate if frames is not None else math.nan
        finally:
            decoder.close()
    raise AudioDecodeError("cannot read audio headers (" + "; ".join(failures) + ")", path=str(p))


# ---------------------------------------------------------------------------
# Log-mel spectrogram


def _musicnn_compress(mel: torch.Tensor) -> torch.Tensor:
    """musicnn's ``np.log10(10000 * mel.astype(np.float16) + 1)``, [shape=(..., n_mels, frames)].

    musicnn rounds the mel power to float16 before the log (numpy 1.x then does the
    arithmetic in float32); the pretrained weights saw exactly that, so the rounding
    is kept. Powers beyond float16's range (inf in musicnn) saturate at its maximum.
    """
    mel16 = mel.clamp(max=float(torch.finfo(torch.float16).max)).half().float()
    return torch.log10(10000.0 * mel16 + 1.0)


def _hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    mels = hz / f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    log_t = hz >= min_log_hz
    mels[log_t] = min_log_mel + np.log(hz[log_t] / min_log_hz) / logstep
    return mels


def _slaney_mel_to_hz(mels: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    hz = f_sp * mels
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    log_t = mels >= min_log_mel
    hz[log_t] = min_log_hz * np.exp(logstep * (mels[log_t] - min_log_mel))
    return hz


def slaney_mel_filterbank(*, sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                          fmax: float | None = None) -> np.ndarray:
    """librosa's ``filters.mel(htk=False, norm="slaney")``, the same float32 values
    [shape=(n_mels, 1 + n_fft // 2)].

    The same numpy operations in the same order as librosa 0.10-0.11 (tested equal):
    importing ``librosa.filters`` pulls in scipy.signal, about 1.5 s of every start-up
    (``beet mmgenre`` on cached features spends most of its time there otherwise).
    """
    if fmax is None:
        fmax = float(sample_rate) / 2
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    edges = _hz_to_slaney_mel(np.asarray([fmin, fmax], dtype=np.float64))
    mel_f = _slaney_mel_to_hz(np.linspace(edges[0], edges[1], n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]
    return weights


class LogMel(torch.nn.Module):
    """Log-mel spectrogram in dB (or musicnn's log compression), matching librosa exactly.

    ``librosa.power_to_db(librosa.feature.melspectrogram(y, center=True,
    pad_mode="constant", power=2, htk=False, norm="slaney"), ref=1.0, amin=1e-10,
    top_db=config.top_db)``, with ``top_db`` applied per example. With
    ``config.scale == "musicnn"`` the mel power is compressed as musicnn does
    (``log10(1 + 10000 * mel)`` of the float16-rounded power) instead of converted to dB.
    """

    amin = 1e-10
    ref = 1.0
    #: Windows per STFT call on the CPU (see forward).
    cpu_chunk = 4

    def __init__(self, config: AudioConfig) -> None:
        super().__init__()
        self.n_fft = config.n_fft
        self.hop_length = config.hop_length
        self.top_db = config.top_db
        self.scale = config.scale
        mel = slaney_mel_filterbank(sample_rate=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels,
                                    fmin=config.fmin, fmax=config.fmax)
        # Not persistent: rebuilt from the config, so checkpoints stay small.
        self.register_buffer("mel_basis", torch.from_numpy(mel).float(), persistent=False)
        # librosa's "hann" window is the periodic one.
        self.register_buffer(
            "window", torch.hann_window(config.n_fft, periodic=True), persistent=False
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """[shape=(batch, samples)] -> float32 log-mel dB [shape=(batch, n_mels, frames)].

        ``frames = 1 + samples // hop_length``. Always computed in float32, also under
        autocast (half-precision power spectra lose the quiet bands).
        """
        if waveform.dim() != 2:
            raise ValueError(f"LogMel expects [batch, samples], got shape {tuple(waveform.shape)}")
        # The complex STFT of a 30-s window takes ~10 MB; on the CPU a batch is done a few
        # windows at a time, which bounds peak memory (400 MB less for 16 windows) at no
        # cost in speed. GPUs get the whole batch at once.
        chunk = self.cpu_chunk if waveform.device.type == "cpu" else waveform.shape[0]
        if waveform.shape[0] > chunk:
            return torch.cat([self._log_mel(part) for part in waveform.split(chunk)], dim=0)
        return self._log_mel(waveform)

    def _log_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            x = waveform.float()
            spec = torch.stft(
                x,
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                win_length=self.n_fft,
                window=self.window.float(),
                center=True,
                pad_mode="constant",  # librosa >= 0.10's default
                normalized=False,
                onesided=True,
                return_complex=True,
            )
            # |X|^2 [batch, freq, frames]; re*re + im*im in place is ~8x faster on CPU
            # than abs()**2 or view_as_real().pow(2).sum(-1).
            real, imag = spec.real, spec.imag
            power = real * real
            power.addcmul_(imag, imag)
            mel = torch.matmul(self.mel_basis.float(), power)  # [batch, n_mels, frames]
            if self.scale == "musicnn":
                return _musicnn_compress(mel)
            db = 10.0 * torch.log10(torch.clamp(mel, min=self.amin))
            db = db - 10.0 * math.log10(max(self.amin, self.ref))
            if self.top_db is not None:
                peak = db.amax(dim=(-2, -1), keepdim=True)
                db = torch.maximum(db, peak - self.top_db)
        return db


__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioFileNotFoundError",
    "LogMel",
    "find_audio_files",
    "load_windows",
    "probe_duration",
    "window_offsets",
]
