"""Lyrics front end: cleaning, tokenising, vocabulary and the HAN's id grid.

Raw lyrics come from file tags, ``.lrc`` files, Genius pages and lyrics sites, so
:func:`clean_lyrics` first removes what is not sung (LRC timestamps and metadata,
Genius headers and footers, section labels such as ``[Chorus]``, repeat marks such
as ``(x2)``, URLs, site credits). One cleaned line is one "sentence" of the
hierarchical attention network. :func:`encode_lyrics` then pads/truncates the
tokenised lines to the ``(max_lines, max_words)`` grid of :class:`TextConfig`.

Only the standard library is imported at module level: the beets plugin and the
training tools call :func:`clean_lyrics` without loading numpy or torch.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Iterable, Sequence

from .config import TextConfig

if TYPE_CHECKING:  # pragma: no cover - annotations only
    import numpy as np
    import torch

PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
PAD_ID = 0
UNK_ID = 1

# --------------------------------------------------------------------------- #
# Cleaning
# --------------------------------------------------------------------------- #

#: Characters of a lyrics text that are read at all (about 30x a long song's).
MAX_LYRICS_CHARS = 100_000

# Every line break a tag or web page may carry: CRLF, CR, NEL, VT, FF, U+2028/9.
_NEWLINES = re.compile(r"\r\n|[\r\x0b\x0c\x85\u2028\u2029]")
# Zero-width characters and the BOM split or glue words invisibly.
_INVISIBLE = re.compile(r"[\u200b\u200c\u200d\u2060\ufeff]")
_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>\n]*)?/?>")

# LRC: "[ar:Artist]" metadata lines; "[00:12.34]" line and "<00:12.34>" word stamps.
_LRC_META = re.compile(
    r"^[ \t]*\[(?:ar|ti|al|au|by|offset|length|re|ve|id|la|lang|tool|#)[ \t]*:[^\]\n]*\][ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
_LRC_STAMP = re.compile(r"\[\d{1,3}:\d{1,2}(?:[.:]\d{1,3})?\]|<\d{1,3}:\d{1,2}(?:[.:]\d{1,3})?>")
_URL = re.compile(r"\b(?:https?://|www\.)\S+", re.IGNORECASE)

# Genius: the page text starts "<N> Contributors[Translations...]<Title> Lyrics", and
# the lyrics may follow glued to "Lyrics" on the same line. "Lyrics" followed by a
# space is a sung line ("Lyrics comin' at you ..."), not a header.
_GENIUS_HEADER = re.compile(r"^.*?\S\s+Lyrics(?=$|\S)")
# Newer Genius pages put a song description between the header and the lyrics.
_GENIUS_READ_MORE = re.compile(r"^.*?Read More\s*")
# "...last line1.2KEmbed": Genius's embed counter glued to the last line. The counter
# is bounded ({1,7} digits) so that a line ending in a long run of digits costs linear
# time: an unbounded \d+ retried from every digit was quadratic (15 s at 16k digits).
_GENIUS_EMBED = re.compile(r"(?:\d{1,7}(?:\.\d{1,3})?K?)?Embed(?:Share URLCopyEmbedCopy)?\s*$")
# Genius's recommendation widget, often glued to a neighbouring line or label.
_GENIUS_YMAL = re.compile(r"(?<=\S)You might also like|You might also like(?=$|[\[(A-Z])", re.MULTILINE)
_GENIUS_TICKETS = re.compile(r"See [^\n]{1,80}? LiveGet tickets as low as \$\d+(?:\.\d+)?")

# Square and curly brackets hold editorial notes in lyrics ("[Chorus]", "[Verse 1:
# Artist]", "[?]", "{x3}") and hardly ever sung words, so every one-line group goes.
_BRACKETED = re.compile(r"\[[^\[\]\n]*\]|\{[^{}\n]*\}")
_PARENTHESISED = re.compile(r"\(([^()\n]*)\)")
# Repeat marks: "(x2)", "(2X)", "(Repeat 3x)", "(x8 total)", "(2 times)", or a bare
# "x2" / "4x" at the end of the line.
_REPEAT_GROUP = re.compile(
    r"[(\[{][ \t]*(?:repeats?[ \t]*)?(?:[x\u00d7][ \t]*\d+|\d+[ \t]*[x\u00d7]|\d+[ \t]*times)(?:[ \t]*total)?[ \t]*[)\]}]",
    re.IGNORECASE,
)
_REPEAT_TAIL = re.compile(r"(?:^|(?<=\s))(?:[x\u00d7]\s*\d+|\d+\s*[x\u00d7])\s*$", re.IGNORECASE)

# Characters that decorate a label line: "*Chorus*", "''Refrain''", "--- Solo ---".
_LABEL_WRAPPERS = "*'\"`-\u2013\u2014=_~.:;()[]{}<> \t"
_LABEL_SPLIT = re.compile(r"[\s/&,+\-]+")
# A section label needs one of these words...
_LABEL_CORE = frozenset(
    "chorus chorous chrous chours choruses prechorus postchorus verse verses "
    "hook bridge refrain intro outro interlude instrumental solo breakdown coda skit "
    "spoken talking whispered repeat repeats".split()
)
# ...and may otherwise hold only these (numbers, ordinals, instruments, stage notes;
# not "i" or "v", so that a sung "I repeat" stays).
_LABEL_FILLER = frozenset(
    "pre post the a an and to of at in til till until end start begin beginning first second "
    "third fourth fifth last final next same again fade fades fading out away x times time "
    "total one two three four five six seven eight nine ten ii iii iv vi "
    "1st 2nd 3rd 4th 5th 6th guitar sax saxophone piano drum drums bass keyboard organ "
    "harmonica violin horn trumpet lead long short little cool slow break song music "
    "part section".split()
)
_NUMBERISH = re.compile(r"^(?:\d+|\d+x|x\d+)$")
# Site junk seen in scraped corpora: credits, metadata lines, scraper error markers.
_METADATA_LINE = re.compile(
    r"^(?:artist|song|title|album|track|written by|writers?|composers?|composed by|"
    r"lyrics by|words by|music by|produced by|producers?|source|please note|copyright)\s*:"
    r"|^lyrics\s+(?:courtesy|provided|powered)\b|^copyright\b|\u00a9"
    r"|^[A-Z][A-Za-z]*Error$"
    r"|^looking for .{1,80} tabs and chords\b|^buy .{1,80} (?:sheet music|cds?|mp3s?|ringtones?)$",
    re.IGNORECASE,
)
# "DOVE:", "Q-Tip:", "MIKE G:" alone on a line: who sings the next lines.
_SPEAKER_LINE = re.compile(r"^(?:[A-Z0-9][\w.'\-]*)(?:\s+[A-Z0-9][\w.'\-]*){0,2}\s*:$")
# "Verse One: Phife Dawg" -> the part after the colon is a credit when it is a few
# capitalised names without sentence punctuation.
_CREDIT = re.compile(r"^(?:[A-Z0-9][\w.'\-]*|&|and|feat\.?|ft\.?)(?:[\s,]+(?:[A-Z0-9][\w.'\-]*|&|and|feat\.?|ft\.?)){0,4}$")


def _is_label(text: str) -> bool:
    """True when ``text`` is only a section label ("Chorus 2x", "Repeat first verse")."""
    words = [w for w in _LABEL_SPLIT.split(text.strip(_LABEL_WRAPPERS).lower()) if w]
    if not words or len(words) > 8:
        return False
    has_core = False
    for word in words:
        word = word.strip(_LABEL_WRAPPERS)
        if word in _LABEL_CORE:
            has_core = True
        elif word and word not in _LABEL_FILLER and not _NUMBERISH.match(word):
            return False
    return has_core


def _drop_label_groups(line: str) -> str:
    """Remove "(Chorus)" / "(repeat)" groups but keep sung ones such as "(Ooh, baby)"."""
    return _PARENTHESISED.sub(lambda m: " " if _is_label(m.group(1)) else m.group(0), line)


def _strip_label_prefix(line: str) -> str:
    """Handle "Label: rest": drop a label alone or with a credit, keep sung text after it."""
    if ":" not in line:
        return line
    head, _, rest = line.partition(":")
    if not _is_label(head):
        return line
    rest = rest.strip(_LABEL_WRAPPERS)
    if not rest or _CREDIT.match(rest):
        return ""
    return rest


def _normalise_text(text: str) -> str:
    """Unify line breaks, drop invisible characters, decode HTML entities and tags."""
    text = _NEWLINES.sub("\n", text)
    text = _INVISIBLE.sub("", text).replace("\u00a0", " ")
    for _ in range(3):  # scraped pages are sometimes escaped twice ("&amp;amp;")
        if "&" not in text or (unescaped := html.unescape(text)) == text:
            break
        text = unescaped
    if "<" in text:
        text = _LRC_STAMP.sub(" ", text)  # before HTML tags: "<00:12.34>" is not a tag
        text = _HTML_BREAK.sub("\n", text)
        text = _HTML_TAG.sub(" ", text)
    return text


def _strip_genius_header(line: str) -> str:
    """Remove "<N> Contributors ... <Title> Lyrics" from the page's first line."""
    match = _GENIUS_HEADER.match(line)
    if match is None:
        return line
    rest = line[match.end():]
    if "Read More" in rest:
        rest = _GENIUS_READ_MORE.sub("", rest, count=1)
    return rest


def _strip_inline_junk(text: str) -> str:
    """LRC, URLs, Genius widgets, repeat marks and [notes], in one pass over the text.

    None of these patterns crosses a line break, so one call per song is the same as
    one per line, only much cheaper.
    """
    text = _LRC_META.sub("", text)
    text = _LRC_STAMP.sub(" ", text)
    text = _URL.sub(" ", text)
    if "LiveGet tickets" in text:
        text = _GENIUS_TICKETS.sub(" ", text)
    if "You might also like" in text:
        text = _GENIUS_YMAL.sub(" ", text)
    text = _REPEAT_GROUP.sub(" ", text)
    return _BRACKETED.sub(" ", text)


def _clean_line(line: str) -> str:
    """One line, inline junk already gone -> sung text only ('' when nothing is left)."""
    line = " ".join(line.split())
    if not line:
        return ""
    bare = line.strip(_LABEL_WRAPPERS)
    if _METADATA_LINE.search(bare) or _SPEAKER_LINE.match(line) or _is_label(bare):
        return ""
    line = _drop_label_groups(line)
    line = _REPEAT_TAIL.sub("", line)
    line = " ".join(_strip_label_prefix(line.strip()).split())
    # A line of punctuation only ("---", "'''") carries no words.
    return line if any(ch.isalnum() for ch in line) else ""


def clean_lyrics(text: str | None) -> list[str]:
    """Raw lyrics -> cleaned, non-empty lines (one line = one HAN sentence).

    Never raises: ``None``, ``""``, whitespace or labels only all give ``[]``.
    """
    if text is None:
        return []
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    if not isinstance(text, str):
        return []
    # The plugin asks "are there words?" before the model cleans the same text: cached,
    # keyed by the part that is read at all, so the cache's keys stay small.
    return list(_clean_cached(text[:MAX_LYRICS_CHARS]))


@lru_cache(maxsize=256)
def _clean_cached(text: str) -> tuple[str, ...]:
    return tuple(_clean(text))


def _clean(text: str) -> list[str]:
    # The model reads 50 lines; a megabyte of "lyrics" (a mis-tagged text dump) is cut
    # first so that cleaning stays a few milliseconds.
    raw = _normalise_text(text[:MAX_LYRICS_CHARS]).split("\n")
    # Genius header: only on the first non-blank line of the page.
    for i, line in enumerate(raw):
        if line.strip():
            raw[i] = _strip_genius_header(line.strip())
            break
    # Genius embed counter: only on the last non-blank line.
    for i in range(len(raw) - 1, -1, -1):
        if raw[i].strip():
            line = raw[i].rstrip()
            # Only a line that ends like the counter is searched at all.
            if line.endswith(("Embed", "EmbedCopy")):
                raw[i] = _GENIUS_EMBED.sub("", line)
            break
    cleaned = (_clean_line(line) for line in _strip_inline_junk("\n".join(raw)).split("\n"))
    return [line for line in cleaned if line]


def has_words(text: str | None) -> bool:
    """Whether ``text`` holds any lyrics line after cleaning (not only labels or punctuation)."""
    return bool(clean_lyrics(text))


# --------------------------------------------------------------------------- #
# Tokenising
# --------------------------------------------------------------------------- #

# Apostrophe look-alikes, mapped before NFKC (which would turn the acute accent
# U+00B4 into a space plus a combining mark).
_APOSTROPHES = str.maketrans({c: "'" for c in "\u2018\u2019\u201b\u02bc\u02bb\u00b4\u0060\u2032\uff07"})


@lru_cache(maxsize=1)
def _word_pattern() -> re.Pattern[str]:
    """Words: letters/digits plus combining marks, with in-word apostrophes.

    ``\\w`` misses combining marks (Devanagari vowel signs, Arabic harakat), which
    would split words; their ranges are collected once, on first use, so importing
    this module stays cheap.
    """
    ranges: list[str] = []
    start = prev = -2
    for code in range(0x300, 0x20000):
        if unicodedata.category(chr(code))[0] != "M":
            continue
        if code != prev + 1:
            if start >= 0:
                ranges.append(f"\\U{start:08x}-\\U{prev:08x}")
            start = code
        prev = code
    ranges.append(f"\\U{start:08x}-\\U{prev:08x}")
    part = f"(?:[^\\W_]|[{''.join(ranges)}])"
    return re.compile(f"[^\\W_]{part}*(?:'{part}+)*")


def tokenize_line(line: str, *, lowercase: bool = True) -> list[str]:
    """One line -> its words ("don't", "rock'n'roll" kept whole; punctuation dropped)."""
    if not line:
        return []
    line = unicodedata.normalize("NFKC", line.translate(_APOSTROPHES))
    if lowercase:
        line = line.lower()
    return _word_pattern().findall(line)


def tokenize_lyrics(text: str | None, *, config: TextConfig) -> list[list[str]]:
    """Raw lyrics -> tokenised lines, dropping lines under ``config.min_line_words``.

    Not truncated: :func:`encode_lyrics` cuts to ``(max_lines, max_words)``.
    """
    min_words = max(1, config.min_line_words)
    lines = (tokenize_line(line, lowercase=config.lowercase) for line in clean_lyrics(text))
    return [words for words in lines if len(words) >= min_words]


# --------------------------------------------------------------------------- #
# Vocabulary
# --------------------------------------------------------------------------- #


class Vocabulary:
    """Token <-> id map: id 0 is :data:`PAD_TOKEN`, id 1 :data:`UNK_TOKEN`, then tokens."""

    def __init__(self, tokens: Sequence[str]) -> None:
        """``tokens`` without the two specials; duplicates raise ``ValueError``."""
        self._tokens: list[str] = [PAD_TOKEN, UNK_TOKEN]
        self._ids: dict[str, int] = {PAD_TOKEN: PAD_ID, UNK_TOKEN: UNK_ID}
        for token in tokens:
            if not isinstance(token, str) or not token:
                raise ValueError(f"vocabulary tokens must be non-empty strings, got {token!r}")
            if token in self._ids:
                raise ValueError(f"duplicate vocabulary token {token!r}")
            self._ids[token] = len(self._tokens)
            self._tokens.append(token)

    @classmethod
    def build(
        cls,
        documents: Iterable[Sequence[Sequence[str]]],
        *,
        max_size: int | None = None,
        min_count: int = 1,
    ) -> "Vocabulary":
        """Vocabulary of tokenised documents (document -> lines -> tokens).

        Most frequent first, ties alphabetical, so the same corpus always gives the
        same ids; ``max_size`` counts real tokens only (the 2 specials come on top).
        """
        if max_size is not None and max_size < 0:
            raise ValueError("max_size must be >= 0")
        if min_count < 1:
            raise ValueError("min_count must be >= 1")
        counts: Counter[str] = Counter()
        for document in documents:
            for line in document:
                counts.update(line)
        for special in (PAD_TOKEN, UNK_TOKEN, ""):
            counts.pop(special, None)
        ranked = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        return cls(ranked if max_size is None else ranked[:max_size])

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._tokens == other._tokens

    def __hash__(self) -> int:
        return hash(tuple(self._tokens))

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)})"

    def id_of(self, token: str) -> int:
        """Id of ``token``; :data:`UNK_ID` when it is not in the vocabulary."""
        return self._ids.get(token, UNK_ID)

    def token_of(self, idx: int) -> str:
        """Token of id ``idx`` (``IndexError`` outside ``0 .. len - 1``)."""
        if not 0 <= idx < len(self._tokens):
            raise IndexError(f"token id {idx} out of range 0..{len(self._tokens) - 1}")
        return self._tokens[idx]

    def to_list(self) -> list[str]:
        """Every token in id order, specials included (a plain list for checkpoints)."""
        return list(self._tokens)

    @classmethod
    def from_list(cls, tokens: Sequence[str]) -> "Vocabulary":
        """Inverse of :meth:`to_list`; ``ValueError`` unless ids 0 and 1 are the specials."""
        tokens = list(tokens)
        if tokens[:2] != [PAD_TOKEN, UNK_TOKEN]:
            raise ValueError(f"a vocabulary list must start with {PAD_TOKEN!r}, {UNK_TOKEN!r}")
        return cls(tokens[2:])


# --------------------------------------------------------------------------- #
# Encoding
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class EncodedLyrics:
    """One song's lyrics as the HAN's input grid."""

    ids: np.ndarray  # int64 [shape=(max_lines, max_words)], PAD_ID where padding
    mask: np.ndarray  # bool [shape=(max_lines, max_words)], True where a real word
    has_lyrics: bool  # False when no usable line survived cleaning (instrumental / empty)
    lines: list[list[str]]  # the kept (truncated) tokens, for showing attention to a user


def encode_lyrics(text: str | None, *, vocab: Vocabulary, config: TextConfig) -> EncodedLyrics:
    """Raw lyrics -> ids/mask ``[shape=(max_lines, max_words)]``, keeping the first lines/words."""
    import numpy as np  # lazy: cleaning alone must not import numpy

    lines = [words[: config.max_words] for words in tokenize_lyrics(text, config=config)[: config.max_lines]]
    ids = np.full((config.max_lines, config.max_words), PAD_ID, dtype=np.int64)
    for row, words in enumerate(lines):
        # A real word never gets PAD_ID, so ``mask == (ids != PAD_ID)`` always holds.
        ids[row, : len(words)] = [max(vocab.id_of(w), UNK_ID) for w in words]
    mask = ids != PAD_ID
    return EncodedLyrics(ids=ids, mask=mask, has_lyrics=bool(lines), lines=lines)


def encode_batch(
    texts: Sequence[str | None], *, vocab: Vocabulary, config: TextConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Many songs -> ids LongTensor and mask BoolTensor ``[shape=(batch, max_lines, max_words)]``,
    has_lyrics BoolTensor ``[shape=(batch,)]``."""
    import numpy as np
    import torch  # lazy: the beets plugin cleans lyrics without loading torch

    encoded = [encode_lyrics(text, vocab=vocab, config=config) for text in texts]
    shape = (len(encoded), config.max_lines, config.max_words)
    ids = np.stack([e.ids for e in encoded]) if encoded else np.full(shape, PAD_ID, dtype=np.int64)
    has_lyrics = torch.tensor([e.has_lyrics for e in encoded], dtype=torch.bool)
    ids_t = torch.from_numpy(ids)
    return ids_t, ids_t != PAD_ID, has_lyrics


__all__ = [
    "PAD_TOKEN",
    "UNK_TOKEN",
    "PAD_ID",
    "UNK_ID",
    "clean_lyrics",
    "has_words",
    "tokenize_line",
    "tokenize_lyrics",
    "Vocabulary",
    "EncodedLyrics",
    "encode_lyrics",
    "encode_batch",
]
