"""File types by signature: what a file is, from its first bytes, whatever its name says.

The service checks the detected signature, not the extension (rivya-api.md); batchgen's preflight
and the simulator's Files API both call :func:`sniff_mime`, and both decode-check images with
:func:`image_problem`, so a truncated or corrupt image is refused offline exactly as the service
would refuse its upload.
"""

from __future__ import annotations

import io
import threading
import warnings
from pathlib import Path

FILE_KINDS = ("image", "video", "audio")

DECODABLE_IMAGES = frozenset(
    {"image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff"}
)
"""Image types :func:`image_problem` decodes (Pillow reads them); other types are not checked."""

# One decode at a time per process: memory holds at most one decoded image, and the warnings
# filter that turns Pillow's DecompressionBombWarning into an error is not shared between threads.
_DECODE_LOCK = threading.Lock()


def sniff_mime(head: bytes) -> str | None:
    """Detect a file's MIME type from its first bytes (16 are enough); None when unknown."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"RIFF") and len(head) >= 12:
        return {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}.get(
            head[8:12]
        )
    if head.startswith(b"BM") and len(head) >= 14:
        return "image/bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand == b"qt  ":
            return "video/quicktime"
        if brand in (b"M4A ", b"M4B ", b"M4P "):
            return "audio/mp4"
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"avif"):
            return "image/avif" if brand == b"avif" else "image/heic"
        return "video/mp4"
    if len(head) >= 8 and head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "video/quicktime"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm" if b"webm" in head[:64] or len(head) < 64 else "video/x-matroska"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"ID3"):
        return "audio/mpeg"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        layer = (head[1] >> 1) & 0x03
        if layer == 0 and head[1] & 0xF6 == 0xF0:  # ADTS: sync + layer 00
            return "audio/aac"
        if layer != 0:
            return "audio/mpeg"
    return None


def kind_of_mime(mime: str) -> str | None:
    """``"image"``, ``"video"`` or ``"audio"`` for a MIME type; None otherwise."""
    top = mime.split("/", 1)[0].strip().lower()
    return top if top in FILE_KINDS else None


def image_problem(source: bytes | Path, mime: str | None) -> tuple[str, str] | None:
    """Why an image cannot be decoded: ``(rule, detail)``, or None when it decodes.

    Rules: ``truncated`` (the data ends early), ``corrupt_image`` (it does not decode),
    ``too_many_pixels`` (over Pillow's ``MAX_IMAGE_PIXELS``: a decompression bomb is refused
    before it is decoded). Pillow's ``verify`` checks the structure (PNG chunk checksums), then
    the image is opened again and loaded, which finds truncation ``verify`` misses (JPEG, WebP);
    a JPEG is decoded at 1/8 scale, which still reads every byte. Types outside
    :data:`DECODABLE_IMAGES` give None: the signature check speaks for them.
    """
    if mime not in DECODABLE_IMAGES:
        return None
    from PIL import Image  # here: only a reference check needs Pillow

    def opened() -> Image.Image:
        return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)

    kind = mime.split("/", 1)[1].upper()
    with _DECODE_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with opened() as im:
                im.verify()
            with opened() as im:
                if im.format == "JPEG":
                    im.draft(im.mode, (1, 1))
                im.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            return (
                "too_many_pixels",
                f"the image has more than {Image.MAX_IMAGE_PIXELS:,} pixels, too many to decode",
            )
        except Exception as exc:  # any failure to decode untrusted bytes is the file's fault
            text = str(exc)
            if isinstance(exc, EOFError) or "truncated" in text.lower():
                return "truncated", f"the {kind} data ends early: the file is truncated"
            reason = "" if "cannot identify" in text else f" ({text[:100]})"
            return "corrupt_image", f"the {kind} data does not decode{reason}"
    return None
