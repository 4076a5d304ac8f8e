"""The SavedModel of a trained run: `DCTransformerModule` (its four signatures) and `export`.

The SavedModel needs neither dct_gen nor Keras to run: load it with
`tf.saved_model.load(SAVED_MODEL)` and call its signatures (also in
`loaded.signatures[name]`), every argument a scalar unless a shape is given:

  sample(num_samples int32, label int32, temperature float32, top_p float32, seed int64,
         guidance float32)
      -> images uint8 (n, R, R, 3), the canvas: sample i is images[i, :heights[i], :widths[i]];
         heights, widths int32 (n,); channels, positions, values int32 (n, L), padded, without
         the stop token; lengths int32 (n,); stopped bool (n,), whether each sample reached
         its stop token (else the chunk limit cut it).
  log_prob(channels int32 (L,), positions int32 (L,), values int32 (L,), height int32,
           width int32, label int32)
      -> bits_per_subpixel float32 (the sequence's exact negative log-likelihood given the
         label, stop token included, over 3 * height * width),
         channel_/position_/value_bits_per_subpixel, nats float32.
  upsample(image uint8 (h, w, 3), seed int64, label int32, guidance float32)
                                                       interleaved models
      -> as sample, one image: B x upsampling (8x at B = 8) of the image, whose first channel of
         Y, Cb and Cr is the context (`dct_gen.sampling.upsampling_context`); context_length.
  colorize(image uint8 (h, w, 1 or 3), seed int64, label int32, guidance float32)
                                                       luma_first models
      -> as sample, one image: the image's luma kept, its chroma sampled
         (`dct_gen.sampling.colorization_context`); context_length.

label is a class of a class-conditional model, or -1 (no class: the only label of an
unconditional model, refused by a class-conditional model whose null label was not trained,
`sampling.null_label_trained`). guidance is the classifier-free guidance scale
(`sampling.SampleOptions.guidance`: finite, >= 0; 1 is no guidance and the only scale an
unconditional model, or one without a trained null label, takes). The signatures' dictionaries
(`loaded.signatures[name]`) need every argument; the functions on the loaded object
(`loaded.sample(...)`, ...) default the newer ones, label to -1 and guidance to 1.

`loaded.config_json` holds the representation and model configuration (JSON), with the class
names ("label_names", null without) and whether the null label was trained
("null_label_trained"). The signatures declare their arguments with a dtype and no shape:
TensorFlow refuses another dtype before the graph runs, and each signature checks the rest in
the graph, rank first, and fails with an InvalidArgumentError whose message names the argument
and what it got ("temperature: must be finite and > 0, got inf"): an argument of the wrong rank,
a label out of range (or -1 without a trained null label), a guidance scale that is negative,
not finite or not allowed (see above), num_samples below 1 or above the cap, a temperature that
is not finite and > 0, a top_p outside (0, 1] (NaN included), an image of the wrong channels or
size, a sequence whose arrays differ in length or hold ids out of range, or a sequence no codec
writes: log_prob names the first triple that breaks a rule of `representation.check_sequence` (a
zero value, channels out of the ordering, positions not ascending within a channel, chroma at an
odd row or column, a position outside the height x width image) and the rule, in its words.
Nothing computes on an argument before its checks pass.

upsample and colorize build their context as the numpy path does: the luma of a colour image
with the codec's arithmetic, and Pillow's Lanczos resize reproduced in the graph pixel for pixel
(`resize_like_pillow`, Pillow's reduce-then-resample included). In-graph encoding
(`dct_ops.encode_dct_image`) can still differ from the numpy codec's on rare coefficients by one
quantization step (float summation order); the context a signature builds is kept exactly in its
output.

The export directory holds, beside the SavedModel's own files, `dct_gen_export.json`
(`EXPORT_FILE`: what was exported, from which run and step). `export` replaces an existing
directory only when it is empty or holds such an export (`check_out`): nothing else is ever
deleted. The SavedModel is written into a new sibling directory first and renamed into place.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import uuid
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from dct_gen import data, dct_ops, run_dir, sampling
from dct_gen import model as model_lib
from dct_gen import representation as rep
from dct_gen.errors import InputError

DEFAULT_MAX_SAMPLES = 64
MAX_IMAGE_SIDE = 8192  # upsample and colorize refuse larger inputs (they are resized anyway)
LOG_PROB_CHUNKS = 8  # chunks scored per model call in log_prob
EXPORT_FILE = "dct_gen_export.json"  # the marker of an export directory written here
EXPORT_FORMAT = "dct_gen SavedModel"
SAVED_MODEL_FILE = "saved_model.pb"

# ----------------------------------------------------------------------------------------------
# The numpy path's image arithmetic in the graph.

# Pillow's Lanczos (PIL/libImaging Resample.c): 8-bit images are filtered with coefficients in
# fixed point, 22 fractional bits, rounded to 8 bits after the horizontal and again after the
# vertical pass. Every product and sum below is an integer under 2**53, so float64 holds it
# exactly and the result is Pillow's to the last bit.
_PRECISION_BITS = 22
_LANCZOS_SUPPORT = 3.0


def _sinc(x):
    px = x * np.pi
    safe = tf.where(x == 0.0, tf.ones_like(px), px)
    return tf.where(x == 0.0, tf.ones_like(x), tf.sin(safe) / safe)


def _lanczos3(x):
    inside = (x >= -_LANCZOS_SUPPORT) & (x < _LANCZOS_SUPPORT)
    return tf.where(inside, _sinc(x) * _sinc(x / _LANCZOS_SUPPORT), tf.zeros_like(x))


def _pillow_coefficients(in_size, extent, out_size):
    """(out_size, in_size) float64: Pillow's fixed-point filter weights for resampling the
    span [0, extent) of in_size pixels onto out_size pixels."""
    scale = extent / tf.cast(out_size, tf.float64)
    filter_scale = tf.maximum(scale, 1.0)  # downscaling widens the kernel (antialiasing)
    support = _LANCZOS_SUPPORT * filter_scale
    center = (tf.range(out_size, dtype=tf.float64) + 0.5) * scale
    # Pillow truncates toward zero; below zero both give 0 after the clamp.
    first = tf.maximum(tf.floor(center - support + 0.5), 0.0)
    last = tf.minimum(tf.floor(center + support + 0.5), tf.cast(in_size, tf.float64))
    j = tf.range(in_size, dtype=tf.float64)[None, :]
    inside = (j >= first[:, None]) & (j < last[:, None])
    w = tf.where(inside, _lanczos3((j - center[:, None] + 0.5) * (1.0 / filter_scale)), 0.0)
    total = tf.reduce_sum(w, axis=1, keepdims=True)
    w = tf.where(total != 0.0, w / tf.where(total != 0.0, total, 1.0), w)
    w = w * float(1 << _PRECISION_BITS)
    return tf.where(w < 0.0, tf.math.ceil(w - 0.5), tf.floor(w + 0.5))  # half away from zero


def _fixed_point_to_uint8(acc):
    rounded = tf.floor((acc + float(1 << (_PRECISION_BITS - 1))) / float(1 << _PRECISION_BITS))
    return tf.cast(tf.clip_by_value(rounded, 0.0, 255.0), tf.uint8)


def _resample(image, extent_h, extent_w, height, width):
    """Pillow's two passes, horizontal first, each rounded to uint8."""
    shape = tf.shape(image)
    kx = _pillow_coefficients(shape[1], extent_w, width)
    rows = _fixed_point_to_uint8(tf.einsum("hwc,ow->hoc", tf.cast(image, tf.float64), kx))
    ky = _pillow_coefficients(shape[0], extent_h, height)
    return _fixed_point_to_uint8(tf.einsum("hwc,oh->owc", tf.cast(rows, tf.float64), ky))


def _reduce(image, factor_h, factor_w):
    """Pillow's `Image.reduce`: means of factor_h x factor_w boxes (partial boxes at the right
    and bottom edges average the pixels they hold), in Pillow's integer arithmetic."""
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    out_h, out_w = (h + factor_h - 1) // factor_h, (w + factor_w - 1) // factor_w
    padded = tf.pad(
        tf.cast(image, tf.int64), [[0, out_h * factor_h - h], [0, out_w * factor_w - w], [0, 0]]
    )
    sums = tf.reduce_sum(tf.reshape(padded, [out_h, factor_h, out_w, factor_w, -1]), axis=[1, 3])
    rows = tf.minimum(factor_h, h - tf.range(out_h) * factor_h)
    cols = tf.minimum(factor_w, w - tf.range(out_w) * factor_w)
    count = tf.cast(rows[:, None] * cols[None, :], tf.int64)[:, :, None]
    # Pillow divides by multiplying with a float32 reciprocal scaled by 2**24, truncated.
    multiplier = tf.cast(
        tf.constant(2.0**32, tf.float32) / tf.cast(256 * count, tf.float32), tf.int64
    )
    return tf.cast((sums + count // 2) * multiplier // (1 << 24), tf.uint8)


def resize_like_pillow(image, height, width, reducing_gap: float | None = None):
    """`PIL.Image.resize((width, height), LANCZOS, reducing_gap=reducing_gap)` of a uint8
    (h, w, c) image, in TensorFlow ops (traceable, no Python at run time), equal to Pillow's
    output pixel for pixel.

    `representation.resize` uses reducing_gap=3.0 (a box reduction first when the image shrinks
    by 6x or more); `sampling.upsampling_context` uses none.
    """
    image = tf.convert_to_tensor(image, tf.uint8)
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    shape = tf.shape(image)
    extent_h = tf.cast(shape[0], tf.float64)
    extent_w = tf.cast(shape[1], tf.float64)

    def resized():
        if reducing_gap is None:
            return _resample(image, extent_h, extent_w, height, width)
        factor_w = tf.maximum(
            tf.cast(extent_w / tf.cast(width, tf.float64) / reducing_gap, tf.int32), 1
        )
        factor_h = tf.maximum(
            tf.cast(extent_h / tf.cast(height, tf.float64) / reducing_gap, tf.int32), 1
        )

        def reduced():
            # The reduced image covers the source box [0, size / factor), a fraction of its
            # last pixel; Pillow passes that box as float32.
            span = lambda extent, factor: tf.cast(
                tf.cast(extent / tf.cast(factor, tf.float64), tf.float32), tf.float64
            )
            small = _reduce(image, factor_h, factor_w)
            return _resample(
                small, span(extent_h, factor_h), span(extent_w, factor_w), height, width
            )

        return tf.cond(
            (factor_w > 1) | (factor_h > 1),
            reduced,
            lambda: _resample(image, extent_h, extent_w, height, width),
        )

    same = (shape[0] == height) & (shape[1] == width)
    return tf.cond(same, lambda: image, resized)


def luma_like_codec(image):
    """The luma (Y of YCbCr) of a uint8 (h, w, 3) image as uint8 (h, w), with the operations
    and rounding of `representation.rgb_to_ycbcr` (float32, in its order)."""
    weights = rep.RGB_TO_YCBCR[0].astype(np.float32)
    rgb = tf.cast(image, tf.float32)
    y = weights[0] * rgb[:, :, 0]
    y = y + weights[1] * rgb[:, :, 1]
    y = y + weights[2] * rgb[:, :, 2]
    y = tf.floor(y + np.float32(-127.5)) + 128.0  # round half up, as the codec (centred, +128)
    return tf.cast(tf.clip_by_value(y, 0.0, 255.0), tf.uint8)


def target_size_tf(height, width, cfg: rep.DCTConfig):
    """`representation.target_size` in the graph."""
    long_side = tf.maximum(height, width)
    step = 2 * cfg.block_size
    short = tf.cast(tf.minimum(height, width), tf.float64) * cfg.resolution
    short = short / tf.cast(long_side, tf.float64)
    short = tf.cast(tf.round(short / step), tf.int32) * step  # round half to even, as Python
    short = tf.minimum(tf.maximum(short, step), cfg.resolution)
    # As the numpy rule: the short side is rounded even when the long side already fits.
    h = tf.where(height >= width, cfg.resolution, short)
    w = tf.where(height >= width, short, cfg.resolution)
    return h, w


def upsampling_context_tf(image, cfg: rep.DCTConfig):
    """`sampling.upsampling_context` in the graph: (channels, positions, values), height,
    width of the context of a uint8 (h, w, 3) image."""
    b = cfg.block_size
    h, w = target_size_tf(tf.shape(image)[0] * b, tf.shape(image)[1] * b, cfg)
    low = resize_like_pillow(image, h // b, w // b)
    blocky = tf.repeat(tf.repeat(low, b, axis=0), b, axis=1)
    dense = dct_ops.encode_dct_image(blocky, cfg)
    n = cfg.channels_per_plane
    return dct_ops.triples_from_dct_image(dense, cfg, channels=(0, n, 2 * n)), h, w


def colorization_context_tf(image, cfg: rep.DCTConfig):
    """`sampling.colorization_context` in the graph: (channels, positions, values), height,
    width of the context of a uint8 (h, w, 1 or 3) image."""
    grey = tf.cond(tf.shape(image)[2] == 3, lambda: luma_like_codec(image), lambda: image[:, :, 0])
    h, w = target_size_tf(tf.shape(grey)[0], tf.shape(grey)[1], cfg)
    # The numpy path resizes three equal channels; one is resized here and repeated.
    grey = resize_like_pillow(grey[:, :, None], h, w, reducing_gap=3.0)
    dense = dct_ops.encode_dct_image(tf.repeat(grey, 3, axis=2), cfg)
    channels = tuple(range(cfg.channels_per_plane))
    return dct_ops.triples_from_dct_image(dense, cfg, channels=channels), h, w


# ----------------------------------------------------------------------------------------------
# The signatures' arguments, checked in the graph.
#
# A loaded SavedModel's signatures pass tensors of any shape into the graph (TensorFlow checks
# the dtype alone), so each argument is declared with an unknown shape and checked here: its
# rank first, then its values. A failure is an InvalidArgumentError whose message names the
# argument and what it got. A signature uses an argument only through the tensor its checks
# return, which depends on them, so no op computes on a bad argument (and fails with a message
# of its own) before the check that names it has run.


def _text(x):
    """A tensor as a string tensor for a message: a number as Python prints it (inf, nan
    included), a vector as [a b c]."""
    x = tf.convert_to_tensor(x)
    if x.shape.rank != 0:
        return tf.strings.format("{}", [x], summarize=8)
    return (
        tf.strings.as_string(x, shortest=True) if x.dtype.is_floating else tf.strings.as_string(x)
    )


def _require(condition, template: str, *values) -> tf.Operation:
    """An assertion whose message is `template` with its {} replaced by `values` (tensors)."""
    parts = template.split("{}")
    if len(parts) != len(values) + 1:
        raise ValueError(f"{template!r} has {len(parts) - 1} {{}} for {len(values)} values")
    pieces = [parts[0]]
    for value, part in zip(values, parts[1:]):
        pieces += [_text(value), part]
    return tf.debugging.Assert(condition, [tf.strings.join(pieces)])


def _after(x, *checks):
    """x, once the checks have passed."""
    with tf.control_dependencies(checks):
        return tf.identity(x)


def _with_rank(x, name: str, rank: int, expected: str):
    """x once its rank is `rank` (its static shape then has that rank); else the message says
    '<name>: must be <expected>, got shape [...]'."""
    ok = _require(
        tf.equal(tf.rank(x), rank), f"{name}: must be {expected}, got shape {{}}", tf.shape(x)
    )
    with tf.control_dependencies([ok]):
        # A reshape, not tf.ensure_shape: graph optimization lets an EnsureShape run before the
        # assertion it depends on, and fail with its own message.
        shape = tf.shape(x)
        return tf.reshape(x, [shape[i] for i in range(rank)])


def _scalar(x, name: str):
    return _with_rank(x, name, 0, "a scalar (shape [])")


def _integer_in(x, name: str, low: int, high: int):
    """A scalar argument once it lies in [low, high]."""
    x = _scalar(x, name)
    return _after(
        x, _require((x >= low) & (x <= high), f"{name}: must be in [{low}, {high}], got {{}}", x)
    )


def _temperature(temperature):
    t = _scalar(temperature, "temperature")
    ok = _require(tf.math.is_finite(t) & (t > 0), "temperature: must be finite and > 0, got {}", t)
    return _after(t, ok)


def _top_p(top_p):
    p = _scalar(top_p, "top_p")
    return _after(p, _require((p > 0) & (p <= 1), "top_p: must be in (0, 1], got {}", p))


def _label(label, *, num_classes, null_label_trained=True):
    """The label argument, checked: in [-1, num_classes) (-1 alone for an unconditional model),
    and not -1 for a class-conditional model whose null label was not trained."""
    label = _scalar(label, "label")
    if not num_classes:
        what = "label: the model is unconditional; pass -1, got {}"
        return _after(label, _require(tf.equal(label, -1), what, label))
    checks = [
        _require(
            (label >= -1) & (label < num_classes),
            f"label: out of range [-1, {num_classes}) (-1: no class), got {{}}",
            label,
        )
    ]
    if not null_label_trained:
        checks.append(
            _require(
                tf.not_equal(label, -1),
                f"label: {sampling.NULL_LABEL_UNTRAINED}; pass a class in [0, {num_classes}), "
                "got {}",
                label,
            )
        )
    return _after(label, *checks)


def _guidance(guidance, *, num_classes, null_label_trained=True):
    """The guidance argument, checked: finite and >= 0; exactly 1 (no guidance) for an
    unconditional model or one whose null label was not trained."""
    g = _scalar(guidance, "guidance")
    checks = [
        _require(tf.math.is_finite(g) & (g >= 0), "guidance: must be finite and >= 0, got {}", g)
    ]
    if not num_classes:
        checks.append(
            _require(
                tf.equal(g, 1.0),
                "guidance: the model is unconditional; pass 1 (no guidance), got {}",
                g,
            )
        )
    elif not null_label_trained:
        checks.append(
            _require(
                tf.equal(g, 1.0),
                f"guidance: guidance needs the null label, but {sampling.NULL_LABEL_UNTRAINED}; "
                "pass 1 (no guidance), got {}",
                g,
            )
        )
    return _after(g, *checks)


def _sample_arguments(
    num_samples, label, temperature, top_p, seed, *, num_classes, max_samples,
    null_label_trained=True,
):  # fmt: skip
    """The sample signature's arguments but guidance (`_guidance`), checked (in the signature's
    order)."""
    n = _scalar(num_samples, "num_samples")
    n = _after(
        n,
        _require(n >= 1, "num_samples: must be >= 1, got {}", n),
        _require(
            n <= max_samples,
            f"num_samples: at most {max_samples} per call (export --max_num_samples), got {{}}",
            n,
        ),
    )
    label = _label(label, num_classes=num_classes, null_label_trained=null_label_trained)
    return n, label, _temperature(temperature), _top_p(top_p), _scalar(seed, "seed")


def _image_argument(image, channels: tuple[int, ...], largest: int):
    """The image argument of upsample and colorize, checked: rank 3, its channels, its size."""
    expected = f"(height, width, {' or '.join(str(c) for c in channels)}) uint8"
    image = _with_rank(image, "image", 3, expected)
    shape = tf.shape(image)
    return _after(
        image,
        _require(
            tf.reduce_any(tf.equal(shape[2], list(channels))),
            f"image: must be {expected}, got shape {{}}",
            shape,
        ),
        _require(
            tf.reduce_min(shape[:2]) > 0,
            "image: height and width must be >= 1, got shape {}",
            shape,
        ),
        _require(
            tf.reduce_max(shape[:2]) <= largest,
            f"image: height and width must be <= {largest}, got shape {{}}",
            shape,
        ),
    )


def _log_prob_arguments(channels, positions, values, height, width, *, cfg, capacity):
    """The log_prob signature's arguments, checked: three vectors of one length (shorter than
    `capacity`) holding ids in range, and a size within the resolution."""
    vectors = {}
    for name, t in (("channels", channels), ("positions", positions), ("values", values)):
        vectors[name] = _with_rank(t, name, 1, "a vector (L,) int32")
    size = tf.size(vectors["channels"])
    ranges = {
        "channels": (0, cfg.stop_token),
        "positions": (0, cfg.num_positions),
        "values": (-cfg.clip, cfg.clip + 1),
    }
    out = []
    for name, t in vectors.items():
        low, high = ranges[name]
        checks = [
            _require(
                tf.reduce_all((t >= low) & (t < high)),
                f"{name}: ids must lie in [{low}, {high}), got values in [{{}}, {{}}]",
                tf.reduce_min(t),
                tf.reduce_max(t),
            )
        ]
        if name == "channels":
            checks.append(
                _require(
                    size < capacity, f"channels: at most {capacity - 1} triples, got {{}}", size
                )
            )
        else:
            checks.append(
                _require(
                    tf.equal(tf.size(t), size),
                    f"{name}: must have the length of channels ({{}}), got {{}}",
                    size,
                    tf.size(t),
                )
            )
        out.append(_after(t, *checks))
    out += [
        _integer_in(t, name, 1, cfg.resolution)
        for name, t in (("height", height), ("width", width))
    ]
    return _possible_sequence(*out, cfg=cfg)


def _fill(template: str, parts: dict):
    """A `representation.SEQUENCE_MESSAGES` template with its {name} fields replaced by the
    string tensors (or strings) of `parts`."""
    pieces = re.split(r"\{(\w+)\}", template)
    # re.split with a group: even items are the template's text, odd items the field names.
    return tf.strings.join([parts[x] if k % 2 else x for k, x in enumerate(pieces)])


def _possible_sequence(channels, positions, values, height, width, *, cfg):
    """The checked log_prob arguments once they are a sequence the codec can produce; else an
    InvalidArgumentError naming the first triple that breaks a rule and the rule, with
    `representation.check_sequence`'s message (`representation.SEQUENCE_RULES`: a zero value,
    channels out of the ordering, positions not ascending within a channel, chroma at an odd
    row or column, a position outside the image). Such a sequence has probability zero under the
    structural mask: scoring it would return about 1e9 nats as if it were a result."""
    c, p, v = channels, positions, values
    g, step = cfg.grid, 2 * cfg.block_size
    in_vocab = (c >= 0) & (c < cfg.stop_token)
    ranks = tf.constant(rep.channel_rank(cfg.block_size, cfg.ordering, cfg.interval), tf.int32)
    rank = tf.gather(ranks, tf.where(in_vocab, c, 0))
    before = lambda t: tf.concat([[-1], t[:-1]], 0)  # the previous triple's (-1 for the first)
    row, col = p // g, p % g
    rows = (height + step - 1) // step * 2
    cols = (width + step - 1) // step * 2
    broken = tf.stack(
        [
            ~in_vocab,
            (p < 0) | (p >= g * g),
            tf.abs(v) > cfg.clip,
            tf.equal(v, 0),
            rank < before(rank),
            tf.equal(c, before(c)) & (p <= before(p)),
            in_vocab & (c >= cfg.channels_per_plane) & ((row % 2 > 0) | (col % 2 > 0)),
            (row >= rows) | (col >= cols),
        ]
    )  # (rules, L), in the order of rep.SEQUENCE_RULES
    assert broken.shape[0] == len(rep.SEQUENCE_RULES)
    # A column past the end, breaking rule 0, gives argmax something to find when nothing is
    # broken (and an empty sequence something to gather): its message is never raised.
    marker = tf.one_hot(0, len(rep.SEQUENCE_RULES), on_value=True, off_value=False)[:, None]
    padded = tf.concat([broken, marker], 1)
    i = tf.argmax(tf.cast(tf.reduce_any(padded, axis=0), tf.int32), output_type=tf.int32)
    rule = tf.argmax(tf.cast(padded[:, i], tf.int32), output_type=tf.int32)
    at = lambda t: tf.strings.as_string(tf.concat([t, [0]], 0)[i])
    text = tf.strings.as_string
    parts = dict(
        i=text(i), c=at(c), p=at(p), v=at(v), prev_c=at(before(c)), prev_p=at(before(p)),
        row=at(row), col=at(col), height=text(height), width=text(width), rows=text(rows),
        cols=text(cols), stop=str(cfg.stop_token), positions=str(cfg.num_positions),
        clip=str(cfg.clip), ordering=cfg.ordering,
    )  # fmt: skip
    messages = tf.stack([_fill(t, parts) for t in rep.SEQUENCE_MESSAGES])
    ok = tf.debugging.Assert(~tf.reduce_any(broken), [tf.gather(messages, rule)])
    return [_after(t, ok) for t in (channels, positions, values, height, width)]


# ----------------------------------------------------------------------------------------------
# The exported object.


class DCTransformerModule(tf.Module):
    """The exported object: a trained model's weights and the four signatures."""

    def __init__(
        self,
        model,
        model_config: model_lib.ModelConfig,
        target_part: str = "all",
        max_num_samples: int = DEFAULT_MAX_SAMPLES,
        max_chunks: int | None = None,
        *,
        label_names: list[str] | None = None,
        null_label_trained: bool = True,
    ):
        super().__init__(name="dctransformer")
        self.model = model
        self._config = model_config
        self._cfg = model_config.dct
        self._null_label_trained = bool(null_label_trained)
        # Only a class-conditional model with a trained null label gets the guided chunk in its
        # graph; every other model takes guidance 1 alone (checked), and runs the plain chunk.
        self._guided = bool(model_config.num_classes) and self._null_label_trained
        self._sampler = sampling.Sampler(
            model, model_config, null_label_trained=null_label_trained, label_names=label_names
        )
        self._max_samples = int(max_num_samples)
        self._max_chunks = int(max_chunks or sampling.default_max_chunks(model_config))
        self._capacity = sampling.max_length(self._cfg) + 1
        self._target_part = target_part
        self.config_json = tf.Variable(
            json.dumps(
                {
                    "model_config": dataclasses.asdict(model_config),
                    "target_part": target_part,
                    "max_num_samples": self._max_samples,
                    "max_chunks": self._max_chunks,
                    "label_names": None if label_names is None else list(label_names),
                    "null_label_trained": self._null_label_trained,
                }
            ),
            trainable=False,
            name="config_json",
        )

    # ---- Shared pieces.

    def _finish(self, state, heights=None, widths=None):
        lengths = state["length"]
        images, heights, widths = sampling.images_tf(
            state["channels"], state["positions"], state["values"], lengths, self._cfg,
            heights, widths,
        )  # fmt: skip
        longest = tf.reduce_max(lengths)
        at_end = tf.gather(state["channels"], tf.minimum(lengths, self._capacity - 1), batch_dims=1)
        valid = tf.range(longest)[None, :] < lengths[:, None]
        out = {
            "images": images,
            "heights": heights,
            "widths": widths,
            "lengths": lengths,
            "stopped": (lengths < self._capacity) & (at_end == self._cfg.stop_token),
        }
        for name in ("channels", "positions", "values"):
            out[name] = tf.where(valid, state[name][:, :longest], 0)
        return out

    def _label(self, label):
        return _label(
            label,
            num_classes=self._config.num_classes,
            null_label_trained=self._null_label_trained,
        )

    def _guidance(self, guidance):
        return _guidance(
            guidance,
            num_classes=self._config.num_classes,
            null_label_trained=self._null_label_trained,
        )

    def _run(self, state, seed, temperature, top_p, guidance):
        seed = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
        return self._sampler.sample_graph(
            state, self._max_chunks, seed, temperature, top_p, tf.constant(0),
            guidance if self._guided else None,
        )  # fmt: skip

    # ---- Signatures.

    @tf.function(
        input_signature=[
            tf.TensorSpec(None, tf.int32, name="num_samples"),
            tf.TensorSpec(None, tf.int32, name="label"),
            tf.TensorSpec(None, tf.float32, name="temperature"),
            tf.TensorSpec(None, tf.float32, name="top_p"),
            tf.TensorSpec(None, tf.int64, name="seed"),
            tf.TensorSpec(None, tf.float32, name="guidance"),
        ]
    )
    def sample(self, num_samples, label, temperature, top_p, seed, guidance=1.0):
        n, label, temperature, top_p, seed = _sample_arguments(
            num_samples,
            label,
            temperature,
            top_p,
            seed,
            num_classes=self._config.num_classes,
            max_samples=self._max_samples,
            null_label_trained=self._null_label_trained,
        )
        guidance = self._guidance(guidance)
        state = self._sampler.initial_state(n, self._capacity, label=tf.fill([n], label))
        return self._finish(self._run(state, seed, temperature, top_p, guidance))

    def _single(self, context, base, seed, height, width, label, guidance):
        c, p, v = context
        length = tf.shape(c)[0]
        state = self._sampler.initial_state(
            1,
            self._capacity,
            context=(c[None], p[None], v[None], length[None]),
            base=None if base is None else length[None],
            min_rank=None if base is None else self._cfg.channels_per_plane,
            label=label[None],
        )
        state = self._run(state, seed, tf.constant(1.0), tf.constant(1.0), guidance)
        out = self._finish(state, height[None], width[None])
        out["context_length"] = length
        return out

    def upsample(self, image, seed, label=-1, guidance=1.0):
        image = _image_argument(image, (3,), MAX_IMAGE_SIDE)
        seed = _scalar(seed, "seed")
        label, guidance = self._label(label), self._guidance(guidance)
        context, h, w = upsampling_context_tf(image, self._cfg)
        return self._single(context, None, seed, h, w, label, guidance)

    def colorize(self, image, seed, label=-1, guidance=1.0):
        image = _image_argument(image, (1, 3), MAX_IMAGE_SIDE)
        seed = _scalar(seed, "seed")
        label, guidance = self._label(label), self._guidance(guidance)
        context, h, w = colorization_context_tf(image, self._cfg)
        return self._single(context, True, seed, h, w, label, guidance)

    @tf.function(
        input_signature=[
            tf.TensorSpec(None, tf.int32, name="channels"),
            tf.TensorSpec(None, tf.int32, name="positions"),
            tf.TensorSpec(None, tf.int32, name="values"),
            tf.TensorSpec(None, tf.int32, name="height"),
            tf.TensorSpec(None, tf.int32, name="width"),
            tf.TensorSpec(None, tf.int32, name="label"),
        ]
    )
    def log_prob(self, channels, positions, values, height, width, label=-1):
        cfg, config = self._cfg, self._config
        channels, positions, values, height, width = _log_prob_arguments(
            channels, positions, values, height, width, cfg=cfg, capacity=self._capacity
        )
        label = self._label(label)
        stop = tf.constant([cfg.stop_token], tf.int32)
        zero = tf.zeros([1], tf.int32)
        seq = {
            "channels": tf.concat([channels, stop], 0),
            "positions": tf.concat([positions, zero], 0),
            "values": tf.concat([values, zero], 0),
            "height": height,
            "width": width,
            "label": label,
            "sequence_index": tf.constant(0),
        }
        length = tf.size(seq["channels"])
        if self._target_part == "chroma":
            base = tf.reduce_sum(tf.cast(seq["channels"] < cfg.channels_per_plane, tf.int32))
        else:
            base = tf.constant(0)
        c = config.chunk_size
        num_chunks = (length - base + c - 1) // c
        names = ("channel_nats", "position_nats", "value_nats")

        def body(i, totals):
            ks = i * LOG_PROB_CHUNKS + tf.range(LOG_PROB_CHUNKS)
            valid = ks < num_chunks
            safe = tf.minimum(ks, num_chunks - 1)
            windows = tf.map_fn(
                lambda k: data.chunk_example(
                    seq, base + k * c, k, num_chunks, cfg, c, config.overlap
                ),
                safe,
                fn_output_signature={
                    **{k: tf.int32 for k in ("channels", "positions", "values", "indices")},
                    "loss_mask": tf.float32,
                    "mask": tf.float32,
                    "dct_image": tf.int32,
                    **{
                        k: tf.int32
                        for k in (
                            "chunk_index",
                            "num_chunks",
                            "chunk_start",
                            "length",
                            "height",
                            "width",
                            "label",
                            "sequence_index",
                        )
                    },  # fmt: skip
                },
            )
            outputs = model_lib.forward(self.model, windows)
            losses = model_lib.compute_losses(outputs, windows, cfg)
            weight = tf.cast(valid, tf.float32)
            return i + 1, [t + tf.reduce_sum(losses[n] * weight) for t, n in zip(totals, names)]

        steps = (num_chunks + LOG_PROB_CHUNKS - 1) // LOG_PROB_CHUNKS
        _, totals = tf.while_loop(
            lambda i, _: i < steps, body, (tf.constant(0), [tf.constant(0.0)] * 3)
        )
        subpixels = 3.0 * tf.cast(height, tf.float32) * tf.cast(width, tf.float32)
        to_bits = lambda nats: nats / np.log(2.0) / subpixels
        out = {f"{n.split('_')[0]}_bits_per_subpixel": to_bits(t) for n, t in zip(names, totals)}
        out["nats"] = tf.add_n(totals)
        out["bits_per_subpixel"] = to_bits(out["nats"])
        return out


# ----------------------------------------------------------------------------------------------
# Writing it: the export directory, never anything else.


# What an export directory holds: the SavedModel's own files and the marker.
EXPORT_ENTRIES = frozenset(
    {SAVED_MODEL_FILE, "fingerprint.pb", "variables", "assets", "assets.extra", EXPORT_FILE}
)
SIGNATURES = frozenset({"sample", "log_prob", "upsample", "colorize"})


def _written_before_the_marker(path: str) -> bool:
    """Whether saved_model.pb is an export of this module from before EXPORT_FILE existed:
    its signatures are ours (sample and log_prob, perhaps upsample or colorize) and its root
    object has the config_json variable."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    try:
        with tf.io.gfile.GFile(os.path.join(path, SAVED_MODEL_FILE), "rb") as f:
            proto.ParseFromString(f.read())
        graph = proto.meta_graphs[0]
        names = {n for n in graph.signature_def.keys() if not n.startswith("__")}  # init op
        children = {c.local_name for c in graph.object_graph_def.nodes[0].children}
    except Exception:  # noqa: BLE001 - not a SavedModel this module can read: not ours
        return False
    return {"sample", "log_prob"} <= names <= SIGNATURES and "config_json" in children


def is_export(path: str) -> bool:
    """Whether path is a directory `export` wrote (and nothing else added to): a SavedModel
    with EXPORT_FILE, or one of this module's exports from before the marker existed, and no
    entry beyond EXPORT_ENTRIES."""
    if not tf.io.gfile.exists(os.path.join(path, SAVED_MODEL_FILE)):
        return False
    if any(name.rstrip("/") not in EXPORT_ENTRIES for name in tf.io.gfile.listdir(path)):
        return False
    marker = os.path.join(path, EXPORT_FILE)
    if not tf.io.gfile.exists(marker):
        return _written_before_the_marker(path)
    try:
        description = run_dir.read_json(marker)
    except ValueError:
        return False
    return isinstance(description, dict) and description.get("format") == EXPORT_FORMAT


def _normalized(path: str) -> str:
    if "://" in path:
        return path.rstrip("/")
    return os.path.realpath(path)


def _holds(outer: str, inner: str) -> bool:
    """Whether inner is outer or lies inside it."""
    outer, inner = _normalized(outer), _normalized(inner)
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def check_out(out: str, model_dir: str | None = None, *, name: str = "out") -> None:
    """Refuses an export directory whose replacement could lose anything.

    `out` may be absent, an empty directory, or an earlier export of this module (it holds
    saved_model.pb and EXPORT_FILE), which `export` then replaces.

    Args:
      out: the export directory.
      model_dir: the run being exported, which `out` may neither be nor hold.
      name: how messages call `out` (the command line says --out).

    Raises:
      InputError: anything else: the run directory, a file, a non-empty directory that is not
        an export (the message names `out` and says what to do).
      run_dir.RunLockedError: (an InputError) `out` lies inside model_dir while a trainer
        holds that run's lock.
    """
    if not out or not out.strip("/"):
        raise InputError(f"{name}={out!r}: not a directory name")
    if model_dir is not None and _holds(out, model_dir):
        raise InputError(
            f"{name}={out}: is (or holds) the run directory {model_dir}; write the SavedModel "
            "to a directory of its own, e.g. MODEL_DIR/saved_model"
        )
    if model_dir is not None and _holds(model_dir, out):
        run_dir.check_unlocked(model_dir, f"the export would write {name}={out} there")
    if not tf.io.gfile.exists(out):
        return
    if not tf.io.gfile.isdir(out):
        raise InputError(f"{name}={out}: exists and is not a directory")
    if is_export(out) or not tf.io.gfile.listdir(out):
        return
    raise InputError(
        f"{name}={out}: is a non-empty directory, not a SavedModel of dct_gen.export alone (that "
        f"holds {SAVED_MODEL_FILE} and {EXPORT_FILE}, and nothing else); refusing to replace "
        "it: choose a new or empty directory"
    )


def _sibling(path: str, tag: str) -> str:
    """A new path beside `path`, which nothing uses (for the partial and the replaced export)."""
    while True:
        candidate = f"{path.rstrip('/')}.{tag}-{uuid.uuid4().hex[:12]}"
        if not tf.io.gfile.exists(candidate):
            return candidate


def _move_into_place(written: str, out: str, model_dir: str | None) -> None:
    """Renames the written export to `out`, replacing what check_out allows there."""
    # Checked again: `out` may have changed while the SavedModel was written.
    check_out(out, model_dir)
    if not tf.io.gfile.exists(out):
        tf.io.gfile.rename(written, out)
        return
    old = _sibling(out, "replaced")
    tf.io.gfile.rename(out, old)
    try:
        tf.io.gfile.rename(written, out)
    except Exception:
        tf.io.gfile.rename(old, out)  # put the earlier export back
        raise
    tf.io.gfile.rmtree(old)


def export(
    model,
    model_config: model_lib.ModelConfig,
    out: str,
    *,
    target_part: str = "all",
    max_num_samples: int = DEFAULT_MAX_SAMPLES,
    max_chunks: int | None = None,
    model_dir: str | None = None,
    step: int | None = None,
    label_names: list[str] | None = None,
    null_label_trained: bool = True,
) -> list[str]:
    """Writes the SavedModel to `out`; returns the signature names.

    The SavedModel and EXPORT_FILE are written into a new sibling directory, then renamed to
    `out`; an earlier export or an empty directory at `out` is replaced, anything else refused
    before any work (`check_out`).

    Args:
      model, model_config: the trained model and its ModelConfig.
      out: the export directory.
      target_part: what the run trained on ('all', or 'chroma' after all luma).
      max_num_samples: the cap on sample's num_samples.
      max_chunks: the chunk limit per sample (None: enough for the longest sequence).
      model_dir, step: the run and checkpoint step exported (recorded in EXPORT_FILE; out may
        not be or hold model_dir).
      label_names: the class names (recorded in config_json).
      null_label_trained: whether the model's null label (-1) was trained
        (`sampling.null_label_trained` of the run's config.json); False: the signatures refuse
        label -1 of a class-conditional model, and guidance other than 1.

    Raises:
      InputError: `out` is refused (see check_out).
    """
    check_out(out, model_dir)
    module = DCTransformerModule(
        model,
        model_config,
        target_part,
        max_num_samples=max_num_samples,
        max_chunks=max_chunks,
        label_names=label_names,
        null_label_trained=null_label_trained,
    )
    # Any shape: the signature checks the rank itself and names the argument (see above).
    image = tf.TensorSpec(None, tf.uint8, name="image")
    seed = tf.TensorSpec(None, tf.int64, name="seed")
    label = tf.TensorSpec(None, tf.int32, name="label")
    guidance = tf.TensorSpec(None, tf.float32, name="guidance")
    task_specs = [image, seed, label, guidance]
    signatures = {
        "sample": module.sample.get_concrete_function(),
        "log_prob": module.log_prob.get_concrete_function(),
    }
    if model_config.dct.ordering == "interleaved":
        module.upsample_fn = tf.function(module.upsample, input_signature=task_specs)
        signatures["upsample"] = module.upsample_fn.get_concrete_function()
    if model_config.dct.ordering == "luma_first":
        module.colorize_fn = tf.function(module.colorize, input_signature=task_specs)
        signatures["colorize"] = module.colorize_fn.get_concrete_function()
    names = sorted(signatures)
    description = {
        "format": EXPORT_FORMAT,
        "signatures": names,
        "model_dir": model_dir,
        "step": step,
        **json.loads(module.config_json.numpy()),
    }
    written = _sibling(out, "partial")
    try:
        tf.saved_model.save(module, written, signatures=signatures)
        run_dir.write_json(os.path.join(written, EXPORT_FILE), description)
        _move_into_place(written, out, model_dir)
    finally:
        if tf.io.gfile.exists(written):
            tf.io.gfile.rmtree(written)
    return names


def export_run(
    model_dir: str,
    out: str,
    *,
    checkpoint: int | None = None,
    max_num_samples: int = DEFAULT_MAX_SAMPLES,
    max_chunks: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Exports a trained run (its newest checkpoint that restores, or `checkpoint`), in
    float32 whatever precision it trained in.

    Returns:
      {"saved_model": out, "step": the checkpoint's step, "signatures": names}.

    Raises:
      InputError: `out` is refused (checked before the run is loaded), or model_dir is not a
        trained run (no directory, config.json or checkpoint that restores).
    """
    check_out(out, model_dir)
    run = run_dir.load_run(
        model_dir, checkpoint=checkpoint, mixed_precision=False, log=log or (lambda _: None)
    )
    raw = sampling.read_run_json(model_dir)
    try:
        label_names = sampling.run_label_names(raw)
    except InputError as e:
        raise InputError(f"{os.path.join(model_dir, run_dir.RUN_CONFIG_FILE)}: {e}") from None
    names = export(
        run.model,
        run.model_config,
        out,
        target_part=run.train_config.target_part,
        max_num_samples=max_num_samples,
        max_chunks=max_chunks,
        model_dir=model_dir,
        step=run.step,
        label_names=label_names,
        null_label_trained=sampling.null_label_trained(raw),
    )
    return {"saved_model": out, "step": run.step, "signatures": names}
