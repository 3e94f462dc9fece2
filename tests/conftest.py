"""Shared fixtures: the real data in ``../shared/data``, transcoded copies, devices.

The real data is required: CI always has it, so a missing data folder fails the
tests that need it loudly instead of skipping them. Point ``MMGENRE_DATA_DIR`` at
another copy to override the default location (the repository's sibling
``shared/data``).
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

# No test (nor a CLI or beets run it starts) reads or fills the user's own caches
# (the feature cache, Genius lyrics): they live in a fresh folder for the session.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="mmgenre-test-cache-")

DATA_DIR = Path(
    os.environ.get("MMGENRE_DATA_DIR")
    or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)

# Tests that should run on CPU and, where there is one, on a CUDA GPU take the
# ``device`` fixture below, or use ``@pytest.mark.parametrize("device", DEVICES)``.
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"),
        ],
    ),
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cuda: runs on a CUDA GPU (skipped without one)")


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    """A torch device: ``cpu`` and, when available, ``cuda``."""
    return torch.device(request.param)


# ---------------------------------------------------------------------------
# Real data


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data folder; fails (never skips) when it is missing."""
    if not (DATA_DIR / "README.md").is_file():
        pytest.fail(
            f"real test data not found at {DATA_DIR} (set MMGENRE_DATA_DIR to its location)",
            pytrace=False,
        )
    return DATA_DIR


@pytest.fixture(scope="session")
def emotify_manifest(data_dir: Path) -> list[dict[str, str]]:
    """Rows of ``emotify/manifest.csv``: file, genre, artist, title, album."""
    with open(data_dir / "emotify" / "manifest.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def real_clip(data_dir: Path, emotify_manifest: list[dict[str, str]]) -> Callable[..., Path]:
    """``real_clip(genre, index=0)``: the path of a real 30-s emotify MP3 clip.

    ``genre`` is the folder name or the FMA name (``"rock"`` or ``"Rock"``).
    """

    def get(genre: str, index: int = 0) -> Path:
        rows = sorted(r["file"] for r in emotify_manifest if r["genre"].lower() == genre.lower())
        if not rows:
            raise KeyError(f"no emotify clips of genre {genre!r}")
        return data_dir / "emotify" / rows[index]

    return get


@pytest.fixture(scope="session")
def full_track(data_dir: Path) -> Path:
    """A real full-length song: Ogg Vorbis, 44.1 kHz stereo, 183.5 s."""
    return data_dir / "full_tracks" / "muldjord-chaos_god.ogg"


# ---------------------------------------------------------------------------
# Transcoding


def read_pcm16(path: Path, *, start: float, seconds: float) -> tuple[np.ndarray, int]:
    """``seconds`` of ``path`` from ``start`` as int16 [shape=(frames, channels)], and its rate."""
    with sf.SoundFile(str(path)) as fh:
        sr = fh.samplerate
        fh.seek(int(start * sr))
        return fh.read(int(seconds * sr), dtype="int16", always_2d=True), sr


class _PipeWriter(io.RawIOBase):
    """A write-only, non-seekable file object: what FFmpeg sees when writing to a pipe."""

    def __init__(self, raw: io.BufferedWriter) -> None:
        self._raw = raw

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data) -> int:  # type: ignore[override]
        return self._raw.write(data)


def encode_with_av(
    path: Path,
    pcm: np.ndarray,
    sample_rate: int,
    *,
    codec: str,
    container: str,
    bit_rate: int | None = None,
    seekable: bool = True,
) -> Path:
    """Write ``pcm`` [shape=(frames, channels)], float32 or int16, with FFmpeg.

    ``seekable=False`` writes as to a pipe: the muxer cannot go back to fill in the
    header, so e.g. a FLAC file has no total length (as ``flac - > x.flac`` makes).
    """
    if not seekable:
        with open(path, "wb") as raw:
            encode_with_av(_PipeWriter(raw), pcm, sample_rate, codec=codec, container=container,  # type: ignore[arg-type]
                           bit_rate=bit_rate)
        return path
    if pcm.dtype == np.int16:
        fmt = "s16p"
    else:
        fmt, pcm = "fltp", pcm.astype(np.float32)
    layout = {1: "mono", 2: "stereo"}[pcm.shape[1]]
    with av.open(path if isinstance(path, _PipeWriter) else str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=sample_rate, layout=layout)
        if bit_rate:
            stream.bit_rate = bit_rate
        block = 4096
        for start in range(0, len(pcm), block):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(pcm[start : start + block].T), format=fmt, layout=layout
            )
            frame.sample_rate = sample_rate
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def transcode_all(source: Path, folder: Path, *, stem: str) -> dict[str, Path]:
    """``source`` decoded to 16-bit PCM, then written in every format the tests read."""
    pcm, sr = sf.read(str(source), dtype="int16", always_2d=True)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, fmt, subtype, ext in [
        ("flac", "FLAC", "PCM_16", "flac"),
        ("wav", "WAV", "PCM_16", "wav"),
        ("aiff", "AIFF", "PCM_16", "aiff"),
        ("ogg_vorbis", "OGG", "VORBIS", "ogg"),
    ]:
        out[name] = folder / f"{stem}.{ext}"
        sf.write(str(out[name]), pcm, sr, format=fmt, subtype=subtype)
    # Opus runs at 48 kHz only.
    pcm48 = soxr.resample(pcm.astype(np.float32) / 32768, sr, 48000, quality="HQ")
    out["ogg_opus"] = folder / f"{stem}.opus"
    sf.write(str(out["ogg_opus"]), pcm48, 48000, format="OGG", subtype="OPUS")
    out["m4a_aac"] = encode_with_av(
        folder / f"{stem}.aac.m4a", pcm, sr, codec="aac", container="ipod", bit_rate=192_000
    )
    out["m4a_alac"] = encode_with_av(
        folder / f"{stem}.alac.m4a", pcm, sr, codec="alac", container="ipod"
    )
    return out


@pytest.fixture(scope="session")
def transcoded(
    tmp_path_factory: pytest.TempPathFactory, real_clip: Callable[..., Path]
) -> dict[str, Path]:
    """One real emotify clip (rock) in every format: ``{name: path}``.

    ``mp3`` is the original; the others are transcoded from its 16-bit decode: flac,
    wav, aiff, ogg_vorbis, ogg_opus (48 kHz), m4a_aac, m4a_alac.
    """
    source = real_clip("rock")
    out = {"mp3": source}
    out.update(transcode_all(source, tmp_path_factory.mktemp("transcoded"), stem="clip"))
    return out


@pytest.fixture(scope="session")
def excerpt(tmp_path_factory: pytest.TempPathFactory, full_track: Path) -> dict[str, Path]:
    """A 60-s excerpt (60 s to 120 s) of :func:`full_track`: ``flac``, ``m4a_alac``, ``m4a_aac``.

    FLAC and ALAC hold the very same 16-bit samples (both lossless).
    """
    pcm, sr = read_pcm16(full_track, start=60, seconds=60)
    folder = tmp_path_factory.mktemp("excerpt")
    flac = folder / "excerpt.flac"
    sf.write(str(flac), pcm, sr, format="FLAC", subtype="PCM_16")
    return {
        "flac": flac,
        "m4a_alac": encode_with_av(
            folder / "excerpt.alac.m4a", pcm, sr, codec="alac", container="ipod"
        ),
        "m4a_aac": encode_with_av(
            folder / "excerpt.aac.m4a", pcm, sr, codec="aac", container="ipod", bit_rate=192_000
        ),
    }


@pytest.fixture(scope="session")
def other_containers(tmp_path_factory: pytest.TempPathFactory, full_track: Path) -> dict[str, Path]:
    """12 s (60 s to 72 s) of :func:`full_track` in the rarer formats only FFmpeg reads.

    ``flac`` (the reference), ``aac_adts`` (raw .aac), ``wma``, ``wavpack``,
    ``mka_flac`` (Matroska), ``webm_opus``.
    """
    pcm, sr = read_pcm16(full_track, start=60, seconds=12)
    folder = tmp_path_factory.mktemp("containers")
    flac = folder / "ref.flac"
    sf.write(str(flac), pcm, sr, format="FLAC", subtype="PCM_16")
    pcm48 = soxr.resample(pcm.astype(np.float32) / 32768, sr, 48000, quality="HQ")
    return {
        "flac": flac,
        "aac_adts": encode_with_av(
            folder / "x.aac", pcm, sr, codec="aac", container="adts", bit_rate=192_000
        ),
        "wma": encode_with_av(
            folder / "x.wma", pcm, sr, codec="wmav2", container="asf", bit_rate=192_000
        ),
        "wavpack": encode_with_av(folder / "x.wv", pcm, sr, codec="wavpack", container="wv"),
        "mka_flac": encode_with_av(folder / "x.mka", pcm, sr, codec="flac", container="matroska"),
        "webm_opus": encode_with_av(
            folder / "x.webm", pcm48, 48000, codec="libopus", container="webm", bit_rate=128_000
        ),
    }
