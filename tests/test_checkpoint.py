"""Checkpoints: round trip, weights-only loading, clear errors, atomic saving."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from mmgenre_core.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from mmgenre_core.config import TextConfig
from mmgenre_core.errors import CheckpointError, ModelNotFoundError

from .test_model import SMALL, make_model, random_lyrics

GENRES = ["Classical", "Electronic", "Pop", "Rock"]
VOCAB = ["<pad>", "<unk>"] + [f"w{i}" for i in range(SMALL.vocab_size - 2)]


def make_checkpoint(**meta) -> Checkpoint:
    return Checkpoint.from_model(make_model(seed=3), text_config=TextConfig(max_lines=6, max_words=5),
                                 genres=GENRES, vocab=VOCAB, metadata={"name": "tiny", "version": "1", **meta},
                                 metrics={"val_accuracy": 0.5, "per_genre": {"Rock": 0.7}})


def test_round_trip_same_predictions(tmp_path):
    ckpt = make_checkpoint(epochs=3)
    path = save_checkpoint(tmp_path / "m.pt", ckpt)
    # Loadable with torch's safe loader directly: tensors and plain values only.
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "mmgenre-checkpoint" and raw["genres"] == GENRES
    back = load_checkpoint(path)
    assert back.genres == GENRES and back.vocab == VOCAB
    assert back.model_config == ckpt.model_config and back.audio_config == ckpt.audio_config
    assert back.text_config == ckpt.text_config and back.metrics["per_genre"]["Rock"] == 0.7
    assert back.model_id == "tiny@1"
    ids, mask = random_lyrics(3)
    wave = torch.randn(3, ckpt.audio_config.window_samples) * 0.1
    from mmgenre_core.model import FusedBatch

    with torch.inference_mode():
        ours, theirs = make_model(seed=3), back.build_model()
        a = ours(FusedBatch.full(mel=ours.frontend(wave), ids=ids, lyrics_mask=mask))
        b = theirs(FusedBatch.full(mel=theirs.frontend(wave), ids=ids, lyrics_mask=mask))
    assert torch.equal(a, b)


def test_missing_file_is_model_not_found(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no model file"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda b: b"", id="empty"),
        pytest.param(lambda b: b[: len(b) // 2], id="truncated-half"),
        pytest.param(lambda b: b[:-100], id="truncated-tail"),
        pytest.param(lambda b: b"ID3\x03\x00" + os.urandom(4000), id="an-mp3-not-a-model"),
        pytest.param(lambda b: pickle.dumps({"format": "mmgenre-checkpoint"}), id="plain-pickle"),
    ],
)
def test_broken_files_give_checkpoint_error(tmp_path, corrupt):
    good = save_checkpoint(tmp_path / "good.pt", make_checkpoint()).read_bytes()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(corrupt(good))
    with pytest.raises(CheckpointError):
        load_checkpoint(bad)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(
    "payload, message",
    [
        pytest.param({"model": {}}, "not an mmgenre checkpoint", id="foreign-dict"),
        pytest.param([1, 2, 3], "not an mmgenre checkpoint", id="a-list"),
        pytest.param({"format": "mmgenre-checkpoint", "format_version": 99}, "newer", id="future-version"),
        pytest.param({"format": "mmgenre-checkpoint", "format_version": 1}, "lacks", id="missing-keys"),
        pytest.param({"x": _Evil()}, "weights-only", id="code-execution-refused"),
    ],
)
def test_foreign_payloads_are_rejected(tmp_path, payload, message):
    path = tmp_path / "foreign.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_inconsistent_labels_or_weights_rejected(tmp_path):
    ckpt = make_checkpoint()
    ckpt.genres = GENRES[:3]
    with pytest.raises(CheckpointError, match="3 genre labels"):
        save_checkpoint(tmp_path / "x.pt", ckpt)
    ckpt = make_checkpoint()
    payload = torch.load(save_checkpoint(tmp_path / "y.pt", ckpt), weights_only=True)
    payload["state_dict"].pop("classifier.weight")
    torch.save(payload, tmp_path / "z.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(tmp_path / "z.pt").build_model()


def test_non_plain_metadata_refused(tmp_path):
    with pytest.raises(CheckpointError, match="cannot be stored"):
        save_checkpoint(tmp_path / "m.pt", make_checkpoint(when=object()))
    assert not (tmp_path / "m.pt").exists()


def test_atomic_save_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.pt", make_checkpoint(version="old"))
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        save_checkpoint(path, make_checkpoint(version="new"))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temp file left behind
