"""The sparse DCT codec: images <-> (channel, position, value) triples (section 2, appendix A).

This module imports nothing else of dct_gen; Beam workers, the input pipeline and the sampler all
build on it. Its TensorFlow twin is `dct_gen.dct_ops`.

Pipeline (encode), each step with its rule:

1. Resize so the long side equals `resolution`; the short side keeps the aspect ratio, rounded
   to a multiple of 2B (at least 2B). An image whose long side already equals `resolution` has
   its short side rounded too (301 x 512 becomes 304 x 512 at B = 8), so that the extent rule
   below recovers every image's size; an image already of the target size is left untouched.
2. JFIF RGB -> YCbCr, rounded to integer samples as a JPEG encoder does, centred by -128.
3. Edge-replicate pad to a multiple of 2B, then 2x2-mean downsample Cb and Cr.
4. Orthonormal BxB DCT-II per block (eq. 1 for B = 8).
5. Divide by the IJG table for `quality` (luma and chroma both scaled by quality; for B != 8 the
   8x8 base table is resized by nearest neighbour) and round half away from zero (libjpeg's rule).
6. Clip to [-clip, clip], counting what was clipped.
7. Zigzag-flatten each block: the DCT image of a plane has B*B channels, low to high frequency.
8. Emit the non-zero coefficients as triples:
   channel  Y in [0, B^2), Cb in [B^2, 2B^2), Cr in [2B^2, 3B^2); the stop token is 3B^2;
   position row * G + col on the luma block grid of the G x G canvas (G = resolution / B);
            chroma block (r, c) sits at luma position (2r, 2c);
   value    the quantized coefficient, non-zero, in [-clip, clip].
   Triples are sorted by the rank of their channel in the ordering, then by position.

Orderings (a fixed permutation of the 3B^2 channels):
- `interleaved`: luma zigzag index i has key i; chroma zigzag index i has key `interval * i`;
  channels are sorted by (key, plane) with Y < Cb < Cr. Y0, Cb0, Cr0 therefore come first, and
  chroma index i follows luma index `interval * i`. The default interval of 4 matches spatial
  frequencies: chroma is sampled at half resolution, so chroma frequency (u, v) shows the same
  detail as luma frequency (2u, 2v), about four zigzag steps further along per chroma step.
  Chroma channels whose key passes the last luma channel come at the end, in zigzag order.
- `luma_first`: all luma channels, then Cb and Cr interleaved with interval 1 (colorization).

Extent rule: an encoded sequence stores its height and width. For a sampled sequence, whose size
nobody stored, `extent_from_positions` gives the smallest multiple of 2B pixels, in each axis,
that covers every position holding a triple; resized images have sides that are multiples of 2B,
so the rule recovers their size exactly whenever their last block row and column hold a triple.

Decoding is the exact inverse up to quantization: dequantize, inverse DCT, upsample chroma with
libjpeg's "fancy" triangle filter (3/4, 1/4 weights), YCbCr -> RGB, round and clip.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

ORDERINGS = ("interleaved", "luma_first")
BLOCK_SIZES = (4, 8, 16, 32)

# IJG base tables (appendix A; ITU-T T.81 K.1 and K.2), natural (row-major) order.
LUMA_BASE_TABLE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.int64,
)
CHROMA_BASE_TABLE = np.array(
    [
        [17, 18, 24, 47, 99, 99, 99, 99],
        [18, 21, 26, 66, 99, 99, 99, 99],
        [24, 26, 56, 99, 99, 99, 99, 99],
        [47, 66, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
    ],
    dtype=np.int64,
)

# JFIF (ITU-R BT.601 full range) colour transforms, for values centred on 0.
RGB_TO_YCBCR = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.168735892, -0.331264108, 0.5],
        [0.5, -0.418687589, -0.081312411],
    ],
    dtype=np.float64,
)
YCBCR_TO_RGB = np.array(
    [
        [1.0, 0.0, 1.402],
        [1.0, -0.344136286, -0.714136286],
        [1.0, 1.772, 0.0],
    ],
    dtype=np.float64,
)


@dataclasses.dataclass(frozen=True)
class DCTConfig:
    """What defines the representation; records carry it in their info.json.

    Attributes:
      block_size: B, the DCT block side (4, 8, 16 or 32).
      quality: IJG quality in [1, 100].
      resolution: the canvas side in pixels; the long side of every image is resized to it.
        Must be a multiple of 2 * block_size.
      clip: quantized values are clipped to [-clip, clip]; the value vocabulary is 2 * clip + 1.
      ordering: `interleaved` (generation, upsampling) or `luma_first` (colorization).
      interval: luma channels between consecutive chroma pairs in the `interleaved` ordering.
    """

    block_size: int = 8
    quality: int = 75
    resolution: int = 512
    clip: int = 1200
    ordering: str = "interleaved"
    interval: int = 4

    def __post_init__(self):
        if self.block_size not in BLOCK_SIZES:
            raise ValueError(f"block_size={self.block_size}: must be one of {BLOCK_SIZES}")
        if not 1 <= int(self.quality) <= 100:
            raise ValueError(f"quality={self.quality}: must be in [1, 100]")
        if self.resolution <= 0 or self.resolution % (2 * self.block_size):
            raise ValueError(
                f"resolution={self.resolution}: must be a positive multiple of 2 * block_size "
                f"= {2 * self.block_size}"
            )
        if self.clip < 1:
            raise ValueError(f"clip={self.clip}: must be >= 1")
        if self.ordering not in ORDERINGS:
            raise ValueError(f"ordering={self.ordering!r}: must be one of {ORDERINGS}")
        if self.interval < 1:
            raise ValueError(f"interval={self.interval}: must be >= 1")

    @property
    def channels_per_plane(self) -> int:
        return self.block_size * self.block_size

    @property
    def stop_token(self) -> int:
        """The channel id that ends a sequence: 3 * B^2."""
        return 3 * self.channels_per_plane

    @property
    def num_channels(self) -> int:
        """The channel vocabulary, stop token included: 3 * B^2 + 1."""
        return self.stop_token + 1

    @property
    def grid(self) -> int:
        """G, the canvas side in luma blocks."""
        return self.resolution // self.block_size

    @property
    def num_positions(self) -> int:
        return self.grid * self.grid

    @property
    def num_values(self) -> int:
        return 2 * self.clip + 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DCTConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown DCTConfig fields {unknown}; known: {sorted(names)}")
        return cls(**d)


@dataclasses.dataclass
class DCTSequence:
    """An image as sparse triples, in the config's ordering, without the stop token.

    Attributes:
      channels, positions, values: equal-length 1-D int32 arrays.
      height, width: the size of the (resized) image in pixels.
      num_clipped: how many quantized coefficients were clipped to [-clip, clip].
    """

    channels: np.ndarray
    positions: np.ndarray
    values: np.ndarray
    height: int
    width: int
    num_clipped: int = 0

    def __len__(self) -> int:
        return int(self.channels.shape[0])

    def prefix(self, n: int) -> DCTSequence:
        """The first n triples (progressive decoding, Figure 2g)."""
        return DCTSequence(
            self.channels[:n],
            self.positions[:n],
            self.values[:n],
            self.height,
            self.width,
            self.num_clipped,
        )


# ----------------------------------------------------------------------------------------------
# Tables: DCT basis, zigzag, quantization, ordering.


@functools.cache
def dct_matrix(block_size: int) -> np.ndarray:
    """The orthonormal DCT-II matrix M, so that a block's DCT is M @ X @ M.T (eq. 1)."""
    n = np.arange(block_size)
    k = n[:, None]
    m = np.cos(np.pi * (2 * n[None, :] + 1) * k / (2 * block_size)) * math.sqrt(2.0 / block_size)
    m[0] /= math.sqrt(2.0)
    m.setflags(write=False)
    return m


@functools.cache
def zigzag(block_size: int) -> np.ndarray:
    """Natural (row-major) index of each zigzag index: the JPEG scan generalised to BxB.

    Anti-diagonal d = row + col is walked with the row increasing when d is odd and decreasing
    when d is even, which is the JPEG order for B = 8.
    """
    order = []
    for d in range(2 * block_size - 1):
        rows = range(max(0, d - block_size + 1), min(d, block_size - 1) + 1)
        rows = rows if d % 2 else reversed(rows)
        order.extend(r * block_size + (d - r) for r in rows)
    out = np.array(order, dtype=np.int64)
    out.setflags(write=False)
    return out


def quality_scale(quality: int) -> int:
    """The IJG quality scaling s(q) of appendix A, in percent."""
    q = int(quality)
    return 5000 // q if q < 50 else 200 - 2 * q


@functools.cache
def quant_tables(block_size: int, quality: int) -> tuple[np.ndarray, np.ndarray]:
    """(luma, chroma) BxB quantization tables in natural order (appendix A).

    The 8x8 base table is resized by nearest neighbour for B != 8, then scaled by s(q) as
    floor((s * T + 50) / 100) and clamped to [1, 32767].
    """
    src = (np.arange(block_size) * 8) // block_size
    s = quality_scale(quality)
    tables = []
    for base in (LUMA_BASE_TABLE, CHROMA_BASE_TABLE):
        resized = base[np.ix_(src, src)]
        t = np.clip((s * resized + 50) // 100, 1, 32767).astype(np.int64)
        t.setflags(write=False)
        tables.append(t)
    return tables[0], tables[1]


@functools.cache
def zigzag_quant_vector(block_size: int, quality: int) -> np.ndarray:
    """The 3B^2 quantization step of each channel id (zigzag order, Y then Cb then Cr)."""
    luma, chroma = quant_tables(block_size, quality)
    zz = zigzag(block_size)
    v = np.concatenate([luma.ravel()[zz], chroma.ravel()[zz], chroma.ravel()[zz]])
    v.setflags(write=False)
    return v


@functools.cache
def channel_order(block_size: int, ordering: str, interval: int = 4) -> np.ndarray:
    """The channel ids in the order the ordering emits them (a permutation of 3B^2)."""
    if ordering not in ORDERINGS:
        raise ValueError(f"ordering={ordering!r}: must be one of {ORDERINGS}")
    n = block_size * block_size
    i = np.arange(n)
    if ordering == "luma_first":
        luma = list(range(n))
        chroma = np.stack([n + i, 2 * n + i], axis=1).ravel().tolist()
        out = np.array(luma + chroma, dtype=np.int64)
    else:
        keys = np.concatenate([i, interval * i, interval * i])
        planes = np.repeat(np.arange(3), n)
        out = np.lexsort((planes, keys)).astype(np.int64)  # last key is primary
    out.setflags(write=False)
    return out


@functools.cache
def channel_rank(block_size: int, ordering: str, interval: int = 4) -> np.ndarray:
    """rank[channel id] = where that channel comes in the ordering; the stop token ranks last."""
    order = channel_order(block_size, ordering, interval)
    rank = np.empty(order.size + 1, dtype=np.int64)
    rank[order] = np.arange(order.size)
    rank[-1] = order.size
    rank.setflags(write=False)
    return rank


# ----------------------------------------------------------------------------------------------
# Input checks and resizing.


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Validates an image and returns it as uint8 HxWx3.

    Accepted: uint8 HxW or HxWx1 (grayscale, replicated to RGB so its chroma is empty), HxWx3
    (RGB) and HxWx4 (RGBA, composited on white). Anything else raises ValueError.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image dtype is {image.dtype}; expected uint8 (values 0..255)")
    if image.size == 0:
        raise ValueError(f"image is empty (shape {image.shape})")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"image shape {image.shape} is not an image: expected HxW or HxWxC with C in "
            "1 (gray), 3 (RGB) or 4 (RGBA)"
        )
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    if image.shape[2] == 4:
        alpha = image[:, :, 3:].astype(np.float32) / 255.0
        rgb = image[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return image


def target_size(height: int, width: int, cfg: DCTConfig) -> tuple[int, int]:
    """The (height, width) an image of this size is resized to (see the module docstring)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size {height}x{width} is empty")
    long_side = max(height, width)
    # No shortcut when the long side already equals the resolution: the short side is rounded
    # all the same, or the extent rule could not recover the size of its samples.
    step = 2 * cfg.block_size
    short = min(height, width) * cfg.resolution / long_side
    short = max(step, int(round(short / step)) * step)
    short = min(short, cfg.resolution)
    return (cfg.resolution, short) if height >= width else (short, cfg.resolution)


def resize(image: np.ndarray, cfg: DCTConfig) -> np.ndarray:
    """Resizes a uint8 HxWx3 image so its long side equals cfg.resolution (Lanczos)."""
    h, w = image.shape[:2]
    th, tw = target_size(h, w, cfg)
    if (th, tw) == (h, w):
        return image
    from PIL import Image

    out = Image.fromarray(image).resize((tw, th), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(out, dtype=np.uint8)


# ----------------------------------------------------------------------------------------------
# Forward transform.
#
# Planes are kept channel-major, (B^2, rows, cols), through quantization so that the non-zero
# scan below yields triples grouped by channel with positions ascending, without a sort.


def _round_half_away(x: np.ndarray) -> np.ndarray:
    return np.trunc(x + np.copysign(np.float32(0.5), x))


def rgb_to_ycbcr(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 HxWx3 RGB -> float32 Y, Cb, Cr planes rounded to integer samples as libjpeg does.

    Y is centred on 0 (-128); Cb and Cr keep their +128 offset until after downsampling.
    """
    r, g, b = rgb.transpose(2, 0, 1).astype(np.float32, order="C")  # planar: contiguous math
    m = RGB_TO_YCBCR.astype(np.float32)
    out = []
    for row, offset in zip(m, (np.float32(-127.5), np.float32(128.5), np.float32(128.5))):
        # offset: +0.5 turns floor into round-half-up; luma is centred (-128) at the same time.
        p = row[0] * r
        p += row[1] * g
        p += row[2] * b
        p += offset
        out.append(np.floor(p, out=p))
    return out[0], out[1], out[2]


def downsample_chroma(plane: np.ndarray) -> np.ndarray:
    """(2h, 2w) chroma with its +128 offset -> (h, w) centred 2x2 means.

    The mean is rounded to an integer sample with libjpeg's alternating bias (1, 2, 1, 2, ...
    across columns), so rounding errors do not drift one way.
    """
    s = plane[0::2, 0::2] + plane[1::2, 0::2] + plane[0::2, 1::2] + plane[1::2, 1::2]
    bias = np.where(np.arange(s.shape[1]) % 2, np.float32(2), np.float32(1))
    return np.floor((s + bias) * np.float32(0.25)) - np.float32(128)


def _pad_to(plane: np.ndarray, multiple: int) -> np.ndarray:
    h, w = plane.shape[:2]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        plane = np.pad(plane, ((0, ph), (0, pw)) + ((0, 0),) * (plane.ndim - 2), mode="edge")
    return plane


def block_dct(plane: np.ndarray, block_size: int) -> np.ndarray:
    """(H, W) float plane, H and W multiples of B -> (H/B, W/B, B, B) orthonormal DCT blocks."""
    h, w = plane.shape
    m = dct_matrix(block_size).astype(np.float32)
    blocks = plane.reshape(h // block_size, block_size, w // block_size, block_size)
    # D = M X M^T per block: rows with M, columns with M.
    return np.einsum("ij,ajbk,lk->abil", m, blocks.astype(np.float32), m, optimize=True)


def block_dct_zigzag(plane: np.ndarray, block_size: int) -> np.ndarray:
    """(H, W) plane -> (B^2, H/B, W/B) DCT coefficients, channel-major, in zigzag order."""
    h, w = plane.shape
    b = block_size
    m = dct_matrix(b).astype(np.float32)
    x = plane.astype(np.float32, copy=False).reshape(h // b, b, w // b, b)
    t = x @ m.T  # (h/B, pixel row, w/B, column frequency)
    t = np.tensordot(m, t, axes=(1, 1))  # (row frequency, h/B, w/B, column frequency)
    zz = zigzag(b)
    return t[zz // b, :, :, zz % b]


def block_idct(coeffs: np.ndarray) -> np.ndarray:
    """(h, w, B, B) DCT blocks -> (h*B, w*B) plane: the inverse of block_dct."""
    gh, gw, b, _ = coeffs.shape
    m = dct_matrix(b).astype(np.float32)
    planes = np.einsum("ji,abjl,lk->aibk", m, coeffs.astype(np.float32), m, optimize=True)
    return planes.reshape(gh * b, gw * b)


def _rounded_planes(image: np.ndarray, cfg: DCTConfig) -> tuple[list[np.ndarray], int, int]:
    """Image -> [Y, Cb, Cr] quantized (rounded, not yet clipped) float32 (B^2, rows, cols)
    planes, and the resized height and width."""
    rgb = resize(as_rgb(image), cfg)
    height, width = rgb.shape[:2]
    b = cfg.block_size
    y, cb, cr = rgb_to_ycbcr(_pad_to(rgb, 2 * b))
    luma_t, chroma_t = quant_tables(b, cfg.quality)
    zz = zigzag(b)
    planes = []
    for plane, table in (
        (y, luma_t),
        (downsample_chroma(cb), chroma_t),
        (downsample_chroma(cr), chroma_t),
    ):
        coeffs = block_dct_zigzag(plane, b)
        step = table.ravel()[zz].astype(np.float32)[:, None, None]
        planes.append(_round_half_away(coeffs / step))
    return planes, height, width


def quantized_planes(image: np.ndarray, cfg: DCTConfig) -> tuple[list[np.ndarray], int, int, int]:
    """Image -> the three quantized DCT images, each (rows, cols, B^2) int32 in zigzag order.

    Returns ([Y (h, w, B^2), Cb (h/2, w/2, B^2), Cr (h/2, w/2, B^2)], clipped, height, width),
    where h and w count the blocks that cover the (resized) image.
    """
    planes, height, width = _rounded_planes(image, cfg)
    clipped = sum(int(np.count_nonzero(np.abs(p) > cfg.clip)) for p in planes)
    out = [np.clip(p, -cfg.clip, cfg.clip).astype(np.int32).transpose(1, 2, 0) for p in planes]
    return out, clipped, height, width


@functools.cache
def _position_lut(rows: int, cols: int, scale: int, grid: int) -> np.ndarray:
    """Canvas position of each cell of a (rows, cols) plane whose cells span `scale` blocks."""
    lut = (np.arange(rows)[:, None] * (scale * grid) + np.arange(cols)[None, :] * scale).ravel()
    lut = lut.astype(np.int32)
    lut.setflags(write=False)
    return lut


def _canvas_check(height: int, width: int, cfg: DCTConfig) -> None:
    if max(height, width) > cfg.resolution:
        raise ValueError(
            f"image {height}x{width} is larger than the {cfg.resolution}x{cfg.resolution} canvas"
        )


def encode(image: np.ndarray, cfg: DCTConfig) -> DCTSequence:
    """Encodes a uint8 image as sparse DCT triples in the config's ordering (section 2).

    Args:
      image: uint8 HxWx3 RGB (HxW / HxWx1 grayscale and HxWx4 RGBA are accepted too).
      cfg: the representation.

    Returns:
      A DCTSequence: the non-zero triples, no stop token, and the resized height and width.
    """
    planes, height, width = _rounded_planes(image, cfg)
    return triples_from_planes(planes, height, width, cfg)


def triples_from_planes(
    planes: list[np.ndarray], height: int, width: int, cfg: DCTConfig
) -> DCTSequence:
    """The back half of `encode`: rounded (unclipped) channel-major planes -> the sequence.

    Args:
      planes: [Y (B^2, h, w), Cb (B^2, h/2, w/2), Cr (B^2, h/2, w/2)], zigzag channel order,
        any real or integer dtype holding whole numbers.
      height, width: the image's size in pixels.
      cfg: the representation.
    """
    _canvas_check(height, width, cfg)
    g, n = cfg.grid, cfg.channels_per_plane
    # Scan each plane channel-major: triples come out grouped by channel id, positions ascending.
    parts_c, parts_p, parts_v, parts_n = [], [], [], []
    for plane_index, plane in enumerate(planes):
        _, rows, cols = plane.shape
        mask = plane.reshape(n, rows * cols) != 0
        counts = np.count_nonzero(mask, axis=1)
        idx = np.flatnonzero(mask)
        cell = idx - np.repeat(np.arange(n) * (rows * cols), counts)  # index in (rows, cols)
        parts_p.append(_position_lut(rows, cols, 1 if plane_index == 0 else 2, g)[cell])
        parts_c.append(
            np.repeat(np.arange(plane_index * n, (plane_index + 1) * n, dtype=np.int32), counts)
        )
        parts_v.append(plane.reshape(-1)[idx].astype(np.int32, copy=False))
        parts_n.append(counts)
    channels = np.concatenate(parts_c)
    positions = np.concatenate(parts_p)
    values = np.concatenate(parts_v)
    counts = np.concatenate(parts_n)
    clipped = int(np.count_nonzero(np.abs(values) > cfg.clip))
    if clipped:
        values = np.clip(values, -cfg.clip, cfg.clip)
    # Move each channel's run, intact, to where the ordering puts that channel: runs that stay
    # adjacent (e.g. consecutive luma channels) are merged, then copied in emission order.
    order = channel_order(cfg.block_size, cfg.ordering, cfg.interval)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])[order]  # source start, emitted order
    lengths = counts[order]
    breaks = np.flatnonzero(first[1:] != first[:-1] + lengths[:-1]) + 1
    starts = first[np.concatenate([[0], breaks])]
    ends = (first + lengths)[np.concatenate([breaks - 1, [order.size - 1]])]
    spans = [slice(a, b) for a, b in zip(starts.tolist(), ends.tolist()) if b > a]
    out = [
        np.concatenate([arr[sp] for sp in spans]) if spans else arr[:0]
        for arr in (channels, positions, values)
    ]
    return DCTSequence(
        channels=out[0].astype(np.int32, copy=False),
        positions=out[1].astype(np.int32, copy=False),
        values=out[2],
        height=height,
        width=width,
        num_clipped=clipped,
    )


# ----------------------------------------------------------------------------------------------
# DCT images.


def dct_image(seq: DCTSequence, cfg: DCTConfig, num_triples: int | None = None) -> np.ndarray:
    """Scatters (a prefix of) the triples into the dense G x G x 3B^2 int32 DCT image.

    Chroma sits at even positions (its luma position); other chroma cells stay zero.
    """
    n = len(seq) if num_triples is None else int(num_triples)
    channels, positions, values = seq.channels[:n], seq.positions[:n], seq.values[:n]
    check_triples(channels, positions, values, cfg)
    g = cfg.grid
    out = np.zeros((g * g, 3 * cfg.channels_per_plane), dtype=np.int32)
    out[positions, channels] = values
    return out.reshape(g, g, -1)


def check_triples(channels, positions, values, cfg: DCTConfig) -> None:
    """Raises ValueError when triples fall outside the config's vocabularies."""
    if not (len(channels) == len(positions) == len(values)):
        raise ValueError(
            f"channels, positions and values differ in length: "
            f"{len(channels)}, {len(positions)}, {len(values)}"
        )
    if len(channels) == 0:
        return
    if channels.min() < 0 or channels.max() >= cfg.stop_token:
        raise ValueError(f"channels outside [0, {cfg.stop_token}) (the stop token is not stored)")
    if positions.min() < 0 or positions.max() >= cfg.num_positions:
        raise ValueError(f"positions outside [0, {cfg.num_positions})")
    if np.abs(values).max() > cfg.clip:
        raise ValueError(f"values outside [-{cfg.clip}, {cfg.clip}]")
    chroma = channels >= cfg.channels_per_plane
    if np.any(positions[chroma] % 2) or np.any((positions[chroma] // cfg.grid) % 2):
        raise ValueError("a chroma triple sits at an odd row or column; chroma uses even positions")


def image_blocks(height: int, width: int, cfg: DCTConfig) -> tuple[int, int]:
    """The luma block rows and columns that hold an image of this size: it is edge-padded to a
    multiple of 2B before its DCT, so its triples lie at rows < the first, columns < the second."""
    step = 2 * cfg.block_size
    return -(-int(height) // step) * 2, -(-int(width) // step) * 2


# The rules of a stored sequence, in the order `check_sequence` tries them at each triple, and
# the message of each. The messages are templates: i, c, p, v are the triple's index, channel,
# position and value; prev_c, prev_p the previous triple's channel and position; row, col the
# position's block row and column; height, width the image's size and rows, cols the block rows
# and columns that hold it (`image_blocks`); stop, positions, clip, ordering the config's. The
# SavedModel's log_prob checks the same rules in the graph and fills the same templates (no
# apostrophes: TensorFlow escapes them in an assertion's message).
SEQUENCE_RULES = (
    "channel out of range",
    "position out of range",
    "value out of range",
    "zero value",
    "channels out of order",
    "positions not ascending within a channel",
    "chroma at an odd row or column",
    "position outside the image",
)


SEQUENCE_MESSAGES = (
    "triple {i}: channel {c} outside [0, {stop}) (the stop token {stop} is not stored)",
    "triple {i}: position {p} outside [0, {positions})",
    "triple {i}: value {v} outside [-{clip}, {clip}]",
    "triple {i}: value 0 (channel {c}, position {p}); stored values are never zero",
    "triple {i}: channel {c} comes before channel {prev_c} of the previous triple in the "
    "{ordering} ordering; channels must follow the ordering",
    "triple {i}: position {p} of channel {c} does not come after position {prev_p} of the "
    "previous triple; positions must ascend within a channel",
    "triple {i}: chroma channel {c} at position {p} (row {row}, column {col}); chroma sits at "
    "even rows and columns only",
    "triple {i}: position {p} (row {row}, column {col}) lies outside the {height}x{width} "
    "image, whose blocks are rows [0, {rows}) and columns [0, {cols})",
)


def sequence_violations(channels, positions, values, cfg: DCTConfig, height=None, width=None):
    """Which triple breaks which rule: a (len(SEQUENCE_RULES), L) bool array (rows in
    SEQUENCE_RULES' order). height and width None: no image rule (its row is all False)."""
    c = np.asarray(channels, np.int64)
    p = np.asarray(positions, np.int64)
    v = np.asarray(values, np.int64)
    stop, g = cfg.stop_token, cfg.grid
    in_vocab = (c >= 0) & (c < stop)
    rank = channel_rank(cfg.block_size, cfg.ordering, cfg.interval)[np.where(in_vocab, c, 0)]
    prev_rank = np.concatenate([[-1], rank[:-1]])
    same = np.concatenate([[False], c[1:] == c[:-1]])
    prev_p = np.concatenate([[-1], p[:-1]])
    row, col = p // g, p % g
    chroma = in_vocab & (c >= cfg.channels_per_plane)
    if height is None or width is None:
        outside = np.zeros(c.shape, bool)
    else:
        rows, cols = image_blocks(height, width, cfg)
        outside = (row >= rows) | (col >= cols)
    return np.stack(
        [
            ~in_vocab,
            (p < 0) | (p >= g * g),
            np.abs(v) > cfg.clip,
            v == 0,
            rank < prev_rank,
            same & (p <= prev_p),
            chroma & ((row % 2 == 1) | (col % 2 == 1)),
            outside,
        ]
    )


def check_sequence(channels, positions, values, cfg: DCTConfig, height=None, width=None) -> None:
    """Raises ValueError unless the triples are a sequence the codec can produce: ids within
    the vocabularies, non-zero values, channels in the ordering, positions ascending within a
    channel, chroma at even rows and columns, and (given height and width) every position on
    the blocks of a height x width image. The message names the first triple that breaks a
    rule and the rule (`SEQUENCE_MESSAGES`). The stop token is not part of the triples.
    """
    if not (len(channels) == len(positions) == len(values)):
        raise ValueError(
            f"channels, positions and values differ in length: "
            f"{len(channels)}, {len(positions)}, {len(values)}"
        )
    broken = sequence_violations(channels, positions, values, cfg, height, width)
    bad = np.flatnonzero(broken.any(axis=0))
    if not bad.size:
        return
    i = int(bad[0])
    rule = int(np.argmax(broken[:, i]))
    c, p, v = int(channels[i]), int(positions[i]), int(values[i])
    rows, cols = image_blocks(height, width, cfg) if height is not None else (0, 0)
    parts = dict(
        i=i, c=c, p=p, v=v,
        prev_c=int(channels[i - 1]) if i else -1, prev_p=int(positions[i - 1]) if i else -1,
        row=p // cfg.grid, col=p % cfg.grid, height=height, width=width, rows=rows, cols=cols,
        stop=cfg.stop_token, positions=cfg.num_positions, clip=cfg.clip, ordering=cfg.ordering,
    )  # fmt: skip
    raise ValueError(SEQUENCE_MESSAGES[rule].format(**parts))


# ----------------------------------------------------------------------------------------------
# Inverse transform.


def _upsample_fancy(x: np.ndarray, axis: int) -> np.ndarray:
    """2x triangle-filter upsampling along an axis (libjpeg's "fancy" upsampling)."""
    n = x.shape[axis]
    prev = np.take(x, np.r_[0, np.arange(n - 1)], axis=axis)
    nxt = np.take(x, np.r_[np.arange(1, n), n - 1], axis=axis)
    even = 0.75 * x + 0.25 * prev
    odd = 0.75 * x + 0.25 * nxt
    out = np.stack([even, odd], axis=axis + 1)
    shape = list(x.shape)
    shape[axis] = 2 * n
    return out.reshape(shape)


def _to_samples(plane: np.ndarray) -> np.ndarray:
    """Rounds a centred plane to integer 8-bit samples (half up), kept centred."""
    return np.clip(np.floor(plane + np.float32(0.5)), -128.0, 127.0)


def upsample_chroma(plane: np.ndarray) -> np.ndarray:
    """(h, w) chroma -> (2h, 2w) with the separable triangle filter."""
    return _upsample_fancy(_upsample_fancy(plane, 0), 1)


def ycbcr_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """Centred float Y, Cb, Cr planes -> uint8 HxWx3 RGB (JFIF), rounded and clipped."""
    m = YCBCR_TO_RGB.astype(np.float32)
    y = y + np.float32(128.5)  # +0.5: round half up with floor below
    out = np.empty(y.shape + (3,), dtype=np.uint8)
    out[..., 0] = np.clip(np.floor(y + m[0, 2] * cr), 0, 255)
    out[..., 1] = np.clip(np.floor(y + m[1, 1] * cb + m[1, 2] * cr), 0, 255)
    out[..., 2] = np.clip(np.floor(y + m[2, 1] * cb), 0, 255)
    return out


def decode_dct_image(dense: np.ndarray, cfg: DCTConfig, height: int, width: int) -> np.ndarray:
    """The dense G x G x 3B^2 quantized DCT image -> uint8 height x width x 3 RGB."""
    b, n, g = cfg.block_size, cfg.channels_per_plane, cfg.grid
    step = 2 * b
    hb = -(-height // step) * 2  # luma blocks covering the image, rounded up to even
    wb = -(-width // step) * 2
    if hb > g or wb > g:
        raise ValueError(f"{height}x{width} does not fit the {cfg.resolution} canvas")
    qvec = zigzag_quant_vector(b, cfg.quality).astype(np.float32)
    inv_zz = np.argsort(zigzag(b))
    deq = dense[:hb, :wb].astype(np.float32) * qvec
    luma = deq[:, :, :n][:, :, inv_zz].reshape(hb, wb, b, b)
    # Like a JPEG decoder, planes become integer samples (clamped to the 8-bit range) before
    # upsampling and colour conversion: the encoder rounded them to integers, so at high quality
    # rounding recovers them exactly.
    planes = [_to_samples(block_idct(luma))]
    for c in (1, 2):
        chroma = deq[0::2, 0::2, c * n : (c + 1) * n][:, :, inv_zz].reshape(hb // 2, wb // 2, b, b)
        planes.append(_to_samples(upsample_chroma(_to_samples(block_idct(chroma)))))
    return ycbcr_to_rgb(*(p[:height, :width] for p in planes))


def decode(seq: DCTSequence, cfg: DCTConfig, num_triples: int | None = None) -> np.ndarray:
    """Decodes triples (or their first num_triples) to a uint8 seq.height x seq.width x 3 image."""
    return decode_dct_image(dct_image(seq, cfg, num_triples), cfg, seq.height, seq.width)


def extent_from_positions(positions: np.ndarray, cfg: DCTConfig) -> tuple[int, int]:
    """The image size implied by a sampled sequence's positions (the module's extent rule)."""
    positions = np.asarray(positions)
    if positions.size == 0:
        return 2 * cfg.block_size, 2 * cfg.block_size
    rows, cols = positions // cfg.grid, positions % cfg.grid
    step = 2 * cfg.block_size
    to_pixels = lambda blocks: (-(-(int(blocks.max()) + 1) * cfg.block_size // step)) * step
    return to_pixels(rows), to_pixels(cols)


# ----------------------------------------------------------------------------------------------
# Sizes, in bits (Figure 3).


def num_subpixels(height: int, width: int) -> int:
    return 3 * int(height) * int(width)


def dense_bits(height: int, width: int, cfg: DCTConfig) -> float:
    """Bits of the dense DCT representation: every coefficient of the block-covered image, each
    a symbol from the value vocabulary (log2(2 * clip + 1) bits)."""
    step = 2 * cfg.block_size
    hp, wp = -(-height // step) * step, -(-width // step) * step
    coefficients = hp * wp + 2 * (hp // 2) * (wp // 2)
    return coefficients * math.log2(cfg.num_values)


def sparse_bits(length: int, cfg: DCTConfig) -> float:
    """Bits of the sparse representation: length + 1 triples (the stop token included), each
    costing log2 of the channel, position and value vocabularies."""
    per_triple = math.log2(cfg.num_channels) + math.log2(cfg.num_positions)
    per_triple += math.log2(cfg.num_values)
    return (int(length) + 1) * per_triple
