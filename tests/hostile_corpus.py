"""The bad-input corpus of the plugin's fault trial, made from real clips at test time.

Every case starts from a real file of ``../shared/data``; nothing large is committed.
:func:`build_corpus` writes them into a folder and says, per case, what a run must
do with it: ``tagged`` (the genre tag written, nothing else changed), ``failed`` or
``skipped`` (file and library row untouched), or ``either`` (damaged audio that one
decoder may still read: tagged or failed, never anything else).

Some damage has to happen after the file is in the library (a file truncated or
deleted after import): :class:`Case.after_import` does it.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .conftest import encode_with_av
from .plugin_helpers import copy_file, set_tags

TAGGED, FAILED, SKIPPED, EITHER = "tagged", "failed", "skipped", "either"


@dataclass
class Case:
    name: str
    path: Path
    outcome: str
    message: str = ""  # a word the run's log or summary must show for this file
    after_import: Callable[[Path], None] | None = None


def _pcm(src: Path, seconds: float = 12.0, offset: float = 5.0) -> tuple[np.ndarray, int]:
    with sf.SoundFile(str(src)) as f:
        f.seek(int(offset * f.samplerate))
        return f.read(int(seconds * f.samplerate), dtype="float32", always_2d=True), f.samplerate


def _replace_with(data: bytes) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        path.write_bytes(data)

    return apply


def _truncate_after_tag(path: Path) -> None:
    data = path.read_bytes()
    size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
    path.write_bytes(data[: 10 + size + 3000])


def _garbage_in_the_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    rng = random.Random(7)
    start, end = len(data) * 2 // 5, len(data) * 3 // 5
    data[start:end] = bytes(rng.getrandbits(8) for _ in range(end - start))
    path.write_bytes(bytes(data))


def _break_flac_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC"
    data[8:42] = b"\xff" * 34  # STREAMINFO: sample rate, channels, bits all nonsense
    path.write_bytes(bytes(data))


def _streaming_wav(path: Path) -> None:
    """RIFF and data sizes 0xFFFFFFFF, as a recorder streaming to disk writes them."""
    data = bytearray(path.read_bytes())
    data[4:8] = b"\xff\xff\xff\xff"
    i = data.find(b"data")
    data[i + 4:i + 8] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))


def _delete(path: Path) -> None:
    path.unlink()


def _symlink_loop(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.name)


def _read_only(path: Path) -> None:
    os.chmod(path, 0o444)


def build_corpus(folder: Path, mp3: list[Path], flac: Path) -> list[Case]:
    """The corpus (about 20 cases) in ``folder``; ``mp3``: real tagged clips, ``flac``: a real FLAC."""
    folder.mkdir(parents=True, exist_ok=True)
    rock, pop = mp3[0], mp3[1]
    pcm, sr = _pcm(rock)
    cases: list[Case] = []

    def mp3_case(name: str, outcome: str, message: str = "", after: Callable[[Path], None] | None = None,
                 src: Path = rock) -> Case:
        case = Case(name, copy_file(src, folder / f"{name}.mp3"), outcome, message, after)
        cases.append(case)
        return case

    # Damaged after import: beets read good tags, the audio is gone or wrong now.
    mp3_case("zero-byte", FAILED, "empty", _replace_with(b""))
    mp3_case("text-named-mp3", FAILED, "not decodable", _replace_with(b"These are my notes, not music.\n" * 40))
    mp3_case("truncated", FAILED, "s of audio", _truncate_after_tag)
    mp3_case("garbage-in-the-middle", EITHER, "", _garbage_in_the_middle)
    broken_flac = copy_file(flac, folder / "broken-header.flac")
    cases.append(Case("broken-flac-header", broken_flac, FAILED, "not decodable", _break_flac_header))

    # Valid files of odd shapes.
    short = folder / "short-0.3s.wav"
    sf.write(str(short), pcm[: int(0.3 * sr)], sr, subtype="PCM_16")
    cases.append(Case("0.3-s", short, FAILED, "need at least"))
    silence = folder / "silence.flac"
    sf.write(str(silence), np.zeros((12 * sr, 2), np.float32), sr, subtype="PCM_16")
    cases.append(Case("silence", silence, FAILED, "silence"))
    import soxr

    low = folder / "8khz-mono.wav"
    sf.write(str(low), soxr.resample(pcm.mean(axis=1), sr, 8000), 8000, subtype="PCM_16")
    cases.append(Case("8-kHz-mono", low, TAGGED))
    high = folder / "96khz-24bit.flac"
    sf.write(str(high), soxr.resample(pcm, sr, 96000), 96000, subtype="PCM_24")
    cases.append(Case("96-kHz-24-bit", high, TAGGED))
    six = folder / "6-channels.flac"
    sf.write(str(six), np.repeat(pcm, 3, axis=1) * 0.5, sr, subtype="PCM_16")
    cases.append(Case("6-channels", six, TAGGED))
    pcm16 = (pcm * 32767).astype(np.int16)
    aac = encode_with_av(folder / "aac.m4a", pcm16, sr, codec="aac", container="ipod", bit_rate=128_000)
    cases.append(Case("AAC", aac, TAGGED))
    opus = folder / "opus.opus"
    sf.write(str(opus), soxr.resample(pcm, sr, 48000), 48000, format="OGG", subtype="OPUS")
    cases.append(Case("Opus", opus, TAGGED))
    for case in cases[-4:] + [cases[-6]]:  # titles so beets and Genius have something to read
        set_tags(case.path, title=f"Odd {case.name}", artist="Test Artist")

    # Odd tags: a 20 MB picture, unicode and NUL bytes, a megabyte of lyrics.
    picture = mp3_case("20MB-picture", TAGGED)
    from mutagen.id3 import APIC, ID3, TIT2, TPE1, USLT

    tags = ID3(picture.path)
    rng = np.random.default_rng(0)
    tags.add(APIC(encoding=3, mime="image/jpeg", type=3, desc="cover",
                  data=b"\xff\xd8\xff\xe0" + rng.integers(0, 256, 20 * 1024 * 1024, dtype=np.uint8).tobytes()))
    tags.save(v2_version=3)
    odd = mp3_case("odd-unicode-and-NUL-tags", TAGGED)
    tags = ID3(odd.path)
    tags.add(TIT2(encoding=3, text="A\u0000B \u202etxet\u202c \U0001f3b8 \ud7ff caf\u00e9"))
    tags.add(TPE1(encoding=3, text=["Art\u0000ist", "\u0645\u063a\u0646\u064a"]))
    tags.save(v2_version=3)
    lyrics = mp3_case("1MB-lyrics", TAGGED, src=pop)
    tags = ID3(lyrics.path)
    tags.add(USLT(encoding=3, lang="eng", desc="", text=("la la la, sing along\n" * 50_000)))
    tags.save(v2_version=3)

    # Writes that must fail without harm, and files that are gone.
    mp3_case("read-only", FAILED, "read-only", _read_only)
    wav = folder / "streaming.wav"
    sf.write(str(wav), pcm, sr, subtype="PCM_16")
    cases.append(Case("streaming-WAV", wav, FAILED, "cannot write", _streaming_wav))
    mp3_case("deleted-after-import", SKIPPED, "file not found", _delete)
    mp3_case("symlink-loop", SKIPPED, "symbolic link", _symlink_loop)

    # Names a shell or a terminal chokes on.
    mp3_case("name with  spaces", TAGGED)
    nl = mp3_case("name-with-newline", TAGGED)
    nl.path = nl.path.rename(folder / "name with\nnewline.mp3")
    bad = mp3_case("non-utf8-name", TAGGED)
    target = Path(os.fsdecode(os.fsencode(str(folder)) + b"/caf\xe9-\xff.mp3"))
    shutil.move(bad.path, target)
    bad.path = target
    return cases


__all__ = ["Case", "build_corpus", "TAGGED", "FAILED", "SKIPPED", "EITHER"]
