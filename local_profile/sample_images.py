"""Photo-like sample images, generated (no files from the network): smooth gradients, soft
shapes and sensor-like noise compress the way real photos do, unlike flat colours or pure noise.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw


def photo_array(width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # The scene is smooth, so it is drawn at a quarter of the size and scaled up; only the
    # noise needs every pixel. Makes a 2400x1800 picture in a fraction of a second.
    small = _scene(max(1, width // 4), max(1, height // 4), rng)
    picture = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    _draw_edges(picture, rng)
    scene = np.asarray(picture)
    noise = rng.standard_normal(size=scene.shape, dtype=np.float32) * 6  # sensor noise
    return np.clip(scene + noise, 0, 255).astype(np.uint8)


def _draw_edges(picture: Image.Image, rng: np.random.Generator) -> None:
    """Hard edges and thin lines, as objects and textures have; gradients alone are too easy."""
    draw = ImageDraw.Draw(picture)
    width, height = picture.size
    for _ in range(10):
        x0, x1 = sorted(rng.uniform(0, width, 2))
        y0, y1 = sorted(rng.uniform(0, height, 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), outline=colour, width=int(rng.integers(2, 12)))
        else:
            draw.rectangle((x0, y0, x0 + (x1 - x0) / 3, y0 + (y1 - y0) / 3), fill=colour)
    for _ in range(40):
        points = [tuple(rng.uniform(0, [width, height])) for _ in range(2)]
        draw.line(points, fill=tuple(int(c) for c in rng.integers(0, 256, 3)), width=2)


def _scene(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 6.3)
        base = 128 + 70 * np.sin(2 * np.pi * (fx * x / width + fy * y / height) + phase)
        channels.append(base)
    img = np.stack(channels, axis=-1)
    for _ in range(6):  # a few soft blobs, like objects in a scene
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        radius = rng.uniform(0.05, 0.25) * min(width, height)
        colour = rng.uniform(0, 255, size=3)
        weight = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2))[..., None]
        img = img * (1 - weight) + colour * weight
    return np.clip(img, 0, 255).astype(np.uint8)


def photo_jpeg(width: int, height: int, quality: int, seed: int = 0, **save: object) -> bytes:
    out = io.BytesIO()
    Image.fromarray(photo_array(width, height, seed)).save(out, "JPEG", quality=quality, **save)
    return out.getvalue()


def transparent_png(width: int, height: int, seed: int = 0) -> bytes:
    rgb = photo_array(width, height, seed)
    alpha = np.zeros((height, width), dtype=np.uint8)
    alpha[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 255
    out = io.BytesIO()
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(out, "PNG")
    return out.getvalue()


def rotated_jpeg(width: int, height: int, quality: int, orientation: int = 6) -> bytes:
    """A JPEG stored sideways with an EXIF orientation tag, as phones write them."""
    image = Image.fromarray(photo_array(width, height, 7))
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, exif=exif.tobytes())
    return out.getvalue()
