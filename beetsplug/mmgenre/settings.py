"""The plugin's options: their defaults, and one checked read of all of them.

Every option is read and checked here, once per run, into a frozen :class:`Settings`;
the rest of the plugin reads that object, never the confuse view. A bad value is not
an exception at plugin load (beets would print a traceback and then "unknown command
'mmgenre'"): :func:`read_settings` returns one line per bad option, with the default
standing in for it, and the plugin refuses to tag with those lines (``beet mmgenre``
exits 1; an import goes on untagged and says why).

Nothing heavy is imported here: ``beet ls`` builds these settings too.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import confuse

#: The options and their defaults (what ``beet config -d`` shows).
DEFAULTS: dict[str, Any] = {
    "auto": True,
    "model": None,
    "device": "auto",
    "batch_size": 16,
    "threads": "auto",
    "cache": True,
    "cache_path": None,
    "count": 1,
    "min_confidence": 0.3,
    "force": False,
    "keep_existing": False,
    "genre_map": {},
    "whitelist": [],
    "vocabulary": "fma",
    "title_case": True,
    "fallback": None,
    "lyrics": True,
    "store_lyrics": False,
    "genius_token": None,
    "genius_timeout": 10.0,
    "genius_cache": None,
    "genius_api_root": None,
    "genius_web_root": None,
    "pretend": False,
    "album": False,
    "learn_min_tracks": 5,
    "learn_path": "mmgenre-learnt.pt",
    "listen": "balanced",
    "unfamiliar": "skip",
}

#: Command-line spellings named next to an option in messages.
FLAGS = {"learn_min_tracks": "--min-tracks", "force": "-f/-F", "keep_existing": "-k/-K", "pretend": "-p",
         "album": "-a/-A"}

MAX_BATCH_SIZE = 1024
MAX_THREADS = 256
MAX_GENIUS_TIMEOUT = 600.0
#: A whitelist file is a short list of names; anything bigger is not one.
MAX_WHITELIST_BYTES = 1 << 20
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CUDA_INDEX = re.compile(r"^cuda:\d{1,3}$")


class BadValue(ValueError):
    """An option's value is unusable; the message says what it must be."""


@dataclass(frozen=True)
class Settings:
    """Every option of the plugin, checked (see :data:`DEFAULTS`)."""

    auto: bool = True
    model: str | None = None
    device: str = "auto"
    batch_size: int = 16
    threads: str | int = "auto"
    cache: bool = True
    cache_path: str | None = None
    count: int = 1
    min_confidence: float = 0.3
    force: bool = False
    keep_existing: bool = False
    genre_map: Mapping[str, str | None] = field(default_factory=dict)
    whitelist: tuple[str, ...] = ()
    vocabulary: str = "fma"
    title_case: bool = True
    fallback: str | None = None
    lyrics: bool = True
    store_lyrics: bool = False
    genius_token: str | None = None
    genius_timeout: float = 10.0
    genius_cache: str | bool | None = None  # None: the default folder; False: no cache
    genius_api_root: str | None = None
    genius_web_root: str | None = None
    pretend: bool = False
    album: bool = False
    learn_min_tracks: int = 5
    learn_path: str = "mmgenre-learnt.pt"
    listen: str = "balanced"
    unfamiliar: str = "skip"


# --------------------------------------------------------------------------- #
# One parser per kind of value: value (and its view, for paths) -> checked value
# --------------------------------------------------------------------------- #


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _flag(value: Any, view: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise BadValue(f"must be yes or no, not {_shown(value)}")


def _whole(low: int, high: int | None = None) -> Callable[[Any, Any], int]:
    def parse(value: Any, view: Any) -> int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and value >= low and (high is None or value <= high):
            return int(value)
        bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise BadValue(f"must be a whole number {bounds}, not {_shown(value)}")
    return parse


def _number(low: float, high: float, *, low_open: bool = False) -> Callable[[Any, Any], float]:
    def parse(value: Any, view: Any) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            if (value > low if low_open else value >= low) and value <= high:
                return float(value)
        side = "above" if low_open else "from"
        raise BadValue(f"must be a number {side} {low:g} {'up ' if low_open else ''}to {high:g}, not {_shown(value)}")
    return parse


def _path(*, optional: bool, resolve: bool = True) -> Callable[[Any, Any], str | None]:
    """A file path; ``resolve``: made absolute by confuse (relative to the config file's
    folder, ~ expanded), else kept as written (the caller places it)."""
    def parse(value: Any, view: Any) -> str | None:
        if value is None and optional:
            return None
        if isinstance(value, str) and value.strip() and not _CONTROL.search(value):
            return view.as_filename() if resolve else value
        raise BadValue(f"must be a file path{' (or left unset)' if optional else ''}, not {_shown(value)}")
    return parse


def _device(value: Any, view: Any) -> str:
    if isinstance(value, str) and (value.strip().lower() in ("auto", "cpu", "cuda", "mps")
                                   or _CUDA_INDEX.match(value.strip().lower())):
        return value.strip().lower()
    raise BadValue(f"must be auto, cpu, cuda, cuda:N or mps, not {_shown(value)}")


def _threads(value: Any, view: Any) -> str | int:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_THREADS:
        return int(value)
    raise BadValue(f"must be auto or a whole number from 1 to {MAX_THREADS}, not {_shown(value)}")


def check_genre_name(name: Any, what: str) -> str:
    """A genre name a user wrote: a non-blank string without control characters
    (a NUL would split into two genres in an ID3 tag), spaces collapsed."""
    if not isinstance(name, str) or not name.strip():
        raise BadValue(f"{what} must be a genre name, not {_shown(name)}")
    if _CONTROL.search(name):
        raise BadValue(f"{what} {_shown(name)} holds a control character (a NUL, tab or line break)")
    return " ".join(name.split())


def _genre_map(value: Any, view: Any) -> dict[str, str | None]:
    if not isinstance(value, Mapping):
        raise BadValue(f"must map model genres to your names (Hip-Hop: Hip Hop), not {_shown(value)}")
    out: dict[str, str | None] = {}
    for source, target in value.items():
        source = check_genre_name(source, "a model genre")
        if target is None or target is False or (isinstance(target, str) and not target.strip()):
            out[source] = None  # drop the genre
        elif isinstance(target, str):
            out[source] = check_genre_name(target, f"the name for {source}")
        else:
            raise BadValue(f"{source} must map to a genre name or null, not {_shown(target)}")
    return out


def _whitelist(value: Any, view: Any) -> tuple[str, ...]:
    if value is None or value is False:
        return ()
    if value is True:  # lastgenre's meaning: its own list, from the installed beets
        from .vocabulary import VocabularyError, lastgenre_whitelist

        try:
            return tuple(sorted(lastgenre_whitelist()))
        except VocabularyError as exc:
            raise BadValue(str(exc)) from None
    if isinstance(value, str):
        if looks_like_path(value):
            return _whitelist_file(os.path.expanduser(value.strip()))
        value = value.split(",")
    if not isinstance(value, list):
        raise BadValue(f"must be a list of genres, a comma-separated string or a file, not {_shown(value)}")
    return tuple(check_genre_name(g, "an entry") for g in value if not (isinstance(g, str) and not g.strip()))


def looks_like_path(value: str) -> bool:
    """A ``whitelist`` string that names a file, not a comma-separated list of genres.

    "Old-Time / Historic, Rock" is a list; "~/genres.txt", "/etc/x", "./w" and
    "genres.txt" are paths (an existing file always is).
    """
    value = value.strip()
    return (os.path.isfile(os.path.expanduser(value)) or value.startswith(("/", "~", "./", "../"))
            or value.lower().endswith((".txt", ".list", ".conf")))


def _whitelist_file(path: str) -> tuple[str, ...]:
    from mmgenre_core.bounded_read import read_text_file
    from mmgenre_core.errors import InputFileError

    try:
        text = read_text_file(path, max_bytes=MAX_WHITELIST_BYTES, what="whitelist file")
    except InputFileError as exc:
        raise BadValue(str(exc)) from None
    names = tuple(check_genre_name(line.strip(), f"line {n} of {path}")
                  for n, line in enumerate(text.splitlines(), 1) if line.strip() and not line.lstrip().startswith("#"))
    if not names:
        raise BadValue(f"the file {path} names no genre")
    return names


def _vocabulary(value: Any, view: Any) -> str:
    from .vocabulary import VOCABULARIES, VocabularyError, lastgenre_whitelist

    if not isinstance(value, str) or value.strip().lower() not in VOCABULARIES:
        raise BadValue(f"must be {' or '.join(VOCABULARIES)}, not {_shown(value)}")
    value = value.strip().lower()
    if value == "lastgenre":
        try:
            lastgenre_whitelist()
        except VocabularyError as exc:
            raise BadValue(str(exc)) from None
    return value


def _listen(value: Any, view: Any) -> str:
    from mmgenre_core.listening import PLAN_NAMES

    if isinstance(value, str) and value.strip().lower() in PLAN_NAMES:
        return value.strip().lower()
    raise BadValue(f"must be {', '.join(PLAN_NAMES[:-1])} or {PLAN_NAMES[-1]}, not {_shown(value)}")


def _unfamiliar(value: Any, view: Any) -> str:
    if isinstance(value, str) and value.strip().lower() in ("skip", "tag"):
        return value.strip().lower()
    raise BadValue(f"must be skip (leave a track unlike every genre the model knows untagged) or tag, "
                   f"not {_shown(value)}")


def _fallback(value: Any, view: Any) -> str | None:
    if value is None or value is False or (isinstance(value, str) and not value.strip()):
        return None
    return check_genre_name(value, "the fallback")


def _token(value: Any, view: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip() and not _CONTROL.search(value):
        return value.strip()
    # Never echo what may be a secret.
    raise BadValue(f"must be the token as a string (in quotes), not a {type(value).__name__}")


def _genius_cache(value: Any, view: Any) -> str | bool | None:
    if value is None or value is True:
        return None
    if value is False:
        return False
    return _path(optional=False)(value, view)


def _url(value: Any, view: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        parts = urlparse(value.strip())
        if parts.scheme in ("http", "https") and parts.netloc:
            return value.strip()
    raise BadValue(f"must be an http:// or https:// address, not {_shown(value)}")


PARSERS: dict[str, Callable[[Any, Any], Any]] = {
    "auto": _flag,
    "model": _path(optional=True),
    "device": _device,
    "batch_size": _whole(1, MAX_BATCH_SIZE),
    "threads": _threads,
    "cache": _flag,
    "cache_path": _path(optional=True),
    "count": _whole(1),
    "min_confidence": _number(0.0, 1.0),
    "force": _flag,
    "keep_existing": _flag,
    "genre_map": _genre_map,
    "whitelist": _whitelist,
    "vocabulary": _vocabulary,
    "title_case": _flag,
    "fallback": _fallback,
    "lyrics": _flag,
    "store_lyrics": _flag,
    "genius_token": _token,
    "genius_timeout": _number(0.0, MAX_GENIUS_TIMEOUT, low_open=True),
    "genius_cache": _genius_cache,
    "genius_api_root": _url,
    "genius_web_root": _url,
    "pretend": _flag,
    "album": _flag,
    "learn_min_tracks": _whole(1),
    "learn_path": _path(optional=False, resolve=False),  # placed in the beets config folder by learn
    "listen": _listen,
    "unfamiliar": _unfamiliar,
}
assert PARSERS.keys() == DEFAULTS.keys()


def _section_problem(view: Any) -> str | None:
    """Why the ``mmgenre:`` section as a whole is unusable (a list, a number...), if it is."""
    try:
        for value, source in view.resolve():
            if value is not None and not isinstance(value, Mapping):
                where = f" in {source.filename}" if getattr(source, "filename", None) else ""
                return f"the mmgenre section{where} must hold options (auto: yes, ...), not a {type(value).__name__}"
    except confuse.ConfigError as exc:
        return str(exc)
    return None


def read_settings(view: Any) -> tuple[Settings, list[str]]:
    """Every option of the ``mmgenre`` config ``view``, checked.

    Returns the settings (a bad option's default in its place) and one line per bad
    option, e.g. ``"auto: must be yes or no, not 'maybe'"``; no line means all is well.
    """
    problem = _section_problem(view)
    if problem:
        return Settings(), [problem]
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, parse in PARSERS.items():
        try:
            values[name] = parse(view[name].get(), view[name])
        except (BadValue, confuse.ConfigError) as exc:
            label = f"{name} ({FLAGS[name]})" if name in FLAGS else name
            problems.append(f"{label}: {exc}")
    return Settings(**values), problems


__all__ = ["DEFAULTS", "Settings", "BadValue", "read_settings", "check_genre_name", "looks_like_path"]
