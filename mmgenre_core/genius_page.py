"""The lyrics on a Genius song page, extracted in bounded time and memory.

lyricsgenius parses the whole page into a BeautifulSoup tree and then builds the
lyrics by string concatenation: a 7.6 MB page of 400,000 ``<br/>`` lines kept a lookup
busy for minutes, and 200,000 nested tags for 49 s, long after the lookup's deadline.
:func:`lyrics_from_page` reads the same parts of the page the same way (the
``div[data-lyrics-container="true"]`` elements, ``<br>`` as a line break, children
marked ``data-exclude-from-selection`` and ``LyricsHeader`` headers left out, else the
lyrics HTML in the page's embedded state) with the standard library's streaming
:class:`html.parser.HTMLParser`, fed a slice at a time:

* the deadline is checked between slices, so parsing ends when the lookup's time is up;
* no tree is built (only a count of open ``div`` elements), so depth costs nothing;
* text stops being collected at :data:`~mmgenre_core.text.MAX_LYRICS_CHARS`, the most
  the model reads, and parsing stops there too.
"""

from __future__ import annotations

import re
import time
from html.parser import HTMLParser

from .text import MAX_LYRICS_CHARS

#: Characters of the page parsed between two deadline checks.
SLICE = 32 * 1024
_SECTION_HEADERS = re.compile(r"(\[.*?\])*")
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
                   "track", "wbr"})


class PageDeadlineError(TimeoutError):
    """Parsing the page did not finish before the lookup's deadline."""


class _LyricsExtractor(HTMLParser):
    """Collects the text of the lyrics containers, with ``<br>`` as newlines.

    ``whole_fragment``: every text counts (the embedded-state fragment is the lyrics).
    """

    def __init__(self, *, whole_fragment: bool = False, max_chars: int = MAX_LYRICS_CHARS) -> None:
        super().__init__(convert_charrefs=True)
        self.whole_fragment = whole_fragment
        self.max_chars = max_chars
        self.parts: list[str] = []
        self.size = 0
        self.containers = 0
        self._container_divs = 0  # open divs inside the current container (0: not in one)
        self._skip_tag: str | None = None  # an excluded element (header) being skipped...
        self._skip_depth = 0  # ...and how many of its kind are open
        self._raw_text = 0  # inside <script> or <style>
        self._container_had_content = False

    @property
    def full(self) -> bool:
        return self.size >= self.max_chars

    @property
    def _collecting(self) -> bool:
        return (self.whole_fragment or self._container_divs > 0) and self._skip_tag is None and not self._raw_text

    def _add(self, text: str) -> None:
        if text and not self.full:
            self.parts.append(text)
            self.size += len(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._container_divs > 0:
            self._container_had_content = True
        if tag in ("script", "style"):
            self._raw_text += 1
            return
        if self._skip_tag is not None:
            if tag == self._skip_tag:
                self._skip_depth += 1
            return
        if tag == "br":
            if self._collecting:
                self._add("\n")
            return
        if tag in _VOID:
            return
        attributes = dict(attrs)
        inside = self.whole_fragment or self._container_divs > 0
        if inside and (attributes.get("data-exclude-from-selection") == "true"
                       or "LyricsHeader" in (attributes.get("class") or "")):
            self._skip_tag, self._skip_depth = tag, 1
            return
        if tag != "div":
            return
        if self._container_divs > 0:
            self._container_divs += 1
        elif attributes.get("data-lyrics-container") == "true":
            self._container_divs = 1
            self._container_had_content = False
            self.containers += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._container_divs > 0:
            self._container_had_content = True
        if tag == "br":
            if self._collecting:
                self._add("\n")
            return
        # <div/> opens nothing in HTML; other self-closed tags are void.

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._raw_text = max(0, self._raw_text - 1)
            return
        if self._skip_tag is not None:
            if tag == self._skip_tag:
                self._skip_depth -= 1
                if self._skip_depth == 0:
                    self._skip_tag = None
            return
        if tag == "div" and self._container_divs > 0:
            self._container_divs -= 1
            if self._container_divs == 0 and not self._container_had_content:
                self._add("\n")  # an empty container is a blank line, as in lyricsgenius

    def handle_data(self, data: str) -> None:
        if self._container_divs > 0:
            self._container_had_content = True
        if self._collecting:
            self._add(data)


def _feed(parser: _LyricsExtractor, html: str, deadline: float | None) -> None:
    for start in range(0, len(html), SLICE):
        if deadline is not None and time.monotonic() > deadline:
            raise PageDeadlineError("the song page took longer than the lookup's deadline to read")
        parser.feed(html[start:start + SLICE])
        if parser.full:
            return
    parser.close()


def lyrics_from_page(html: str, *, deadline: float | None = None, remove_section_headers: bool = True) -> str | None:
    """The lyrics on a Genius song page (None when it has none).

    ``deadline``: a :func:`time.monotonic` value after which :class:`PageDeadlineError`
    is raised instead of parsing on. ``remove_section_headers`` drops "[Chorus]"-style
    headers and the blank line between verses, as lyricsgenius does.
    """
    parser = _LyricsExtractor()
    _feed(parser, html, deadline)
    if parser.containers:
        lyrics = "".join(parser.parts)
    else:
        from lyricsgenius.genius import _preloaded_lyrics_html

        fragment = _preloaded_lyrics_html(html)
        if not fragment:
            return None
        parser = _LyricsExtractor(whole_fragment=True)
        # The fragment's newlines are formatting; its line breaks are <br> tags.
        _feed(parser, fragment.replace("\n", ""), deadline)
        lyrics = "".join(parser.parts)
        if not lyrics.strip():
            return None
    lyrics = lyrics[:MAX_LYRICS_CHARS]
    if remove_section_headers:
        lyrics = _SECTION_HEADERS.sub("", lyrics)
        lyrics = re.sub("\n{2}", "\n", lyrics)
    return lyrics.strip("\n")


__all__ = ["PageDeadlineError", "lyrics_from_page", "SLICE"]
