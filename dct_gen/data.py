"""The training input pipeline: records -> length-bias filter -> chunk sampler -> model inputs.

Paper section 3.1 and appendix C. Everything runs in tf.data graph mode with static shapes, so
one pipeline feeds the CPU, GPUs and TPUStrategy. Randomness is stateless: every draw is derived
from (seed, input pipeline, element index) (`pipeline_seeds`), so the same seed gives the same
batches, and the input pipelines of a distributed run draw independently.

A sequence of length L counts its stop token (channel 3B^2, position 0, value 0), appended here.
Its n = ceil(L / C) chunks are drawn with probability proportional to max((k + 1)^-exponent,
p_min) (`chunk_weights`), after the length-bias filter keeps it with probability
min(L / L_max, 1) (`keep_probability`). For colorization (target_part 'chroma') L and n count
the chroma part only (its triples and the stop token): the luma is input, never a target.

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
import re

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


def default_l_max(info: dict, split: str, where: str = records.INFO_FILENAME) -> int:
    """L_max from info.json (`where` names it in errors): the split's suggested L_max (a high
    length percentile, stop token included), so that only the longest sequences are always
    kept."""
    lengths = info["splits"].get(split, {}).get("lengths", {})
    suggested = lengths.get("suggested_l_max") if isinstance(lengths, dict) else None
    if not suggested:
        raise ValueError(
            f"{where} has no suggested_l_max for split {split!r}; pass l_max explicitly"
        )
    if not isinstance(suggested, int) or isinstance(suggested, bool) or suggested < 1:
        raise records.DatasetError(
            f"{where}: field splits.{split}.lengths.suggested_l_max is {suggested!r}, not a "
            "positive integer; rebuild the dataset or pass l_max explicitly"
        )
    return suggested


# An InvalidArgumentError whose message holds one of these comes from a check of the data (the
# record parser's, `_validate`'s, the per-shard record count's): the user's data is at fault.
# Any other is a bug and keeps its traceback.
DATA_CHECK_MESSAGES = (
    "corrupt record",
    "malformed record",
    "format_version differs",
    "Could not parse example input",
    "TFRecord shard",
    "record label",
)


def error_message(error: tf.errors.OpError) -> str:
    """An op error's message as one line, without TensorFlow's function and node decorations;
    an assertion's data items are joined with spaces."""
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", error.message)
    text = re.sub(r"Error in user-defined function passed to .*? with iterator: \S+: ", "", text)
    text = text.split("\n")[0].split("[Op:")[0].strip()
    if text.startswith("assertion failed: "):
        items = re.findall(r"\[(.*?)\](?=\s\[|$)", text[len("assertion failed: ") :])
        text = " ".join(item.strip() for item in items) or text
    return text


def _recorded_counts(paths: list[str]) -> dict[str, int]:
    """path -> the record count info.json (beside the shards) lists for it, where it does."""
    counts = {}
    for data_dir in sorted({p.rsplit("/", 1)[0] for p in paths if "/" in p}):
        try:
            info = records.read_info(data_dir)
        except (OSError, ValueError, tf.errors.OpError):
            continue  # a diagnosis: info.json's own errors are reported where it is read
        for entry in info["splits"].values():
            for shard in entry.get("shards", []):
                counts[records.join(data_dir, shard["file"])] = shard["records"]
    return counts


def find_corrupt_shards(paths: list[str]) -> list[tuple[str, str]]:
    """Reads each shard alone and returns (path, error) for those that fail their checksums or
    hold another number of records than info.json (beside them) lists for them."""
    expected = _recorded_counts(paths)
    bad = []
    for path in paths:
        count = 0
        try:
            for _ in tf.data.TFRecordDataset(path):
                count += 1
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
            bad.append((path, error_message(e)))
            continue
        if path in expected and count != expected[path]:
            bad.append((path, f"{count} records, but info.json lists {expected[path]}"))
    return bad


class ShardReadError(InputError, IOError):
    """A shard could not be read, or holds bad data; the message names it."""


def input_error(error: tf.errors.OpError, paths: list[str]) -> ShardReadError | None:
    """The user error for an error the input pipeline over `paths` raised, or None when it is
    not the data's fault (a bug: let it keep its traceback).

    A DataLossError (a checksum or a framing that fails) is traced to its shard by reading each
    shard alone (TF's reader reports only an offset). An InvalidArgumentError from a check of the
    data (a corrupt or malformed record, a shard with fewer or more records than info.json
    lists) already names the record's key or the shard; it is kept as one line.
    """
    if isinstance(error, tf.errors.DataLossError):
        bad = find_corrupt_shards(paths)
        names = "; ".join(f"{p}: {msg}" for p, msg in bad) or "no single shard fails alone"
        return ShardReadError(f"damaged TFRecord shard(s): {names}")
    if isinstance(error, tf.errors.InvalidArgumentError):
        message = error_message(error)
        if len(message) > 500:  # a record that does not parse is quoted in the message
            message = message[:497] + "..."
        if any(marker in message for marker in DATA_CHECK_MESSAGES):
            where = paths[0].rsplit("/", 1)[0] if paths else "the dataset"
            return ShardReadError(message if where in message else f"{where}: {message}")
    return None


def iterate(dataset: tf.data.Dataset, paths: list[str]):
    """Iterates a dataset, turning an error the data caused (a damaged shard, a bad record, a
    shard with a record count other than info.json's) into a ShardReadError that names the shard
    or the record (`input_error`)."""
    try:
        yield from dataset
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        user_error = input_error(e, paths)
        if user_error is None:
            raise
        raise user_error from e


# Records counted per block: the count's check runs once per block, not per record (a function
# call per record would cost several times what reading the record does).
COUNT_BLOCK = 64


def _shard_records(path, expected, info_path: str):
    """The records of one shard, their number checked against `expected` (what info.json at
    `info_path` lists) as they are read: a record beyond `expected` fails when its block is
    read, before it is handed on; a shard that ends short fails at its end. Both messages name
    the shard. The count lives in a scan, so it resumes with a checkpointed iterator."""
    blocks = tf.data.TFRecordDataset(path).batch(COUNT_BLOCK)
    # An empty block marks the shard's end (batch never yields one); unbatch drops it.
    end = tf.data.Dataset.from_tensors(tf.zeros([0], tf.string))
    # Assert's data of int32 and strings only: TF then adds the assertion without a cond.
    limit = tf.cast(expected, tf.int32)

    def count(seen, block):
        size = tf.size(block)
        total = seen + size
        checks = [
            tf.debugging.Assert(
                tf.logical_or(tf.equal(size, 0), total <= limit),
                ["TFRecord shard", path, "holds more than the", limit, "records", info_path,
                 "lists for it: it was changed after the dataset was written; rebuild the "
                 "dataset"],
            ),
            tf.debugging.Assert(
                tf.logical_or(size > 0, tf.equal(seen, limit)),
                ["TFRecord shard", path, "ends after", seen, "records, but", info_path, "lists",
                 limit, "for it: it was cut short; rebuild the dataset or copy it again"],
            ),
        ]  # fmt: skip
        with tf.control_dependencies(checks):
            return total, tf.identity(block)

    return blocks.concatenate(end).scan(tf.constant(0, tf.int32), count).unbatch()


# ----------------------------------------------------------------------------------------------
# Per-sequence work (graph mode).


def _validate(features: dict, cfg: DCTConfig, num_classes: int | None = None) -> dict:
    """Rejects malformed records with an error that names the record's key; never clips. With
    num_classes (a class-conditional model), a label outside [0, num_classes) is refused too,
    naming the label and the record (an unlabelled record has label -1)."""
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
    if num_classes:
        label = features["label"]
        in_range = tf.logical_and(label >= 0, label < num_classes)
        checks.append(
            tf.debugging.Assert(
                in_range,
                [
                    "record label",
                    tf.strings.as_string(label),
                    f"is outside [0, {num_classes}), the classes of the model "
                    f"(model_config.num_classes = {num_classes}; -1: an unlabelled record);",
                    "record key:",
                    key,
                ],
            )
        )
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


def pipeline_seeds(seed: int, pipeline_id: int = 0) -> tuple[int, tuple[int, int]]:
    """The seeds of input pipeline `pipeline_id` (tf.distribute runs one per host): the
    shuffle's seed, and the key of the stateless per-element draws (the length-bias filter, the
    chunk), which fold in each element's stream index.

    Pipeline 0 keeps (seed, (seed, 0)), the seeds of a single pipeline, so runs started before
    the pipeline's id was folded in resume with the same stream. Every other pipeline gets its
    own: without them, pipelines reading different records in the same order would draw the
    same chunks and keep the same stream indices.
    """
    if pipeline_id == 0:
        return int(seed), (int(seed), 0)
    # SeedSequence mixes (seed, id) into an unrelated 63-bit shuffle seed; it takes no negative
    # numbers, so the seed goes in as its two's complement.
    mixed = np.random.SeedSequence([int(seed) % 2**64, int(pipeline_id)])
    shuffle_seed = int(mixed.generate_state(1, np.uint64)[0] >> np.uint64(1))
    return shuffle_seed, (int(seed), int(pipeline_id))


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
    num_classes: int | None = None,
    label_dropout: float = 0.0,
) -> tf.data.Dataset:
    """Builds the batched input pipeline over the shards of DATA_DIR/SPLIT.

    Args:
      data_dir: a directory written by beam_jobs (info.json, COMPLETED, shards).
      split: the split's name, e.g. "train".
      batch_size: examples per batch (per input pipeline under tf.distribute).
      chunk_size: C, target elements per chunk.
      overlap: O, elements before the chunk that the decoders see without loss.
      seed: the seed of every random draw (shuffle, filter, chunk choice); each input
        pipeline under tf.distribute draws its own from it (`pipeline_seeds`).
      mode: "train" (shuffle, repeat, filter, sample one chunk per kept sequence) or "eval"
        (every chunk of every sequence, in order, once, no filter).
      exponent, p_min: the chunk sampler (`chunk_weights`).
      l_max: the length-bias filter's L_max; default from info.json (`default_l_max`, a
        length of whole sequences).
      target_part: "all", or "chroma" for colorization training on luma_first datasets (paper
        4.3): targets are drawn from the chroma part only, and all luma is input. The
        length-bias filter then counts the chroma part's length (its triples and the stop
        token), the targets the sequence holds.
      shuffle_buffer: sequences in the shuffle buffer (train).
      input_context: from `strategy.distribute_datasets_from_function`; shards per host.
      drop_remainder: default True in train mode (static batch), False in eval mode.
      repeat: default True in train mode, False in eval mode.
      num_classes: a class-conditional model's number of classes: every record's label must
        lie in [0, num_classes) (checked as it is read). None: labels are not checked.
      label_dropout: train mode: the rate at which an example's label is replaced by -1 (the
        null label), drawn from the example's own seed (deterministic, resumable).

    Returns:
      A tf.data.Dataset of dicts (see the module docstring), batched.

    Raises:
      FileNotFoundError: no dataset, or the split did not finish or misses a shard.
      records.DatasetError: info.json is malformed, or a shard's size differs from the size
        info.json lists for it (`records.split_shards`).
      tf.errors.InvalidArgumentError: while iterating, for a malformed record (the message
        names its key) or a shard with fewer or more records than info.json lists (the message
        names the shard); `iterate` turns these into a ShardReadError.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: must be one of {MODES}")
    if not 0 <= label_dropout < 1 or (label_dropout and not num_classes):
        raise ValueError(
            f"label_dropout={label_dropout}: must be in [0, 1), and 0 without num_classes"
        )
    if target_part not in TARGET_PARTS:
        raise ValueError(f"target_part={target_part!r}: must be one of {TARGET_PARTS}")
    if chunk_size < 1 or overlap < 0 or batch_size < 1:
        raise ValueError(
            f"chunk_size={chunk_size}, overlap={overlap}, batch_size={batch_size}: chunk_size "
            "and batch_size must be positive and overlap non-negative"
        )
    # Checks COMPLETED, that no shard is missing and that each has info.json's size.
    shards = records.split_shards(data_dir, split)
    paths = [shard.path for shard in shards]
    info = records.read_info(data_dir)
    cfg = records.representation_from_info(info)
    if target_part == "chroma" and cfg.ordering != "luma_first":
        raise ValueError(
            f"target_part='chroma' needs a luma_first dataset; {data_dir} is {cfg.ordering}"
        )
    train = mode == "train"
    if l_max is None and train:
        l_max = default_l_max(info, split, records.join(data_dir, records.INFO_FILENAME))
    drop_remainder = train if drop_remainder is None else drop_remainder
    repeat = train if repeat is None else repeat
    window = chunk_size + overlap

    # Each shard's record count is checked as it is read when info.json lists them all (a
    # dataset written before it did is read as it was).
    counts = [shard.num_records for shard in shards]
    if counts and None not in counts:
        files = tf.data.Dataset.from_tensor_slices((paths, tf.constant(counts, tf.int64)))
        info_path = records.join(data_dir, records.INFO_FILENAME)
        read = lambda path, expected: _shard_records(path, expected, info_path)
    else:
        files = tf.data.Dataset.from_tensor_slices(paths)
        read = tf.data.TFRecordDataset
    if input_context is not None and input_context.num_input_pipelines > 1:
        n, i = input_context.num_input_pipelines, input_context.input_pipeline_id
        if len(paths) >= n:
            files = files.shard(n, i)
    ds = files.interleave(
        read,
        cycle_length=min(len(paths), 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if input_context is not None and input_context.num_input_pipelines > len(paths) > 0:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)

    def parse(index, record):
        seq = _with_stop(_validate(records.parse_example(record), cfg, num_classes), cfg)
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
    pipeline = input_context.input_pipeline_id if input_context is not None else 0
    shuffle_seed, base_seed = pipeline_seeds(seed, pipeline)
    ds = ds.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
    base_seed = tf.constant(base_seed, tf.int64)
    weight_args = (float(exponent), float(p_min))

    # The draws of one sequence, each from its own seed: the filter's, the chunk's, and the
    # label dropout's.
    KEEP, CHUNK, DROP = 0, 1, 2

    def draw_seed(index, draw):
        key = tf.random.experimental.stateless_fold_in(base_seed, index)
        return tf.random.experimental.stateless_fold_in(key, draw)

    def keep(index, record):
        """The length-bias filter, decided before any per-example work is spent; its length is
        the target part's (for 'chroma', the chroma triples and the stop token)."""
        seq = parse(index, record)
        length = tf.size(seq["channels"]) - _target_base(seq, cfg, target_part)
        keep_p = tf.minimum(tf.cast(length, tf.float32) / float(l_max), 1.0)
        # The int64 stream index seeds the chunk draw too (sequence_index is int32 and wraps).
        return tf.random.stateless_uniform([], draw_seed(index, KEEP)) < keep_p, (seq, index)

    def sample(seq, index):
        """The chunk sampler, then the window and the input DCT image."""
        length = tf.size(seq["channels"])
        base = _target_base(seq, cfg, target_part)
        num_chunks = (length - base + chunk_size - 1) // chunk_size
        k = tf.cast(tf.range(num_chunks), tf.float32)
        logits = tf.math.log(tf.maximum(tf.pow(k + 1.0, -weight_args[0]), weight_args[1]))
        # num_chunks >= 1 (the stop token is always a target), so logits are never all -inf.
        chunk_seed = draw_seed(index, CHUNK)
        chunk = tf.random.stateless_categorical(logits[None], 1, chunk_seed, dtype=tf.int32)[0, 0]
        start = base + chunk * chunk_size
        example = chunk_example(seq, start, chunk, num_chunks, cfg, chunk_size, overlap)
        if label_dropout:  # the null label, so that its embedding is trained
            drop = tf.random.stateless_uniform([], draw_seed(index, DROP)) < label_dropout
            example["label"] = tf.where(drop, -1, example["label"])
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
