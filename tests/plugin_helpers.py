"""Shared fixtures of the beets plugin tests: real media, tiny real models, a fake Genius.

* Real audio comes from ``../shared/data`` (never copied into the repository): MP3
  clips of the Emotify set are copied into temporary folders; FLAC and Ogg Vorbis
  files are made at run time by transcoding 12 s of real clips with soundfile.
* Models are real checkpoints of the real network, only tiny. Their classifier
  layer has zero weights and a chosen bias, so the genre probabilities are known
  exactly whatever the audio (``probs`` below) while the whole decode -> log-mel
  -> CNN/HAN -> softmax path still runs on the real files.
* :class:`GeniusServer` is a local HTTP server on 127.0.0.1 that answers like
  genius.com: ``/search`` JSON and song pages with ``data-lyrics-container``
  divs. It can also time out, fail with HTTP 500, or find nothing.
* Lyrics texts are read from ``lyrics/lyrics.jsonl`` at run time, never written
  into the tests.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .genius_server import GeniusServer, Song  # noqa: F401 - the tests import them from here

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("MMGENRE_DATA_DIR", ROOT.parent / "shared" / "data"))
EMOTIFY = DATA_DIR / "emotify"
FULL_TRACKS = DATA_DIR / "full_tracks"
LYRICS_JSONL = DATA_DIR / "lyrics" / "lyrics.jsonl"

GENRES = ["Classical", "Electronic", "Pop", "Rock"]

# The real data is required: a missing data folder fails these tests (conftest's
# data_dir fixture), it never lets them pass green by skipping.
needs_data = pytest.mark.usefixtures("data_dir")


# --------------------------------------------------------------------------- #
# Models
# --------------------------------------------------------------------------- #


def make_model_file(path: str | os.PathLike, probs: Sequence[float] = (0.1, 0.2, 0.3, 0.4), *,
                    genres: Sequence[str] = GENRES, use_lyrics: bool = True, name: str = "tiny",
                    version: str = "1", seed: int = 0) -> Path:
    """Save a tiny real checkpoint whose output probabilities are exactly ``probs``."""
    import torch

    from mmgenre_core.checkpoint import Checkpoint, save_checkpoint
    from mmgenre_core.config import AudioConfig, ModelConfig, TextConfig
    from mmgenre_core.model import GenreModel

    assert len(probs) == len(genres) and abs(sum(probs) - 1.0) < 1e-6
    config = ModelConfig(n_genres=len(genres), n_mels=32, cnn_channels=(8, 16), audio_dim=24, vocab_size=50,
                         embed_dim=12, word_hidden=6, line_hidden=5, attention_dim=7, use_lyrics=use_lyrics)
    audio = AudioConfig(n_mels=32, n_fft=512, hop_length=256, window_seconds=3.0)
    torch.manual_seed(seed)
    model = GenreModel(config, audio).eval()
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.log(torch.tensor(list(probs), dtype=torch.float32)))
    vocab = ["<pad>", "<unk>"] + [f"w{i}" for i in range(config.vocab_size - 2)]
    ckpt = Checkpoint.from_model(model, text_config=TextConfig(max_lines=6, max_words=5), genres=list(genres),
                                 vocab=vocab, metadata={"name": name, "version": version})
    return save_checkpoint(path, ckpt)


# --------------------------------------------------------------------------- #
# Media
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Clip:
    """A real clip and the tags it carries."""

    path: Path
    genre: str
    artist: str
    title: str
    album: str


def emotify_clips(genre: str | None = None) -> list[Clip]:
    import csv

    with open(EMOTIFY / "manifest.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [Clip(EMOTIFY / r["file"], r["genre"], r["artist"], r["title"], r["album"])
            for r in rows if genre is None or r["genre"] == genre]


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy the bytes only: the shared data is read-only, the copy must be writable."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o644)
    return dst


def transcode(src: str | os.PathLike, dst: str | os.PathLike, *, seconds: float = 12.0,
              offset: float = 5.0) -> Path:
    """``seconds`` of real audio re-encoded as FLAC or Ogg Vorbis (from ``dst``'s suffix)."""
    import soundfile as sf

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(str(src)) as f:
        sr = f.samplerate
        f.seek(int(offset * sr))
        data = f.read(int(seconds * sr), dtype="float32")
    fmt = {".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}[dst.suffix.lower()]
    sf.write(str(dst), data, sr, format=fmt[0], subtype=fmt[1])
    return dst


def set_tags(path: str | os.PathLike, *, clear_genre: bool = True, **tags: Any) -> None:
    """Write plain tags with mutagen (title, artist, album, tracknumber, genre ...)."""
    import mutagen
    from mutagen.easyid3 import EasyID3

    f = mutagen.File(os.fsdecode(path), easy=True)
    if f.tags is None:
        f.add_tags()
    if clear_genre and "genre" in f.tags:
        del f.tags["genre"]
    for key, value in tags.items():
        if value is None:
            if key in f.tags:
                del f.tags[key]
            continue
        f.tags[key] = [str(v) for v in value] if isinstance(value, (list, tuple)) else str(value)
    if isinstance(f.tags, EasyID3):
        f.save(v2_version=3)
    else:
        f.save()


def read_genres(path: str | os.PathLike) -> list[str]:
    """The genre values really stored in a file, read back with mutagen."""
    import mutagen

    f = mutagen.File(os.fsdecode(path), easy=True)
    if f is None or f.tags is None:
        return []
    return list(f.tags.get("genre", []))


def truncated_mp3(src: str | os.PathLike, dst: str | os.PathLike, audio_bytes: int = 3000) -> Path:
    """A real MP3 cut 3 kB after its ID3 tag: beets reads its tags, the audio is 0.1 s."""
    data = Path(src).read_bytes()
    assert data[:3] == b"ID3"
    size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data[: 10 + size + audio_bytes])
    return dst


@dataclass
class MediaSet:
    """Prepared real files (one of each kind), made once per test session."""

    folder: Path
    mp3: list[Path] = field(default_factory=list)  # emotify clips, one per genre, genre tag removed
    flac: Path | None = None
    ogg: Path | None = None
    ogg_full: Path | None = None  # a full-length real Ogg Vorbis song (tags as shipped)


def build_media(folder: Path) -> MediaSet:
    media = MediaSet(folder)
    for n, genre in enumerate(GENRES):
        clip = emotify_clips(genre)[0]
        dst = copy_file(clip.path, folder / f"{genre.lower()}.mp3")
        set_tags(dst, title=clip.title, artist=clip.artist, album="Test Album", tracknumber=str(n + 1))
        media.mp3.append(dst)
    rock = emotify_clips("Rock")[1]
    media.flac = transcode(rock.path, folder / "rock.flac")
    set_tags(media.flac, title="Flac Song", artist=rock.artist, album="Test Album", tracknumber="5")
    electronic = emotify_clips("Electronic")[1]
    media.ogg = transcode(electronic.path, folder / "electronic.ogg")
    set_tags(media.ogg, title="Ogg Song", artist=electronic.artist, album="Test Album", tracknumber="6")
    full = sorted(FULL_TRACKS.glob("*.ogg"))
    if full:
        media.ogg_full = copy_file(full[0], folder / "full" / full[0].name)
        set_tags(media.ogg_full)  # its shipped genre tag removed
    return media


def lyrics_records(n: int = 3) -> list[dict[str, str]]:
    """``n`` real lyrics records (artist, title, lyrics), read at run time."""
    out = []
    with open(LYRICS_JSONL, encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            if rec.get("artist") and rec.get("title") and rec.get("lyrics") and len(rec["lyrics"].splitlines()) >= 4:
                out.append(rec)
            if len(out) >= n:
                break
    return out


def same_lyrics(a: str | None, b: str | None) -> bool:
    """Whether two texts hold the same sung lines (compared without printing them)."""
    from mmgenre_core.text import clean_lyrics

    return bool(a) and bool(b) and clean_lyrics(a) == clean_lyrics(b)


def find_plugin(name: str = "mmgenre"):
    import beets.plugins

    for plugin in beets.plugins.find_plugins():
        if plugin.name == name:
            return plugin
    raise LookupError(f"plugin {name} is not loaded")


@pytest.fixture
def io(request, monkeypatch, capteesys):
    """beets' DummyIO, as beets' own conftest (not installed by pip) provides it."""
    from beets.test import _common

    dummy = _common.DummyIO(monkeypatch, capteesys)
    if request.instance is not None:
        request.instance.io = dummy
    return dummy


def genius_config(server: GeniusServer, cache_dir: Path, **extra: Any) -> dict[str, Any]:
    return {"genius_token": "test-token", "genius_api_root": server.url + "/",
            "genius_web_root": server.url + "/", "genius_cache": str(cache_dir), "genius_timeout": 0.5, **extra}


def items_by_title(items: Iterable[Any]) -> dict[str, Any]:
    return {item.title: item for item in items}


def set_lyrics(path: str | os.PathLike, text: str) -> None:
    """Embed unsynchronised lyrics with mutagen (ID3 USLT, or a Vorbis/FLAC LYRICS comment)."""
    import mutagen
    from mutagen.id3 import ID3, USLT

    path = os.fsdecode(path)
    if path.lower().endswith(".mp3"):
        tags = ID3(path)
        tags.delall("USLT")
        tags.add(USLT(encoding=3, lang="eng", desc="", text=text))
        tags.save(path, v2_version=3)
        return
    f = mutagen.File(path)
    f["LYRICS"] = text
    f.save()


class FakeClassifier:
    """Stands in for GenreClassifier where a test needs different answers per file.

    ``probs`` maps a file's base name (without the numeric suffix beets may add)
    to its genre probabilities.
    """

    def __init__(self, probs: dict[str, dict[str, float]], genres: Sequence[str] = GENRES,
                 model_id: str = "fake@0", uses_lyrics: bool = True) -> None:
        self.probs = probs
        self.genres = list(genres)
        self.model_id = model_id
        self.uses_lyrics = uses_lyrics
        self.calls: list[dict[str, Any]] = []

    def iter_predict(self, paths, **kwargs):
        from mmgenre_core.predict import GenreScore, TrackPrediction

        paths = [os.fspath(p) for p in paths]
        self.calls.append({"paths": paths, **kwargs})
        for path in paths:
            name = Path(path).name
            probs = next((v for k, v in self.probs.items() if name.startswith(k)), None)
            if probs is None:
                yield TrackPrediction(path=path, error=f"{path}: no answer for this file")
                continue
            ranked = sorted(probs.items(), key=lambda kv: -kv[1])
            yield TrackPrediction(path=path, genres=[GenreScore(g, p) for g, p in ranked],
                                  probabilities=dict(probs), lyrics="none")


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> MediaSet:
    if not (EMOTIFY / "manifest.csv").is_file():
        pytest.fail(f"real test data not found in {DATA_DIR} (set MMGENRE_DATA_DIR)", pytrace=False)
    return build_media(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    """Tiny real checkpoints with known outputs (see make_model_file)."""
    folder = tmp_path_factory.mktemp("models")
    return {
        # Rock 0.4 > Pop 0.3 > Electronic 0.2 > Classical 0.1
        "rock": make_model_file(folder / "rock.pt", (0.1, 0.2, 0.3, 0.4), name="tiny", version="1"),
        # Pop 0.6: a "new model version" that changes its mind
        "pop": make_model_file(folder / "pop.pt", (0.1, 0.2, 0.6, 0.1), name="tiny", version="2"),
        "audio_only": make_model_file(folder / "audio.pt", (0.1, 0.2, 0.3, 0.4), use_lyrics=False,
                                      name="audio", version="1"),
    }


class MMGenrePluginMixin:
    """Configures the plugin for a test: the tiny "rock" model, a private Genius cache.

    Combine with beets' helpers: ``class TestX(MMGenrePluginMixin, IOMixin, PluginTestHelper)``.
    """

    plugin = "mmgenre"

    @pytest.fixture(autouse=True)
    def _mmgenre_setup(self, setup, media, models, tmp_path):  # "setup" is beets' TestHelper fixture
        self.media = media
        self.models = models
        self.genius_cache = tmp_path / "genius-cache"
        self.config["mmgenre"]["model"] = str(models["rock"])
        self.config["mmgenre"]["genius_cache"] = str(self.genius_cache)
        self.config["import"]["write"] = True
        yield

    @property
    def mmgenre(self):
        return find_plugin("mmgenre")

    def reload_plugin(self, **config: Any) -> Any:
        """Apply options read at plugin construction (``auto``) by loading it again."""
        self.unload_plugins()
        for key, value in config.items():
            self.config["mmgenre"][key] = value
        self.load_plugins()
        return self.mmgenre

    def add_track(self, src: str | os.PathLike, name: str | None = None, **fields: Any):
        """A real file copied into the library folder and added to the library."""
        from beets.library import Item

        dst = copy_file(src, Path(self.lib_path) / "tracks" / (name or Path(src).name))
        item = Item.from_path(str(dst))
        for key, value in fields.items():
            item[key] = value
        item.add(self.lib)
        return item
