"""Image decoding: any image file or array to uint8 RGB, odd inputs converted, bad ones named.

One loader for the dataset job, the codec command line and the bundled photos (Pillow and
numpy only: Beam workers import it). `decode_image(bytes)`, `read_image(path)` and
`image_from_array(array)` return a uint8 HxWx3 array or raise `ImageError`, whose `reason` is
one of `REASONS` (the dead-letter file and the job's counters use it). Conversions, in order:

- animated images (GIF, APNG, WebP): the first frame;
- EXIF orientation applied (Pillow ignores it unless asked);
- 16-bit samples scaled to 8 bits as round(v / 257), so 65535 -> 255 (Pillow's own conversion
  of 16-bit grayscale clips everything above 255);
- palette, grayscale, bilevel, CMYK and YCbCr images converted to RGB;
- images with alpha (RGBA, LA, palette with transparency) composited on white.

The pixel cap is checked on the header, before any pixel is decoded, so a small file that
declares a huge image (a decompression bomb) costs nothing. Images smaller than one DCT block
are returned as they are: the codec resizes and pads them.
"""

from __future__ import annotations

import io
import re
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# 100 megapixels: above Pillow's own warning level (about 89 MP), below its hard limit (179 MP,
# which the job's DoFn raises when --max_pixels asks for more).
DEFAULT_MAX_PIXELS = 100_000_000

REASONS = {
    "empty_file": "the file has no bytes",
    "not_an_image": "the bytes are not an image format that Pillow knows",
    "corrupt": "an image file whose header or data Pillow cannot decode",
    "truncated": "an image file that ends before its data does",
    "zero_size": "an image whose width or height is 0",
    "too_many_pixels": "more pixels than the cap (--max_pixels), checked before decoding",
    "unsupported_mode": "a pixel format with no defined mapping to 8-bit RGB (e.g. float)",
    "read_error": "the file could not be read",
    "unknown_label": "the image's folder is not in the label names of the dataset",
    "encode_error": "the image decoded but the DCT codec raised",
    "error": "anything else that raised",
}


class ImageError(Exception):
    """An input that cannot become an RGB image; `reason` is a key of REASONS."""

    def __init__(self, reason: str, message: str):
        if reason not in REASONS:
            raise ValueError(f"unknown failure reason {reason!r}; known: {sorted(REASONS)}")
        super().__init__(message)
        self.reason = reason


# Modes whose samples are 16-bit (or 32-bit integers holding 16-bit data, as older Pillow
# versions give for 16-bit PNGs).
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decodes one encoded image (any format Pillow reads) to uint8 HxWx3 RGB.

    Args:
      data: the file's bytes.
      max_pixels: images with more pixels than this fail with reason `too_many_pixels`,
        decided from the header alone.

    Raises:
      ImageError: with the reason and a message that says what was wrong.
    """
    data = bytes(data)
    if not data:
        raise ImageError("empty_file", "the file is empty (0 bytes)")
    with warnings.catch_warnings():
        # The cap below replaces Pillow's decompression-bomb warning.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as e:
            raise ImageError("too_many_pixels", str(e)) from None
        except UnidentifiedImageError:
            raise _unidentified(data) from None
        except Exception as e:  # noqa: BLE001 - Pillow raises many types for bad headers
            raise _decode_failure(e) from None
        width, height = im.size
        if width <= 0 or height <= 0:
            raise ImageError("zero_size", f"{im.format} image of size {width}x{height}")
        if width * height > max_pixels:
            raise ImageError(
                "too_many_pixels",
                f"{im.format} image of {width}x{height} = {width * height} pixels, more than "
                f"the cap of {max_pixels}",
            )
        try:
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)
            im.load()
        except Exception as e:  # noqa: BLE001
            raise _decode_failure(e) from None
        im = _apply_orientation(im)
        return _to_rgb(im)


def read_image(path: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Reads an image file (local path) to uint8 HxWx3 RGB; an ImageError names the path."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ImageError("read_error", f"{path}: {e.strerror or e}") from None
    try:
        return decode_image(data, max_pixels=max_pixels)
    except ImageError as e:
        raise ImageError(e.reason, f"{path}: {e}") from None


def image_from_array(array, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A decoded image array (e.g. a TFDS Tensor feature) -> uint8 HxWx3 RGB.

    Accepted: HxW or HxWxC with C in 1 (gray), 2 (gray + alpha), 3 (RGB), 4 (RGBA); dtype
    uint8, or uint16 (scaled as round(v / 257)). Alpha is composited on white.

    Raises:
      ImageError: zero_size, too_many_pixels or unsupported_mode.
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] in (1, 2, 3, 4):
        channels = a.shape[2]
    elif a.ndim == 2:
        channels = 1
        a = a[:, :, None]
    else:
        raise ImageError(
            "unsupported_mode", f"array of shape {a.shape} is not HxW or HxWxC, C in 1..4"
        )
    height, width = a.shape[:2]
    if height == 0 or width == 0:
        raise ImageError("zero_size", f"array image of size {width}x{height}")
    if height * width > max_pixels:
        raise ImageError(
            "too_many_pixels",
            f"array image of {width}x{height} = {width * height} pixels, more than the cap "
            f"of {max_pixels}",
        )
    if a.dtype == np.uint16:
        a = _scale_16_bit(a)
    elif a.dtype != np.uint8:
        raise ImageError(
            "unsupported_mode", f"array dtype {a.dtype}: expected uint8 or uint16 samples"
        )
    # Pillow infers L, LA, RGB or RGBA from the shape of uint8 data.
    im = Image.fromarray(np.ascontiguousarray(a[:, :, 0] if channels == 1 else a))
    return _to_rgb(im)


# ----------------------------------------------------------------------------------------------
# Conversions.


def _scale_16_bit(samples: np.ndarray) -> np.ndarray:
    """16-bit samples -> uint8 by round(v / 257): 0 -> 0, 65535 -> 255, proportional between."""
    v = np.clip(samples.astype(np.int64), 0, 65535)
    return ((v + 128) // 257).astype(np.uint8)


def _apply_orientation(im: Image.Image) -> Image.Image:
    """Rotates/flips by the EXIF orientation tag; a broken EXIF block leaves the image as is."""
    try:
        ImageOps.exif_transpose(im, in_place=True)
    except Exception:  # noqa: BLE001 - the pixels are good even when the EXIF block is not
        pass
    return im


def _to_rgb(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in _SIXTEEN_BIT_MODES:
        gray = _scale_16_bit(np.asarray(im))
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        raise ImageError(
            "unsupported_mode", "floating-point image (mode F): its value range is not defined"
        )
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    try:
        rgb = im.convert("RGB")
    except (ValueError, OSError) as e:
        raise ImageError("unsupported_mode", f"mode {mode}: {e}") from None
    return np.asarray(rgb, dtype=np.uint8)


# ----------------------------------------------------------------------------------------------
# Failure classification.


def _decode_failure(e: Exception) -> ImageError:
    message = f"{type(e).__name__}: {e}"
    if "truncat" in str(e).lower():
        return ImageError("truncated", message)
    return ImageError("corrupt", message)


def _unidentified(data: bytes) -> ImageError:
    """Why Pillow could not identify the bytes: a known format with a bad header, or not one."""
    sniffed = sniff_header(data)
    if sniffed is None:
        head = data[:16]
        return ImageError("not_an_image", f"no known image signature (starts with {head!r})")
    fmt, width, height = sniffed
    if fmt in _FORMATS_PILLOW_LACKS:
        return ImageError("not_an_image", f"a {fmt} file, a format this Pillow cannot read")
    if width == 0 or height == 0:
        return ImageError("zero_size", f"{fmt} header declares a {width}x{height} image")
    return ImageError("corrupt", f"{fmt} signature, but Pillow cannot read the header")


# ISO media files (HEIF, AVIF) need Pillow plugins that may be missing: Pillow then cannot
# identify them, and they are not damaged.
_FORMATS_PILLOW_LACKS = ("HEIF/AVIF",)


_NETPBM = re.compile(rb"^P[1-7]\s+(?:#[^\n]*\n\s*)*(\d+)\s+(?:#[^\n]*\n\s*)*(\d+)")


def sniff_header(data: bytes) -> tuple[str, int | None, int | None] | None:
    """(format, width, height) from an image file's first bytes, or None for no known signature.

    Used only when Pillow rejects a file, to tell a damaged or empty image from non-image bytes.
    Width and height are None where the header does not give them.
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(data) >= 24 and data[12:16] == b"IHDR":
            width, height = struct.unpack(">II", data[16:24])
            return "PNG", width, height
        return "PNG", None, None
    if data[:6] in (b"GIF87a", b"GIF89a"):
        if len(data) >= 10:
            width, height = struct.unpack("<HH", data[6:10])
            return "GIF", width, height
        return "GIF", None, None
    if data.startswith(b"BM"):
        if len(data) >= 26:
            width, height = struct.unpack("<ii", data[18:26])
            return "BMP", abs(width), abs(height)
        return "BMP", None, None
    if data.startswith(b"\xff\xd8\xff"):
        return ("JPEG",) + _jpeg_size(data)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF", None, None
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP", None, None
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"avif"):
        return "HEIF/AVIF", None, None
    m = _NETPBM.match(data[:256])
    if m:
        return "PPM", int(m.group(1)), int(m.group(2))
    return None


def _jpeg_size(data: bytes) -> tuple[int | None, int | None]:
    """Width and height from a JPEG's first SOF marker, walking the marker segments."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None, None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 <= len(data):
                height, width = struct.unpack(">HH", data[i + 5 : i + 9])
                return width, height
            return None, None
        i += 2 + length
    return None, None
