"""The record format: triples survive serialize -> TFRecord -> parse_example exactly, the bytes are
what TensorFlow's own proto library writes, and damaged or foreign records are refused."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from dct_gen import records
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
