"""Regression tests for the faults a hostile-input trial found in the core and the CLI.

Each case failed (crash, hang, unbounded memory or a misleading answer) before the
fix it guards; all of them run on real clips from ../shared/data.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mmgenre_core import audio
from mmgenre_core.audio import windows as audio_windows
from mmgenre_core.checkpoint import load_checkpoint
from mmgenre_core.storage import read_weights_only
from mmgenre_core.cli import display_text, main
from mmgenre_core.errors import CheckpointError
from mmgenre_core.predict import GenreClassifier, default_model_path
from mmgenre_core.text import clean_lyrics

from .conftest import encode_with_av, read_pcm16

# --------------------------------------------------------------------------- lyrics cleaning


def test_clean_lyrics_is_linear_on_a_long_run_of_digits() -> None:
    """A line ending in 50,000 digits took over a minute (quadratic embed-counter regex)."""
    text = "first line\n" + "7" * 50_000
    started = time.perf_counter()
    lines = clean_lyrics(text)
    elapsed = time.perf_counter() - started
    assert lines[0] == "first line" and lines[-1].startswith("7777")
    assert elapsed < 2.0, f"cleaning took {elapsed:.1f} s"  # a hang guard: it is ~20 ms


def test_clean_lyrics_still_strips_the_genius_embed_counter() -> None:
    assert clean_lyrics("la la\nlast line1.2KEmbed") == ["la la", "last line"]
    assert clean_lyrics("la la\nend23EmbedShare URLCopyEmbedCopy") == ["la la", "end"]


def test_a_megabyte_of_lyrics_is_cut_not_chewed() -> None:
    text = ("a line of words\n" * 70_000)  # ~1.1 MB
    started = time.perf_counter()
    lines = clean_lyrics(text)
    assert time.perf_counter() - started < 2.0
    assert 0 < len(lines) <= 100_000 // len("a line of words\n") + 1


# --------------------------------------------------------------------------- checkpoints


def _payload() -> dict:
    return read_weights_only(default_model_path())


def _first_weight(payload: dict) -> str:
    return next(k for k, v in payload["state_dict"].items() if v.is_floating_point() and v.dim() == 2)


def _wrong_shape(p: dict) -> None:
    k = _first_weight(p)
    p["state_dict"][k] = torch.zeros(p["state_dict"][k].shape[0] + 1, p["state_dict"][k].shape[1])


def _nan_weight(p: dict) -> None:
    k = _first_weight(p)
    p["state_dict"][k] = torch.full_like(p["state_dict"][k], float("nan"))


def _non_tensor(p: dict) -> None:
    p["state_dict"][_first_weight(p)] = [1.0, 2.0]


def _short_vocab(p: dict) -> None:
    p["vocab"] = p["vocab"][:-5]
    p["model_config"]["vocab_size"] = len(p["vocab"])  # consistent config, weights no longer fit


BROKEN_CHECKPOINTS: list[tuple[str, Callable[[dict], None], str]] = [
    ("wrong-shape weight", _wrong_shape, "do not fit"),
    ("NaN weights", _nan_weight, "NaN"),
    ("non-tensor weight", _non_tensor, "not a tensor"),
    ("genres an int", lambda p: p.update(genres=7), "genres"),
    ("model_config a list", lambda p: p.update(model_config=[1, 2]), "model_config"),
    ("vocab None", lambda p: p.update(vocab=None), "vocab"),
    ("vocab shorter than the embedding", _short_vocab, "do not fit"),
    ("format_version a string", lambda p: p.update(format_version="1"), "format_version must be a whole number"),
    ("format_version from the future", lambda p: p.update(format_version=99), "newer"),
    ("metadata a string", lambda p: p.update(metadata="x"), "metadata"),
    ("n_mels a string", lambda p: p["model_config"].update(n_mels="128"), "n_mels"),
    ("window of a negative length", lambda p: p["audio_config"].update(window_seconds=-3.0), "AudioConfig"),
    ("state_dict a list", lambda p: p.update(state_dict=[1, 2]), "state_dict"),
]


class _Payload:
    """A pickled object that would run code on load: weights-only loading must refuse it."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/mmgenre-pwned",))


def test_malicious_checkpoint_is_refused_without_running_code(tmp_path) -> None:
    payload = read_weights_only(default_model_path())
    payload["metadata"] = {"x": _Payload()}
    path = tmp_path / "evil.pt"
    torch.save(payload, path)
    marker = Path("/tmp/mmgenre-pwned")
    marker.unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match="weights-only"):
        GenreClassifier.load(path)
    assert not marker.exists()


@pytest.fixture(scope="module")
def broken_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Callable[[dict], None]], Path]:
    folder = tmp_path_factory.mktemp("broken_ckpt")

    def make(mutate: Callable[[dict], None]) -> Path:
        payload = _payload()
        mutate(payload)
        path = folder / f"{id(mutate)}.pt"
        torch.save(payload, path)
        return path

    return make


@pytest.mark.parametrize("name, mutate, message", BROKEN_CHECKPOINTS, ids=[c[0] for c in BROKEN_CHECKPOINTS])
def test_broken_checkpoint_is_a_checkpoint_error(broken_checkpoint, name, mutate, message) -> None:
    path = broken_checkpoint(mutate)
    with pytest.raises(CheckpointError, match=message):
        GenreClassifier.load(path)


@pytest.mark.parametrize("name, mutate, message", BROKEN_CHECKPOINTS[:3], ids=[c[0] for c in BROKEN_CHECKPOINTS[:3]])
def test_cli_reports_a_broken_checkpoint_with_exit_2(broken_checkpoint, real_clip, capsys, name, mutate,
                                                     message) -> None:
    path = broken_checkpoint(mutate)
    assert main(["predict", "--model", str(path), str(real_clip("rock"))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmgenre: ") and "Traceback" not in err and message in err


def test_the_shipped_model_passes_its_self_test() -> None:
    clf = GenreClassifier.load()
    clf.self_test()  # raises on failure
    assert load_checkpoint(default_model_path()).genres == clf.genres


# --------------------------------------------------------------------------- output encoding


@pytest.fixture()
def non_utf8_clip(tmp_path: Path, real_clip) -> Path:
    path = Path(os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9 \xff.mp3"))
    path.write_bytes(real_clip("pop").read_bytes())
    return path


@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])
def test_predict_prints_non_utf8_file_names_as_valid_json(non_utf8_clip: Path, locale: str) -> None:
    env = {**os.environ, "LC_ALL": locale, "LANG": locale, "PYTHONIOENCODING": ""}
    proc = subprocess.run([sys.executable, "-m", "mmgenre_core.cli", "predict", "--json", str(non_utf8_clip)],
                          capture_output=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    record = json.loads(proc.stdout.decode("utf-8"))  # valid UTF-8 and valid JSON
    assert record["path"].endswith("caf\\xe9 \\xff.mp3") and record["error"] is None
    assert record["genres"]


def test_display_text_escapes_undecodable_bytes_only() -> None:
    assert display_text("/m\u00fcsic/a.mp3") == "/m\u00fcsic/a.mp3"
    assert display_text(os.fsdecode(b"/x/\xff.mp3")) == "/x/\\xff.mp3"


# --------------------------------------------------------------------------- unknown-length audio


@pytest.fixture(scope="module")
def pipe_flac(tmp_path_factory: pytest.TempPathFactory, full_track: Path) -> dict[str, Path]:
    """The real full track (183 s) as FLAC twice: with a length in its header, and as
    written to a pipe (no total in STREAMINFO, so libsndfile cannot tell the length)."""
    pcm, sr = read_pcm16(full_track, start=0, seconds=10_000)
    folder = tmp_path_factory.mktemp("pipe_flac")
    seekable = folder / "header.flac"
    sf.write(str(seekable), pcm, sr, format="FLAC", subtype="PCM_16")
    piped = encode_with_av(folder / "piped.flac", pcm, sr, codec="flac", container="flac", seekable=False)
    return {"header": seekable, "piped": piped}


def test_piped_flac_has_no_length(pipe_flac) -> None:
    with sf.SoundFile(str(pipe_flac["piped"])) as fh:
        assert not 0 < fh.frames < 2**40


def test_unknown_length_file_is_streamed_in_bounded_memory(pipe_flac, monkeypatch) -> None:
    """A file whose length the header does not give was decoded whole (5.3 GB for 3 h).

    With the whole-file limit lowered to 30 s, the 183-s file must be counted and then
    decoded again for its windows only: peak memory well under one whole decode, and
    the very windows the seekable copy gives.
    """
    config = load_checkpoint(default_model_path()).audio_config
    expected = audio.load_windows(pipe_flac["header"], config=config)
    monkeypatch.setattr(audio_windows, "_KEEP_WHOLE_SECONDS", 30.0)
    tracemalloc.start()
    try:
        windows = audio.load_windows(pipe_flac["piped"], config=config)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    whole_decode = 183 * 44100 * 4  # mono float32 of the whole track
    assert peak < whole_decode / 2, f"peak {peak / 1e6:.1f} MB vs {whole_decode / 1e6:.1f} MB whole"
    assert windows.shape == expected.shape == (config.num_windows, config.window_samples)
    np.testing.assert_array_equal(windows, expected)


def test_unknown_length_short_file_is_kept_whole(pipe_flac) -> None:
    """Under the limit (the default 10 min), one pass as before: the same windows up to
    float rounding (whole-file against windowed resampling), the tail included."""
    config = load_checkpoint(default_model_path()).audio_config
    np.testing.assert_allclose(audio.load_windows(pipe_flac["piped"], config=config),
                               audio.load_windows(pipe_flac["header"], config=config), atol=1e-6)


# --------------------------------------------------------------------------- CLI inputs


def _lyrics_file_cases(tmp: Path, data_dir: Path) -> dict[str, tuple[Path, str]]:
    not_utf8 = tmp / "latin1.jsonl"
    not_utf8.write_bytes(b'{"path": "a.mp3", "lyrics": "caf\xe9"}\n')
    loop = tmp / "loop.jsonl"
    loop.symlink_to(loop)
    return {
        "not UTF-8": (not_utf8, "not UTF-8"),
        "missing": (tmp / "nope.jsonl", "no such file"),
        "a folder": (tmp, "is a folder"),
        "a symlink loop": (loop, "symbolic link"),
        "another format (the shared corpus)": (data_dir / "lyrics" / "lyrics.jsonl", "no usable line"),
    }


@pytest.mark.parametrize("case", ["not UTF-8", "missing", "a folder", "a symlink loop",
                                  "another format (the shared corpus)"])
def test_bad_lyrics_file_is_one_clear_error_and_exit_2(tmp_path, data_dir, real_clip, capsys, case) -> None:
    path, message = _lyrics_file_cases(tmp_path, data_dir)[case]
    assert main(["predict", "--lyrics-file", str(path), str(real_clip("rock"))]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], captured.err


def test_punctuation_only_lyrics_are_not_reported_as_used(tmp_path, real_clip, capsys) -> None:
    clip = real_clip("pop")
    lyrics = tmp_path / "l.jsonl"
    lyrics.write_text(json.dumps({"path": str(clip), "lyrics": "...\n---\n!!!\n[Chorus]"}) + "\n", encoding="utf-8")
    assert main(["predict", "--json", "--lyrics-file", str(lyrics), str(clip)]) == 0
    assert json.loads(capsys.readouterr().out)["lyrics"] == "none"


def test_attention_without_json_is_a_usage_error(real_clip, capsys) -> None:
    assert main(["predict", "--attention", str(real_clip("rock"))]) == 2
    assert "--attention needs --json" in capsys.readouterr().err


def test_symlink_loop_is_named_as_such(tmp_path, capsys) -> None:
    loop = tmp_path / "loop.mp3"
    loop.symlink_to(loop)
    assert main(["predict", str(loop)]) == 2
    assert "symbolic link" in capsys.readouterr().err


def test_decoder_warnings_stay_off_the_terminal(tmp_path, real_clip) -> None:
    """libmpg123 printed "Warning: Xing stream size off by more than 1%" on damaged MP3s."""
    data = real_clip("rock").read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[: len(data) // 2])  # its Xing header still counts the whole file
    plain = subprocess.run([sys.executable, "-c", "import soundfile as sf, sys; f = sf.SoundFile(sys.argv[1]); "
                            "f.seek(f.frames - 1000); f.read(100)", str(cut)], capture_output=True, timeout=120)
    assert b"Xing stream size" in plain.stderr  # the noise exists without the filter
    proc = subprocess.run([sys.executable, "-m", "mmgenre_core.cli", "predict", str(cut)], capture_output=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip(), proc
    assert b"Xing" not in proc.stderr, proc.stderr


def test_nan_probabilities_become_a_track_error(real_clip, monkeypatch) -> None:
    """A model answering NaN for a track must not hand "NaN" on as a confidence."""
    clf = GenreClassifier.load()
    real = clf._probabilities

    def nan_batch(*args, **kwargs):
        probs, att = real(*args, **kwargs)
        probs[:] = math.nan
        return probs, att

    monkeypatch.setattr(clf, "_probabilities", nan_batch)
    [result] = clf.predict([real_clip("rock")])
    assert result.error and "NaN" in result.error and not result.genres
