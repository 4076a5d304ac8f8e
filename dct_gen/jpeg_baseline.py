"""What JPEG's entropy coding spends on the codec's own quantized coefficients (the baseline).

The codec (`dct_gen.representation`) quantizes exactly as a JPEG encoder does at B = 8 (IJG
tables, 4:2:0 chroma, libjpeg's rounding), so the same coefficients can be written into a JPEG
file and the file's entropy-coded bits compared with a model's likelihood of the same triples.
This module does that with libjpeg, through the `jpeglib` package (a test extra, imported only
when needed):

- `jpeg_bits(image_or_sequence, cfg)` writes the coefficients of an image (resized by the
  codec's rules) or of a `DCTSequence` into a baseline sequential 4:2:0 JPEG with optimized
  Huffman tables (libjpeg's `optimize_coding`: two passes, tables built from this image's
  symbol counts) and measures the file. The coefficients are ours, not libjpeg's re-encoding of
  the pixels: reading the file back gives them exactly (tests check this).
- `pillow_jpeg_bits(image, cfg)` is the cross-check: Pillow's `save(quality=q, optimize=True,
  subsampling=4:2:0)` of the same resized pixels, which codes libjpeg's own coefficients (99%+
  identical to ours). Pillow forces baseline tables (steps capped at 255), so below quality
  about 25 its coefficients are finer than the codec's.
- `summarize(results)` averages over images both ways: the mean of per-image bits per subpixel
  (as `dct_gen.training.evaluate` averages sequences) and summed bits over summed subpixels.

What is counted (each figure in bits, and per subpixel: bits / (3 * height * width) of the
resized image, as everywhere in the project):

- `entropy_bits`, the headline (`bits_per_subpixel`): the entropy-coded scan data, that is the
  bytes after the SOS header up to EOI, less the 0x00 bytes stuffed after each 0xFF (framing,
  not coding). The final byte's padding bits stay in. The Huffman tables' cost is *not*
  charged. Why this is the fair (JPEG-friendly) headline for a learned coder: the model's own
  parameters are not charged either, and tables fitted to each image alone, for free, make
  this about the least that JPEG's Huffman coding can spend on these coefficients (libjpeg's
  codes are optimal up to its 16-bit code-length limit). At the small images of CPU benchmarks
  (64 x 64) the tables cost about a fifth as much again as the scan, so charging them would
  flatter any competitor; on large images they are a fraction of a percent.
- `table_bits`: the DHT segments (markers and lengths included). Image-specific under
  optimization; `scan_and_table_bits` = scan + tables is the file less the headers that do not
  depend on the image's content (SOI, JFIF APP0, DQT, SOF, SOS header, EOI).
- `scan_bits`: the scan data as stored (stuffing included); `stuffing_bits`: the stuffed bytes.
- `header_bits`: everything else; `file_bits`: the whole file.
- Of the entropy-coded bits (for our coefficients only, computed from them): `extra_bits`, the
  bits appended after each Huffman code (sign and low bits of every non-zero AC coefficient and
  every non-zero DC difference: the magnitude category's size each), and `huffman_bits`, the
  rest (the codes for run lengths, magnitude categories, end-of-block, ZRL, plus at most 7 bits
  of final padding). A rough split of what JPEG spends on where the coefficients are and on
  their values.

Padding: the file covers the blocks the codec codes, that is the image padded to a multiple of
16 pixels (2B, 4:2:0 MCUs), so no block is a libjpeg "dummy" block and every coefficient in the
file is one of ours. Resized images are already multiples of 16 except when the long side
equals the resolution and the short side does not; the padded blocks count in both the model's
bits and JPEG's, and neither side divides by the padded size.

Limits: B must be 8 (JPEG's block); 8-bit baseline Huffman coding holds AC values in
[-1023, 1023] and DC differences in [-2047, 2047], which any coefficients of an 8-bit image
satisfy; sampled sequences (values up to the config's clip) are checked and refused with a
ValueError.
"""

from __future__ import annotations

import io
import os
import tempfile

import numpy as np

from dct_gen import representation as rep

JPEG_BLOCK_SIZE = 8
MAX_AC = 1023  # Huffman magnitude category 10, the largest for AC in 8-bit baseline JPEG
MAX_DC_DIFF = 2047  # category 11, the largest DC difference

# Marker bytes (ITU-T T.81 table B.1).
_SOI, _EOI, _SOS, _DHT = 0xD8, 0xD9, 0xDA, 0xC4
_RST = range(0xD0, 0xD8)

KEYS = (
    "entropy_bits",
    "scan_bits",
    "stuffing_bits",
    "table_bits",
    "scan_and_table_bits",
    "header_bits",
    "file_bits",
)


EXTRA_KEYS = ("extra_bits", "huffman_bits")  # only for `jpeg_bits` (our coefficients)


def _check_block_size(cfg: rep.DCTConfig) -> None:
    if cfg.block_size != JPEG_BLOCK_SIZE:
        raise ValueError(
            f"block_size={cfg.block_size}: the JPEG baseline needs block_size = "
            f"{JPEG_BLOCK_SIZE} (JPEG's DCT block); compare B != 8 runs with their own bits"
        )


def _jpeglib():
    try:
        import jpeglib
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "the JPEG baseline writes coefficients with the `jpeglib` package: "
            "pip install -e '.[test]' (or pip install jpeglib)"
        ) from e
    return jpeglib


# ----------------------------------------------------------------------------------------------
# Coefficient planes: the codec's layout (rows, cols, 64) in zigzag order <-> JPEG blocks.


def planes_from_image(image: np.ndarray, cfg: rep.DCTConfig) -> tuple[list[np.ndarray], int, int]:
    """Image (any size; resized by the codec's rules) -> ([Y, Cb, Cr] planes, height, width).

    Planes are int32 (rows, cols, 64) in zigzag order, as `representation.quantized_planes`
    gives them (clipped to the config's clip), covering the image padded to a multiple of 16.
    """
    _check_block_size(cfg)
    planes, _, height, width = rep.quantized_planes(image, cfg)
    return planes, height, width


def planes_from_sequence(seq: rep.DCTSequence, cfg: rep.DCTConfig) -> list[np.ndarray]:
    """A sequence's triples -> the [Y, Cb, Cr] planes of `planes_from_image` for its size.

    The planes cover seq.height x seq.width padded to a multiple of 16 pixels; triples outside
    that area (possible in a sampled sequence) raise ValueError, since JPEG would drop them.
    """
    _check_block_size(cfg)
    dense = rep.dct_image(seq, cfg)
    step = 2 * cfg.block_size
    hb = -(-int(seq.height) // step) * 2  # luma blocks, rounded up to whole MCUs
    wb = -(-int(seq.width) // step) * 2
    if hb > cfg.grid or wb > cfg.grid:
        raise ValueError(f"{seq.height}x{seq.width} does not fit the {cfg.resolution} canvas")
    if len(seq):
        rows, cols = seq.positions // cfg.grid, seq.positions % cfg.grid
        if rows.max() >= hb or cols.max() >= wb:
            raise ValueError(
                f"triples lie outside the {seq.height}x{seq.width} image's {hb}x{wb} blocks; "
                "a JPEG file of that size cannot hold them"
            )
    n = cfg.channels_per_plane
    luma = dense[:hb, :wb, :n]
    cb = dense[0:hb:2, 0:wb:2, n : 2 * n]
    cr = dense[0:hb:2, 0:wb:2, 2 * n :]
    return [np.ascontiguousarray(p, dtype=np.int32) for p in (luma, cb, cr)]


def to_jpeg_blocks(plane: np.ndarray) -> np.ndarray:
    """(rows, cols, 64) zigzag plane -> (rows, cols, 8, 8) int16 blocks in natural order."""
    rows, cols, n = plane.shape
    if n != JPEG_BLOCK_SIZE**2:
        raise ValueError(f"plane has {n} channels; JPEG blocks have 64")
    out = np.zeros((rows, cols, n), dtype=np.int16)
    out[:, :, rep.zigzag(JPEG_BLOCK_SIZE)] = plane
    return out.reshape(rows, cols, JPEG_BLOCK_SIZE, JPEG_BLOCK_SIZE)


def from_jpeg_blocks(blocks: np.ndarray) -> np.ndarray:
    """(rows, cols, 8, 8) natural-order blocks -> (rows, cols, 64) int32 zigzag plane."""
    rows, cols = blocks.shape[:2]
    flat = np.asarray(blocks).reshape(rows, cols, JPEG_BLOCK_SIZE**2)
    return flat[:, :, rep.zigzag(JPEG_BLOCK_SIZE)].astype(np.int32)


def _mcu_order(plane: np.ndarray, luma: bool) -> np.ndarray:
    """DC values in the order an interleaved 4:2:0 scan codes them (2x2 luma blocks per MCU)."""
    dc = plane[:, :, 0].astype(np.int64)
    if not luma:
        return dc.ravel()
    rows, cols = dc.shape
    return dc.reshape(rows // 2, 2, cols // 2, 2).transpose(0, 2, 1, 3).ravel()


def check_jpeg_range(planes: list[np.ndarray]) -> None:
    """Raises ValueError when baseline Huffman coding cannot hold the coefficients."""
    for name, plane in zip(("Y", "Cb", "Cr"), planes):
        ac = np.abs(plane[:, :, 1:])
        if ac.size and int(ac.max()) > MAX_AC:
            raise ValueError(
                f"{name} holds an AC coefficient of magnitude {int(ac.max())}; baseline JPEG "
                f"codes at most {MAX_AC}"
            )
        dc = _mcu_order(plane, luma=name == "Y")
        diffs = np.diff(dc, prepend=0)
        if diffs.size and int(np.abs(diffs).max()) > MAX_DC_DIFF:
            raise ValueError(
                f"{name} has a DC difference of {int(np.abs(diffs).max())}; baseline JPEG codes "
                f"at most {MAX_DC_DIFF}"
            )


def _bit_lengths(magnitudes: np.ndarray) -> np.ndarray:
    """The bit length of each non-negative integer (0 for 0): JPEG's magnitude category."""
    _, exponent = np.frexp(magnitudes.astype(np.float64))
    return np.where(magnitudes > 0, exponent, 0)


def extra_bits(planes: list[np.ndarray]) -> int:
    """Bits JPEG appends after the Huffman codes of these coefficients (sign and low bits)."""
    total = 0
    for index, plane in enumerate(planes):
        total += int(_bit_lengths(np.abs(plane[:, :, 1:].astype(np.int64))).sum())
        dc = _mcu_order(plane, luma=index == 0)
        total += int(_bit_lengths(np.abs(np.diff(dc, prepend=0))).sum())
    return total


# ----------------------------------------------------------------------------------------------
# Writing and reading JPEG files.


def write_coefficients(
    planes: list[np.ndarray], cfg: rep.DCTConfig, *, optimize: bool = True
) -> bytes:
    """The [Y, Cb, Cr] zigzag planes -> the bytes of a baseline 4:2:0 JPEG holding exactly them.

    The file's quantization tables are the codec's (`representation.quant_tables`, which may
    exceed 255 at low quality: libjpeg then writes 16-bit tables), so a decoder reproduces the
    codec's dequantization. `optimize` selects per-image optimized Huffman tables (libjpeg's
    optimize_coding) instead of the standard tables of ITU-T T.81 annex K.
    """
    _check_block_size(cfg)
    luma, cb, cr = planes
    if (
        luma.shape[0] % 2
        or luma.shape[1] % 2
        or cb.shape[:2]
        != (
            luma.shape[0] // 2,
            luma.shape[1] // 2,
        )
    ):
        raise ValueError(
            f"planes {luma.shape}, {cb.shape}, {cr.shape} are not 4:2:0 with whole MCUs"
        )
    if cr.shape != cb.shape:
        raise ValueError(f"Cb {cb.shape} and Cr {cr.shape} differ")
    check_jpeg_range(planes)
    jpeglib = _jpeglib()
    luma_t, chroma_t = rep.quant_tables(JPEG_BLOCK_SIZE, cfg.quality)
    qt = np.stack([luma_t, chroma_t]).astype(np.uint16)
    jpeg = jpeglib.from_dct(to_jpeg_blocks(luma), to_jpeg_blocks(cb), to_jpeg_blocks(cr), qt=qt)
    with tempfile.TemporaryDirectory(prefix="dct_gen_jpeg_") as tmp:
        path = os.path.join(tmp, "coefficients.jpg")
        jpeg.write_dct(path, flags=["+OPTIMIZE_CODING" if optimize else "-OPTIMIZE_CODING"])
        with open(path, "rb") as f:
            return f.read()


def read_coefficients(data: bytes) -> list[np.ndarray]:
    """A 4:2:0 JPEG's bytes -> its quantized [Y, Cb, Cr] planes in the codec's layout."""
    jpeglib = _jpeglib()
    with tempfile.TemporaryDirectory(prefix="dct_gen_jpeg_") as tmp:
        path = os.path.join(tmp, "read.jpg")
        with open(path, "wb") as f:
            f.write(data)
        jpeg = jpeglib.read_dct(path)
        planes = [from_jpeg_blocks(jpeg.Y), from_jpeg_blocks(jpeg.Cb), from_jpeg_blocks(jpeg.Cr)]
    return planes


def segment_bits(data: bytes) -> dict[str, int]:
    """Splits a JPEG file's bits into the KEYS of the module docstring (no subpixel figures)."""
    data = bytes(data)
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG file (no SOI marker)")
    n = len(data)
    i = 2
    table = scan = stuffing = 0
    while i + 1 < n:
        if data[i] != 0xFF:
            raise ValueError(f"JPEG marker expected at byte {i}, found {data[i]:#04x}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker == _EOI:
            i += 2
            break
        if marker in _RST or marker == _SOI:
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == _DHT:
            table += 2 + length
        i += 2 + length
        if marker == _SOS:
            # Entropy-coded data runs to the next marker other than a stuffed 0x00 or RSTn.
            start = i
            while True:
                j = data.find(b"\xff", i)
                if j < 0 or j + 1 >= n:
                    raise ValueError("JPEG scan data runs to the end of the file (no EOI)")
                follower = data[j + 1]
                if follower == 0x00:
                    stuffing += 1
                    i = j + 2
                elif follower in _RST:
                    i = j + 2
                else:
                    i = j
                    break
            scan += i - start
    header = n - table - scan  # markers, headers and anything after EOI
    return {
        "entropy_bits": 8 * (scan - stuffing),
        "scan_bits": 8 * scan,
        "stuffing_bits": 8 * stuffing,
        "table_bits": 8 * table,
        "scan_and_table_bits": 8 * (scan + table),
        "header_bits": 8 * header,
        "file_bits": 8 * n,
    }


def _with_rates(bits: dict[str, int], height: int, width: int, **extra) -> dict:
    subpixels = rep.num_subpixels(height, width)
    out = {"height": int(height), "width": int(width), "subpixels": subpixels}
    out.update(bits)
    for key in KEYS + EXTRA_KEYS:
        if key in bits:
            out[f"{key[: -len('_bits')]}_bits_per_subpixel"] = bits[key] / subpixels
    out["bits_per_subpixel"] = bits["entropy_bits"] / subpixels
    out.update(extra)
    return out


def jpeg_bits(
    image_or_sequence: np.ndarray | rep.DCTSequence,
    cfg: rep.DCTConfig,
    *,
    optimize: bool = True,
    return_bytes: bool = False,
) -> dict:
    """JPEG's bits for the codec's quantized coefficients of one image (the module docstring).

    Args:
      image_or_sequence: a uint8 image (any size: resized as `representation.encode` does) or
        a DCTSequence in cfg's representation (its height and width are the image's).
      cfg: the representation; block_size must be 8.
      optimize: per-image optimized Huffman tables (True) or the standard tables.
      return_bytes: also return the file under the key "jpeg".

    Returns:
      {"bits_per_subpixel": the headline (entropy-coded scan), every KEYS and EXTRA_KEYS
       figure in bits and as `<name>_bits_per_subpixel` (e.g.
       `scan_and_table_bits_per_subpixel`), "height",
       "width", "subpixels", "optimized", "source": "coefficients", "libjpeg": the version}.
    """
    _check_block_size(cfg)
    if isinstance(image_or_sequence, rep.DCTSequence):
        seq = image_or_sequence
        planes, height, width = planes_from_sequence(seq, cfg), seq.height, seq.width
    else:
        planes, height, width = planes_from_image(image_or_sequence, cfg)
    data = write_coefficients(planes, cfg, optimize=optimize)
    bits = segment_bits(data)
    bits["extra_bits"] = extra_bits(planes)
    bits["huffman_bits"] = bits["entropy_bits"] - bits["extra_bits"]
    out = _with_rates(
        bits,
        height,
        width,
        optimized=bool(optimize),
        source="coefficients",
        libjpeg=str(_jpeglib().version.get()),
    )
    if return_bytes:
        out["jpeg"] = data
    return out


def pillow_jpeg_bits(
    image: np.ndarray, cfg: rep.DCTConfig, *, optimize: bool = True, return_bytes: bool = False
) -> dict:
    """The same figures for Pillow's JPEG of the resized pixels (libjpeg's own coefficients).

    The image is resized by the codec's rules (not padded: libjpeg pads it itself) and saved
    with quality=cfg.quality, 4:2:0 subsampling and `optimize`. Returns the dict of
    `jpeg_bits` without EXTRA_KEYS, with "source": "pillow".
    """
    from PIL import Image

    _check_block_size(cfg)
    rgb = rep.resize(rep.as_rgb(image), cfg)
    height, width = rgb.shape[:2]
    buf = io.BytesIO()
    Image.fromarray(rgb).save(
        buf, format="JPEG", quality=int(cfg.quality), optimize=bool(optimize), subsampling=2
    )
    data = buf.getvalue()
    out = _with_rates(segment_bits(data), height, width, optimized=bool(optimize), source="pillow")
    if return_bytes:
        out["jpeg"] = data
    return out


def summarize(results: list[dict]) -> dict:
    """Averages per-image results of `jpeg_bits` / `pillow_jpeg_bits` over a set of images.

    Returns {"images", "subpixels", every KEYS total in bits (and EXTRA_KEYS when every result
    has them), and for each per-subpixel figure two averages: `<name>_bits_per_subpixel` the
    mean over images of the per-image figure (the way `dct_gen.training.evaluate` averages
    sequences) and `<name>_bits_per_subpixel_pooled`, summed bits over summed subpixels}. The
    two agree when every image has the same size.
    """
    if not results:
        raise ValueError("no results to summarize")
    out: dict = {"images": len(results)}
    subpixels = sum(int(r["subpixels"]) for r in results)
    out["subpixels"] = subpixels
    keys = KEYS + tuple(k for k in EXTRA_KEYS if all(k in r for r in results))
    for key in keys:
        total = sum(int(r[key]) for r in results)
        name = f"{key[: -len('_bits')]}_bits_per_subpixel"
        out[key] = total
        out[name] = float(np.mean([r[name] for r in results]))
        out[f"{name}_pooled"] = total / subpixels
    out["bits_per_subpixel"] = out["entropy_bits_per_subpixel"]
    out["bits_per_subpixel_pooled"] = out["entropy_bits_per_subpixel_pooled"]
    return out
