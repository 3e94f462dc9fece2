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

import html
import json
import os
import shutil
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlparse

import pytest

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


# --------------------------------------------------------------------------- #
# A local Genius
# --------------------------------------------------------------------------- #


@dataclass
class Song:
    id: int
    artist: str
    title: str
    lyrics: str

    @property
    def path(self) -> str:
        return "/" + quote(f"{self.artist}-{self.title}-lyrics".replace(" ", "-"))


class GeniusServer:
    """A genius.com stand-in on 127.0.0.1: search API, song pages, and failure modes.

    ``mode``: "ok"; "timeout" (answers after ``delay`` seconds); "error" (HTTP 500
    JSON like the real API's); "empty" (no hits); "page_error" (search works, the
    song page is a 500 error page); "trickle" (every answer one small chunk per
    ``delay`` seconds); "huge_page" (search works, the page is ``huge_bytes`` long);
    "huge_json" (the search answer is ``huge_bytes`` long); "invalid_json" (the
    search answer is not JSON).
    """

    def __init__(self) -> None:
        self.songs: list[Song] = []
        self.mode = "ok"
        self.delay = 3.0
        self.huge_bytes = 64 * 1024 * 1024
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (path, query, headers)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                server._handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> GeniusServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def add_song(self, artist: str, title: str, lyrics: str) -> Song:
        song = Song(1000 + len(self.songs), artist, title, lyrics)
        self.songs.append(song)
        return song

    @property
    def search_requests(self) -> list[tuple[str, str, dict[str, str]]]:
        return [r for r in self.requests if r[0].rstrip("/").endswith("search")]

    # -- responses --------------------------------------------------------------
    def _send(self, handler: BaseHTTPRequestHandler, status: int, body: str, ctype: str) -> None:
        data = body.encode("utf-8")
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        try:
            if self.mode == "trickle":  # a few bytes at a time, forever slow (bounded: 600 chunks)
                for start in range(0, min(len(data), 600 * 16), 16):
                    handler.wfile.write(data[start:start + 16])
                    handler.wfile.flush()
                    time.sleep(self.delay)
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _send_huge(self, handler: BaseHTTPRequestHandler, head: bytes, filler: bytes, ctype: str) -> None:
        """``huge_bytes`` of ``head`` + ``filler``..., streamed (never held in memory here)."""
        handler.send_response(200)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(self.huge_bytes))
        handler.end_headers()
        block = (filler * (65536 // len(filler) + 1))[:65536]
        try:
            handler.wfile.write(head)
            sent = len(head)
            while sent < self.huge_bytes:
                part = block[: self.huge_bytes - sent]
                handler.wfile.write(part)
                sent += len(part)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass

    def _song_json(self, song: Song) -> dict[str, Any]:
        return {
            "annotation_count": 0, "api_path": f"/songs/{song.id}", "artist_names": song.artist,
            "full_title": f"{song.title} by {song.artist}", "id": song.id, "instrumental": False,
            "lyrics_owner_id": 1, "lyrics_state": "complete", "lyrics_updated_at": 1700000000,
            "path": song.path, "pyongs_count": None, "title": song.title,
            "title_with_featured": song.title, "url": self.url + song.path,
            "primary_artist": {"api_path": "/artists/1", "id": 1, "name": song.artist,
                               "url": self.url + "/artists/" + quote(song.artist)},
        }

    def _page(self, song: Song) -> str:
        # Like genius.com: verses split over several containers (ads sit between
        # them), lines separated by <br/>, a blank line between verses.
        blocks = [b for b in song.lyrics.strip().split("\n\n") if b.strip()]
        containers = "".join(
            '<div data-lyrics-container="true" class="Lyrics__Container-sc-1ynbvzw-1 kUgSbL">'
            + "<br/>".join(html.escape(line) for line in block.splitlines())
            + ("<br/><br/>" if i < len(blocks) - 1 else "") + "</div>"
            for i, block in enumerate(blocks))
        return ("<!DOCTYPE html><html><head><title>" + html.escape(f"{song.artist} - {song.title} Lyrics")
                + '</title></head><body><div class="LyricsHeader__Container-sc-1 abc">'
                + html.escape(f"3 Contributors{song.title} Lyrics") + "</div>"
                + '<div id="lyrics-root">' + containers + "</div></body></html>")

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parsed = urlparse(handler.path)
        self.requests.append((parsed.path, parsed.query, dict(handler.headers)))
        if self.mode == "timeout":
            time.sleep(self.delay)
        if self.mode == "error":
            self._send(handler, 500, json.dumps({"meta": {"status": 500, "message": "Internal Server Error"}}),
                       "application/json")
            return
        if parsed.path.rstrip("/").endswith("search"):
            if self.mode == "huge_json":
                self._send_huge(handler, b'{"meta": {"status": 200}, "response": {"hits": [], "x": "', b"a",
                                "application/json")
                return
            if self.mode == "invalid_json":
                self._send(handler, 200, '{"meta": {"status": 200}, "response": {"hits": [', "application/json")
                return
            query = parse_qs(parsed.query).get("q", [""])[0].lower()
            hits = [] if self.mode == "empty" else [
                {"highlights": [], "index": "song", "type": "song", "result": self._song_json(s)}
                for s in self.songs if s.title.lower() in query]
            self._send(handler, 200, json.dumps({"meta": {"status": 200}, "response": {"hits": hits}}),
                       "application/json; charset=utf-8")
            return
        for song in self.songs:
            if parsed.path == song.path:
                if self.mode == "page_error":
                    self._send(handler, 500, "<html><body>Oops</body></html>", "text/html")
                elif self.mode == "huge_page":
                    self._send_huge(handler, self._page(song).encode("utf-8")[:-len(b"</div></body></html>")],
                                    b"<p>la la</p>", "text/html; charset=utf-8")
                else:
                    self._send(handler, 200, self._page(song), "text/html; charset=utf-8")
                return
        self._send(handler, 404, "<html><body>Page not found</body></html>", "text/html")


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
