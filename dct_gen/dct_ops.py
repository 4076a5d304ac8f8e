"""The sparse DCT codec as TensorFlow ops, for tf.data and tf.function (graph mode, XLA-friendly).

It mirrors `dct_gen.representation` (the numpy reference; tests check that the two agree) for what
the input pipeline and the sampler need in a graph:

- `dct_image_from_triples`: (a prefix of) triples -> the dense G x G x 3B^2 DCT image;
- `encode_dct_image`: a uint8 image already at its target size -> its dense quantized DCT image;
- `decode_dct_image`: a dense DCT image (batched or not) -> uint8 pixels on the canvas;
- `encode`: `representation.encode` with an XLA-compiled front end (colour, downsampling, DCT,
  quantization), the fast path for bulk conversion on CPU.

Dense DCT images use channel ids as the last axis (Y, Cb, Cr planes, each in zigzag order) and
put chroma block (r, c) at luma position (2r, 2c); the other chroma cells are zero.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from dct_gen import representation as rep


def _tables(cfg: rep.DCTConfig):
    b = cfg.block_size
    m = tf.constant(rep.dct_matrix(b), tf.float32)
    zz = rep.zigzag(b)
    qvec = tf.constant(rep.zigzag_quant_vector(b, cfg.quality), tf.float32)
    return m, zz, qvec


def dct_image_from_triples(channels, positions, values, cfg: rep.DCTConfig, num_triples=None):
    """Scatters triples into dense DCT images.

    Args:
      channels, positions, values: int tensors of shape (L,) or (batch, L).
      cfg: the representation.
      num_triples: optional scalar or (batch,) int tensor; only the first num_triples triples of
        each row are scattered (the input slice of a chunk, or a sampling prefix). Entries past it
        may hold anything, the stop token and padding included.

    Returns:
      int32 tensor (G, G, 3B^2), or (batch, G, G, 3B^2).
    """
    channels = tf.convert_to_tensor(channels)
    batched = channels.shape.rank == 2
    if not batched:
        channels, positions, values = (tf.expand_dims(t, 0) for t in (channels, positions, values))
        if num_triples is not None:
            num_triples = tf.reshape(num_triples, [1])
    channels = tf.cast(channels, tf.int32)
    positions = tf.cast(positions, tf.int32)
    values = tf.cast(values, tf.int32)
    batch, length = tf.shape(channels)[0], tf.shape(channels)[1]
    g, depth = cfg.grid, 3 * cfg.channels_per_plane
    keep = (channels >= 0) & (channels < depth) & (positions >= 0) & (positions < g * g)
    if num_triples is not None:
        n = tf.broadcast_to(tf.reshape(tf.cast(num_triples, tf.int32), [-1, 1]), [batch, 1])
        keep &= tf.range(length)[None, :] < n
    # Dropped entries scatter a zero into cell 0; scatter_nd adds, so they change nothing.
    rows = tf.broadcast_to(tf.range(batch)[:, None], [batch, length])
    flat = tf.where(keep, positions * depth + channels, 0)
    idx = tf.stack([rows, flat], axis=-1)
    dense = tf.scatter_nd(idx, tf.where(keep, values, 0), [batch, g * g * depth])
    dense = tf.reshape(dense, [batch, g, g, depth])
    return dense if batched else dense[0]


# ----------------------------------------------------------------------------------------------
# Forward: pixels -> dense quantized DCT image.


def _round_half_away(x):
    return tf.math.sign(x) * tf.floor(tf.abs(x) + 0.5)


def _edge_pad(plane, multiple: int):
    """Edge-replicates a (h, w) plane up to multiples of `multiple` (dynamic sizes allowed)."""
    h, w = tf.shape(plane)[0], tf.shape(plane)[1]
    hp = (h + multiple - 1) // multiple * multiple
    wp = (w + multiple - 1) // multiple * multiple
    plane = tf.gather(plane, tf.minimum(tf.range(hp), h - 1), axis=0)
    return tf.gather(plane, tf.minimum(tf.range(wp), w - 1), axis=1)


def _block_dct_zigzag(plane, m, zz, block_size: int):
    """(H, W) -> (H/B, W/B, B^2) zigzag DCT coefficients."""
    b = block_size
    h, w = tf.shape(plane)[0] // b, tf.shape(plane)[1] // b
    blocks = tf.reshape(plane, [h, b, w, b])
    coeffs = tf.einsum("ij,ajbk,lk->abil", m, blocks, m)
    return tf.gather(tf.reshape(coeffs, [h, w, b * b]), zz, axis=-1)


def encode_dct_image(image, cfg: rep.DCTConfig):
    """A uint8 (h, w, 3) RGB image, already at its target size, -> int32 (G, G, 3B^2).

    Same rules as `representation.encode` (colour rounding, edge padding, libjpeg's chroma
    downsampling, quantization, clipping); resizing is the caller's, and h, w <= resolution.
    """
    b, g, n = cfg.block_size, cfg.grid, cfg.channels_per_plane
    m, zz, qvec = _tables(cfg)
    image = tf.convert_to_tensor(image)
    tf.debugging.assert_rank(image, 3, message="encode_dct_image: image must be (h, w, 3)")
    rgb = _edge_pad(tf.cast(image[..., :3], tf.float32), 2 * b)
    coef = tf.constant(rep.RGB_TO_YCBCR, tf.float32)
    ycc = tf.floor(tf.einsum("hwc,kc->hwk", rgb, coef) + tf.constant([0.5, 128.5, 128.5]))
    planes = [_block_dct_zigzag(ycc[..., 0] - 128.0, m, zz, b)]
    for c in (1, 2):
        p = ycc[..., c]
        s = p[0::2, 0::2] + p[1::2, 0::2] + p[0::2, 1::2] + p[1::2, 1::2]
        bias = tf.where(tf.range(tf.shape(s)[1]) % 2 == 1, 2.0, 1.0)
        sub = tf.floor((s + bias) * 0.25) - 128.0
        planes.append(_block_dct_zigzag(sub, m, zz, b))
    q = [_round_half_away(p / qvec[i * n : (i + 1) * n]) for i, p in enumerate(planes)]
    q = [tf.cast(tf.clip_by_value(p, -cfg.clip, cfg.clip), tf.int32) for p in q]
    hb, wb = tf.shape(q[0])[0], tf.shape(q[0])[1]
    # Chroma block (r, c) moves to luma position (2r, 2c): interleave with zero rows/columns.
    chroma = tf.concat(q[1:], axis=-1)  # (hb/2, wb/2, 2B^2)
    chroma = tf.stack([chroma, tf.zeros_like(chroma)], axis=1)
    chroma = tf.reshape(chroma, [hb, wb // 2, 2 * n])
    chroma = tf.stack([chroma, tf.zeros_like(chroma)], axis=2)
    chroma = tf.reshape(chroma, [hb, wb, 2 * n])
    dense = tf.concat([q[0], chroma], axis=-1)
    dense = tf.pad(dense, [[0, g - hb], [0, g - wb], [0, 0]])
    return tf.ensure_shape(dense, [g, g, 3 * n])


# ----------------------------------------------------------------------------------------------
# Inverse: dense DCT image -> pixels.


def _idct_planes(coeffs, m, inv_zz, block_size: int):
    """(..., h, w, B^2) zigzag coefficients -> (..., h*B, w*B) pixels."""
    b = block_size
    shape = tf.shape(coeffs)
    lead = shape[:-3]
    h, w = shape[-3], shape[-2]
    blocks = tf.gather(coeffs, inv_zz, axis=-1)
    blocks = tf.reshape(blocks, tf.concat([lead, [h, w, b, b]], 0))
    pixels = tf.einsum("ji,...abjl,lk->...aibk", m, blocks, m)
    return tf.reshape(pixels, tf.concat([lead, [h * b, w * b]], 0))


def _to_samples(x):
    return tf.clip_by_value(tf.floor(x + 0.5), -128.0, 127.0)


def _fancy_upsample(x, axis: int, valid):
    """2x triangle-filter upsampling along axis -2 or -1 of (..., H, W), replicating the edge at
    row/column `valid - 1` (broadcastable over the leading axes), as libjpeg does."""
    n = x.shape[axis]
    idx = tf.range(n)
    prev = tf.gather(x, tf.maximum(idx - 1, 0), axis=axis)
    nxt = tf.gather(x, tf.minimum(idx + 1, n - 1), axis=axis)
    if axis == -2:
        at_edge = idx[:, None] + 1 >= valid[..., None, None]
    else:
        at_edge = idx[None, :] + 1 >= valid[..., None, None]
    nxt = tf.where(at_edge, x, nxt)
    even = 0.75 * x + 0.25 * prev
    odd = 0.75 * x + 0.25 * nxt
    out = tf.stack([even, odd], axis=axis)  # (..., n, 2, W) or (..., H, n, 2)
    shape = tf.shape(x)
    if axis == -2:
        return tf.reshape(out, tf.concat([shape[:-2], [2 * n, shape[-1]]], 0))
    return tf.reshape(out, tf.concat([shape[:-1], [2 * n]], 0))


def decode_dct_image(dense, cfg: rep.DCTConfig, height=None, width=None):
    """Dense quantized DCT images -> uint8 RGB pixels on the whole canvas.

    Args:
      dense: int tensor (G, G, 3B^2) or (batch, G, G, 3B^2).
      cfg: the representation.
      height, width: the image size, scalars or (batch,) tensors; they set where the chroma
        filter replicates the edge, exactly as `representation.decode` does. Default: the canvas.

    Returns:
      uint8 tensor (R, R, 3) or (batch, R, R, 3), R = resolution; crop to (height, width).
    """
    b, n, g = cfg.block_size, cfg.channels_per_plane, cfg.grid
    m, zz, qvec = _tables(cfg)
    inv_zz = np.argsort(zz)
    dense = tf.convert_to_tensor(dense)
    batched = dense.shape.rank == 4
    if not batched:
        dense = dense[None]
    batch = tf.shape(dense)[0]
    height = tf.fill([batch], cfg.resolution) if height is None else height
    width = tf.fill([batch], cfg.resolution) if width is None else width
    height = tf.broadcast_to(tf.reshape(tf.cast(height, tf.int32), [-1]), [batch])
    width = tf.broadcast_to(tf.reshape(tf.cast(width, tf.int32), [-1]), [batch])
    deq = tf.cast(dense, tf.float32) * qvec
    # Planes become integer 8-bit samples before upsampling and colour conversion, as in
    # `representation.decode_dct_image`.
    luma = _to_samples(_idct_planes(deq[..., :n], m, inv_zz, b))
    # Chroma rows/columns that belong to the image's (2B-padded) block region.
    step = 2 * b
    valid_h = (height + step - 1) // step * b
    valid_w = (width + step - 1) // step * b
    planes = [luma]
    for c in (1, 2):
        chroma = _to_samples(_idct_planes(deq[:, 0::2, 0::2, c * n : (c + 1) * n], m, inv_zz, b))
        chroma = _fancy_upsample(chroma, -2, valid_h)
        chroma = _fancy_upsample(chroma, -1, valid_w)
        planes.append(_to_samples(chroma))
    ycc = tf.stack(planes, axis=-1) + tf.constant([128.0, 0.0, 0.0])
    rgb = tf.einsum("...k,ck->...c", ycc, tf.constant(rep.YCBCR_TO_RGB, tf.float32))
    rgb = tf.cast(tf.clip_by_value(tf.floor(rgb + 0.5), 0.0, 255.0), tf.uint8)
    rgb = tf.ensure_shape(rgb, [None, g * b, g * b, 3])
    return rgb if batched else rgb[0]


# ----------------------------------------------------------------------------------------------
# `representation.encode` with an XLA front end.


def _front_end(rgb, cfg: rep.DCTConfig):
    """Padded uint8 (H, W, 3) -> [Y, Cb, Cr] rounded, unclipped (B^2, h, w) int32 planes: the
    same arithmetic as `representation._rounded_planes`, fused by XLA into a few loops."""
    b = cfg.block_size
    n = b * b
    m = tf.constant(rep.dct_matrix(b), tf.float32)
    zz = rep.zigzag(b)
    luma_t, chroma_t = rep.quant_tables(b, cfg.quality)
    coef = tf.constant(rep.RGB_TO_YCBCR, tf.float32)
    offsets = tf.constant([-127.5, 128.5, 128.5])[:, None, None]
    ycc = tf.floor(tf.einsum("hwc,kc->khw", tf.cast(rgb, tf.float32), coef) + offsets)

    def dct(plane, table):
        h, w = plane.shape
        x = tf.reshape(plane, [h // b, b, w // b, b])
        c = tf.reshape(tf.einsum("ij,ajbk,lk->ilab", m, x, m), [n, h // b, w // b])
        step = tf.constant(table.ravel()[zz], tf.float32)[:, None, None]
        c = tf.gather(c, zz) / step
        return tf.cast(tf.sign(c) * tf.floor(tf.abs(c) + 0.5), tf.int32)

    planes = [dct(ycc[0], luma_t)]
    for c in (1, 2):
        p = ycc[c]
        s = p[0::2, 0::2] + p[1::2, 0::2] + p[0::2, 1::2] + p[1::2, 1::2]
        bias = tf.where(tf.range(s.shape[1]) % 2 == 1, 2.0, 1.0)
        planes.append(dct(tf.floor((s + bias) * 0.25) - 128.0, chroma_t))
    return planes


_FRONT_ENDS: dict = {}


def encode(image: np.ndarray, cfg: rep.DCTConfig) -> rep.DCTSequence:
    """`representation.encode` with the colour, DCT and quantization steps compiled by XLA.

    Same input checks, resizing and output as the numpy path, up to the rare coefficient on a
    rounding edge (float summation order differs; tests compare the two); faster on CPU. The
    numpy back end (`representation.triples_from_planes`) extracts the triples: XLA's CPU
    scatter is slower at that. One compilation per distinct padded image size and config.
    """
    rgb = rep.resize(rep.as_rgb(image), cfg)
    height, width = rgb.shape[:2]
    step = 2 * cfg.block_size
    ph, pw = -height % step, -width % step
    if ph or pw:
        rgb = np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode="edge")
    key = (cfg.block_size, cfg.quality)
    if key not in _FRONT_ENDS:
        fn = functools.partial(_front_end, cfg=cfg)
        _FRONT_ENDS[key] = tf.function(fn, jit_compile=True, reduce_retracing=False)
    planes = [p.numpy() for p in _FRONT_ENDS[key](tf.constant(rgb))]
    return rep.triples_from_planes(planes, height, width, cfg)


# ----------------------------------------------------------------------------------------------
# Dense DCT image -> triples (the inverse of `dct_image_from_triples`).


def triples_from_dct_image(dense, cfg: rep.DCTConfig, channels=None):
    """The non-zero coefficients of one dense (G, G, 3B^2) image as triples, in the ordering.

    Args:
      dense: int tensor (G, G, 3B^2).
      cfg: the representation (its ordering sets the channel order).
      channels: optional channel ids, a subset; default every channel. They are emitted in the
        ordering's rank, within a channel positions ascending, as `representation.encode` does.

    Returns:
      channels, positions, values: int32 tensors (L,).
    """
    order = rep.channel_order(cfg.block_size, cfg.ordering, cfg.interval)
    if channels is not None:
        wanted = set(int(c) for c in channels)
        order = np.array([c for c in order if int(c) in wanted], np.int64)
    g = cfg.grid
    flat = tf.reshape(tf.cast(dense, tf.int32), [g * g, 3 * cfg.channels_per_plane])
    by_channel = tf.transpose(tf.gather(flat, tf.constant(order, tf.int32), axis=1))  # (k, G^2)
    where = tf.cast(tf.where(by_channel != 0), tf.int32)  # row-major: rank, then position
    ids = tf.gather(tf.constant(order, tf.int32), where[:, 0])
    return ids, where[:, 1], tf.gather_nd(by_channel, where)
