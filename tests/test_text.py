"""Tests of the lyrics front end: cleaning, tokenising, vocabulary, id grid.

The cleaning cases use short invented lines; the corpus tests read the real lyrics
(``lyrics/lyrics.jsonl`` of the shared data folder) at run time.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmgenre_core.config import TextConfig
from mmgenre_core.text import (
    PAD_ID,
    PAD_TOKEN,
    UNK_ID,
    UNK_TOKEN,
    EncodedLyrics,
    Vocabulary,
    clean_lyrics,
    encode_batch,
    encode_lyrics,
    tokenize_line,
    tokenize_lyrics,
)

SMALL = TextConfig(max_lines=3, max_words=4)


# --------------------------------------------------------------------------- #
# clean_lyrics
# --------------------------------------------------------------------------- #

CLEAN_CASES = [
    # odd input never raises
    pytest.param(None, [], id="none"),
    pytest.param("", [], id="empty"),
    pytest.param("  \n\t\n \r\n", [], id="whitespace-only"),
    pytest.param("[Chorus]\n(Verse 2)\nChorus:\n\n[Bridge: Someone]", [], id="labels-only"),
    pytest.param("Instrumental", [], id="instrumental-word"),
    pytest.param("[Instrumental]", [], id="instrumental-bracket"),
    pytest.param("--- Instrumental ---", [], id="instrumental-dashes"),
    pytest.param("---\n'''\n...", [], id="punctuation-only-lines"),
    # newlines and whitespace
    pytest.param("one two\r\nthree four\rfive six", ["one two", "three four", "five six"], id="crlf-cr"),
    pytest.param("one two\u2028three four\u2029five\x85six", ["one two", "three four", "five", "six"], id="unicode-separators"),
    pytest.param("  hello    world \t again  ", ["hello world again"], id="collapse-whitespace"),
    pytest.param("first\n\n\n\nsecond", ["first", "second"], id="blank-lines-dropped"),
    pytest.param("zero\u200bwidth\u00a0space", ["zerowidth space"], id="invisible-chars"),
    # LRC
    pytest.param("[00:12.34]hello world", ["hello world"], id="lrc-stamp"),
    pytest.param("[01:02]sing along\n[01:05.5]and on", ["sing along", "and on"], id="lrc-mm-ss"),
    pytest.param("[00:12.34][01:40.00]twice sung", ["twice sung"], id="lrc-two-stamps"),
    pytest.param("[00:12.00]<00:12.00>hello <00:12.50>there <00:13.10>friend", ["hello there friend"], id="lrc-enhanced"),
    pytest.param(
        "[ar:Some Artist]\n[ti:Some Song]\n[al:Some Album]\n[by:someone]\n[offset:+250]\n"
        "[length:03:20]\n[re:tool]\n[ve:1.0]\n[00:01.00]first line",
        ["first line"],
        id="lrc-metadata",
    ),
    # Genius
    pytest.param("Some Song Lyrics\n[Verse 1]\nwalking down the road", ["walking down the road"], id="genius-header"),
    pytest.param(
        "123 ContributorsTranslationsEspañolSome Song Lyrics\n[Intro]\nhey there",
        ["hey there"],
        id="genius-contributors-header",
    ),
    pytest.param("Some Song LyricsWalking down the road\nslowly", ["Walking down the road", "slowly"], id="genius-header-glued"),
    pytest.param("Some Song Lyrics[Intro: Someone]\nhey", ["hey"], id="genius-header-glued-label"),
    pytest.param("Lyrics come at you fast\nsecond line", ["Lyrics come at you fast", "second line"], id="lyrics-word-kept"),
    pytest.param("first line\nsecond line\nwalking home123Embed", ["first line", "second line", "walking home"], id="embed-count"),
    pytest.param("first line\nwalking home1.2KEmbed", ["first line", "walking home"], id="embed-k-count"),
    pytest.param("first line\nlast line\nEmbed", ["first line", "last line"], id="embed-alone"),
    pytest.param("first line\nlast lineYou might also like27Embed", ["first line", "last line"], id="embed-ymal-glued"),
    pytest.param("one line\nYou might also like\n[Chorus]\ntwo line", ["one line", "two line"], id="ymal-line"),
    pytest.param("one lineYou might also like[Chorus]\ntwo line", ["one line", "two line"], id="ymal-glued"),
    pytest.param("You might see me smile", ["You might see me smile"], id="ymal-sung-kept"),
    pytest.param("one line\nSee Some Artist LiveGet tickets as low as $65You might also like\ntwo", ["one line", "two"], id="genius-tickets"),
    pytest.param("Some Song Lyrics\"Some Song\" is a song about things\u2026 Read More\xa0\n[Intro]\nhey", ["hey"], id="genius-read-more"),
    # section labels and repeat marks
    pytest.param("[Chorus]\nla la la", ["la la la"], id="bracket-label"),
    pytest.param("[Verse 1: Some Artist]\nla la la", ["la la la"], id="bracket-label-credit"),
    pytest.param("(Chorus)\nla la la\n(Repeat chorus)", ["la la la"], id="paren-label"),
    pytest.param("Chorus:\nla la la\nVerse 2:\nda da", ["la la la", "da da"], id="colon-label"),
    pytest.param("Verse Two: Some Artist\nla la la", ["la la la"], id="colon-label-credit"),
    pytest.param("Chorus: turn it up now!", ["turn it up now!"], id="colon-label-sung"),
    pytest.param("*Chorus* 2x\n''Refrain''\n1st Verse\nHook (2X)\nla", ["la"], id="decorated-labels"),
    pytest.param("(chorus) let it go now", ["let it go now"], id="leading-paren-label"),
    pytest.param("oh my (x2)\nyeah yeah (Repeat 4x)\nhey {x3}", ["oh my", "yeah yeah", "hey"], id="repeat-groups"),
    pytest.param("we go on x4\nsing it 2x", ["we go on", "sing it"], id="repeat-tail"),
    pytest.param("oh baby (oh yeah)", ["oh baby (oh yeah)"], id="sung-parens-kept"),
    pytest.param("Hook, line and sinker", ["Hook, line and sinker"], id="label-word-in-lyric-kept"),
    pytest.param("MIKE G:\nhere we go", ["here we go"], id="speaker-line"),
    pytest.param("[P] here we go", ["here we go"], id="inline-bracket"),
    # site junk
    pytest.param("visit https://example.com/a?b=1 now\nwww.example.org", ["visit now"], id="urls"),
    pytest.param("Artist: Someone\nAlbum: Something\nWritten by: A. Person\nsing", ["sing"], id="metadata-lines"),
    pytest.param("Lyrics courtesy Some Site.\nsing", ["sing"], id="lyrics-courtesy"),
    pytest.param("FailedToWriteLyricsError", [], id="scraper-error"),
    pytest.param("rock &amp; roll\nrock &amp;amp; roll", ["rock & roll", "rock & roll"], id="html-entities"),
    pytest.param("one<br/>two<br>three <i>four</i>", ["one", "two", "three four"], id="html-tags"),
]


@pytest.mark.parametrize(("text", "expected"), CLEAN_CASES)
def test_clean_lyrics(text: str | None, expected: list[str]) -> None:
    assert clean_lyrics(text) == expected


@pytest.mark.parametrize(("text", "expected"), CLEAN_CASES)
def test_clean_lyrics_is_idempotent(text: str | None, expected: list[str]) -> None:
    assert clean_lyrics("\n".join(clean_lyrics(text))) == clean_lyrics(text)


@pytest.mark.parametrize("odd", [123, 4.5, ["a"], object(), b"bytes line\nsecond"])
def test_clean_lyrics_never_raises_on_odd_types(odd: Any) -> None:
    result = clean_lyrics(odd)
    assert isinstance(result, list) and all(isinstance(line, str) for line in result)


# --------------------------------------------------------------------------- #
# tokenize_line / tokenize_lyrics
# --------------------------------------------------------------------------- #

TOKEN_CASES = [
    pytest.param("", [], id="empty"),
    pytest.param("Don't stop", ["don't", "stop"], id="apostrophe"),
    pytest.param("rock'n'roll all night", ["rock'n'roll", "all", "night"], id="multi-apostrophe"),
    pytest.param("I\u2019m sure it\u2018s fine", ["i'm", "sure", "it's", "fine"], id="curly-apostrophes"),
    pytest.param("runnin' 'bout 'cause", ["runnin", "bout", "cause"], id="edge-apostrophes-dropped"),
    pytest.param("Hello, world!!! ... (yeah) - ok?", ["hello", "world", "yeah", "ok"], id="punctuation"),
    pytest.param("99 problems, 1,000 ways, 30s", ["99", "problems", "1", "000", "ways", "30s"], id="digits"),
    pytest.param("ooh-ooh foo_bar a/b", ["ooh", "ooh", "foo", "bar", "a", "b"], id="separators"),
    pytest.param("Caf\u00e9 Stra\u00dfe na\u00efve", ["caf\u00e9", "stra\u00dfe", "na\u00efve"], id="latin-accents"),
    pytest.param("cafe\u0301", ["caf\u00e9"], id="nfkc-composes"),
    pytest.param("\ufb01ne \uff21\uff22\uff23", ["fine", "abc"], id="nfkc-compat"),
    pytest.param("\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!", ["\u043f\u0440\u0438\u0432\u0435\u0442", "\u043c\u0438\u0440"], id="cyrillic"),
    pytest.param("\u0928\u092e\u0938\u094d\u0924\u0947", ["\u0928\u092e\u0938\u094d\u0924\u0947"], id="devanagari-marks"),
    pytest.param("\u266b \U0001f3b5 *** \u2014", [], id="symbols-only"),
]


@pytest.mark.parametrize(("line", "expected"), TOKEN_CASES)
def test_tokenize_line(line: str, expected: list[str]) -> None:
    assert tokenize_line(line) == expected


def test_tokenize_line_keeps_case_when_asked() -> None:
    assert tokenize_line("Hello World", lowercase=False) == ["Hello", "World"]


def test_tokenize_lyrics_cleans_and_drops_short_lines() -> None:
    text = "[Chorus]\nla la la\nyeah\nwe go on and on"
    assert tokenize_lyrics(text, config=TextConfig()) == [["la", "la", "la"], ["yeah"], ["we", "go", "on", "and", "on"]]
    assert tokenize_lyrics(text, config=TextConfig(min_line_words=3)) == [["la", "la", "la"], ["we", "go", "on", "and", "on"]]
    assert tokenize_lyrics(None, config=TextConfig()) == []


def test_tokenize_lyrics_does_not_truncate() -> None:
    text = "\n".join(" ".join(f"w{i}x{j}" for j in range(30)) for i in range(60))
    lines = tokenize_lyrics(text, config=TextConfig())
    assert len(lines) == 60 and all(len(line) == 30 for line in lines)


# --------------------------------------------------------------------------- #
# Vocabulary
# --------------------------------------------------------------------------- #

DOCS = [
    [["b", "a"], ["a", "c"]],
    [["c", "a", "d"]],
]


def test_vocabulary_build_orders_by_count_then_alphabet() -> None:
    vocab = Vocabulary.build(DOCS)
    assert vocab.to_list() == [PAD_TOKEN, UNK_TOKEN, "a", "c", "b", "d"]
    assert len(vocab) == 6


def test_vocabulary_build_is_deterministic() -> None:
    docs = [[["w%d" % (i % 7), "v%d" % (i % 3)]] for i in range(50)]
    shuffled = list(docs)
    random.Random(0).shuffle(shuffled)
    assert Vocabulary.build(docs) == Vocabulary.build(shuffled)
    assert Vocabulary.build(docs).to_list() == Vocabulary.build(iter(shuffled)).to_list()


def test_vocabulary_max_size_and_min_count() -> None:
    assert Vocabulary.build(DOCS, max_size=2).to_list()[2:] == ["a", "c"]
    assert len(Vocabulary.build(DOCS, max_size=0)) == 2
    assert Vocabulary.build(DOCS, min_count=2).to_list()[2:] == ["a", "c"]
    assert Vocabulary.build(DOCS, min_count=4).to_list() == [PAD_TOKEN, UNK_TOKEN]
    with pytest.raises(ValueError):
        Vocabulary.build(DOCS, max_size=-1)
    with pytest.raises(ValueError):
        Vocabulary.build(DOCS, min_count=0)


def test_vocabulary_build_ignores_specials() -> None:
    vocab = Vocabulary.build([[[PAD_TOKEN, UNK_TOKEN, "x"]]])
    assert vocab.to_list() == [PAD_TOKEN, UNK_TOKEN, "x"]


def test_vocabulary_lookups() -> None:
    vocab = Vocabulary(["hello", "world"])
    assert vocab.id_of(PAD_TOKEN) == PAD_ID == 0 and vocab.id_of(UNK_TOKEN) == UNK_ID == 1
    assert vocab.id_of("hello") == 2 and vocab.token_of(3) == "world"
    assert vocab.id_of("never-seen") == UNK_ID
    assert "hello" in vocab and "never-seen" not in vocab
    with pytest.raises(IndexError):
        vocab.token_of(len(vocab))
    with pytest.raises(IndexError):
        vocab.token_of(-1)


@pytest.mark.parametrize(
    "tokens",
    [
        pytest.param(["a", "b", "a"], id="duplicate"),
        pytest.param(["a", PAD_TOKEN], id="pad-inside"),
        pytest.param([UNK_TOKEN], id="unk-inside"),
        pytest.param(["a", ""], id="empty-token"),
    ],
)
def test_vocabulary_rejects_bad_tokens(tokens: list[str]) -> None:
    with pytest.raises(ValueError):
        Vocabulary(tokens)


def test_vocabulary_round_trip() -> None:
    vocab = Vocabulary.build(DOCS)
    as_list = vocab.to_list()
    assert type(as_list) is list and all(type(t) is str for t in as_list)
    assert json.loads(json.dumps(as_list)) == as_list
    again = Vocabulary.from_list(as_list)
    assert again == vocab and again.to_list() == as_list
    as_list.append("mutated")  # to_list hands out a copy
    assert "mutated" not in vocab


@pytest.mark.parametrize(
    "tokens",
    [
        pytest.param([], id="empty"),
        pytest.param([PAD_TOKEN], id="no-unk"),
        pytest.param([UNK_TOKEN, PAD_TOKEN, "a"], id="swapped"),
        pytest.param(["a", "b"], id="no-specials"),
        pytest.param([PAD_TOKEN, UNK_TOKEN, "a", "a"], id="duplicate"),
        pytest.param([PAD_TOKEN, UNK_TOKEN, PAD_TOKEN], id="special-again"),
    ],
)
def test_vocabulary_from_list_rejects_bad_lists(tokens: list[str]) -> None:
    with pytest.raises(ValueError):
        Vocabulary.from_list(tokens)


# --------------------------------------------------------------------------- #
# encode_lyrics / encode_batch
# --------------------------------------------------------------------------- #

VOCAB = Vocabulary(["la", "we", "go", "on", "one", "two", "three"])


def _assert_consistent(enc: EncodedLyrics, config: TextConfig) -> None:
    shape = (config.max_lines, config.max_words)
    assert enc.ids.shape == shape and enc.ids.dtype == np.int64
    assert enc.mask.shape == shape and enc.mask.dtype == np.bool_
    assert np.array_equal(enc.mask, enc.ids != PAD_ID)
    assert enc.has_lyrics == bool(enc.lines) == bool(enc.mask.any())
    assert len(enc.lines) <= config.max_lines and all(len(line) <= config.max_words for line in enc.lines)
    assert [int(n) for n in enc.mask.sum(axis=1)[: len(enc.lines)]] == [len(line) for line in enc.lines]


def test_encode_default_shape_and_padding() -> None:
    enc = encode_lyrics("[Chorus]\nla la la\nwe go on", vocab=VOCAB, config=TextConfig())
    _assert_consistent(enc, TextConfig())
    assert enc.ids.shape == (50, 20)
    assert enc.lines == [["la", "la", "la"], ["we", "go", "on"]]
    assert enc.ids[0, :4].tolist() == [2, 2, 2, PAD_ID]
    assert enc.ids[1, :3].tolist() == [VOCAB.id_of("we"), VOCAB.id_of("go"), VOCAB.id_of("on")]
    assert int(enc.mask.sum()) == 6


def test_encode_truncates_to_default_grid() -> None:
    text = "\n".join(" ".join(["la"] * 25) for _ in range(70))
    enc = encode_lyrics(text, vocab=VOCAB, config=TextConfig())
    _assert_consistent(enc, TextConfig())
    assert enc.mask.all() and len(enc.lines) == 50 and all(len(line) == 20 for line in enc.lines)


def test_encode_keeps_first_lines_and_words_of_small_grid() -> None:
    text = "\n".join(" ".join(f"w{i}{j}" for j in range(6)) for i in range(5))
    vocab = Vocabulary([f"w{i}{j}" for i in range(5) for j in range(6)])
    enc = encode_lyrics(text, vocab=vocab, config=SMALL)
    _assert_consistent(enc, SMALL)
    assert enc.lines == [[f"w{i}{j}" for j in range(4)] for i in range(3)]
    assert enc.ids.tolist() == [[vocab.id_of(f"w{i}{j}") for j in range(4)] for i in range(3)]


def test_encode_unknown_words_are_unk_but_masked_in() -> None:
    enc = encode_lyrics("la mystery words", vocab=VOCAB, config=SMALL)
    _assert_consistent(enc, SMALL)
    assert enc.ids[0].tolist() == [VOCAB.id_of("la"), UNK_ID, UNK_ID, PAD_ID]
    assert enc.mask[0].tolist() == [True, True, True, False]


def test_encode_respects_case_option() -> None:
    vocab = Vocabulary(["La", "la"])
    assert encode_lyrics("La", vocab=vocab, config=TextConfig(lowercase=False)).ids[0, 0] == vocab.id_of("La")
    assert encode_lyrics("La", vocab=vocab, config=TextConfig()).ids[0, 0] == vocab.id_of("la")


@pytest.mark.parametrize("text", [None, "", "   \n  ", "[Instrumental]", "Instrumental", "(Chorus)\n[Verse 1]", "!!! ---"])
def test_encode_without_lyrics(text: str | None) -> None:
    enc = encode_lyrics(text, vocab=VOCAB, config=SMALL)
    _assert_consistent(enc, SMALL)
    assert enc.has_lyrics is False and enc.lines == []
    assert not enc.mask.any() and (enc.ids == PAD_ID).all()


def test_encode_batch_stacks() -> None:
    torch = pytest.importorskip("torch")
    texts = ["la la\nwe go", None, "one two three four five"]
    ids, mask, has = encode_batch(texts, vocab=VOCAB, config=SMALL)
    assert ids.shape == mask.shape == (3, 3, 4) and has.shape == (3,)
    assert ids.dtype == torch.long and mask.dtype == torch.bool and has.dtype == torch.bool
    assert has.tolist() == [True, False, True]
    assert torch.equal(mask, ids != PAD_ID)
    for row, text in enumerate(texts):
        enc = encode_lyrics(text, vocab=VOCAB, config=SMALL)
        assert np.array_equal(ids[row].numpy(), enc.ids) and np.array_equal(mask[row].numpy(), enc.mask)


def test_encode_batch_empty() -> None:
    pytest.importorskip("torch")
    ids, mask, has = encode_batch([], vocab=VOCAB, config=SMALL)
    assert tuple(ids.shape) == tuple(mask.shape) == (0, 3, 4) and tuple(has.shape) == (0,)


def test_import_is_cheap() -> None:
    code = "import sys, mmgenre_core.text; print('torch' in sys.modules, 'numpy' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------- #
# The real corpus
# --------------------------------------------------------------------------- #

_LABEL_IN_LINE = re.compile(r"\[[^\]]*\]")


@pytest.fixture(scope="module")
def corpus(data_dir: Path) -> list[dict[str, Any]]:
    path = data_dir / "lyrics" / "lyrics.jsonl"
    with path.open(encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    assert len(records) > 100
    return records


@pytest.fixture(scope="module")
def cleaned(corpus: list[dict[str, Any]]) -> list[list[str]]:
    return [clean_lyrics(record["lyrics"]) for record in corpus]


def _norm(text: str) -> str:
    """Compare titles loosely: NFKC, straight apostrophes and quotes, one space."""
    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace("\u201d", '"').replace("\u200b", "")
    return " ".join(text.split()).casefold()


def test_corpus_every_record_cleans(corpus: list[dict[str, Any]], cleaned: list[list[str]]) -> None:
    for lines in cleaned:
        assert all(isinstance(line, str) and line == line.strip() and line for line in lines)
    assert sum(1 for lines in cleaned if lines) / len(cleaned) > 0.95


def test_corpus_genius_records_lose_their_junk(corpus: list[dict[str, Any]], cleaned: list[list[str]]) -> None:
    genius = [(rec, lines) for rec, lines in zip(corpus, cleaned) if rec["source"] == "louiza"]
    assert len(genius) > 50
    assert sum(1 for _, lines in genius if lines) / len(genius) > 0.95
    for rec, lines in genius:
        for line in lines:
            assert not _LABEL_IN_LINE.search(line), (rec["id"], "section label left")
            assert not line.endswith("Embed"), (rec["id"], "Genius embed counter left")
            assert "You might also like" not in line, (rec["id"], "Genius widget left")
        if lines:
            first = _norm(lines[0])
            assert first != _norm(f"{rec['title']} Lyrics"), (rec["id"], "Genius header left")
            assert not first.endswith(" lyrics"), (rec["id"], "Genius header left")


def test_corpus_statistics_are_sane(corpus: list[dict[str, Any]]) -> None:
    config = TextConfig()
    docs = [tokenize_lyrics(record["lyrics"], config=config) for record in corpus]
    lines_per_song = np.array([len(doc) for doc in docs if doc])
    words_per_line = np.array([len(line) for doc in docs for line in doc])
    assert 10 <= np.median(lines_per_song) <= 100
    assert 3 <= np.median(words_per_line) <= 15
    assert np.percentile(words_per_line, 99) <= config.max_words  # 20 words hardly ever cut
    assert words_per_line.min() >= config.min_line_words
    vocab = Vocabulary.build(docs)
    assert 2000 < len(vocab) < 50000
    assert vocab.to_list()[2] in {"the", "i", "you"}  # the most frequent English words lead


def test_corpus_encodes(corpus: list[dict[str, Any]]) -> None:
    config = TextConfig()
    texts = [record["lyrics"] for record in corpus[::4]]
    vocab = Vocabulary.build(tokenize_lyrics(text, config=config) for text in texts)
    encoded = [encode_lyrics(text, vocab=vocab, config=config) for text in texts]
    for enc in encoded:
        _assert_consistent(enc, config)
        assert UNK_ID not in enc.ids  # the vocabulary saw every word
    assert sum(enc.has_lyrics for enc in encoded) / len(encoded) > 0.95
