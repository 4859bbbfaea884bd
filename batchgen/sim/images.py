"""Result images of the simulator: real PNG/JPEG bytes of the requested aspect, cheap and cached."""

from __future__ import annotations

import io
from functools import lru_cache

from PIL import Image, ImageDraw

PALETTE = (
    (222, 94, 76),
    (71, 140, 204),
    (96, 178, 105),
    (230, 178, 62),
    (140, 98, 190),
    (60, 170, 170),
    (200, 110, 160),
    (120, 120, 120),
)

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


def image_size(aspect: str, long_side: int) -> tuple[int, int]:
    """Pixel ``(width, height)`` of an ``"W:H"`` aspect whose longer side is ``long_side``."""
    try:
        w_text, h_text = aspect.split(":", 1)
        w, h = int(w_text), int(h_text)
    except ValueError:
        w = h = 1
    if w <= 0 or h <= 0:
        w = h = 1
    if w >= h:
        return long_side, max(1, round(long_side * h / w))
    return max(1, round(long_side * w / h)), long_side


@lru_cache(maxsize=256)
def render(aspect: str, fmt: str, long_side: int, variant: int) -> bytes:
    """An image of ``aspect`` in ``fmt`` (png/jpeg/webp); ``variant`` picks colours."""
    width, height = image_size(aspect, long_side)
    base = PALETTE[variant % len(PALETTE)]
    accent = PALETTE[(variant * 3 + 1) % len(PALETTE)]
    img = Image.new("RGB", (width, height), base)
    draw = ImageDraw.Draw(img)
    band = max(1, min(width, height) // 5)
    draw.polygon([(0, height), (band, height), (width, band), (width, 0)], fill=accent)
    draw.rectangle([0, 0, width - 1, height - 1], outline=(255, 255, 255))
    buf = io.BytesIO()
    pil_format = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}.get(fmt, "PNG")
    img.save(buf, format=pil_format, quality=80) if pil_format != "PNG" else img.save(buf, "PNG")
    return buf.getvalue()
