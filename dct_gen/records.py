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
Readers list a split with `split_shards` (or `split_files`), which checks each shard's size
against the one info.json lists for it; `dct_gen.data` checks their record counts as it reads.
"""

from __future__ import annotations

import dataclasses
import json
import re
import struct
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from dct_gen.errors import InputError
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

# Records store int64 varints; the reader hands int32 on, and refuses what would not fit rather
# than let a crafted 2^32 + 5 wrap to 5.
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


class DatasetError(InputError):
    """A dataset directory's info.json or shards are malformed or disagree; the message names
    the file and the field."""


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
    # Each run length within [0, n] first, so that their sum cannot wrap around int64.
    lengths_ok = not lengths.size or (lengths.min() >= 0 and lengths.max() <= deltas.size)
    if (
        not lengths_ok
        or lengths.sum() != deltas.size
        or codes.size != deltas.size
        or runs.size != lengths.size
    ):
        raise ValueError(
            f"corrupt record: {runs.size} runs of {lengths.sum()} triples, "
            f"{deltas.size} positions, {codes.size} values"
        )
    channels = np.repeat(runs, lengths)
    csum = np.cumsum(deltas)
    before = np.concatenate([[0], csum])[np.cumsum(lengths) - lengths]
    positions = csum - np.repeat(before, lengths)
    values = zigzag_decode(codes)
    for field, array in (
        ("channel_runs", channels),
        ("position_deltas", positions),
        ("values", values),
    ):
        _check_int32(field, array)
    return channels.astype(np.int32), positions.astype(np.int32), values.astype(np.int32)


def _check_int32(field: str, array: np.ndarray) -> None:
    """Raises ValueError naming the record field when a decoded number does not fit int32."""
    outside = (array < INT32_MIN) | (array > INT32_MAX)
    if outside.any():
        raise ValueError(
            f"corrupt record: field {field} decodes to {int(array[outside][0])}, outside the "
            "int32 range"
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
        version, whose arrays disagree in length, or that holds a number outside int32 (the
        message names the field and the record's key).
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
        tf.debugging.assert_non_negative(lengths, message="corrupt record: negative run length"),
        # Each length within [0, n] keeps their sum from wrapping around int64 (a crafted
        # record could otherwise pass the sum check and make tf.repeat allocate 2^63).
        tf.debugging.assert_less_equal(
            lengths, n, message="corrupt record: a run longer than the record"
        ),
        tf.debugging.assert_equal(
            tf.reduce_sum(lengths), n, message="corrupt record: run lengths vs positions"
        ),
        tf.debugging.assert_equal(
            tf.size(codes, out_type=tf.int64), n, message="corrupt record: values vs positions"
        ),
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
    # The int64 numbers must fit the int32 they are handed on as (a cast would wrap them).
    # Positions are checked after the running sum: two positions that fit int32 differ by a
    # delta that int64 holds exactly, so no wrapped delta can hide behind them.
    decoded = {
        "channel_runs": runs,
        "position_deltas": positions,
        "values": values,
        "height": f["height"],
        "width": f["width"],
        "label": f["label"],
    }
    fits = [
        _require(
            (tf.reduce_min(t) >= INT32_MIN) & (tf.reduce_max(t) <= INT32_MAX),
            f"corrupt record: field {field} holds a number outside the int32 range; record key:",
            f["key"],
        )
        for field, t in decoded.items()
    ]
    with tf.control_dependencies([op for op in fits if op is not None]):
        return {
            "channels": tf.cast(channels, tf.int32),
            "positions": tf.cast(positions, tf.int32),
            "values": tf.cast(values, tf.int32),
            "height": tf.cast(f["height"], tf.int32),
            "width": tf.cast(f["width"], tf.int32),
            "label": tf.cast(f["label"], tf.int32),
            "key": tf.identity(f["key"]),
        }


def _require(ok, message: str, key):
    """An assertion that fails with `message` and the record's key: an op inside a graph, and
    at once, with the same one-line message, when run eagerly (eager tf.debugging.Assert words
    its message otherwise)."""
    import tensorflow as tf

    if tf.executing_eagerly():
        if not bool(ok):
            name = key.numpy().decode("utf-8", "replace")
            raise tf.errors.InvalidArgumentError(None, None, f"{message} {name}")
        return None
    return tf.debugging.Assert(ok, [message, key])


# ----------------------------------------------------------------------------------------------
# info.json and COMPLETED (reading side; the Beam job writes them).


class Shard(NamedTuple):
    """One shard of a split, as `split_shards` lists it.

    Attributes:
      path: the shard's path (local or a URL such as gs://bucket/dir/...).
      num_records: the records info.json says it holds; None for a dataset written before
        info.json listed its shards (then nothing is checked).
      num_bytes: its size in bytes, from info.json (None likewise).
    """

    path: str
    num_records: int | None
    num_bytes: int | None


def _json_text(value: Any) -> str:
    """A value as info.json spells it, cut short: 'abc' shows as "abc", None as null."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _field_error(where: str, field: str, value: Any, wanted: str) -> DatasetError:
    return DatasetError(
        f"{where}: field {field} is {_json_text(value)}, not {wanted}; rebuild the dataset"
    )


def _representation(info: Mapping[str, Any], where: str) -> DCTConfig:
    """info['representation'] as a DCTConfig; errors name the file and the field."""
    rep = info["representation"]
    if not isinstance(rep, Mapping):
        raise _field_error(where, "representation", rep, "an object")
    defaults = {f.name: f.default for f in dataclasses.fields(DCTConfig)}
    for name, value in rep.items():
        if name not in defaults:
            raise DatasetError(
                f"{where}: field representation.{name} is unknown (known: {sorted(defaults)}); "
                "rebuild the dataset with this version of beam_jobs.build_dataset"
            )
        if isinstance(defaults[name], str):
            if not isinstance(value, str):
                raise _field_error(where, f"representation.{name}", value, "a string")
        elif not _is_int(value):
            raise _field_error(where, f"representation.{name}", value, "an integer")
    try:
        return DCTConfig(**rep)
    except ValueError as e:  # a value out of range; the message names the field
        raise DatasetError(f"{where}: field representation.{e}; rebuild the dataset") from None


def _check_split_entry(entry: Any, field: str, where: str) -> None:
    """The types of the fields readers use in one split's entry (those present)."""
    if not isinstance(entry, Mapping):
        raise _field_error(where, field, entry, "an object")
    num_shards = entry.get("num_shards", 1)
    if not _is_int(num_shards) or num_shards < 1:
        raise _field_error(where, f"{field}.num_shards", num_shards, "a positive integer")
    if "shards" not in entry:
        return  # written before info.json listed the shards
    shards = entry["shards"]
    if not isinstance(shards, list):
        raise _field_error(where, f"{field}.shards", shards, "a list")
    if "num_shards" in entry and len(shards) != num_shards:
        raise DatasetError(
            f"{where}: field {field}.shards lists {len(shards)} shards, but num_shards is "
            f"{num_shards}; rebuild the dataset"
        )
    for i, shard in enumerate(shards):
        at = f"{field}.shards[{i}]"
        if not isinstance(shard, Mapping):
            raise _field_error(where, at, shard, "an object")
        if not isinstance(shard.get("file"), str) or not shard["file"]:
            raise _field_error(where, f"{at}.file", shard.get("file"), "a file name")
        for key in ("records", "bytes"):
            if not _is_int(shard.get(key)) or shard[key] < 0:
                raise _field_error(where, f"{at}.{key}", shard.get(key), "a count (integer >= 0)")


def check_info(info: Any, where: str = INFO_FILENAME) -> Mapping[str, Any]:
    """Checks an info.json dict's format version, layout and the types of the fields readers
    use; returns it.

    Raises:
      DatasetError: (a ValueError) naming `where` and the field at fault.
    """
    if not isinstance(info, Mapping):
        raise DatasetError(
            f"{where}: holds {_json_text(info)}, not a JSON object; is this a dataset's info.json?"
        )
    version = info.get("format_version")
    if version != FORMAT_VERSION:
        raise DatasetError(
            f"{where}: format_version {version!r}, but this code reads version {FORMAT_VERSION}; "
            "rebuild the dataset with this version of beam_jobs.build_dataset"
        )
    for field in ("representation", "splits"):
        if field not in info:
            raise DatasetError(f"{where}: missing field {field!r}")
    _representation(info, where)
    if not isinstance(info["splits"], Mapping):
        raise _field_error(where, "splits", info["splits"], "an object")
    for split, entry in info["splits"].items():
        _check_split_entry(entry, f"splits.{split}", where)
    return info


def representation_from_info(info: Mapping[str, Any], where: str = INFO_FILENAME) -> DCTConfig:
    """The DCTConfig the records of a dataset were made with.

    Raises:
      DatasetError: (a ValueError) the info is malformed; the message names `where` (info.json
        or its path) and the field.
    """
    return _representation(check_info(info, where), where)


def read_info(data_dir: str) -> dict:
    """Reads and checks `data_dir/info.json` (local or gs://, through tf.io.gfile).

    Raises:
      FileNotFoundError: there is no info.json.
      DatasetError: (a ValueError) it is not JSON (the message gives the line and column), or
        a field has the wrong type or value (the message names it); both name the file.
    """
    import tensorflow as tf

    path = join(data_dir, INFO_FILENAME)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path} does not exist: is {data_dir} a dataset directory?")
    with tf.io.gfile.GFile(path, "rb") as f:
        raw = f.read()
    try:
        info = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise DatasetError(
            f"{path}: not UTF-8 text (byte {e.start}); rebuild the dataset"
        ) from None
    except json.JSONDecodeError as e:
        raise DatasetError(
            f"{path}: not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}; rebuild "
            "the dataset"
        ) from None
    check_info(info, path)
    return info


def parse_completed(text: str) -> list[str]:
    """The split names listed in a COMPLETED marker."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def split_shards(data_dir: str, split: str) -> list[Shard]:
    """The shards of a completed split, in shard order, each checked against info.json.

    A shard's size must be the size info.json records for it (`splits.<split>.shards`), so a
    shard cut short at a record boundary (whose records all pass their checksums) is refused
    before anything reads it. The record counts are checked as the shards are read
    (`dct_gen.data`). A dataset whose info.json lists no shards (written before it did) is
    listed without these checks.

    Raises:
      FileNotFoundError: COMPLETED is missing or does not list the split (its conversion did not
        finish), info.json has no such split, or a shard is missing.
      DatasetError: (a ValueError) info.json is malformed, or a shard's size differs from the
        size info.json records; the message names the file, the field and both sizes.
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
    info_path = join(data_dir, INFO_FILENAME)
    if split not in info["splits"]:
        raise FileNotFoundError(f"{info_path} has no split {split!r}")
    entry = info["splits"][split]
    if "num_shards" not in entry:
        raise DatasetError(f"{info_path}: field splits.{split}.num_shards is missing")
    num_shards = entry["num_shards"]
    names = [shard_name(split, i, num_shards) for i in range(num_shards)]
    listed: list[Mapping[str, Any] | None] = [None] * num_shards
    if "shards" in entry:
        by_file = {shard["file"]: shard for shard in entry["shards"]}
        for i, name in enumerate(names):
            if name not in by_file:
                raise DatasetError(
                    f"{info_path}: field splits.{split}.shards has no entry for {name}; "
                    "rebuild the dataset"
                )
            listed[i] = by_file[name]
    shards, missing, wrong = [], [], []
    for i, (name, expected) in enumerate(zip(names, listed)):
        path = join(data_dir, name)
        if expected is None:
            if not tf.io.gfile.exists(path):
                missing.append(path)
            shards.append(Shard(path, None, None))
            continue
        try:
            size = int(tf.io.gfile.stat(path).length)
        except tf.errors.NotFoundError:
            missing.append(path)
            continue
        if size != expected["bytes"]:
            wrong.append((i, path, size, expected["bytes"]))
        shards.append(Shard(path, int(expected["records"]), int(expected["bytes"])))
    if missing:
        raise FileNotFoundError(f"{len(missing)} shard(s) missing, e.g. {missing[0]}")
    if wrong:
        i, path, size, expected = wrong[0]
        how = (
            "shorter than the {} bytes {} lists for it ({}): the shard was cut short (an "
            "interrupted copy?)"
            if size < expected
            else "longer than the {} bytes {} lists for it ({}): the shard was changed after the "
            "dataset was written"
        ).format(expected, info_path, f"splits.{split}.shards[{i}].bytes")
        others = f" ({len(wrong) - 1} other shard(s) differ too)" if len(wrong) > 1 else ""
        raise DatasetError(
            f"{path} is {size} bytes, {how}; rebuild the dataset or copy it again{others}"
        )
    return shards


def split_files(data_dir: str, split: str) -> list[str]:
    """The shard paths of a completed split, in shard order (`split_shards`' paths).

    Raises:
      FileNotFoundError: when COMPLETED is missing or does not list the split (its conversion
        did not finish), or when a shard that info.json promises is missing.
      DatasetError: (a ValueError) info.json is malformed, or a shard's size differs from the
        size info.json records for it.
    """
    return [shard.path for shard in split_shards(data_dir, split)]
