"""File types by signature: what a file is, from its first bytes, whatever its name says.

The service checks the detected signature, not the extension (rivya-api.md); batchgen's preflight
and the simulator's Files API both call :func:`sniff_mime`.
"""

from __future__ import annotations

FILE_KINDS = ("image", "video", "audio")


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
