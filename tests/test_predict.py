"""GenreClassifier and the mmgenre CLI on real files: batching, errors, lyrics sources, JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmgenre_core.checkpoint import Checkpoint, save_checkpoint
from mmgenre_core.cli import main as cli_main
from mmgenre_core.config import AudioConfig, ModelConfig, TextConfig
from mmgenre_core.errors import ConfigError, ModelNotFoundError
from mmgenre_core.model import GenreModel
from mmgenre_core.predict import GenreClassifier, default_model_path

from .conftest import DATA_DIR, DEVICES

GENRES = ["Classical", "Electronic", "Pop", "Rock"]
AUDIO = AudioConfig(n_mels=32, n_fft=512, hop_length=256, window_seconds=4.0)
VOCAB = ["<pad>", "<unk>", "love", "night", "baby", "road", "gun", "money"]
CONFIG = ModelConfig(n_genres=4, n_mels=32, cnn_channels=(8, 16), audio_dim=24, vocab_size=len(VOCAB),
                     embed_dim=12, word_hidden=6, line_hidden=5, attention_dim=7)


def tiny_checkpoint(tmp_path: Path, *, audio: AudioConfig = AUDIO, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = GenreModel(CONFIG, audio)
    for p in (model.no_lyrics, model.no_audio):
        torch.nn.init.normal_(p)
    ckpt = Checkpoint.from_model(model, text_config=TextConfig(max_lines=8, max_words=6), genres=GENRES,
                                 vocab=VOCAB, metadata={"name": "tiny", "version": "0"})
    return save_checkpoint(tmp_path / f"tiny{seed}.pt", ckpt)


@pytest.fixture(scope="module")
def real_clips():
    clips = sorted((DATA_DIR / "emotify").glob("*/0[0-2]*.mp3"))[:6]
    assert len(clips) == 6
    return [str(c) for c in clips]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("model"))


@pytest.mark.parametrize("device", DEVICES)
def test_batched_equals_one_by_one_on_real_clips(model_path, real_clips, device):
    clf = GenreClassifier.load(model_path, device=device)
    batched = clf.predict(real_clips, batch_size=4, top_k=4)
    single = [clf.predict([p], batch_size=1, top_k=4)[0] for p in real_clips]
    assert [r.path for r in batched] == real_clips
    for a, b in zip(batched, single):
        assert a.error is None and b.error is None
        pa = np.array([a.probabilities[g] for g in GENRES])
        pb = np.array([b.probabilities[g] for g in GENRES])
        assert np.allclose(pa, pb, atol=2e-3 if device == "cuda" else 1e-5)
        assert abs(pa.sum() - 1) < 1e-4
        assert [g.genre for g in a.genres] == sorted(GENRES, key=lambda g: -a.probabilities[g])


MUSICNN_AUDIO = AudioConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=96, top_db=None,
                            scale="musicnn", window_seconds=3.0, num_windows=3)


@pytest.fixture(scope="module")
def musicnn_model_path(tmp_path_factory):
    """A checkpoint with the pretrained musicnn audio branch and a random head."""
    torch.manual_seed(0)
    model = GenreModel(ModelConfig(**{**CONFIG.to_dict(), "n_mels": 96, "audio_branch": "musicnn"}), MUSICNN_AUDIO)
    model.cnn.load_pretrained()
    ckpt = Checkpoint.from_model(model, text_config=TextConfig(max_lines=8, max_words=6), genres=GENRES,
                                 vocab=VOCAB, metadata={"name": "tiny-musicnn", "version": "0"})
    return save_checkpoint(tmp_path_factory.mktemp("musicnn") / "musicnn.pt", ckpt)


@pytest.mark.parametrize("device", DEVICES)
def test_musicnn_branch_batched_equals_one_by_one_and_the_cpu(musicnn_model_path, real_clips, device):
    clf = GenreClassifier.load(musicnn_model_path, device=device)
    batched = clf.predict(real_clips, batch_size=4, top_k=4)
    single = [clf.predict([p], batch_size=1, top_k=4)[0] for p in real_clips]
    cpu = (batched if device == "cpu" else
           GenreClassifier.load(musicnn_model_path, device="cpu").predict(real_clips, batch_size=4, top_k=4))
    # CUDA runs under float16 autocast.
    tol = 2e-2 if device == "cuda" else 1e-5
    for a, b, c in zip(batched, single, cpu):
        assert a.error is None and b.error is None
        pa, pb, pc = (np.array([r.probabilities[g] for g in GENRES]) for r in (a, b, c))
        assert np.allclose(pa, pb, atol=tol) and np.allclose(pa, pc, atol=tol)
    # The clips are told apart: the head sees different musicnn features per clip.
    assert len({tuple(np.round([r.probabilities[g] for g in GENRES], 4)) for r in batched}) == len(real_clips)


def test_multi_window_average_on_full_track(tmp_path):
    track = str(DATA_DIR / "full_tracks" / "singularity-Nebula.ogg")
    one = GenreClassifier.load(tiny_checkpoint(tmp_path), device="cpu")
    res = one.predict([track], top_k=2)[0]
    assert res.error is None and len(res.genres) == 2
    three = GenreClassifier.load(tiny_checkpoint(tmp_path, audio=AudioConfig(**{**AUDIO.to_dict(), "num_windows": 3})),
                                 device="cpu")
    res3 = three.predict([track], top_k=4)[0]
    assert res3.error is None
    assert abs(sum(res3.probabilities.values()) - 1) < 1e-4


def test_bad_files_get_errors_and_the_run_goes_on(model_path, real_clips, tmp_path):
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    text = tmp_path / "notes.flac"
    text.write_text("this is not audio\n" * 100)
    missing = tmp_path / "gone.ogg"
    paths = [real_clips[0], str(empty), str(text), str(missing), real_clips[1]]
    res = GenreClassifier.load(model_path, device="cpu").predict(paths, batch_size=2)
    assert [r.path for r in res] == paths
    assert res[0].ok and res[4].ok
    for bad in res[1:4]:
        assert not bad.ok and bad.genres == [] and bad.path in bad.error
    assert "empty" in res[1].error.lower()


def test_lyrics_sources(model_path, real_clips, tmp_path):
    import mutagen.id3 as id3

    tagged = tmp_path / "tagged.mp3"
    shutil.copy(real_clips[2], tagged)
    tags = id3.ID3(tagged)
    tags.add(id3.USLT(encoding=3, lang="eng", desc="", text="love night baby\nroad gun money"))
    tags.save()
    from mmgenre_core.tags import embedded_lyrics

    clf = GenreClassifier.load(model_path, device="cpu")
    plain, from_tag, given, off = clf.predict([real_clips[2], str(tagged)], lyrics=embedded_lyrics, top_k=4) + \
        clf.predict([str(tagged)], lyrics=["money money gun"], lyrics_source="file", top_k=4) + \
        clf.predict([str(tagged)], use_lyrics=False, top_k=4)
    assert (plain.lyrics, from_tag.lyrics, given.lyrics, off.lyrics) == ("none", "tag", "file", "none")
    # The classifier never reads a tag by itself: without a lyrics source, the tagged file has none.
    untold = clf.predict([str(tagged)], top_k=4)[0]
    assert untold.lyrics == "none" and untold.probabilities == pytest.approx(off.probabilities, abs=1e-6)
    # A lyrics source that fails costs the track its lyrics, not the run.
    broken = clf.predict([str(tagged)], lyrics=lambda path: 1 / 0, top_k=4)[0]
    assert broken.ok and broken.lyrics == "none"
    # Same audio (the tag is not in the decoded audio), so lyrics alone make the difference.
    assert plain.probabilities == pytest.approx(off.probabilities, abs=1e-6)
    assert from_tag.probabilities != pytest.approx(plain.probabilities, abs=1e-6)
    assert given.probabilities != pytest.approx(from_tag.probabilities, abs=1e-6)


def test_lyrics_alone_and_attention(model_path):
    clf = GenreClassifier.load(model_path, device="cpu")
    res = clf.predict_lyrics(["love night\nbaby road gun money", None], return_attention=True, top_k=4)
    assert res[0].lyrics == "given" and res[1].lyrics == "none"
    att = res[0].attention
    assert [words for words, _, _ in att] == [["love", "night"], ["baby", "road", "gun", "money"]]
    assert sum(lw for _, _, lw in att) == pytest.approx(1.0, abs=1e-5)
    for _, ww, _ in att:
        assert sum(ww) == pytest.approx(1.0, abs=1e-5)


def test_default_model_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr("mmgenre_core.predict.default_model_path", lambda: tmp_path / "none.pt")
    with pytest.raises(ModelNotFoundError, match="train"):
        GenreClassifier.load()


def test_unavailable_device_is_a_config_error(model_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present; the error path is for machines without one")
    with pytest.raises(ConfigError, match="no CUDA"):
        GenreClassifier.load(model_path, device="cuda")


def test_cli_json_lines_folder_and_errors(model_path, tmp_path, capsys):
    folder = tmp_path / "music"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(DATA_DIR / "emotify" / "rock" / "002.mp3", folder / "a.mp3")
    shutil.copy(DATA_DIR / "full_tracks" / "muldjord-chaos_god.ogg", folder / "sub" / "b.ogg")
    (folder / "sub" / "broken.mp3").write_bytes(b"\x00" * 100)
    (folder / "cover.jpg").write_bytes(b"\xff\xd8\xff")
    lyrics = tmp_path / "lyrics.jsonl"
    lyrics.write_text(json.dumps({"path": "music/a.mp3", "lyrics": "love night"}) + "\nnot json\n")
    rc = cli_main(["predict", "--model", str(model_path), "--json", "--top-k", "2", "--lyrics-file", str(lyrics),
                   "--device", "cpu", str(folder)])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rc == 1  # one track failed
    by_name = {Path(r["path"]).name: r for r in lines}
    assert set(by_name) == {"a.mp3", "b.ogg", "broken.mp3"}
    assert by_name["a.mp3"]["lyrics"] == "file" and by_name["b.ogg"]["lyrics"] == "none"
    for name in ("a.mp3", "b.ogg"):
        assert by_name[name]["error"] is None and len(by_name[name]["genres"]) == 2
        assert set(by_name[name]["genres"][0]) == {"genre", "confidence"}
    assert by_name["broken.mp3"]["error"] and by_name["broken.mp3"]["genres"] == []


def test_cli_info_and_missing_model(model_path, tmp_path, capsys):
    assert cli_main(["info", "--model", str(model_path)]) == 0
    out = capsys.readouterr().out
    assert "tiny@0" in out and "Classical, Electronic, Pop, Rock" in out
    assert cli_main(["predict", "--model", str(tmp_path / "none.pt"), str(DATA_DIR / "emotify")]) == 2
    assert "no model file" in capsys.readouterr().err


def test_console_script_runs(model_path):
    out = subprocess.run([sys.executable, "-m", "mmgenre_core.cli", "predict", "--model", str(model_path), "--json",
                          "--no-lyrics", str(DATA_DIR / "fma_sample" / "fma_small" / "000" / "000002.mp3")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout)
    assert rec["error"] is None and rec["lyrics"] == "none" and rec["genres"][0]["genre"] in GENRES
