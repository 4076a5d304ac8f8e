"""The on-disk record format shared by the Beam job and training: one tf.train.Example per image.

A record holds one image's sparse DCT triples (docs/datasets.md), without the stop token, in the
order `dct_gen.representation.encode` emits them, plus its size, label and source key. The
three int arrays are stored compactly, as protobuf varints in `Int64List` features:

- `channel_runs`, `channel_run_lengths`: the channels run-length coded. The codec emits triples
  channel by channel, so a record holds one run per non-empty channel (at most 3 B^2 runs) and
  the channels cost almost nothing per triple.
- `position_deltas`: within a run, each position minus the previous one; the first position of
  a run is stored as is. Positions ascend within a channel, so deltas are small positive numbers
  (mostly one byte) where absolute positions would take two.
- `values`: the values zigzag-mapped (0, -1, 1, -2, 2, ... -> 0, 1, 2, 3, 4, ...), so that the
  common small magnitudes of either sign take one byte (a negative int64 varint takes ten).
- `height`, `width` (the resized image, pixels), `label` (-1 when none), `key` (bytes: the
  source, e.g. a file path or a TFDS id) and `format_version`.

`parse_example` undoes all of this with TensorFlow ops, eagerly or inside `tf.data`. Writing
needs no TensorFlow: `serialize_example` emits the protobuf wire format directly and
`tfrecord_frame` adds the TFRecord framing, so Beam workers that convert image files never pay
for importing TensorFlow.

A dataset directory holds, per split, `<split>.tfrecord-SSSSS-of-NNNNN` shards, a
`failed-<split>.jsonl` dead-letter file, and, shared by the splits, `info.json` (the
representation, per-split counts and sequence-length statistics; see `docs/datasets.md`) and
`COMPLETED`, which names the splits whose conversion finished, one per line, and is written last.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from dct_gen.representation import DCTConfig

FORMAT_VERSION = 1
INFO_FILENAME = "info.json"
COMPLETED_FILENAME = "COMPLETED"

# Feature names inside each tf.train.Example.
FEATURE_NAMES = (
    "channel_run_lengths",
    "channel_runs",
    "format_version",
    "height",
    "key",
    "label",
    "position_deltas",
    "values",
    "width",
)

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


# ----------------------------------------------------------------------------------------------
# File names.


def check_split_name(split: str) -> str:
    """Returns the split name if it can name files (letters, digits, '_' and '-'), else raises."""
    if not isinstance(split, str) or not _SPLIT_NAME.match(split):
        raise ValueError(
            f"split name {split!r} cannot name output files: use letters, digits, '_' and '-' "
            "(e.g. 'train', 'validation', 'train_10pct')"
        )
    return split


def shard_name(split: str, index: int, num_shards: int) -> str:
    """`<split>.tfrecord-SSSSS-of-NNNNN`, the name of shard `index` of `num_shards`."""
    check_split_name(split)
    if not 0 <= index < num_shards:
        raise ValueError(f"shard index {index} outside [0, {num_shards})")
    return f"{split}.tfrecord-{index:05d}-of-{num_shards:05d}"


def shard_glob(split: str) -> str:
    """A glob that matches every shard of a split, whatever their number."""
    return f"{check_split_name(split)}.tfrecord-?????-of-?????"


def failed_name(split: str) -> str:
    """The dead-letter file of a split: one JSON object per line (key, reason, message)."""
    return f"failed-{check_split_name(split)}.jsonl"


def join(directory: str, name: str) -> str:
    """Joins a directory (local or a URL such as gs://bucket/dir) and a file name."""
    return directory.rstrip("/") + "/" + name


# ----------------------------------------------------------------------------------------------
# Triples <-> the stored arrays (numpy).


def zigzag_encode(values: np.ndarray) -> np.ndarray:
    """Signed ints -> non-negative: 0, -1, 1, -2, 2, ... -> 0, 1, 2, 3, 4, ..."""
    v = np.asarray(values, dtype=np.int64)
    return (v << 1) ^ (v >> 63)


def zigzag_decode(codes: np.ndarray) -> np.ndarray:
    """The inverse of zigzag_encode."""
    z = np.asarray(codes, dtype=np.int64)
    return (z >> 1) ^ -(z & 1)


def _as_int_vector(name: str, array: Any) -> np.ndarray:
    a = np.asarray(array)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def pack_triples(channels: Any, positions: Any, values: Any) -> dict[str, np.ndarray]:
    """Triples -> the stored arrays (`channel_runs`, `channel_run_lengths`, `position_deltas`,
    `values`), all int64 and non-negative.

    Raises:
      ValueError: if the arrays differ in length, hold negative channels or positions, or a
        position does not exceed the one before it inside a run of equal channels (the codec
        always emits positions in ascending order within a channel).
    """
    c = _as_int_vector("channels", channels)
    p = _as_int_vector("positions", positions)
    v = _as_int_vector("values", values)
    if not c.size == p.size == v.size:
        raise ValueError(
            f"channels, positions and values differ in length: {c.size}, {p.size}, {v.size}"
        )
    if c.size and (c.min() < 0 or p.min() < 0):
        raise ValueError("channels and positions must be non-negative")
    starts = np.flatnonzero(np.diff(c, prepend=-1)) if c.size else np.zeros(0, np.int64)
    lengths = np.diff(np.append(starts, c.size))
    deltas = np.diff(p, prepend=0)
    deltas[starts] = p[starts]
    run_first = np.zeros(c.size, dtype=bool)
    run_first[starts] = True
    if np.any(deltas[~run_first] <= 0):
        i = int(np.flatnonzero((deltas <= 0) & ~run_first)[0])
        raise ValueError(
            f"positions must ascend within a channel: triple {i} (channel {c[i]}) has position "
            f"{p[i]} after {p[i - 1]}"
        )
    return {
        "channel_runs": c[starts],
        "channel_run_lengths": lengths.astype(np.int64),
        "position_deltas": deltas,
        "values": zigzag_encode(v),
    }


def unpack_triples(stored: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The inverse of pack_triples: the stored arrays -> (channels, positions, values), int32."""
    runs = np.asarray(stored["channel_runs"], dtype=np.int64)
    lengths = np.asarray(stored["channel_run_lengths"], dtype=np.int64)
    deltas = np.asarray(stored["position_deltas"], dtype=np.int64)
    codes = np.asarray(stored["values"], dtype=np.int64)
    if lengths.sum() != deltas.size or codes.size != deltas.size or runs.size != lengths.size:
        raise ValueError(
            f"corrupt record: {runs.size} runs of {lengths.sum()} triples, "
            f"{deltas.size} positions, {codes.size} values"
        )
    channels = np.repeat(runs, lengths)
    csum = np.cumsum(deltas)
    before = np.concatenate([[0], csum])[np.cumsum(lengths) - lengths]
    positions = csum - np.repeat(before, lengths)
    return (
        channels.astype(np.int32),
        positions.astype(np.int32),
        zigzag_decode(codes).astype(np.int32),
    )


# ----------------------------------------------------------------------------------------------
# tf.train.Example wire format, written without TensorFlow.
#
# Example { Features features = 1; }   Features { map<string, Feature> feature = 1; }
# Feature { oneof { BytesList bytes_list = 1; FloatList float_list = 2;
#                   Int64List int64_list = 3; } }
# BytesList { repeated bytes value = 1; }   Int64List { repeated int64 value = 1 [packed]; }
# Map entries are written sorted by key, as protobuf's deterministic serialization does.


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 -> two's complement, ten bytes
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _varints(values: np.ndarray) -> bytes:
    """Packed varint encoding of an int64 array (vectorised, one pass per 7-bit group)."""
    v = np.asarray(values, dtype=np.int64).view(np.uint64)
    if v.size == 0:
        return b""
    seven, low_bits = np.uint64(7), np.uint64(0x7F)
    groups = [(v & low_bits).astype(np.uint8)]
    rest = v >> seven
    more = [rest != 0]
    while more[-1].any():
        groups.append((rest & low_bits).astype(np.uint8))
        rest = rest >> seven
        more.append(rest != 0)
    if len(groups) == 1:
        return groups[0].tobytes()
    g = np.stack(groups, axis=1)  # (n, groups): little-endian 7-bit groups
    m = np.stack(more, axis=1)  # m[:, k]: another group follows group k
    g |= m.astype(np.uint8) << 7  # the continuation bit
    keep = np.ones_like(m)
    keep[:, 1:] = m[:, :-1]
    return g[keep].tobytes()


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _int64_feature(values: np.ndarray) -> bytes:
    packed = _varints(values)
    int64_list = _field(1, packed) if packed else b""
    return _field(3, int64_list)


def _bytes_feature(value: bytes) -> bytes:
    return _field(1, _field(1, value))


def serialize_example(
    *,
    channels: Any,
    positions: Any,
    values: Any,
    height: int,
    width: int,
    label: int = -1,
    key: str,
) -> bytes:
    """One image's record as a serialized tf.train.Example (see the module docstring).

    Args:
      channels, positions, values: the triples, as `encode` gives them (no stop token).
      height, width: the resized image's size in pixels.
      label: the class, or -1 when there is none.
      key: a string that names the source (a file path, a TFDS id).

    Returns:
      The serialized proto; `parse_example` reads it back.
    """
    if int(height) <= 0 or int(width) <= 0:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    if int(label) < -1:
        raise ValueError(f"label must be -1 (none) or a class index, got {label}")
    if not isinstance(key, str) or not key:
        raise ValueError(f"key must be a non-empty string, got {key!r}")
    stored = pack_triples(channels, positions, values)
    features = {name: _int64_feature(array) for name, array in stored.items()}
    features["format_version"] = _int64_feature(np.array([FORMAT_VERSION]))
    features["height"] = _int64_feature(np.array([int(height)]))
    features["width"] = _int64_feature(np.array([int(width)]))
    features["label"] = _int64_feature(np.array([int(label)]))
    features["key"] = _bytes_feature(key.encode("utf-8"))
    entries = b"".join(
        _field(1, _field(1, name.encode("ascii")) + _field(2, features[name]))
        for name in sorted(features)
    )
    return _field(1, entries)


def tfrecord_frame(data: bytes) -> bytes:
    """One TFRecord: little-endian length, its masked CRC32C, the data, the data's masked CRC32C."""
    length = struct.pack("<Q", len(data))
    return length + _masked_crc(length) + data + _masked_crc(data)


def _masked_crc(data: bytes) -> bytes:
    import google_crc32c  # a core dependency; imported here to keep parse-only users light

    crc = google_crc32c.value(data)
    masked = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    return struct.pack("<I", masked)


# ----------------------------------------------------------------------------------------------
# Parsing (TensorFlow).


def parse_example(serialized) -> dict:
    """Parses one serialized record; works eagerly and inside `tf.data.Dataset.map`.

    Args:
      serialized: a scalar tf.string tensor (or bytes) holding one record.

    Returns:
      A dict of tensors: `channels`, `positions`, `values` (1-D int32, exactly the triples
      `encode` gave, no stop token), `height`, `width`, `label` (int32 scalars; label -1 when
      none) and `key` (tf.string scalar).

    Raises:
      tf.errors.InvalidArgumentError: (when the op runs) for a record of another format
        version, or whose arrays disagree in length.
    """
    # TensorFlow is imported here, not at module level: Beam workers import this module to
    # write records and should not pay for TensorFlow.
    import tensorflow as tf

    serialized = tf.convert_to_tensor(serialized, dtype=tf.string)
    if serialized.shape.rank not in (None, 0):
        raise ValueError(
            f"parse_example takes one serialized record (a scalar), got shape {serialized.shape}; "
            "map it over a dataset of records before batching"
        )
    scalar = lambda dtype: tf.io.FixedLenFeature([], dtype)
    spec = {
        "format_version": scalar(tf.int64),
        "height": scalar(tf.int64),
        "width": scalar(tf.int64),
        "label": scalar(tf.int64),
        "key": scalar(tf.string),
        "channel_runs": tf.io.VarLenFeature(tf.int64),
        "channel_run_lengths": tf.io.VarLenFeature(tf.int64),
        "position_deltas": tf.io.VarLenFeature(tf.int64),
        "values": tf.io.VarLenFeature(tf.int64),
    }
    f = tf.io.parse_single_example(serialized, spec)
    runs = f["channel_runs"].values
    lengths = f["channel_run_lengths"].values
    deltas = f["position_deltas"].values
    codes = f["values"].values
    n = tf.size(deltas, out_type=tf.int64)
    checks = [
        tf.debugging.assert_equal(
            f["format_version"],
            tf.constant(FORMAT_VERSION, tf.int64),
            message=f"record format_version differs from this reader's ({FORMAT_VERSION})",
        ),
        tf.debugging.assert_equal(
            tf.size(runs), tf.size(lengths), message="corrupt record: channel runs"
        ),
        tf.debugging.assert_equal(
            tf.reduce_sum(lengths), n, message="corrupt record: run lengths vs positions"
        ),
        tf.debugging.assert_equal(
            tf.size(codes, out_type=tf.int64), n, message="corrupt record: values vs positions"
        ),
        tf.debugging.assert_non_negative(lengths, message="corrupt record: negative run length"),
    ]
    with tf.control_dependencies(checks):
        channels = tf.repeat(runs, lengths)
        csum = tf.cumsum(deltas)
        starts = tf.cumsum(lengths, exclusive=True)
        before = tf.gather(tf.concat([tf.zeros([1], tf.int64), csum], 0), starts)
        positions = csum - tf.repeat(before, lengths)
        values = tf.bitwise.bitwise_xor(
            tf.bitwise.right_shift(codes, 1), -tf.bitwise.bitwise_and(codes, 1)
        )
    return {
        "channels": tf.cast(channels, tf.int32),
        "positions": tf.cast(positions, tf.int32),
        "values": tf.cast(values, tf.int32),
        "height": tf.cast(f["height"], tf.int32),
        "width": tf.cast(f["width"], tf.int32),
        "label": tf.cast(f["label"], tf.int32),
        "key": f["key"],
    }


# ----------------------------------------------------------------------------------------------
# info.json and COMPLETED (reading side; the Beam job writes them).


def check_info(info: Mapping[str, Any], where: str = INFO_FILENAME) -> Mapping[str, Any]:
    """Checks an info.json dict's format version and layout; returns it."""
    version = info.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{where}: format_version {version!r}, but this code reads version {FORMAT_VERSION}; "
            "rebuild the dataset with this version of beam_jobs.build_dataset"
        )
    for field in ("representation", "splits"):
        if field not in info:
            raise ValueError(f"{where}: missing field {field!r}")
    return info


def representation_from_info(info: Mapping[str, Any]) -> DCTConfig:
    """The DCTConfig the records of a dataset were made with."""
    return DCTConfig.from_dict(dict(check_info(info)["representation"]))


def read_info(data_dir: str) -> dict:
    """Reads and checks `data_dir/info.json` (local or gs://, through tf.io.gfile)."""
    import tensorflow as tf

    path = join(data_dir, INFO_FILENAME)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path} does not exist: is {data_dir} a dataset directory?")
    with tf.io.gfile.GFile(path, "r") as f:
        info = json.load(f)
    check_info(info, path)
    return info


def parse_completed(text: str) -> list[str]:
    """The split names listed in a COMPLETED marker."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def split_files(data_dir: str, split: str) -> list[str]:
    """The shard paths of a completed split, in shard order.

    Raises:
      FileNotFoundError: when COMPLETED is missing or does not list the split (its conversion
        did not finish), or when a shard that info.json promises is missing.
    """
    import tensorflow as tf

    marker = join(data_dir, COMPLETED_FILENAME)
    if not tf.io.gfile.exists(marker):
        raise FileNotFoundError(f"{marker} does not exist: the conversion did not finish")
    with tf.io.gfile.GFile(marker, "r") as f:
        done = parse_completed(f.read())
    if split not in done:
        raise FileNotFoundError(f"{marker} lists splits {done}, not {split!r}")
    info = read_info(data_dir)
    if split not in info["splits"]:
        raise FileNotFoundError(f"{join(data_dir, INFO_FILENAME)} has no split {split!r}")
    num_shards = int(info["splits"][split]["num_shards"])
    paths = [join(data_dir, shard_name(split, i, num_shards)) for i in range(num_shards)]
    missing = [p for p in paths if not tf.io.gfile.exists(p)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} shard(s) missing, e.g. {missing[0]}")
    return paths
