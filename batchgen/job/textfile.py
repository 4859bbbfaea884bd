"""Text manifests as spreadsheets export them: the encoding, its errors, the delimiter.

Exports are often Windows-1252/Latin-1 rather than UTF-8, and semicolon-delimited (European
Excel) or tab-delimited (UTF-16 "Unicode text"). The readers in :mod:`batchgen.job.manifest` decode
with the configured ``manifest.encoding``; when a byte cannot be decoded, :func:`decode_error`
re-reads the raw bytes to say exactly where (line and byte offset) and which encoding would read
it, so the hot loop never has to track byte offsets.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Sequence
from pathlib import Path

from batchgen.errors import UsageError

SNIFF_DELIMITERS = (",", ";", "\t", "|")
SNIFF_CHARS = 1 << 16  # the header is looked for in the first 64k characters
_GUESSES = ("utf-8", "cp1252", "latin-1")  # what to suggest, in order; latin-1 reads any byte
_CHUNK = 1 << 20


def codec(encoding: str) -> str:
    """The codec to open a manifest with: UTF-8 also skips a byte order mark."""
    return "utf-8-sig" if encoding == "utf-8" else encoding


def display_name(encoding: str) -> str:
    return "UTF-8" if encoding == "utf-8" else encoding


def ascii_compatible(encoding: str) -> bool:
    """Whether lines can be split on the newline byte (not so for UTF-16 or UTF-32)."""
    sample = '\n{"a": 1}'
    return sample.encode(encoding, errors="replace").endswith(sample.encode("ascii"))


def suggest_encoding(raw: bytes, current: str) -> str:
    """An encoding that decodes ``raw`` (the line holding the bad byte), other than ``current``."""
    for name in _GUESSES:
        if codecs.lookup(name).name == current:
            continue
        try:
            raw.decode(name)
        except UnicodeDecodeError:
            continue
        return name
    return "latin-1"


def encoding_fix(encoding: str) -> str:
    return (
        f'set manifest.encoding = "{encoding}" (or --encoding {encoding}) if that is how the '
        "file was saved, or re-export it as UTF-8"
    )


def decode_error(path: Path, encoding: str) -> UsageError:
    """The error for a file ``encoding`` cannot decode: the first bad byte's line (counted as
    the readers count them) and byte offset, and the encoding to set instead."""
    # For UTF-8, the plain decoder with the BOM skipped by hand: the BOM-aware one reports
    # offsets that do not count the BOM.
    decoder = codecs.getincrementaldecoder(encoding)()
    breaks = 0  # line breaks decoded so far
    last = ""  # the last character decoded (a "\r" may pair with a "\n" across chunks)
    with path.open("rb") as fh:
        bom = fh.read(3)
        # A UTF-16 byte order mark says more than any byte after it.
        utf16 = bom.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        fh.seek(3 if encoding == "utf-8" and bom == codecs.BOM_UTF8 else 0)
        offset = fh.tell()  # of the chunk in the file
        while True:
            chunk = fh.read(_CHUNK)
            state = decoder.getstate()
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                data = exc.object
                pending = len(state[0])  # bytes of the previous chunk held by the decoder
                decoder.setstate(state)
                text = decoder.decode(chunk[: max(0, exc.start - pending)]) if exc.start else ""
                breaks += _line_breaks(text, last)
                at = offset - pending + exc.start
                bad = bytes(data[exc.start : exc.end]) or bytes(data[exc.start : exc.start + 1])
                line_start = data.rfind(b"\n", 0, exc.start) + 1
                line_end = data.find(b"\n", exc.start)
                raw = bytes(data[line_start : line_end if line_end >= 0 else len(data)])
                guess = "utf-16" if utf16 else suggest_encoding(raw, encoding)
                return UsageError(
                    f"manifest is not {display_name(encoding)} text: byte {bad.hex(' ')} "
                    "cannot be decoded",
                    f"{path}, line {breaks + 1}, byte offset {at}",
                    encoding_fix(guess),
                )
            breaks += _line_breaks(text, last)
            last = text[-1:] or last
            if not chunk:
                break
            offset += len(chunk)
    return UsageError(  # decoded in full here: the reader's error came from elsewhere
        f"manifest is not {display_name(encoding)} text", str(path), encoding_fix("utf-8")
    )


def _line_breaks(text: str, before: str) -> int:
    """Line breaks in ``text`` ("\\r\\n", "\\r" or "\\n"), ``before`` being the character that
    preceded it."""
    count = text.count("\n") + text.count("\r") - text.count("\r\n")
    if before == "\r" and text.startswith("\n"):
        count -= 1
    return count


def sniff_delimiter(path: Path, encoding: str, where: str) -> str:
    """The one of ``, ; tab |`` that splits the header into the most columns.

    A header with one column reads as ``,``; two candidates that split it equally are an error
    that asks for ``manifest.delimiter``.
    """
    try:
        with path.open(encoding=codec(encoding), newline="") as fh:
            head = fh.read(SNIFF_CHARS)
    except UnicodeDecodeError:
        raise decode_error(path, encoding) from None
    widths = {}
    for delimiter in SNIFF_DELIMITERS:
        header: list[str] = []
        try:
            for cells in csv.reader(io.StringIO(head), delimiter=delimiter):
                if cells and not (len(cells) == 1 and not cells[0].strip()):
                    header = cells
                    break
        except csv.Error:
            continue
        widths[delimiter] = len(header)
    most = max(widths.values(), default=0)
    if most <= 1:
        return ","
    best = [d for d, n in widths.items() if n == most]
    if len(best) > 1:
        shown = " and ".join(_shown(d) for d in best)
        raise UsageError(
            f"cannot tell the delimiter from the header: {shown} both split it into {most} columns",
            where,
            "set manifest.delimiter (or --delimiter) to the one the file uses",
        )
    return best[0]


def delimiter_hint(columns: Sequence[str]) -> str:
    """A hint for a header read as one column that holds a delimiter (``""`` otherwise)."""
    if len(columns) != 1:
        return ""
    counts = {d: columns[0].count(d) for d in SNIFF_DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    if not counts[best]:
        return ""
    shown = "tab" if best == "\t" else best
    return (
        f" (the header reads as one column: if the file is {_shown(best)}-delimited, set "
        f'manifest.delimiter = "{shown}" or "auto", or --delimiter)'
    )


def _shown(delimiter: str) -> str:
    return "tab" if delimiter == "\t" else repr(delimiter)
