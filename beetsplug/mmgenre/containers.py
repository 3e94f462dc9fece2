"""Whether a file's container structure agrees with its size, before mmgenre writes to it.

Tag writers trust a container's own sizes. A WAV whose data chunk claims ten times the
file's real size got its new ID3 chunk written inside the area the header claims: the
audio bytes changed and the tag could not be read back. mmgenre does not guess which
of the two sizes is right: :func:`size_problem` names the disagreement and the file is
left alone.

Checked: RIFF (WAV), RIFF's big-endian twin FORM (AIFF), the MP4/M4A atom sequence,
FLAC metadata blocks and an ID3v2 tag at the start of any file. Each chunk, atom or
block must end within the file, and a RIFF/FORM header must give the file's size.
Other containers (Ogg pages, bare MP3 frames) carry no such sizes.
"""

from __future__ import annotations

import os
import struct

#: How many chunks/atoms/blocks are walked at most (a real file has a few dozen).
MAX_PARTS = 100_000


def size_problem(path: str | bytes) -> str | None:
    """Why the container of the file at ``path`` disagrees with the file's size (None: it
    agrees, or the format carries no sizes to check)."""
    path = os.fsdecode(path)
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(12)
        if head[:3] == b"ID3" and len(head) >= 10:
            tag_end = 10 + _syncsafe(head[6:10]) + (10 if head[5] & 0x10 else 0)
            if tag_end > size:
                return f"its ID3 tag claims {tag_end} bytes, the file has {size}"
            return None
        if head[:4] in (b"RIFF", b"FORM") and len(head) == 12:
            return _chunks(fh, size, head, little=head[:4] == b"RIFF")
        if head[:4] == b"fLaC":
            return _flac_blocks(fh, size)
        if head[4:8] == b"ftyp":
            return _atoms(fh, size)
    if head[:4] in (b"RF64", b"BW64"):
        return "it is an RF64 WAV, whose tags mmgenre does not write"
    return None


def _syncsafe(b: bytes) -> int:
    return (b[0] & 0x7F) << 21 | (b[1] & 0x7F) << 14 | (b[2] & 0x7F) << 7 | (b[3] & 0x7F)


def _chunks(fh, size: int, head: bytes, *, little: bool) -> str | None:
    """RIFF/FORM: the header's size is the file's, and every chunk ends inside it."""
    fmt = "<I" if little else ">I"
    kind = head[:4].decode()
    declared = struct.unpack(fmt, head[4:8])[0] + 8
    if declared != size and declared + 1 != size:  # a final pad byte may follow
        return f"its {kind} header claims {declared} bytes, the file has {size}"
    pos = 12
    for _ in range(MAX_PARTS):
        if pos + 8 > size:
            return None
        fh.seek(pos)
        header = fh.read(8)
        length = struct.unpack(fmt, header[4:8])[0]
        end = pos + 8 + length
        if end > size:
            name = header[:4].decode("latin-1").strip() or "?"
            return f"its {name!r} chunk claims {length} bytes past offset {pos + 8}, the file ends at {size}"
        pos = end + (length & 1)
    return f"more than {MAX_PARTS} chunks"


def _atoms(fh, size: int) -> str | None:
    """MP4: top-level atoms laid end to end, the last ending at the file's end."""
    pos = 0
    for _ in range(MAX_PARTS):
        if pos == size:
            return None
        if pos + 8 > size:
            return None  # a few trailing bytes, no atom: nothing claims them
        fh.seek(pos)
        header = fh.read(16)
        length = struct.unpack(">I", header[:4])[0]
        if length == 1 and len(header) == 16:
            length = struct.unpack(">Q", header[8:16])[0]
        elif length == 0:  # "to the end of the file"
            return None
        if length < 8 or pos + length > size:
            name = header[4:8].decode("latin-1")
            return f"its {name!r} atom claims {length} bytes at offset {pos}, the file has {size}"
        pos += length
    return f"more than {MAX_PARTS} atoms"


def _flac_blocks(fh, size: int) -> str | None:
    """FLAC: the metadata blocks up to the last one end inside the file."""
    pos = 4
    for _ in range(MAX_PARTS):
        fh.seek(pos)
        header = fh.read(4)
        if len(header) < 4:
            return "its metadata blocks run past the end of the file"
        length = int.from_bytes(header[1:4], "big")
        if pos + 4 + length > size:
            return f"a metadata block claims {length} bytes at offset {pos}, the file has {size}"
        pos += 4 + length
        if header[0] & 0x80:
            return None
    return f"more than {MAX_PARTS} metadata blocks"


__all__ = ["size_problem"]
