"""Regenerate the sample reference photos in jobs/sample/photos/ (run: python make_photos.py).

Simple product-like drawings on a studio-grey background: a mug (PNG), a sneaker (JPEG), a
lamp (PNG) and a backpack (JPEG), each well under 50 KB, plus ``broken.png``: a text file with
a .png name, which batchgen must reject by its signature before uploading anything.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent / "photos"
SIZE = (320, 320)
BACKGROUND = (232, 232, 228)


def _canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", SIZE, BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.ellipse((60, 262, 260, 292), fill=(205, 205, 200))  # soft floor shadow
    return image, draw


def mug() -> Image.Image:
    image, draw = _canvas()
    draw.rounded_rectangle((90, 110, 210, 275), radius=14, fill=(38, 84, 160))
    draw.ellipse((90, 98, 210, 124), fill=(28, 64, 128))
    draw.ellipse((100, 103, 200, 119), fill=(60, 40, 30))  # coffee
    draw.arc((190, 145, 250, 230), start=-80, end=80, fill=(38, 84, 160), width=14)
    return image


def sneaker() -> Image.Image:
    image, draw = _canvas()
    draw.polygon(
        [(50, 250), (60, 180), (130, 160), (190, 200), (270, 215), (275, 250)], fill=(200, 40, 40)
    )
    draw.rectangle((48, 250, 278, 266), fill=(250, 250, 250))
    for x in range(100, 170, 16):
        draw.line((x, 172, x + 10, 200), fill=(250, 250, 250), width=4)
    return image.filter(ImageFilter.SMOOTH)


def lamp() -> Image.Image:
    image, draw = _canvas()
    draw.polygon([(110, 70), (210, 70), (240, 150), (80, 150)], fill=(240, 200, 90))
    draw.rectangle((154, 150, 166, 250), fill=(60, 60, 60))
    draw.ellipse((110, 245, 210, 275), fill=(60, 60, 60))
    return image


def backpack() -> Image.Image:
    image, draw = _canvas()
    draw.rounded_rectangle((90, 70, 230, 270), radius=40, fill=(70, 110, 70))
    draw.rounded_rectangle((110, 170, 210, 250), radius=16, fill=(55, 90, 55))
    draw.arc((130, 40, 190, 100), start=180, end=360, fill=(40, 40, 40), width=8)
    draw.line((120, 200, 200, 200), fill=(210, 180, 60), width=3)  # zip
    return image.filter(ImageFilter.SMOOTH)


def main() -> None:
    """Write the four photos and the fake one."""
    HERE.mkdir(parents=True, exist_ok=True)
    mug().save(HERE / "mug.png", optimize=True)
    sneaker().save(HERE / "sneaker.jpg", quality=85)
    lamp().save(HERE / "lamp.png", optimize=True)
    backpack().save(HERE / "backpack.jpg", quality=85)
    (HERE / "broken.png").write_text("This is not a PNG image, just text with a .png name.\n")


if __name__ == "__main__":
    main()
