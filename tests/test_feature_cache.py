"""The feature cache: same predictions from cached features, invalidation, damage, kills, CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mmgenre_core.checkpoint import load_checkpoint, save_checkpoint
from mmgenre_core.cli import main as cli_main
from mmgenre_core.feature_cache import FeatureCache, backbone_id, file_identity
from mmgenre_core.predict import GenreClassifier, default_model_path

from .conftest import DATA_DIR, DEVICES


@pytest.fixture(scope="module")
def clips() -> list[str]:
    """Real clips of all four Emotify genres and two full-length tracks."""
    found = [str(p) for g in ("classical", "electronic", "pop", "rock")
             for p in sorted((DATA_DIR / "emotify" / g).glob("*.mp3"))[:3]]
    found += [str(p) for p in sorted((DATA_DIR / "full_tracks").glob("*.ogg"))[:2]]
    assert len(found) == 14
    return found


def _probs(results, genres) -> np.ndarray:
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    return np.array([[r.probabilities[g] for g in genres] for r in results])


def _other_head(tmp_path: Path) -> Path:
    """The shipped model with another head: same front end and audio branch."""
    ckpt = load_checkpoint(default_model_path())
    state = dict(ckpt.state_dict)
    gen = torch.Generator().manual_seed(1)
    state["classifier.weight"] = state["classifier.weight"] + torch.randn(state["classifier.weight"].shape,
                                                                          generator=gen)
    other = dataclasses.replace(ckpt, state_dict=state, metadata={**ckpt.metadata, "version": "other-head"})
    return save_checkpoint(tmp_path / "other_head.pt", other)


def _rows(cache_path: Path) -> int:
    with sqlite3.connect(cache_path) as db:
        return db.execute("SELECT count(*) FROM features").fetchone()[0]


# --------------------------------------------------------------------------- #
# Same answers
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("device", DEVICES)
def test_cached_features_give_the_same_predictions(tmp_path, clips, device):
    plain = GenreClassifier.load(None, device=device)
    expected = _probs(plain.predict(clips, batch_size=5), plain.genres)
    cache = FeatureCache(tmp_path / "f.sqlite3")
    cached = GenreClassifier.load(None, device=device, feature_cache=cache)
    first = _probs(cached.predict(clips, batch_size=5), plain.genres)
    assert (cache.hits, cache.misses, cache.writes) == (0, len(clips), len(clips))
    second = _probs(cached.predict(clips, batch_size=5), plain.genres)
    assert cache.hits == len(clips) and cache.writes == len(clips)
    assert np.array_equal(first, expected)
    if device == "cpu":
        assert np.array_equal(second, expected)
    else:  # cuDNN may pick other kernels for other batch compositions
        assert np.allclose(second, expected, atol=1e-4)
    assert (second.argmax(1) == expected.argmax(1)).all()


def test_another_head_reuses_the_features(tmp_path, clips):
    cache = FeatureCache(tmp_path / "f.sqlite3")
    GenreClassifier.load(None, feature_cache=cache).predict(clips)
    other_path = _other_head(tmp_path)
    other = GenreClassifier.load(other_path, feature_cache=cache)
    assert other.backbone_id == GenreClassifier.load(None).backbone_id
    hits = cache.hits
    got = _probs(other.predict(clips), other.genres)
    assert cache.hits - hits == len(clips)
    expected = _probs(GenreClassifier.load(other_path).predict(clips), other.genres)
    # The same features; a random head 120,000 inputs wide may sum them in another order
    # for another batch shape (the last bits of float32).
    assert np.allclose(got, expected, rtol=0, atol=1e-6)
    assert not np.allclose(got, _probs(GenreClassifier.load(None).predict(clips), other.genres))


def test_backbone_id_follows_the_audio_settings_weights_and_decoder(monkeypatch):
    import mmgenre_core.audio as audio_package

    clf = GenreClassifier.load(None)
    base = clf.backbone_id
    other_windows = dataclasses.replace(clf.audio_config, num_windows=clf.audio_config.num_windows + 1,
                                        window_order=(), window_rounds=())
    assert backbone_id(clf.model, other_windows) != base
    other_order = dataclasses.replace(clf.audio_config, window_order=tuple(range(clf.audio_config.num_windows)))
    assert backbone_id(clf.model, other_order) != base
    with torch.no_grad():
        clf.model.cnn.backbone.dense.bias.add_(1e-3)
    assert backbone_id(clf.model, clf.audio_config) != base
    with torch.no_grad():
        clf.model.classifier.bias.add_(1.0)  # the head is not part of the backbone
        clf.model.cnn.backbone.dense.bias.sub_(1e-3)
    assert backbone_id(clf.model, clf.audio_config) == base
    # An upgrade that decodes differently must not reuse features of the old decoder.
    monkeypatch.setattr(audio_package, "decoding_fingerprint", lambda: "another decoder")
    assert backbone_id(clf.model, clf.audio_config) != base


# --------------------------------------------------------------------------- #
# Invalidation and identity
# --------------------------------------------------------------------------- #


def test_a_changed_file_is_recomputed(tmp_path, clips):
    track = tmp_path / "song.mp3"
    shutil.copy(clips[0], track)
    cache = FeatureCache(tmp_path / "f.sqlite3")
    clf = GenreClassifier.load(None, feature_cache=cache)
    first = clf.predict([track])[0]
    shutil.copy(clips[-4], track)  # another song under the same name (a re-rip, a re-encode)
    os.utime(track, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    second = clf.predict([track])[0]
    assert (cache.hits, cache.misses) == (0, 2)
    assert second.probabilities == GenreClassifier.load(None).predict([clips[-4]])[0].probabilities
    assert second.probabilities != first.probabilities
    clf.predict([track])
    assert cache.hits == 1


def test_content_identity_survives_a_rename(tmp_path, clips):
    first, moved = tmp_path / "a.mp3", tmp_path / "sub" / "b.mp3"
    shutil.copy(clips[0], first)
    cache = FeatureCache(tmp_path / "f.sqlite3", identity="content")
    clf = GenreClassifier.load(None, feature_cache=cache)
    expected = clf.predict([first])[0].probabilities
    moved.parent.mkdir()
    os.replace(first, moved)
    assert clf.predict([moved])[0].probabilities == expected
    assert cache.hits == 1
    assert file_identity(moved, identity="content").key.startswith(b"sha256:")
    with pytest.raises(ValueError):
        FeatureCache(tmp_path / "g.sqlite3", identity="inode")


def test_a_row_of_the_wrong_size_is_a_miss(tmp_path, clips):
    path = tmp_path / "f.sqlite3"
    cache = FeatureCache(path)
    ident = cache.identify(clips[0])
    cache.put_many("bb", [(ident, np.ones((4, 200), np.float32))])
    assert cache.get("bb", ident, dim=200).shape == (4, 200)
    assert cache.get("bb", ident, dim=50) is None  # another feature size
    with sqlite3.connect(path) as db:
        db.execute("UPDATE features SET data = substr(data, 1, 100)")
    assert cache.get("bb", ident, dim=200) is None


# --------------------------------------------------------------------------- #
# Damage, locks and kills: never a crash
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_damaged_cache_file_is_moved_aside_and_rebuilt(tmp_path, clips, damage, caplog):
    path = tmp_path / "f.sqlite3"
    clf = GenreClassifier.load(None, feature_cache=FeatureCache(path))
    expected = _probs(clf.predict(clips[:3]), clf.genres)
    clf.feature_cache.close()
    raw = path.read_bytes()
    path.write_bytes({"garbage": b"this is not a database" * 200, "truncated": raw[: len(raw) // 3],
                      "empty": b""}[damage])
    cache = FeatureCache(path)
    assert cache.enabled
    again = GenreClassifier.load(None, feature_cache=cache)
    assert np.array_equal(_probs(again.predict(clips[:3]), again.genres), expected)
    assert _rows(path) == 3
    if damage != "empty":  # an empty file is a valid (new) database
        assert "unusable" in caplog.text and list(tmp_path.glob("f.sqlite3.broken-*"))


def test_a_locked_cache_computes_without_storing(tmp_path, clips):
    path = tmp_path / "f.sqlite3"
    FeatureCache(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process in the middle of a long write
    try:
        cache = FeatureCache(path, timeout=0.2)
        clf = GenreClassifier.load(None, feature_cache=cache)
        results = clf.predict(clips[:2])
        assert all(r.ok for r in results) and cache.writes == 0
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_run_killed_mid_way_leaves_a_cache_the_next_run_uses(tmp_path):
    """SIGKILL while `mmgenre predict` stores features: the next run completes, reuses what was
    committed, and answers as a run without the cache does."""
    folder = tmp_path / "music"
    folder.mkdir()
    sources = sorted((DATA_DIR / "emotify").glob("*/*.mp3"))[:60]
    for i, src in enumerate(sources):
        os.symlink(src, folder / f"{i:03d}.mp3")
    path = tmp_path / "f.sqlite3"
    cmd = [sys.executable, "-m", "mmgenre_core.cli", "predict", str(folder), "--json", "--cache", str(path),
           "--batch-size", "4"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        if path.exists():
            try:
                if _rows(path) >= 8:
                    break
            except sqlite3.Error:
                pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = _rows(path)
    assert 8 <= kept < len(sources)
    again = subprocess.run(cmd[:3] + ["-v"] + cmd[3:], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"{kept} hits" in again.stderr
    plain = subprocess.run(cmd[:-4] + ["--no-cache"], capture_output=True, text=True, timeout=600)
    assert [json.loads(line) for line in again.stdout.splitlines()] == \
        [json.loads(line) for line in plain.stdout.splitlines()]
    assert _rows(path) == len(sources)


# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #


def test_cli_stats_prune_clear_and_no_cache(tmp_path, clips, capsys):
    path = tmp_path / "f.sqlite3"
    gone = tmp_path / "gone.mp3"
    shutil.copy(clips[0], gone)
    assert cli_main(["predict", "--no-cache", "--cache", str(path), str(gone)]) == 0
    assert not path.exists()
    assert cli_main(["predict", "--cache", str(path), str(gone), *clips[1:4]]) == 0
    capsys.readouterr()
    assert cli_main(["cache", "stats", "--cache", str(path)]) == 0
    out = capsys.readouterr().out
    assert "entries:       4 (0 of files since changed or gone)" in out
    # A model that listens in rounds stores a row for each of its windows (not heard yet: NaN).
    default = GenreClassifier.load(None)
    slots = 4 * default.audio_config.num_windows
    assert f"backbone {default.backbone_id}: 4 files, {slots} window slots" in out
    gone.unlink()
    assert cli_main(["cache", "prune", "--cache", str(path)]) == 0
    assert "pruned 1 entries" in capsys.readouterr().out
    assert _rows(path) == 3
    FeatureCache(path).put_many("old-backbone", [(file_identity(clips[5]), np.zeros((4, 200), np.float32))])
    assert cli_main(["cache", "prune", "--other-backbones", "--cache", str(path)]) == 0
    assert "pruned 1 entries" in capsys.readouterr().out
    assert cli_main(["cache", "clear", "--cache", str(path)]) == 0
    assert "cleared 3 entries" in capsys.readouterr().out
    assert _rows(path) == 0


def test_cli_uses_the_user_cache_folder_by_default(tmp_path, clips, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cli_main(["predict", clips[0]]) == 0
    assert _rows(tmp_path / "xdg" / "mmgenre" / "features.sqlite3") == 1
    assert cli_main(["info"]) == 0
    assert "features.sqlite3, " in capsys.readouterr().out
