"""Photo-like sample images, generated (no files from the network): smooth gradients, soft
shapes and sensor-like noise compress the way real photos do, unlike flat colours or pure noise.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def photo_array(width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
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
    img += rng.normal(0, 6, size=img.shape)  # sensor noise
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
