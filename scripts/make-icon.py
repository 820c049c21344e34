#!/usr/bin/python3
"""Draws Tessera's app icon (assets/icon-256.png, assets/icon-64.png): a mosaic of tiles, one of them framed by a
detection box. Run: /usr/bin/python3 scripts/make-icon.py (needs Pillow: apt-get install python3-pil)."""
from pathlib import Path
from PIL import Image, ImageDraw

S = 1024  # draw large, downsample for smooth edges
img = Image.new("RGBA", (S, S), (0, 0, 0, 0))
d = ImageDraw.Draw(img)
d.rounded_rectangle([40, 40, S - 40, S - 40], radius=200, fill=(28, 32, 44, 255))
palette = [(76, 139, 245), (92, 196, 160), (245, 186, 76), (236, 96, 110), (155, 120, 240), (70, 190, 230)]
n, gap, margin = 4, 26, 150
tile = (S - 2 * margin - (n - 1) * gap) // n
for r in range(n):
    for c in range(n):
        x0, y0 = margin + c * (tile + gap), margin + r * (tile + gap)
        colour = palette[(r * 3 + c * 2) % len(palette)]
        alpha = 255 if (r, c) in {(1, 1), (1, 2), (2, 1), (2, 2)} else 120
        d.rounded_rectangle([x0, y0, x0 + tile, y0 + tile], radius=36, fill=colour + (alpha,))
# The "detection": a white box around the four centre tiles.
x0 = margin + (tile + gap) - 18
x1 = margin + 3 * tile + 2 * gap + 18
d.rounded_rectangle([x0, x0, x1, x1], radius=44, outline=(255, 255, 255, 255), width=22)
out = Path(__file__).resolve().parent.parent / "assets"
out.mkdir(exist_ok=True)
for size in (256, 64):
    img.resize((size, size), Image.LANCZOS).save(out / f"icon-{size}.png")
print("wrote", out / "icon-256.png", out / "icon-64.png")
