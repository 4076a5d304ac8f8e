"""The record format: triples survive serialize -> TFRecord -> parse_example exactly, the bytes are
what TensorFlow's own proto library writes, and damaged or foreign records are refused."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from dct_gen import records
from dct_gen.errors import InputError
from dct_gen.representation import DCTConfig, encode

CONFIGS = [
    DCTConfig(block_size=8, quality=75, resolution=128, clip=1200, ordering="interleaved"),
    DCTConfig(block_size=4, quality=90, resolution=64, clip=50, ordering="luma_first"),
    DCTConfig(block_size=16, quality=50, resolution=128, clip=1200, ordering="interleaved"),
]


def _serialize(seq, label=-1, key="photo.png"):
    return records.serialize_example(
        channels=seq.channels,
        positions=seq.positions,
        values=seq.values,
        height=seq.height,
        width=seq.width,
        label=label,
        key=key,
    )


def _tf_reference(seq, label, key) -> bytes:
    """The same record built with TensorFlow's proto classes (an independent writer)."""
    stored = records.pack_triples(seq.channels, seq.positions, seq.values)
    ex = tf.train.Example()
    f = ex.features.feature
    for name, array in stored.items():
        f[name].int64_list.value.extend(array.tolist())
    for name, value in [
        ("format_version", records.FORMAT_VERSION),
        ("height", seq.height),
        ("width", seq.width),
        ("label", label),
    ]:
        f[name].int64_list.value.append(value)
    f["key"].bytes_list.value.append(key.encode())
    return ex.SerializeToString(deterministic=True)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"B{c.block_size}-{c.ordering}")
def test_round_trip_equals_encode_on_real_photos(color_photos, cfg):
    for i, (name, image) in enumerate(sorted(color_photos.items())[:4]):
        seq = encode(image, cfg)
        parsed = records.parse_example(_serialize(seq, label=i, key=name))
        np.testing.assert_array_equal(parsed["channels"].numpy(), seq.channels)
        np.testing.assert_array_equal(parsed["positions"].numpy(), seq.positions)
        np.testing.assert_array_equal(parsed["values"].numpy(), seq.values)
        assert parsed["channels"].dtype == tf.int32 and parsed["values"].dtype == tf.int32
        assert int(parsed["height"]) == seq.height and int(parsed["width"]) == seq.width
        assert int(parsed["label"]) == i
        assert parsed["key"].numpy().decode() == name


def test_bytes_equal_tensorflow_proto_serialization(color_photos):
    cfg = CONFIGS[0]
    seq = encode(color_photos["astronaut.png"], cfg)
    for label, key in [(-1, "a/b.png"), (7, "imagenet2012-train.tfrecord-00003-of-01024__17")]:
        assert _serialize(seq, label, key) == _tf_reference(seq, label, key)
    empty = encode(np.full((16, 16, 3), 128, np.uint8), DCTConfig(block_size=8, resolution=16))
    assert len(empty) == 0
    assert _serialize(empty) == _tf_reference(empty, -1, "photo.png")


def test_extreme_values_and_unicode_key():
    channels = np.array([0, 0, 0, 5, 5, 191], np.int32)
    positions = np.array([0, 1, 2303, 7, 9, 0], np.int32)
    values = np.array([-(2**31), 2**31 - 1, -1, 1, 0, -1200], np.int64)
    data = records.serialize_example(
        channels=channels,
        positions=positions,
        values=values,
        height=384,
        width=200,
        label=999,
        key="Fotos/Zürich 東京.jpg",
    )
    parsed = records.parse_example(data)
    np.testing.assert_array_equal(parsed["channels"], channels)
    np.testing.assert_array_equal(parsed["positions"], positions)
    np.testing.assert_array_equal(parsed["values"].numpy().astype(np.int64), values)
    assert parsed["key"].numpy().decode() == "Fotos/Zürich 東京.jpg"
    c, p, v = records.unpack_triples(records.pack_triples(channels, positions, values))
    np.testing.assert_array_equal(p, positions)
    np.testing.assert_array_equal(v.astype(np.int64), values)


def test_zigzag_maps_small_magnitudes_to_small_codes():
    v = np.array([0, -1, 1, -2, 2, -1200, 1200])
    np.testing.assert_array_equal(records.zigzag_encode(v), [0, 1, 2, 3, 4, 2399, 2400])
    np.testing.assert_array_equal(records.zigzag_decode(records.zigzag_encode(v)), v)


def test_tfrecord_files_read_by_tensorflow_in_a_dataset_map(tmp_path, color_photos):
    cfg = CONFIGS[0]
    seqs = {name: encode(image, cfg) for name, image in sorted(color_photos.items())[:3]}
    path = tmp_path / "train.tfrecord-00000-of-00001"
    with open(path, "wb") as f:
        for i, (name, seq) in enumerate(seqs.items()):
            f.write(records.tfrecord_frame(_serialize(seq, label=i, key=name)))
    # TFRecordDataset checks both CRCs of every record: it fails on a wrong framing.
    ds = tf.data.TFRecordDataset([str(path)]).map(records.parse_example)
    got = list(ds)
    assert [g["key"].numpy().decode() for g in got] == list(seqs)
    for g, seq in zip(got, seqs.values()):
        np.testing.assert_array_equal(g["positions"].numpy(), seq.positions)
        np.testing.assert_array_equal(g["values"].numpy(), seq.values)
    # Static shapes inside the graph: 1-D triples, scalar metadata.
    spec = ds.element_spec
    assert spec["channels"].shape.as_list() == [None] and spec["height"].shape.rank == 0


def test_records_are_compact(color_photos):
    """About 2 bytes per triple on real photos, well under a plain int64-list encoding."""
    cfg = DCTConfig(block_size=8, quality=75, resolution=384)
    ours = plain = triples = 0
    for image in color_photos.values():
        seq = encode(image, cfg)
        ours += len(_serialize(seq)) + 16
        ex = tf.train.Example()
        for name in ("channels", "positions", "values"):
            ex.features.feature[name].int64_list.value.extend(getattr(seq, name).tolist())
        plain += len(ex.SerializeToString()) + 16
        triples += len(seq)
    assert ours / triples < 2.3, ours / triples
    assert ours < 0.55 * plain, (ours, plain)


def test_parse_rejects_corrupt_and_foreign_records():
    base = dict(channels=[1, 1, 2], positions=[0, 4, 2], values=[3, -3, 1], height=16, width=16)
    good = records.serialize_example(**base, key="k")
    assert records.parse_example(good)["channels"].shape == (3,)

    def tampered(feature, values):
        ex = tf.train.Example.FromString(good)
        del ex.features.feature[feature].int64_list.value[:]
        ex.features.feature[feature].int64_list.value.extend(values)
        return ex.SerializeToString()

    with pytest.raises(tf.errors.InvalidArgumentError, match="run lengths vs positions"):
        records.parse_example(tampered("channel_run_lengths", [2, 2]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="values vs positions"):
        records.parse_example(tampered("values", [1, 2]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="format_version"):
        records.parse_example(tampered("format_version", [records.FORMAT_VERSION + 1]))
    with pytest.raises(tf.errors.InvalidArgumentError):
        records.parse_example(b"not a record")
    ds = tf.data.Dataset.from_tensors(tampered("values", [1])).map(records.parse_example)
    with pytest.raises(tf.errors.InvalidArgumentError, match="values vs positions"):
        list(ds)
    with pytest.raises(ValueError, match="scalar"):
        records.parse_example(tf.constant([good, good]))


def test_serialize_rejects_bad_input():
    ok = dict(channels=[0, 0], positions=[1, 2], values=[1, 1], height=8, width=8, key="k")
    records.serialize_example(**ok)
    with pytest.raises(ValueError, match="differ in length"):
        records.serialize_example(**{**ok, "values": [1]})
    with pytest.raises(ValueError, match="ascend within a channel"):
        records.serialize_example(**{**ok, "positions": [2, 2]})
    with pytest.raises(ValueError, match="height and width"):
        records.serialize_example(**{**ok, "height": 0})
    with pytest.raises(ValueError, match="label"):
        records.serialize_example(**ok, label=-2)
    with pytest.raises(ValueError, match="key"):
        records.serialize_example(**{**ok, "key": ""})
    with pytest.raises(ValueError, match="integers"):
        records.serialize_example(**{**ok, "values": [0.5, 1.0]})


def test_file_names_and_split_names():
    assert records.shard_name("train", 3, 16) == "train.tfrecord-00003-of-00016"
    assert records.failed_name("validation") == "failed-validation.jsonl"
    with pytest.raises(ValueError, match="cannot name output files"):
        records.shard_name("train[:10%]", 0, 1)
    with pytest.raises(ValueError, match="outside"):
        records.shard_name("train", 16, 16)


def _write_dataset(root, splits_done, num_shards=2):
    info = {
        "format_version": records.FORMAT_VERSION,
        "representation": CONFIGS[0].to_dict(),
        "splits": {"train": {"num_shards": num_shards}},
    }
    (root / "info.json").write_text(json.dumps(info))
    for i in range(num_shards):
        (root / records.shard_name("train", i, num_shards)).write_bytes(b"")
    if splits_done is not None:
        (root / "COMPLETED").write_text("".join(f"{s}\n" for s in splits_done))


def test_split_files_needs_completed_and_every_shard(tmp_path):
    _write_dataset(tmp_path, ["train"])
    paths = records.split_files(str(tmp_path), "train")
    assert [os.path.basename(p) for p in paths] == [
        "train.tfrecord-00000-of-00002",
        "train.tfrecord-00001-of-00002",
    ]
    assert records.representation_from_info(records.read_info(str(tmp_path))) == CONFIGS[0]
    with pytest.raises(FileNotFoundError, match="not 'validation'"):
        records.split_files(str(tmp_path), "validation")
    os.remove(paths[1])
    with pytest.raises(FileNotFoundError, match="missing"):
        records.split_files(str(tmp_path), "train")
    os.remove(tmp_path / "COMPLETED")
    with pytest.raises(FileNotFoundError, match="did not finish"):
        records.split_files(str(tmp_path), "train")


def test_read_info_refuses_other_versions(tmp_path):
    (tmp_path / "info.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99"):
        records.read_info(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="dataset directory"):
        records.read_info(str(tmp_path / "nowhere"))


# ----------------------------------------------------------------------------------------------
# Crafted numbers: int64 on disk, int32 when read; what does not fit is refused, not wrapped.


def _crafted(**fields):
    args = dict(channels=[0, 3], positions=[5, 7], values=[1, -2], height=8, width=8, key="k")
    return records.serialize_example(**{**args, **fields})


def _stored(serialized) -> dict:
    """The record's int64 arrays, read with TensorFlow's proto classes."""
    ex = tf.train.Example.FromString(serialized)
    names = ("channel_runs", "channel_run_lengths", "position_deltas", "values")
    return {name: np.array(ex.features.feature[name].int64_list.value) for name in names}


@pytest.mark.parametrize(
    "fields, field",
    [
        (dict(positions=[5, 2**32 + 5]), "position_deltas"),
        (dict(label=2**32 + 1), "label"),
        (dict(channels=[0, 2**32]), "channel_runs"),
        (dict(values=[1, 2**31]), "values"),
        (dict(width=2**32 + 8), "width"),
    ],
)
def test_numbers_outside_int32_are_refused_naming_the_field(fields, field):
    crafted = _crafted(key="crafted.png", **fields)
    message = (
        f"corrupt record: field {field} holds a number outside the int32 range; "
        "record key: crafted.png"
    )
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        records.parse_example(crafted)
    assert str(err.value) == message
    if field in ("position_deltas", "channel_runs", "values"):
        with pytest.raises(ValueError, match=f"field {field} decodes to"):
            records.unpack_triples(_stored(crafted))


def test_numbers_outside_int32_are_refused_inside_tf_data():
    """Position 2^32 + 5 would read as 5 and label 2^32 + 1 as 1 if cast."""
    crafted = [
        _crafted(positions=[5, 2**32 + 5], key="far-position"),
        _crafted(label=2**32 + 1, key="far-label"),
        _crafted(key="fine"),
    ]
    it = iter(tf.data.Dataset.from_tensor_slices(crafted).map(records.parse_example))
    for field, key in (("position_deltas", "far-position"), ("label", "far-label")):
        with pytest.raises(tf.errors.InvalidArgumentError) as err:
            next(it)
        assert f"field {field} holds a number outside the int32 range" in err.value.message
        assert key in err.value.message
    assert next(it)["key"].numpy() == b"fine"  # the records after it are still read


def test_int32_limits_themselves_are_read():
    crafted = _crafted(positions=[5, 2**31 - 1], label=2**31 - 1, height=2**31 - 1)
    parsed = records.parse_example(crafted)
    assert parsed["positions"].numpy().tolist() == [5, 2**31 - 1]
    assert int(parsed["label"]) == int(parsed["height"]) == 2**31 - 1
    _, positions, _ = records.unpack_triples(_stored(crafted))
    assert positions.tolist() == [5, 2**31 - 1]


def test_run_lengths_that_wrap_around_int64_are_refused():
    """Two runs of 2^63 - 1 and one of 3 sum, in int64, to 1: the number of positions."""
    good = _crafted(channels=[0], positions=[5], values=[1])
    ex = tf.train.Example.FromString(good)
    feature = ex.features.feature
    feature["channel_runs"].int64_list.value[:] = [0, 1, 2]
    feature["channel_run_lengths"].int64_list.value[:] = [2**63 - 1, 2**63 - 1, 3]
    crafted = ex.SerializeToString()
    with pytest.raises(tf.errors.InvalidArgumentError, match="a run longer than the record"):
        records.parse_example(crafted)
    with pytest.raises(ValueError, match="corrupt record"):
        records.unpack_triples(_stored(crafted))


# ----------------------------------------------------------------------------------------------
# info.json: errors name the file and the field.


def _info_path(root) -> str:
    return str(root / "info.json")


def _edit_info(root, edit) -> None:
    info = json.loads((root / "info.json").read_text())
    edit(info)
    (root / "info.json").write_text(json.dumps(info))


def test_info_json_that_is_not_json_names_the_file_line_and_column(tmp_path):
    _write_dataset(tmp_path, ["train"])
    (tmp_path / "info.json").write_text('{\n  "format_version": 1,\n  "splits": {,\n}')
    with pytest.raises(records.DatasetError) as err:
        records.read_info(str(tmp_path))
    assert str(err.value).startswith(f"{_info_path(tmp_path)}: not valid JSON")
    assert "line 3, column 14" in str(err.value)
    assert isinstance(err.value, InputError) and isinstance(err.value, ValueError)
    with pytest.raises(records.DatasetError, match="not valid JSON"):
        records.split_files(str(tmp_path), "train")
    (tmp_path / "info.json").write_bytes(b'{"format_version": "\xff"}')
    with pytest.raises(records.DatasetError, match="not UTF-8"):
        records.read_info(str(tmp_path))
    (tmp_path / "info.json").write_text("[1, 2]")
    with pytest.raises(records.DatasetError, match="not a JSON object"):
        records.read_info(str(tmp_path))


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda info: info["representation"].update(clip="abc"),
            'field representation.clip is "abc", not an integer',
        ),
        (
            lambda info: info["representation"].update(block_size=True),
            "field representation.block_size is true, not an integer",
        ),
        (
            lambda info: info["representation"].update(ordering=3),
            "field representation.ordering is 3, not a string",
        ),
        (
            lambda info: info["representation"].update(clip=0),
            "field representation.clip=0: must be >= 1",
        ),
        (
            lambda info: info["representation"].update(colour=1),
            "field representation.colour is unknown",
        ),
        (lambda info: info.update(representation=[8]), "field representation is \\[8\\]"),
        (lambda info: info.update(splits=None), "field splits is null, not an object"),
        (
            lambda info: info["splits"]["train"].update(num_shards="2"),
            'field splits.train.num_shards is "2", not a positive integer',
        ),
        (
            lambda info: info["splits"]["train"].update(shards={"file": "x"}),
            "field splits.train.shards is .*, not a list",
        ),
        (
            lambda info: info["splits"]["train"].update(
                shards=[{"file": "a", "records": 1, "bytes": 0}]
            ),
            "field splits.train.shards lists 1 shards, but num_shards is 2",
        ),
        (
            lambda info: info["splits"]["train"].update(
                shards=[
                    {"file": "a", "records": 1, "bytes": 0},
                    {"file": "b", "records": "7", "bytes": 0},
                ]
            ),
            'field splits.train.shards\\[1\\].records is "7", not a count',
        ),
    ],
)
def test_info_json_field_errors_name_the_file_and_the_field(tmp_path, edit, message):
    _write_dataset(tmp_path, ["train"])
    _edit_info(tmp_path, edit)
    with pytest.raises(records.DatasetError, match=message) as err:
        records.read_info(str(tmp_path))
    assert str(err.value).startswith(_info_path(tmp_path) + ": ")
    with pytest.raises(records.DatasetError, match=message):
        records.split_files(str(tmp_path), "train")
    # A dict read some other way: the message names info.json (or `where`) and the field.
    info = json.loads((tmp_path / "info.json").read_text())
    with pytest.raises(records.DatasetError, match=f"^DATA/info.json: {message}"):
        records.representation_from_info(info, where="DATA/info.json")


# ----------------------------------------------------------------------------------------------
# Shard sizes against info.json's shard list.


def _list_shards(root, num_shards=2) -> list[str]:
    """Gives the shards of _write_dataset some bytes and lists them in info.json."""
    names = [records.shard_name("train", i, num_shards) for i in range(num_shards)]
    for i, name in enumerate(names):
        (root / name).write_bytes(b"x" * (10 + i))

    def edit(info):
        info["splits"]["train"]["shards"] = [
            {"file": name, "records": 1, "bytes": 10 + i} for i, name in enumerate(names)
        ]

    _edit_info(root, edit)
    return names


def test_shard_sizes_are_checked_against_info_json(tmp_path):
    _write_dataset(tmp_path, ["train"])
    names = _list_shards(tmp_path)
    shards = records.split_shards(str(tmp_path), "train")
    assert [(os.path.basename(s.path), s.num_records, s.num_bytes) for s in shards] == [
        (names[0], 1, 10),
        (names[1], 1, 11),
    ]
    for size, how in ((9, "shorter"), (12, "longer")):
        (tmp_path / names[1]).write_bytes(b"x" * size)
        with pytest.raises(records.DatasetError) as err:
            records.split_files(str(tmp_path), "train")
        message = str(err.value)
        assert message.startswith(f"{tmp_path / names[1]} is {size} bytes, {how} than the 11")
        assert "splits.train.shards[1].bytes" in message and _info_path(tmp_path) in message
    os.remove(tmp_path / names[1])
    with pytest.raises(FileNotFoundError, match="missing"):
        records.split_files(str(tmp_path), "train")


def test_a_shard_info_json_does_not_list_is_refused(tmp_path):
    _write_dataset(tmp_path, ["train"])
    _list_shards(tmp_path)
    _edit_info(tmp_path, lambda info: info["splits"]["train"]["shards"][1].update(file="other"))
    with pytest.raises(records.DatasetError, match="has no entry for train.tfrecord-00001"):
        records.split_files(str(tmp_path), "train")


def test_datasets_without_a_shard_list_are_listed_unchecked(tmp_path):
    _write_dataset(tmp_path, ["train"])  # empty shards, no "shards" in info.json
    shards = records.split_shards(str(tmp_path), "train")
    assert [(s.num_records, s.num_bytes) for s in shards] == [(None, None), (None, None)]
