"""Decoders: mono float32 at the file's own rate, read from any frame, and soxr resampling.

* libsndfile (``soundfile``) for WAV, FLAC, AIFF, Ogg Vorbis/Opus and MP3: sample
  exact seeking, and the same decoder ``librosa.load`` uses.
* FFmpeg (``av``) for M4A/AAC/ALAC, WMA, APE, WavPack... and for anything libsndfile
  refuses.

Both decode to mono float32 at the file's own rate; one resampler (soxr "HQ", what
``librosa.load`` uses by default) brings every format to the model's rate, so all
formats go through identical resampling. libsndfile releases the GIL while decoding
(threads scale); PyAV holds it for much of its per-frame work, so AAC decoding does not
scale across threads (ALAC does: its frames are 4x larger).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import av
import numpy as np
import soundfile as sf
import soxr

from ..errors import AudioDecodeError, AudioError, EmptyAudioError
from .files import AUDIO_EXTENSIONS

# Extensions libsndfile decodes (FFmpeg is the fallback). The other audio extensions go
# to FFmpeg first; an unknown one (a file named explicitly) tries libsndfile, then FFmpeg.
_SNDFILE_EXTENSIONS = frozenset(
    {".mp3", ".flac", ".ogg", ".oga", ".opus", ".wav", ".wave", ".aif", ".aiff", ".aifc"}
)

# soxr quality: "HQ" is librosa's default ("soxr_hq"), so windows match librosa.load
# exactly; resampling costs ~3 ms per 30-s window at any quality, decoding 30-70 ms.
RESAMPLE_QUALITY = "HQ"
# FFmpeg seeks this far before the window and decodes into it: the first frames after a
# seek can be garbage (MP3 bit reservoir, AAC overlap) and are thrown away.
_AV_PREROLL_SECONDS = 0.5
# Block size of whole-file reads: soundfile's read(-1) would allocate the header's
# (possibly absurd) frame count at once, and an error (a truncated FLAC "loses sync")
# only costs the block it happens in.
_BLOCK_SECONDS = 1.0
# FFmpeg packets that may fail to decode before a file counts as undecodable.
_MAX_BAD_PACKETS = 20


class AudioFileNotFoundError(AudioDecodeError, FileNotFoundError):
    """The audio file does not exist: an :class:`AudioError` *and* a ``FileNotFoundError``."""



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


def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return x
    return soxr.resample(x, sr_in, sr_out, quality=RESAMPLE_QUALITY).astype(np.float32, copy=False)



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



__all__ = ["AudioFileNotFoundError", "RESAMPLE_QUALITY", "probe_duration"]
