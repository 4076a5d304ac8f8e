"""The training input pipeline: records -> length-bias filter -> chunk sampler -> model inputs.

Paper section 3.1 and appendix C. Everything runs in tf.data graph mode with static shapes, so
one pipeline feeds the CPU, GPUs and TPUStrategy. Randomness is stateless: every draw is derived
from (seed, element index), so the same seed gives the same batches.

A sequence of length L counts its stop token (channel 3B^2, position 0, value 0), appended here.
Its n = ceil(L / C) chunks are drawn with probability proportional to max((k + 1)^-exponent,
p_min) (`chunk_weights`), after the length-bias filter keeps it with probability
min(L / L_max, 1) (`keep_probability`).

Each example (one chunk of one sequence) is a dict:

  channels, positions, values   (O + C,) int32: the window, left-aligned: up to O overlap
                                elements, then the C target elements, then padding (zeros)
  indices                       (O + C,) int32: each element's index in its sequence (-1: pad)
  loss_mask                     (O + C,) float32: 1 on the target elements that carry loss
  mask                          (O + C,) float32: 1 on every real element (overlap + target)
  dct_image                     (G, G, 3B^2) int32: every element before the chunk's start,
                                scattered into the dense DCT image (no target ever reaches it)
  chunk_index, num_chunks       int32 scalars
  chunk_start                   int32: index of the chunk's first target element
  length                        int32: L, the stop token included
  sequence_index                int32: the sequence's index in the stream (eval: in the split)
  height, width, label          int32 scalars (label -1 when the dataset has none)

Padding sits at the end of the window so that causal attention never lets a real element see
it. Values are raw quantized coefficients in [-clip, clip]; the model offsets them by clip.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from dct_gen import dct_ops, records
from dct_gen.errors import InputError
from dct_gen.representation import DCTConfig

MODES = ("train", "eval")
TARGET_PARTS = ("all", "chroma")


# ----------------------------------------------------------------------------------------------
# The two distributions (closed forms; tests check the sampler against them).


def chunk_weights(num_chunks: int, exponent: float = 3.0, p_min: float = 0.1) -> np.ndarray:
    """Normalised chunk probabilities: p(k) proportional to max((k + 1)^-exponent, p_min)."""
    if num_chunks < 1:
        raise ValueError(f"num_chunks={num_chunks}: a sequence has at least one chunk")
    k = np.arange(num_chunks, dtype=np.float64)
    w = np.maximum((k + 1.0) ** -float(exponent), float(p_min))
    return w / w.sum()


def keep_probability(length, l_max):
    """The length-bias filter: keep a sequence of length L with probability min(L / L_max, 1)."""
    if np.any(np.asarray(l_max) <= 0):
        raise ValueError(f"l_max={l_max}: must be positive")
    return np.minimum(np.asarray(length, dtype=np.float64) / np.asarray(l_max), 1.0)


# ----------------------------------------------------------------------------------------------
# Dataset metadata.


def default_l_max(info: dict, split: str) -> int:
    """L_max from info.json: the split's suggested L_max (a high length percentile, stop token
    included), so that only the longest sequences are always kept."""
    lengths = info["splits"].get(split, {}).get("lengths", {})
    if not lengths.get("suggested_l_max"):
        raise ValueError(
            f"info.json has no suggested_l_max for split {split!r}; pass l_max explicitly"
        )
    return int(lengths["suggested_l_max"])


def find_corrupt_shards(paths: list[str]) -> list[tuple[str, str]]:
    """Reads each shard alone and returns (path, error) for those that fail their checksums."""
    bad = []
    for path in paths:
        try:
            for _ in tf.data.TFRecordDataset(path):
                pass
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
            bad.append((path, e.message.split("[Op:")[0].strip()))
    return bad


class ShardReadError(InputError, IOError):
    """A shard could not be read; the message names it."""


def iterate(dataset: tf.data.Dataset, paths: list[str]):
    """Iterates a dataset, turning a damaged-shard error into one that names the shard.

    TF's reader reports only an offset; on that error each shard is read alone to find which.
    """
    try:
        yield from dataset
    except tf.errors.DataLossError as e:
        bad = find_corrupt_shards(paths)
        names = "; ".join(f"{p}: {msg}" for p, msg in bad) or "no single shard fails alone"
        raise ShardReadError(f"damaged TFRecord shard(s): {names}") from e


# ----------------------------------------------------------------------------------------------
# Per-sequence work (graph mode).


def _validate(features: dict, cfg: DCTConfig) -> dict:
    """Rejects malformed records with an error that names the record's key; never clips."""
    c, p, v = features["channels"], features["positions"], features["values"]
    n = tf.size(c)
    peak = lambda t: tf.reduce_max(tf.concat([tf.reshape(t, [-1]), [0]], 0))
    rules = [
        (
            tf.logical_and(tf.equal(tf.size(p), n), tf.equal(tf.size(v), n)),
            "malformed record: channels, positions and values differ in length",
        ),
        (
            peak(tf.abs(v)) <= cfg.clip,
            f"malformed record: a value outside [-{cfg.clip}, {cfg.clip}]",
        ),
        (peak(c) < cfg.stop_token, f"malformed record: a channel outside [0, {cfg.stop_token})"),
        (
            peak(p) < cfg.num_positions,
            f"malformed record: a position outside [0, {cfg.num_positions})",
        ),
        (peak(-tf.concat([c, p], 0)) <= 0, "malformed record: a negative channel or position"),
    ]
    key = features.get("key", tf.constant(""))
    checks = [tf.debugging.Assert(ok, [message, "record key:", key]) for ok, message in rules]
    with tf.control_dependencies(checks):
        return {k: tf.identity(t) for k, t in features.items()}


def _with_stop(features: dict, cfg: DCTConfig) -> dict:
    cast = lambda t: tf.cast(t, tf.int32)
    stop = tf.constant([cfg.stop_token], tf.int32)
    zero = tf.zeros([1], tf.int32)
    return {
        "channels": tf.concat([cast(features["channels"]), stop], 0),
        "positions": tf.concat([cast(features["positions"]), zero], 0),
        "values": tf.concat([cast(features["values"]), zero], 0),
        "height": cast(features["height"]),
        "width": cast(features["width"]),
        "label": cast(features.get("label", tf.constant(-1))),
    }


def _target_base(seq: dict, cfg: DCTConfig, target_part: str):
    """Index where the sampled part of the sequence starts (after all luma for 'chroma')."""
    if target_part == "all":
        return tf.constant(0, tf.int32)
    is_luma = seq["channels"] < cfg.channels_per_plane
    return tf.reduce_sum(tf.cast(is_luma, tf.int32))


def chunk_example(seq: dict, start, chunk_index, num_chunks, cfg: DCTConfig, chunk_size, overlap):
    """One example (the module docstring's dict) of a sequence: the window of the chunk that
    begins at `start`, and the input DCT image of everything before it.

    seq holds a whole sequence, stop token included: channels, positions, values (L,) int32,
    and height, width, label, sequence_index scalars. Works on tensors, inside tf.data or any
    graph (the SavedModel's log_prob scores a sequence chunk by chunk with it).
    """
    length = tf.size(seq["channels"])
    window = chunk_size + overlap
    first = tf.maximum(start - overlap, 0)
    idx = first + tf.range(window)
    real = idx < tf.minimum(start + chunk_size, length)
    target = real & (idx >= start)
    safe = tf.where(real, idx, 0)
    out = {}
    for name in ("channels", "positions", "values"):
        out[name] = tf.where(real, tf.gather(seq[name], safe), 0)
    out["indices"] = tf.where(real, idx, -1)
    out["loss_mask"] = tf.cast(target, tf.float32)
    out["mask"] = tf.cast(real, tf.float32)
    out["dct_image"] = dct_ops.dct_image_from_triples(
        seq["channels"], seq["positions"], seq["values"], cfg, num_triples=start
    )
    out["chunk_index"] = tf.cast(chunk_index, tf.int32)
    out["num_chunks"] = tf.cast(num_chunks, tf.int32)
    out["chunk_start"] = tf.cast(start, tf.int32)
    out["length"] = length
    for name in ("height", "width", "label", "sequence_index"):
        out[name] = seq[name]
    return out


def _static(example: dict, cfg: DCTConfig, window: int) -> dict:
    shapes = {
        "channels": [window],
        "positions": [window],
        "values": [window],
        "indices": [window],
        "loss_mask": [window],
        "mask": [window],
        "dct_image": [cfg.grid, cfg.grid, 3 * cfg.channels_per_plane],
    }
    return {k: tf.ensure_shape(v, shapes.get(k, [])) for k, v in example.items()}


# ----------------------------------------------------------------------------------------------
# The dataset.


def make_dataset(
    data_dir: str,
    split: str,
    *,
    batch_size: int,
    chunk_size: int,
    overlap: int,
    seed: int,
    mode: str = "train",
    exponent: float = 3.0,
    p_min: float = 0.1,
    l_max: int | None = None,
    target_part: str = "all",
    shuffle_buffer: int = 1024,
    input_context: tf.distribute.InputContext | None = None,
    drop_remainder: bool | None = None,
    repeat: bool | None = None,
) -> tf.data.Dataset:
    """Builds the batched input pipeline over the shards of DATA_DIR/SPLIT.

    Args:
      data_dir: a directory written by beam_jobs (info.json, COMPLETED, shards).
      split: the split's name, e.g. "train".
      batch_size: examples per batch (per input pipeline under tf.distribute).
      chunk_size: C, target elements per chunk.
      overlap: O, elements before the chunk that the decoders see without loss.
      seed: the seed of every random draw (shuffle, filter, chunk choice).
      mode: "train" (shuffle, repeat, filter, sample one chunk per kept sequence) or "eval"
        (every chunk of every sequence, in order, once, no filter).
      exponent, p_min: the chunk sampler (`chunk_weights`).
      l_max: the length-bias filter's L_max; default from info.json (`default_l_max`).
      target_part: "all", or "chroma" for colorization training on luma_first datasets (paper
        4.3): targets are drawn from the chroma part only, and all luma is input.
      shuffle_buffer: sequences in the shuffle buffer (train).
      input_context: from `strategy.distribute_datasets_from_function`; shards per host.
      drop_remainder: default True in train mode (static batch), False in eval mode.
      repeat: default True in train mode, False in eval mode.

    Returns:
      A tf.data.Dataset of dicts (see the module docstring), batched.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: must be one of {MODES}")
    if target_part not in TARGET_PARTS:
        raise ValueError(f"target_part={target_part!r}: must be one of {TARGET_PARTS}")
    if chunk_size < 1 or overlap < 0 or batch_size < 1:
        raise ValueError(
            f"chunk_size={chunk_size}, overlap={overlap}, batch_size={batch_size}: chunk_size "
            "and batch_size must be positive and overlap non-negative"
        )
    paths = records.split_files(data_dir, split)  # checks COMPLETED and that no shard is missing
    info = records.read_info(data_dir)
    cfg = records.representation_from_info(info)
    if target_part == "chroma" and cfg.ordering != "luma_first":
        raise ValueError(
            f"target_part='chroma' needs a luma_first dataset; {data_dir} is {cfg.ordering}"
        )
    train = mode == "train"
    l_max = default_l_max(info, split) if (l_max is None and train) else l_max
    drop_remainder = train if drop_remainder is None else drop_remainder
    repeat = train if repeat is None else repeat
    window = chunk_size + overlap

    files = tf.data.Dataset.from_tensor_slices(paths)
    if input_context is not None and input_context.num_input_pipelines > 1:
        n, i = input_context.num_input_pipelines, input_context.input_pipeline_id
        if len(paths) >= n:
            files = files.shard(n, i)
    ds = files.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(paths), 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if input_context is not None and input_context.num_input_pipelines > len(paths) > 0:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)

    def parse(index, record):
        seq = _with_stop(_validate(records.parse_example(record), cfg), cfg)
        seq["sequence_index"] = tf.cast(index, tf.int32)
        return seq

    if not train:
        ds = ds.enumerate().map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.flat_map(lambda s: _all_chunks(s, cfg, chunk_size, overlap, target_part))
        ds = ds.map(lambda e: _static(e, cfg, window))
        if repeat:
            ds = ds.repeat()
        return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)

    if repeat:
        ds = ds.repeat()
    ds = ds.enumerate()
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    base_seed = tf.constant([seed, 0], tf.int64)
    weight_args = (float(exponent), float(p_min))

    def seeds(index):
        key = tf.random.experimental.stateless_fold_in(base_seed, index)
        return [tf.random.experimental.stateless_fold_in(key, i) for i in (0, 1)]

    def keep(index, record):
        """The length-bias filter, decided before any per-example work is spent."""
        seq = parse(index, record)
        length = tf.cast(tf.size(seq["channels"]), tf.float32)
        keep_p = tf.minimum(length / float(l_max), 1.0)
        # The int64 stream index seeds the chunk draw too (sequence_index is int32 and wraps).
        return tf.random.stateless_uniform([], seeds(index)[0]) < keep_p, (seq, index)

    def sample(seq, index):
        """The chunk sampler, then the window and the input DCT image."""
        length = tf.size(seq["channels"])
        base = _target_base(seq, cfg, target_part)
        num_chunks = (length - base + chunk_size - 1) // chunk_size
        k = tf.cast(tf.range(num_chunks), tf.float32)
        logits = tf.math.log(tf.maximum(tf.pow(k + 1.0, -weight_args[0]), weight_args[1]))
        # num_chunks >= 1 (the stop token is always a target), so logits are never all -inf.
        chunk_seed = seeds(index)[1]
        chunk = tf.random.stateless_categorical(logits[None], 1, chunk_seed, dtype=tf.int32)[0, 0]
        start = base + chunk * chunk_size
        example = chunk_example(seq, start, chunk, num_chunks, cfg, chunk_size, overlap)
        return _static(example, cfg, window)

    ds = ds.map(keep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.filter(lambda kept, _: kept).map(lambda _, seq_and_index: seq_and_index)
    ds = ds.map(sample, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def _all_chunks(seq: dict, cfg: DCTConfig, chunk_size: int, overlap: int, target_part: str):
    """Every chunk of one sequence, in order (eval mode)."""
    length = tf.size(seq["channels"])
    base = _target_base(seq, cfg, target_part)
    num_chunks = (length - base + chunk_size - 1) // chunk_size
    chunks = tf.data.Dataset.range(tf.cast(num_chunks, tf.int64))
    return chunks.map(
        lambda k: chunk_example(
            seq,
            base + tf.cast(k, tf.int32) * chunk_size,
            k,
            num_chunks,
            cfg,
            chunk_size,
            overlap,
        )
    )


def num_chunks_of(length: int, chunk_size: int) -> int:
    """n = ceil(L / C) for a sequence of length L (stop token included)."""
    return max(1, math.ceil(length / chunk_size))
