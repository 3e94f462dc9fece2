"""training/prepare.py: decode once into memory-mapped log-mels, resumably, skipping bad clips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmgenre_core.audio import LogMel, load_windows
from mmgenre_core.config import AudioConfig
from training.datasets import load_fma
from training.prepare import open_prepared, prepare, prepare_dataset

from .fixtures_training.fma_fixture import build_fma_fixture

# Small features keep the tests fast; decoding (the real cost) is the same.
AUDIO = AudioConfig(n_mels=32, n_fft=1024, hop_length=1024, window_seconds=30.0)


@pytest.fixture(scope="module")
def clips(data_dir) -> list[str]:
    """8 real emotify clips: 4 classical, 4 rock."""
    out = []
    for genre in ("classical", "rock"):
        out += sorted(str(p) for p in (data_dir / "emotify" / genre).glob("*.mp3"))[:4]
    return out


def test_prepare_matches_the_model_front_end(clips, tmp_path):
    prep = prepare(clips[:3], AUDIO, tmp_path, workers=1, progress=False)
    assert prep.complete and prep.n_ok == 3
    assert prep.mels.shape == (3, AUDIO.n_mels, AUDIO.window_frames) and prep.mels.dtype == np.float16
    logmel = LogMel(AUDIO)
    for path in clips[:3]:
        want = logmel(torch.from_numpy(load_windows(path, config=AUDIO)))[0].numpy()
        got = prep.mels[prep.index_of(path)].astype(np.float32)
        # float16 storage: ~0.03 dB steps at the top of the range.
        assert np.abs(got - want).max() < 0.07
    meta = json.loads((prep.folder / "prepare.json").read_text())
    assert meta["complete"] and meta["shape"] == [3, AUDIO.n_mels, AUDIO.window_frames]


def test_prepare_is_resumable_and_parallel(clips, tmp_path):
    items = clips[:7]
    partial = prepare(items, AUDIO, tmp_path / "a", workers=2, chunk_size=2, max_chunks=2, progress=False)
    assert not partial.complete and partial.stats["processed_now"] == 4
    assert sum(s == "ok" for s in partial.status) == 4 and partial.status.count(None) == 3
    # "Interrupted" here; the rerun does only the two chunks left.
    resumed = prepare(items, AUDIO, tmp_path / "a", workers=2, chunk_size=2, progress=False)
    assert resumed.complete and resumed.stats["chunks_done_before"] == 2 and resumed.stats["processed_now"] == 3
    assert resumed.stats["workers"] == 2
    again = prepare(items, AUDIO, tmp_path / "a", workers=2, chunk_size=2, progress=False)
    assert again.stats["processed_now"] == 0 and again.folder == resumed.folder
    fresh = prepare(items, AUDIO, tmp_path / "b", workers=1, progress=False)
    assert np.array_equal(np.asarray(resumed.mels), np.asarray(fresh.mels))
    assert open_prepared(resumed.folder).complete


def test_prepare_cache_key_follows_config_and_files(clips, tmp_path):
    a = prepare(clips[:2], AUDIO, tmp_path, workers=1, progress=False)
    b = prepare(clips[:3], AUDIO, tmp_path, workers=1, progress=False)
    c = prepare(clips[:2], AudioConfig(n_mels=16, n_fft=1024, hop_length=1024), tmp_path, workers=1, progress=False)
    d = prepare(clips[:2], AudioConfig(**{**AUDIO.to_dict(), "num_windows": 3}), tmp_path, workers=1,
                progress=False)
    assert len({a.folder, b.folder, c.folder}) == 3
    assert d.folder == a.folder  # features are one centre window whatever num_windows says


def test_prepare_cache_key_follows_file_contents_and_the_decoder(clips, tmp_path, monkeypatch):
    import shutil

    import mmgenre_core.audio as audio_package

    items = [shutil.copy(c, tmp_path / f"{i}{Path(c).suffix}") for i, c in enumerate(clips[:2])]
    a = prepare(items, AUDIO, tmp_path / "cache", workers=1, progress=False)
    assert prepare(items, AUDIO, tmp_path / "cache", workers=1, progress=False).folder == a.folder
    # The same path with other bytes (a re-encoded or re-tagged file) is prepared again.
    shutil.copy(clips[2], items[1])
    b = prepare(items, AUDIO, tmp_path / "cache", workers=1, progress=False)
    assert b.folder != a.folder and b.stats["processed_now"] == 2
    # Another decoder (code or library versions) never reuses the old log-mels.
    monkeypatch.setattr(audio_package, "decoding_fingerprint", lambda: "another decoder")
    c = prepare(items, AUDIO, tmp_path / "cache", workers=1, progress=False)
    assert c.folder not in (a.folder, b.folder)


def test_broken_missing_silent_and_mismatching_clips_are_skipped(data_dir, tmp_path):
    fx = build_fma_fixture(data_dir, tmp_path / "fma")
    # Corrupt one checksum: that clip must be refused.
    sums = (fx.audio_dir / "checksums").read_text().splitlines()
    sums = [("0" * 40 + line[40:]) if line.endswith("000/000005.mp3") else line for line in sums]
    (fx.audio_dir / "checksums").write_text("\n".join(sums) + "\n")
    examples, skipped = load_fma({"type": "fma", "metadata_dir": str(fx.metadata_dir),
                                  "audio_dir": str(fx.audio_dir), "verify_checksums": True})
    prep = prepare_dataset(examples, AUDIO, tmp_path / "cache", workers=2, chunk_size=4, progress=False)
    reasons = {Path(p).name: r for p, r in prep.skipped()}
    assert set(reasons) == {"020001.mp3", "020002.mp3", "020003.mp3", "000005.mp3"}
    assert "no such file" in reasons["020001.mp3"]
    assert "AudioDecodeError" in reasons["020002.mp3"]
    assert "SilentAudioError" in reasons["020003.mp3"]
    assert "sha1 mismatch" in reasons["000005.mp3"]
    assert prep.n_ok == len(fx.labels) - 1
    skip_file = (prep.folder / "skipped.tsv").read_text().splitlines()
    assert len(skip_file) == 4 and all("\t" in line for line in skip_file)
    # The known-empty clip never reached the decoder.
    assert [s.key for s in skipped] == ["fma:099134"]
    assert prep.reason(str(fx.audio_dir / "099" / "099134.mp3")) is None
