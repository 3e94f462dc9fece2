"""Tests of mmgenre_core.audio: file discovery, windowed decoding of every format, LogMel.

All audio is real (``../shared/data``, and transcodes of it made by conftest fixtures);
the only generated signals are the deliberately broken files: silence, noise, junk.
"""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from mmgenre_core.audio import decoders
from mmgenre_core.audio import (
    AUDIO_EXTENSIONS,
    AudioFileNotFoundError,
    LogMel,
    find_audio_files,
    load_windows,
    probe_duration,
    window_offsets,
)
from mmgenre_core.config import AudioConfig
from mmgenre_core.errors import (
    AudioDecodeError,
    AudioError,
    AudioTooShortError,
    EmptyAudioError,
    SilentAudioError,
)

# librosa.load imports audioread, which imports modules Python 3.13 drops.
pytestmark = pytest.mark.filterwarnings("ignore:'(aifc|audioop|sunau)' is deprecated")

CFG = AudioConfig()
SR = CFG.sample_rate
W = CFG.window_samples


@functools.lru_cache(maxsize=8)
def librosa_whole(path: Path, sr: int = SR) -> np.ndarray:
    """The whole file as ``librosa.load`` gives it (mono, soxr_hq)."""
    y, _ = librosa.load(str(path), sr=sr, mono=True)
    return y


def window_starts(path: Path, config: AudioConfig) -> list[int]:
    """Sample indexes (at ``config.sample_rate``) where load_windows' windows start."""
    offsets = window_offsets(probe_duration(path), config=config)
    return [int(round(o * config.sample_rate)) for o in offsets]


def best_lag(x: np.ndarray, ref: np.ndarray, *, max_lag: int) -> int:
    """Shift of ``x`` against ``ref`` (same length) that maximises their correlation."""
    core = slice(max_lag, len(ref) - max_lag)
    scores = [
        float(np.dot(x[core.start + lag : core.stop + lag], ref[core]))
        for lag in range(-max_lag, max_lag + 1)
    ]
    return int(np.argmax(scores)) - max_lag


def librosa_logmel(y: np.ndarray) -> np.ndarray:
    mel = librosa.feature.melspectrogram(
        y=y, sr=22050, n_fft=2048, hop_length=512, n_mels=128, fmin=0, fmax=None,
        center=True, pad_mode="constant", power=2.0, htk=False, norm="slaney",
    )
    return librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=80.0)


def write_cut(source: Path, dest: Path, seconds: float) -> Path:
    """The first ``seconds`` of ``source`` as a 16-bit FLAC."""
    with sf.SoundFile(str(source)) as fh:
        pcm = fh.read(int(seconds * fh.samplerate), dtype="int16", always_2d=True)
        sf.write(str(dest), pcm, fh.samplerate, subtype="PCM_16")
    return dest


# ---------------------------------------------------------------------------
# Every format


FORMATS = ["mp3", "flac", "wav", "aiff", "ogg_vorbis", "ogg_opus", "m4a_aac", "m4a_alac"]
LOSSLESS = {"flac", "wav", "aiff", "m4a_alac"}


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMATS)
def test_every_format_decodes_like_the_original(fmt: str, transcoded: dict[str, Path]) -> None:
    path = transcoded[fmt]
    windows = load_windows(path, config=CFG)
    assert windows.shape == (1, W)
    assert windows.dtype == np.float32
    assert np.isfinite(windows).all()
    x = windows[0]
    assert np.sqrt(np.mean(x**2)) > 0.01

    # The original MP3 decoded whole, cut where this file's window starts (durations
    # differ by a few ms between codecs, so the centre window moves a little).
    ref_full = librosa_whole(transcoded["mp3"])
    (start,) = window_starts(path, CFG)
    ref = ref_full[start : start + W]
    # Codec delay (encoder priming, Opus pre-skip, MP3 gapless info) must be removed.
    assert abs(best_lag(x, ref, max_lag=200)) <= 1
    if fmt in LOSSLESS or fmt == "mp3":
        # Only 16-bit quantisation between them.
        np.testing.assert_allclose(x, ref, atol=2e-4)
    else:
        assert np.corrcoef(x, ref)[0, 1] > 0.98
        mel, mel_ref = librosa_logmel(x), librosa_logmel(ref)
        loud = mel_ref > mel_ref.max() - 60
        assert np.abs(mel - mel_ref)[loud].mean() < 1.5  # dB


# ---------------------------------------------------------------------------
# Seeking


@pytest.mark.parametrize(
    "which, config",
    [
        ("ogg", CFG),
        ("ogg", AudioConfig(num_windows=3)),
        ("mp3", AudioConfig(window_seconds=10.0, num_windows=3)),
        ("mp3", AudioConfig(sample_rate=16000, window_seconds=10.0, num_windows=3)),
        ("opus", AudioConfig(window_seconds=10.0, num_windows=3)),
    ],
    ids=["ogg-centre", "ogg-3-windows", "mp3-3-windows", "mp3-16kHz", "opus-48kHz"],
)
def test_windows_equal_slices_of_librosa_load(
    which: str, config: AudioConfig, full_track: Path, real_clip, transcoded: dict[str, Path]
) -> None:
    paths = {"ogg": full_track, "mp3": real_clip("electronic"), "opus": transcoded["ogg_opus"]}
    path = paths[which]
    windows = load_windows(path, config=config)
    whole = librosa_whole(path, config.sample_rate)
    starts = window_starts(path, config)
    assert windows.shape == (config.num_windows, config.window_samples)
    for window, start in zip(windows, starts):
        expected = whole[start : start + config.window_samples]
        # Same decoder and resampler as librosa, seeking on the resampler's grid: equal
        # up to float rounding, edges included (the last 64 samples of a window that
        # ends the file see the resampler's end-of-stream tail).
        np.testing.assert_allclose(window[:-64], expected[:-64], atol=1e-5)


@pytest.mark.parametrize("channels", [1, 2, 3, 6])
def test_mix_to_mono_is_numpys_channel_mean(channels: int, full_track: Path) -> None:
    # Real stereo samples (and made-up extra channels): the stereo fast path must give
    # exactly np.mean's floats, so windows and predictions do not move.
    with sf.SoundFile(str(full_track)) as f:
        f.seek(f.frames // 2)
        stereo = f.read(44100, dtype="float32", always_2d=True)
    data = np.ascontiguousarray(np.tile(stereo, (1, 3))[:, :channels])
    data[:, 2:] *= np.float32(0.37)
    mono = decoders._mix_to_mono(data)
    assert mono.dtype == np.float32 and mono.shape == (44100,)
    np.testing.assert_array_equal(mono, data.mean(axis=1, dtype=np.float32))


def test_num_windows_spread_over_the_track(full_track: Path) -> None:
    config = AudioConfig(num_windows=3)
    duration = probe_duration(full_track)
    offsets = window_offsets(duration, config=config)
    # Centred in each third of the track.
    assert offsets == pytest.approx([duration * f - config.window_seconds / 2 for f in (1 / 6, 1 / 2, 5 / 6)])
    windows = load_windows(full_track, config=config)
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.corrcoef(windows[i], windows[j])[0, 1] < 0.5


def test_ffmpeg_seek_is_sample_exact(excerpt: dict[str, Path]) -> None:
    # ALAC (read by FFmpeg) and FLAC (read by libsndfile) hold the very same samples:
    # the FFmpeg path's seek-and-trim must land on the same sample.
    config = AudioConfig(window_seconds=10.0, num_windows=3)
    flac = load_windows(excerpt["flac"], config=config)
    alac = load_windows(excerpt["m4a_alac"], config=config)
    np.testing.assert_array_equal(alac, flac)
    # AAC is lossy but must line up (edit list / priming handled) after seeking too.
    aac = load_windows(excerpt["m4a_aac"], config=config)
    for a, f in zip(aac, flac):
        assert best_lag(a, f, max_lag=200) == 0
        assert np.corrcoef(a, f)[0, 1] > 0.98


@pytest.mark.parametrize(
    "fmt, atol",
    [("wav", 0.0), ("flac", 0.0), ("ogg_vorbis", 1e-6), ("mp3", 1e-5), ("ogg_opus", 1e-2)],
    ids=["wav-packed-s16", "flac", "ogg_vorbis", "mp3", "ogg_opus"],
)
def test_ffmpeg_fallback_reads_the_same_samples(
    fmt: str, atol: float, transcoded: dict[str, Path]
) -> None:
    # Files libsndfile refuses go to FFmpeg; its seek-and-trim (with Ogg granules, MP3
    # gapless start times, packed integer frames...) must give libsndfile's samples.
    # Internal decoders on purpose: the public path would pick libsndfile for these.
    path = transcoded[fmt]
    reference = decoders._SoundFileDecoder(path)
    ffmpeg = decoders._AVDecoder(path)
    try:
        sr = reference.sample_rate
        assert ffmpeg.sample_rate == sr
        # Opus runs at 48 kHz: libopus (libsndfile) and FFmpeg's own decoder differ
        # in rounding, hence its looser tolerance. (Not from frame 0: the emotify clip
        # was cut by stream copy and each decoder primes its first frame differently.)
        for start in [sr + 1, 5 * sr + 1, 20 * sr + 7]:
            want = reference.read(start, 2 * sr)
            got = ffmpeg.read(start, 2 * sr)
            assert len(got) == len(want) == 2 * sr
            np.testing.assert_allclose(got, want, atol=atol, rtol=0)
    finally:
        reference.close()
        ffmpeg.close()


# ---------------------------------------------------------------------------
# Decoding only the window


@pytest.fixture
def sndfile_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Frame counts asked of every ``soundfile.SoundFile.read`` call during the test."""
    counts: list[int] = []
    real_read = sf.SoundFile.read

    def spy(self: sf.SoundFile, frames: int = -1, *args, **kwargs):
        counts.append(self.frames - self.tell() if frames < 0 else frames)
        return real_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    return counts


def test_full_track_reads_only_the_window(full_track: Path, sndfile_reads: list[int]) -> None:
    windows = load_windows(full_track, config=CFG)
    assert windows.shape == (1, W)
    sr_in = sf.info(str(full_track)).samplerate
    # The window plus a few ms of resampler margin, never the 183-s file.
    assert 0 < sum(sndfile_reads) <= (CFG.window_seconds + 0.2) * sr_in


def test_long_wav_reads_only_the_window(tmp_path: Path, sndfile_reads: list[int]) -> None:
    # 10 minutes at 8 kHz of low noise (cheap to write; only the length matters).
    path = tmp_path / "long.wav"
    rng = np.random.default_rng(0)
    sf.write(str(path), rng.integers(-300, 300, size=10 * 60 * 8000, dtype=np.int16), 8000)
    windows = load_windows(path, config=CFG)
    assert windows.shape == (1, W)
    assert 0 < sum(sndfile_reads) <= (CFG.window_seconds + 0.2) * 8000


class _ContainerSpy:
    """Wraps a PyAV input container and adds up the duration of demuxed packets."""

    def __init__(self, container) -> None:
        self._container = container
        self.seconds = 0.0

    def __getattr__(self, name: str):
        return getattr(self._container, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._container.close()

    def demux(self, *args, **kwargs):
        for packet in self._container.demux(*args, **kwargs):
            if packet.duration and packet.time_base:
                self.seconds += float(packet.duration * packet.time_base)
            yield packet


def test_ffmpeg_path_stops_after_the_window(
    excerpt: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    spies: list[_ContainerSpy] = []
    real_open = av.open

    def spy_open(*args, **kwargs):
        spies.append(_ContainerSpy(real_open(*args, **kwargs)))
        return spies[-1]

    monkeypatch.setattr(av, "open", spy_open)
    config = AudioConfig(window_seconds=10.0)
    windows = load_windows(excerpt["m4a_aac"], config=config)
    assert windows.shape == (1, config.window_samples)
    demuxed = sum(s.seconds for s in spies)
    # The 10-s window, FFmpeg's seek pre-roll and a packet or two; the file is 60 s.
    assert 10.0 <= demuxed < 12.0


# ---------------------------------------------------------------------------
# Short, broken and silent files


def test_short_track_is_tiled(tmp_path: Path, real_clip) -> None:
    path = write_cut(real_clip("pop"), tmp_path / "short.flac", 2.5)
    windows = load_windows(path, config=CFG)
    assert windows.shape == (1, W)
    n = int(round(2.5 * SR))
    np.testing.assert_allclose(windows[0, :n], librosa_whole(path)[:n], atol=1e-5)
    # Repeated end to end: the window is periodic with the track's length.
    np.testing.assert_array_equal(windows[0], np.resize(windows[0, :n], W))


def test_too_short_track(tmp_path: Path, real_clip) -> None:
    path = write_cut(real_clip("pop"), tmp_path / "tiny.flac", 0.4)
    with pytest.raises(AudioTooShortError, match=r"0\.4 s of audio, need at least 1\.0 s") as info:
        load_windows(path, config=CFG)
    assert info.value.path == str(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp3"
    path.touch()
    with pytest.raises(EmptyAudioError, match="0 bytes"):
        load_windows(path, config=CFG)


@pytest.mark.parametrize(
    "name, content",
    [
        ("random.mp3", np.random.default_rng(1).bytes(20_000)),
        ("notes.mp3", b"these are not the droids you are looking for\n" * 200),
        ("random.m4a", np.random.default_rng(2).bytes(20_000)),
        ("random.xyz", np.random.default_rng(3).bytes(20_000)),
    ],
    ids=["random-bytes-mp3", "text-as-mp3", "random-bytes-m4a", "unknown-extension"],
)
def test_not_audio(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AudioDecodeError, match="not decodable audio") as info:
        load_windows(path, config=CFG)
    assert str(path) in str(info.value)
    with pytest.raises(AudioDecodeError):
        probe_duration(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "gone.flac"
    with pytest.raises(AudioFileNotFoundError, match="no such file") as info:
        load_windows(path, config=CFG)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, AudioError)
    assert str(path) in str(info.value)
    with pytest.raises(AudioDecodeError, match="folder"):
        load_windows(tmp_path, config=CFG)


def test_truncated_mp3_head(tmp_path: Path, real_clip) -> None:
    path = tmp_path / "head.mp3"
    path.write_bytes(real_clip("rock").read_bytes()[:5_000])  # ~0.3 s at 128 kbit/s
    with pytest.raises(AudioTooShortError):
        load_windows(path, config=CFG)


def test_truncated_flac_decodes_what_is_there(tmp_path: Path, transcoded: dict[str, Path]) -> None:
    data = transcoded["flac"].read_bytes()
    path = tmp_path / "cut.flac"
    path.write_bytes(data[: len(data) * 3 // 10])  # the header still says 30 s
    windows = load_windows(path, config=CFG)
    assert windows.shape == (1, W)
    whole = librosa_whole(transcoded["flac"])
    # A few seconds survive; they come first (then the tiling).
    np.testing.assert_allclose(windows[0, : 5 * SR], whole[: 5 * SR], atol=1e-5)


@pytest.mark.parametrize("fmt", ["mp3", "flac", "ogg_vorbis", "ogg_opus", "m4a_aac", "m4a_alac"])
@pytest.mark.parametrize("fraction", [0.02, 0.3, 0.9])
def test_truncated_files_never_raise_untyped_errors(
    tmp_path: Path, transcoded: dict[str, Path], fmt: str, fraction: float
) -> None:
    data = transcoded[fmt].read_bytes()
    path = tmp_path / f"cut{transcoded[fmt].suffix}"
    path.write_bytes(data[: int(len(data) * fraction)])
    try:
        windows = load_windows(path, config=CFG)
    except AudioError:
        return
    assert windows.shape == (1, W) and windows.dtype == np.float32
    assert np.isfinite(windows).all()


def test_mp3_with_wrong_length_in_header(tmp_path: Path, real_clip) -> None:
    # No Xing header, 32 kbit/s first then 320 kbit/s: estimated from the first frame's
    # bit rate, the length comes out ~8x too long, so the window lies past the end.
    pcm, sr = sf.read(str(real_clip("pop")), dtype="float32", always_2d=True)
    parts = []
    for i, (lo, hi, rate) in enumerate([(0, 3, 32_000), (3, 15, 320_000)]):
        part = tmp_path / f"part{i}.mp3"
        options = {"write_xing": "0", "id3v2_version": "0"}
        with av.open(str(part), "w", format="mp3", options=options) as out:
            stream = out.add_stream("libmp3lame", rate=sr, layout="stereo")
            stream.bit_rate = rate
            chunk = pcm[lo * sr : hi * sr]
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(chunk.T), format="fltp", layout="stereo"
            )
            frame.sample_rate, frame.pts = sr, 0
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                out.mux(packet)
        parts.append(part.read_bytes())
    path = tmp_path / "vbr.mp3"
    path.write_bytes(b"".join(parts))
    assert probe_duration(path) > 60  # the header's wrong idea of the length

    config = AudioConfig(window_seconds=10.0)
    windows = load_windows(path, config=config)
    assert windows.shape == (1, config.window_samples)
    whole = librosa_whole(path)
    assert 14 < len(whole) / SR < 16
    start = int(round(window_offsets(len(whole) / SR, config=config)[0] * SR))
    expected = whole[start : start + config.window_samples]
    assert np.corrcoef(windows[0], expected)[0, 1] > 0.95


def test_digital_silence(tmp_path: Path) -> None:
    path = tmp_path / "zeros.wav"
    sf.write(str(path), np.zeros((5 * 44100, 2), np.int16), 44100)
    with pytest.raises(SilentAudioError, match="silence"):
        load_windows(path, config=CFG)
    # Dither-level noise (RMS ~3e-5) counts as silence too.
    rng = np.random.default_rng(0)
    sf.write(str(path), rng.integers(-1, 2, size=5 * 44100, dtype=np.int16), 44100)
    with pytest.raises(SilentAudioError):
        load_windows(path, config=CFG)


def test_nan_samples(tmp_path: Path) -> None:
    path = tmp_path / "nan.wav"
    data = np.full(3 * 44100, 0.1, np.float32)
    data[1000:1100] = np.nan  # a float WAV can hold anything
    sf.write(str(path), data, 44100, subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match="NaN"):
        load_windows(path, config=CFG)


def test_quiet_music_is_not_silence(tmp_path: Path, real_clip) -> None:
    pcm, sr = sf.read(str(real_clip("classical")), dtype="float32")
    path = tmp_path / "quiet.flac"
    sf.write(str(path), pcm * 0.01, sr, subtype="PCM_24")  # -40 dB
    assert load_windows(path, config=CFG).shape == (1, W)


# ---------------------------------------------------------------------------
# Threads, probing, offsets


def test_thread_safe(
    full_track: Path, transcoded: dict[str, Path], excerpt: dict[str, Path]
) -> None:
    paths = [full_track, excerpt["m4a_alac"]]
    paths += [transcoded[f] for f in ("mp3", "m4a_aac", "ogg_opus")]
    sequential = [load_windows(p, config=CFG) for p in paths]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda p: load_windows(p, config=CFG), paths * 2))
    for got, want in zip(threaded, sequential * 2):
        np.testing.assert_array_equal(got, want)


def test_probe_duration(full_track: Path, transcoded: dict[str, Path]) -> None:
    assert probe_duration(full_track) == pytest.approx(183.529, abs=1e-3)
    for fmt in FORMATS:
        assert probe_duration(transcoded[fmt]) == pytest.approx(30.0, abs=0.05), fmt


def test_window_offsets() -> None:
    assert window_offsets(100.0, config=CFG) == [35.0]
    assert window_offsets(100.0, config=AudioConfig(num_windows=3)) == pytest.approx([5 / 3, 35.0, 205 / 3])
    # Windows near the ends are clamped inside the track.
    assert window_offsets(40.0, config=AudioConfig(num_windows=2)) == [0.0, 10.0]
    assert window_offsets(30.0, config=AudioConfig(window_seconds=3.0, num_windows=2)) == [6.0, 21.0]
    assert window_offsets(30.0, config=CFG) == [0.0]
    assert window_offsets(12.0, config=AudioConfig(num_windows=3)) == [0.0]
    assert window_offsets(math.nan, config=CFG) == [0.0]


def test_audio_extensions() -> None:
    assert all(e.startswith(".") and e == e.lower() for e in AUDIO_EXTENSIONS)
    wanted = ".mp3 .flac .ogg .oga .opus .wav .wave .aif .aiff .aifc"
    wanted += " .m4a .mp4 .aac .alac .wma .ape .wv"
    assert set(wanted.split()) <= AUDIO_EXTENSIONS


# ---------------------------------------------------------------------------
# find_audio_files


def test_find_audio_files(tmp_path: Path) -> None:
    root = tmp_path / "music"
    files = ["b.mp3", "A.flac", "sub/c.ogg", "sub/deeper/d.M4A"]
    files += [".hidden.mp3", ".git/e.mp3", "notes.txt", "cover.jpg"]
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    os.symlink(root, root / "sub" / "loop")  # a link loop must not recurse forever

    found = find_audio_files([root])
    assert found == sorted(root / n for n in ["b.mp3", "A.flac", "sub/c.ogg", "sub/deeper/d.M4A"])
    assert found == sorted(found)

    # Explicit files are kept whatever they are; order of arguments kept; no duplicates.
    notes = root / "notes.txt"
    assert find_audio_files([notes, root, root / "b.mp3"]) == [notes, *found]
    assert find_audio_files([str(root)], extensions=["mp3"]) == [root / "b.mp3"]

    with pytest.raises(FileNotFoundError):
        find_audio_files([root, root / "missing.mp3"])


# ---------------------------------------------------------------------------
# LogMel


@pytest.fixture(scope="module")
def clip_windows(real_clip) -> np.ndarray:
    """Real 30-s windows [shape=(3, W)]: classical, rock, electronic."""
    genres = ("classical", "rock", "electronic")
    return np.concatenate([load_windows(real_clip(g), config=CFG) for g in genres])


def test_logmel_matches_librosa(clip_windows: np.ndarray, device: torch.device) -> None:
    logmel = LogMel(CFG).to(device)
    y = clip_windows[0]
    got = logmel(torch.from_numpy(y)[None].to(device))
    assert got.shape == (1, CFG.n_mels, CFG.window_frames) and got.dtype == torch.float32
    got = got[0].cpu().numpy()
    ref = librosa_logmel(y)
    diff = np.abs(got - ref)
    loud = ref > ref.max() - 60
    # float32 FFTs differ in the last bits: ~1e-4 dB in loud bins, a little more
    # near the -80 dB floor where the power is tiny.
    assert diff[loud].max() < 1e-3
    assert diff.max() < 2e-2


def test_logmel_batch_equals_one_by_one(clip_windows: np.ndarray, device: torch.device) -> None:
    logmel = LogMel(CFG).to(device)
    batch = clip_windows.copy()
    batch[1] *= 1e-3  # 60 dB quieter: top_db must clamp per example, not per batch
    x = torch.from_numpy(batch).to(device)
    together = logmel(x)
    assert together.shape == (3, CFG.n_mels, CFG.window_frames)
    for i in range(3):
        alone = logmel(x[i : i + 1])[0]
        # cuFFT plans a batch differently from one signal: float32 rounding (measured on
        # an H100: 1.2e-3 dB at 45 dB, a relative 3e-5) is allowed there, no more.
        torch.testing.assert_close(together[i], alone, atol=1e-3, rtol=0 if device.type == "cpu" else 1e-4)
        assert together[i].min() >= together[i].max() - CFG.top_db - 1e-3
    peaks = together.amax(dim=(1, 2))
    assert peaks[1] < peaks[0] - 40  # so a batch-wide clamp would have flattened it


def test_logmel_autocast_stays_float32(clip_windows: np.ndarray) -> None:
    logmel = LogMel(CFG)
    x = torch.from_numpy(clip_windows[:2])
    plain = logmel(x)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        cast = logmel(x)
        from_bf16 = logmel(x.to(torch.bfloat16))
    assert cast.dtype == torch.float32 and from_bf16.dtype == torch.float32
    torch.testing.assert_close(cast, plain)
    assert torch.isfinite(from_bf16).all()


def test_logmel_state_and_shape_checks() -> None:
    logmel = LogMel(CFG)
    assert logmel.state_dict() == {}  # rebuilt from the config, not stored in checkpoints
    assert logmel(torch.zeros(2, 4096)).shape == (2, CFG.n_mels, 1 + 4096 // CFG.hop_length)
    with pytest.raises(ValueError, match="batch, samples"):
        logmel(torch.zeros(4096))


@pytest.mark.parametrize("fmt", ["aac_adts", "wma", "wavpack", "mka_flac", "webm_opus"])
def test_other_containers_decode(fmt: str, other_containers: dict[str, Path]) -> None:
    # Rarer formats, FFmpeg only. Not all are sample exact: Matroska/WebM/ASF have 1-ms
    # timestamps, raw ADTS AAC and WMA keep their encoder delay (1024 / ~2048 samples:
    # no edit list to remove it), and ADTS has no length in its headers (so it is
    # decoded whole, not placed by FFmpeg's bit-rate guess). So: find each window's content in the reference spectrogram
    # within +-10 frames (0.23 s) of where it belongs.
    config = AudioConfig(window_seconds=5.0, num_windows=2)
    windows = load_windows(other_containers[fmt], config=config)
    assert windows.shape == (2, config.window_samples) and windows.dtype == np.float32
    assert np.isfinite(windows).all()
    logmel = LogMel(config)
    reference = librosa_whole(other_containers["flac"])
    ref_mel = logmel(torch.from_numpy(reference)[None])[0].numpy()
    got = logmel(torch.from_numpy(windows)).numpy()
    frames, m = got.shape[-1], 12  # compare the inner frames, so shifts of +-10 fit
    for mel, offset in zip(got, window_offsets(len(reference) / SR, config=config)):
        expected = int(round(offset * SR / config.hop_length))
        inner = mel[:, m:-m].ravel()
        last = ref_mel.shape[1] - frames + m
        shifts = range(max(expected - 10, -m), min(expected + 10, last) + 1)
        scores = [
            np.corrcoef(inner, ref_mel[:, s + m : s + frames - m].ravel())[0, 1] for s in shifts
        ]
        assert max(scores) > 0.98
        # Within 3 frames (70 ms): codec delays are at most ~2048 samples at 44.1 kHz.
        assert abs(shifts[int(np.argmax(scores))] - expected) <= 3


@pytest.mark.parametrize("sr, n_fft, n_mels, fmin, fmax", [
    (16000, 512, 96, 0.0, None),       # musicnn's
    (22050, 2048, 128, 0.0, None),     # the paper branch's
    (22050, 1024, 64, 30.0, 8000.0),
    (44100, 4096, 40, 0.0, None),
    (8000, 256, 20, 100.0, None),
])
def test_mel_filterbank_is_librosas(sr, n_fft, n_mels, fmin, fmax):
    """Our copy of librosa's Slaney filter bank (no scipy import at start-up) gives the same floats."""
    import librosa

    from mmgenre_core.audio import slaney_mel_filterbank

    ours = slaney_mel_filterbank(sample_rate=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    theirs = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=False, norm="slaney")
    assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)


def test_finding_files_needs_no_decoder_and_no_torch(tmp_path: Path) -> None:
    # `mmgenre predict` walks a library before it loads anything heavy: the file walk
    # must not drag in torch, PyAV or libsndfile.
    (tmp_path / "a.flac").write_bytes(b"x")
    code = (
        "import sys\n"
        "from mmgenre_core.audio import find_audio_files\n"
        f"print(len(find_audio_files([{str(tmp_path)!r}])))\n"
        "print(sorted(m for m in ('torch', 'av', 'soundfile', 'soxr') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["1", "[]"]
