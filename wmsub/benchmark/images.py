"""First frames: check an image without decoding it all, and open it as the official
pipeline does. Used on the login node (validation) and on the compute node (generation).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
MODE_NOTES = {
    "L": "grey (mode L): replicated to RGB",
    "LA": "grey with alpha (mode LA): alpha dropped, grey replicated to RGB",
    "P": "palette (mode P): palette colours expanded to RGB",
    "PA": "palette with alpha (mode PA): alpha dropped",
    "RGBA": "RGBA: alpha dropped, as the official Image.open(...).convert('RGB') does",
    "CMYK": "CMYK: converted to RGB with PIL's conversion, as the official pipeline does",
    "YCbCr": "YCbCr: converted to RGB",
    "1": "1-bit (mode 1): expanded to RGB",
    "F": "32-bit float (mode F): clipped to 0-255 and replicated to RGB",
}


@dataclass
class ImageInfo:
    size: tuple[int, int] | None = None  # (width, height)
    mode: str = ""
    conversion: str = ""  # how open_rgb converts it; "" for RGB
    problem: str = ""  # why the image is unusable; "" when fine


def inspect_image(path: Path, full: bool = False) -> ImageInfo:
    """Header, mode and completeness of one image, decoding only when needed.

    A JPEG is complete when its end-of-image marker closes the file; when it does not
    (truncated, or trailing bytes after the marker) the image is decoded fully to decide.
    PNG chunks are CRC-checked with PIL's verify(). Other formats are decoded.
    """
    info = ImageInfo()
    try:
        with Image.open(path) as im:
            info.size, info.mode, fmt = im.size, im.mode, im.format
            needs_decode = full or fmt not in ("JPEG", "PNG") or (
                fmt == "JPEG" and not _jpeg_ends_with_eoi(path))
            if fmt == "PNG" and not full:
                im.verify()
        if needs_decode:
            with Image.open(path) as im:
                im.load()
    except UnidentifiedImageError:
        info.problem = "is not an image (PIL cannot identify it)"
        return info
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        # PIL reports truncation as OSError("image file is truncated ...") and bad PNG
        # chunks as SyntaxError
        info.problem = f"is unreadable or truncated ({type(e).__name__}: {e})"
        return info
    if info.size[0] < 1 or info.size[1] < 1:
        info.problem = f"has an empty size {info.size}"
    elif info.mode in SIXTEEN_BIT_MODES:
        info.conversion = (f"{info.mode} (16-bit grey): scaled to 8-bit (v/257, rounded) and "
                           "replicated to RGB (PIL's convert would clip at 255)")
    elif info.mode != "RGB":
        info.conversion = MODE_NOTES.get(info.mode, f"mode {info.mode}: converted to RGB")
    return info


def _jpeg_ends_with_eoi(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 2))
        return f.read(2) == b"\xff\xd9"


def open_rgb(path: str | Path) -> Image.Image:
    """The first frame as an 8-bit RGB PIL image.

    Same as the official `Image.open(path).convert("RGB")` for every mode except 16-bit
    grey, which PIL's convert clips at 255; it is scaled to 8 bits instead.
    """
    with Image.open(path) as im:
        im.load()
        if im.mode == "RGB":
            return im.copy()
        if im.mode in SIXTEEN_BIT_MODES:
            values = np.asarray(im).astype(np.float64)
            if im.mode == "I" and values.max() <= 255:
                grey = values  # 32-bit container holding 8-bit values
            else:
                grey = values / 257.0  # 65535 -> 255
            grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
            return Image.fromarray(np.stack([grey] * 3, axis=-1), mode="RGB")
        if im.mode == "F":
            grey = np.clip(np.rint(np.asarray(im)), 0, 255).astype(np.uint8)
            return Image.fromarray(np.stack([grey] * 3, axis=-1), mode="RGB")
        return im.convert("RGB")
