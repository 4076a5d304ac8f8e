"""The Beam dataset job: image decoding of odd and bad inputs, the transforms under TestPipeline,
and whole runs (image folders with real photos and planted bad files, TFDS datasets) read back and
checked against the codec's `encode` of the same images; the folder listing (links, special and
hidden files), progress lines, and what the command prints.

Every pipeline here runs in this process on the FnApiRunner (the DirectRunner's batch engine);
the runs on worker processes (the command line's output, a driver killed under its workers) are
marked slow.
"""

import dataclasses
import io
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from beam_jobs import build_dataset, outputs, pipeline, transforms
from dct_gen import images, photos, records
from dct_gen.errors import InputError, UsageError
from dct_gen.representation import ORDERINGS, DCTConfig, encode

IN_PROCESS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
CFG = DCTConfig(block_size=8, quality=75, resolution=128, clip=1200, ordering="interleaved")
TINY = DCTConfig(block_size=8, quality=75, resolution=64, clip=1200, ordering="interleaved")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------------------------
# Files the tests make.


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _smooth(h, w):
    """Gradients that differ per channel: lossy codecs keep them, a wrong rotation does not."""
    rows, cols = np.mgrid[0:h, 0:w]
    return np.stack([rows * 255 // h, cols * 255 // w, (rows + cols) * 127 // (h + w)], -1).astype(
        np.uint8
    )


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _png(samples: np.ndarray, color_type: int, bit_depth: int = 16, height=None, width=None):
    """A PNG written by hand (Pillow cannot write 16-bit RGB, or a zero-width header)."""
    h, w = samples.shape[:2] if height is None else (height, width)
    dtype = ">u2" if bit_depth == 16 else "u1"
    rows = b"".join(b"\x00" + row.astype(dtype).tobytes() for row in samples)
    header = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (24, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    return _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, loop=0)


def _gray16():
    return (np.arange(48 * 40).reshape(40, 48) * 34).astype(np.uint16)  # 0 .. 65246


def _scaled16(v):
    return ((v.astype(np.int64) + 128) // 257).astype(np.uint8)


def _gray3(g):
    return np.repeat(g[:, :, None], 3, axis=2)


def _over_white(rgb, alpha):
    a = alpha[:, :, None].astype(np.float64) / 255
    return rgb * a + 255 * (1 - a)


def odd_inputs():
    """name -> (file bytes, the RGB image it must become, exact?) for inputs to convert."""
    rgb = _rgb(40, 56, seed=1)
    pal = Image.fromarray(rgb).quantize(colors=16)
    pal_rgb = np.array(pal.getpalette()[: 3 * 16], np.uint8).reshape(16, 3)[np.asarray(pal)]
    pal_t = pal.copy()
    pal_t.info["transparency"] = 0
    pal_t_rgb = np.where((np.asarray(pal) == 0)[:, :, None], 255, pal_rgb).astype(np.uint8)
    gray = rgb[:, :, 0]
    alpha = np.tile(np.linspace(0, 255, 56).astype(np.uint8), (40, 1))
    g16 = _gray16()
    rgb16 = np.stack([g16, 65535 - g16, g16 // 3], axis=-1)
    oriented = _rgb(30, 50, seed=2)
    smooth = _smooth(30, 50)
    return {
        "cmyk.tif": (_save(Image.fromarray(rgb).convert("CMYK"), "TIFF"), rgb, True),
        "cmyk.jpg": (_save(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95), rgb, False),
        "palette.png": (_save(pal, "PNG"), pal_rgb, True),
        "palette_transparent.png": (_save(pal_t, "PNG", transparency=0), pal_t_rgb, True),
        "palette.gif": (_save(pal, "GIF"), pal_rgb, True),
        "gray.png": (_save(Image.fromarray(gray), "PNG"), _gray3(gray), True),
        "bilevel.png": (
            _save(Image.fromarray(gray > 127), "PNG"),
            _gray3(np.where(gray > 127, 255, 0).astype(np.uint8)),
            True,
        ),
        "rgba.png": (
            _save(Image.fromarray(np.dstack([rgb, alpha])), "PNG"),
            _over_white(rgb, alpha),
            False,
        ),
        "la.png": (
            _save(Image.fromarray(np.dstack([gray, alpha])), "PNG"),
            _gray3(_over_white(gray[:, :, None], alpha)[:, :, 0]),
            False,
        ),
        "gray16.png": (_png(g16, color_type=0), _gray3(_scaled16(g16)), True),
        "rgb16.png": (_png(rgb16, color_type=2), _scaled16(rgb16), False),
        "exif_rotate_90.png": (
            _save(Image.fromarray(oriented), "PNG", exif=_exif(6)),
            np.rot90(oriented, k=-1),
            True,
        ),
        "exif_rotate_180.png": (
            _save(Image.fromarray(oriented), "PNG", exif=_exif(3)),
            oriented[::-1, ::-1],
            True,
        ),
        "exif_rotate_270.jpg": (
            _save(Image.fromarray(smooth), "JPEG", quality=95, exif=_exif(8)),
            np.rot90(smooth, k=1),
            False,
        ),
        "animated.gif": (_animated("GIF"), np.full((16, 24, 3), (255, 0, 0), np.uint8), True),
        "animated.png": (_animated("PNG"), np.full((16, 24, 3), (255, 0, 0), np.uint8), True),
        "tiny_1x1.png": (_save(Image.fromarray(_rgb(1, 1, 3)), "PNG"), _rgb(1, 1, 3), True),
        "tiny_3x5.png": (_save(Image.fromarray(_rgb(3, 5, 4)), "PNG"), _rgb(3, 5, 4), True),
    }


def _truncated(data: bytes, keep: float = 0.6) -> bytes:
    return data[: int(len(data) * keep)]


def bad_inputs():
    """name -> (file bytes, reason) for inputs that must fail."""
    photo = _save(Image.fromarray(_rgb(64, 64, seed=5)), "PNG")
    jpeg = _save(Image.fromarray(_rgb(64, 64, seed=6)), "JPEG")
    broken = bytearray(photo)
    broken[100:160] = bytes(60)
    bomb_header = _png(np.zeros((1, 1), np.uint8), 2, bit_depth=8, height=60000, width=60000)
    return {
        "empty.png": (b"", "empty_file"),
        "notes.jpg": (b"shopping list: milk, eggs\n", "not_an_image"),
        "page.png": (b"<html><body>404 Not Found</body></html>", "not_an_image"),
        "phone.heic": (b"\x00\x00\x00\x18ftypheic" + bytes(40), "not_an_image"),
        "truncated.jpg": (_truncated(jpeg), "truncated"),
        "truncated.png": (_truncated(photo), "truncated"),
        "corrupt.png": (bytes(broken), "corrupt"),
        "zero_width.png": (_png(np.zeros((4, 0), np.uint8), 0, bit_depth=8), "zero_size"),
        "bomb.png": (bomb_header, "too_many_pixels"),
        "float.tif": (
            _save(Image.fromarray(np.ones((8, 8), np.float32)), "TIFF"),
            "unsupported_mode",
        ),
    }


# ----------------------------------------------------------------------------------------------
# Decoding.


@pytest.mark.parametrize("name", sorted(odd_inputs()))
def test_odd_inputs_are_converted(name):
    data, expected, exact = odd_inputs()[name]
    got = images.decode_image(data)
    assert got.dtype == np.uint8 and got.shape == expected.shape
    diff = np.abs(got.astype(np.int64) - np.rint(expected).astype(np.int64))
    if exact:
        assert diff.max() == 0, name
    elif name.endswith(".jpg"):
        assert diff.mean() < 4, (name, diff.mean())  # lossy file: only the encoder's error
    else:
        assert diff.max() <= 1, name  # rounding of alpha compositing / 16-bit scaling


def test_sixteen_bit_is_scaled_not_clipped():
    g16 = _gray16()
    got = images.decode_image(_png(g16, color_type=0))[:, :, 0]
    # Pillow's own conversion clips: every sample above 255 becomes white.
    pillow = np.asarray(Image.open(io.BytesIO(_png(g16, color_type=0))).convert("L"))
    assert (pillow == 255).mean() > 0.9
    assert got.max() == 254 and got.min() == 0 and np.all(np.diff(got.ravel()) >= 0)
    np.testing.assert_array_equal(got, _scaled16(g16))


@pytest.mark.parametrize("name", sorted(bad_inputs()))
def test_bad_inputs_fail_with_their_reason(name):
    data, reason = bad_inputs()[name]
    with pytest.raises(images.ImageError) as e:
        images.decode_image(data)
    assert e.value.reason == reason, str(e.value)


def test_pixel_cap_is_checked_before_decoding():
    data = _truncated(_save(Image.fromarray(_rgb(64, 64)), "PNG"), keep=0.3)
    with pytest.raises(images.ImageError) as e:
        images.decode_image(data)
    assert e.value.reason == "truncated"  # decoding it fails ...
    with pytest.raises(images.ImageError) as e:
        images.decode_image(data, max_pixels=64 * 64 - 1)
    assert e.value.reason == "too_many_pixels"  # ... but the cap stops it first
    assert "4096" in str(e.value)
    assert images.decode_image(_save(Image.fromarray(_rgb(64, 64)), "PNG"), max_pixels=4096).shape
    with pytest.raises(images.ImageError) as e:
        images.image_from_array(np.zeros((100, 100, 3), np.uint8), max_pixels=9999)
    assert e.value.reason == "too_many_pixels"


def test_a_pixel_cap_above_pillows_limit_raises_it_in_the_worker(monkeypatch):
    default = Image.MAX_IMAGE_PIXELS
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", default)  # restored after the test
    transforms.EncodeImages(CFG).setup()
    assert Image.MAX_IMAGE_PIXELS == default
    transforms.EncodeImages(CFG, max_pixels=4 * default).setup()
    assert Image.MAX_IMAGE_PIXELS == 4 * default


def test_arrays_are_converted_like_files():
    rgb = _rgb(6, 7)
    np.testing.assert_array_equal(images.image_from_array(rgb), rgb)
    np.testing.assert_array_equal(images.image_from_array(rgb[:, :, :1]), _gray3(rgb[:, :, 0]))
    g16 = _gray16()
    np.testing.assert_array_equal(images.image_from_array(g16), _gray3(_scaled16(g16)))
    rgba = np.dstack([rgb, np.full((6, 7), 0, np.uint8)])
    np.testing.assert_array_equal(images.image_from_array(rgba), np.full((6, 7, 3), 255))
    for array, reason in [
        (np.zeros((0, 5, 3), np.uint8), "zero_size"),
        (np.zeros((4, 4, 3), np.float32), "unsupported_mode"),
        (np.zeros((4, 4, 5), np.uint8), "unsupported_mode"),
    ]:
        with pytest.raises(images.ImageError) as e:
            images.image_from_array(array)
        assert e.value.reason == reason


# ----------------------------------------------------------------------------------------------
# Transforms under TestPipeline.


def _test_pipeline():
    return BeamTestPipeline(runner=FnApiRunner(), options=PipelineOptions(IN_PROCESS))


def _parsed(record: bytes) -> dict:
    return {k: v.numpy() for k, v in records.parse_example(record).items()}


def _assert_same_triples(parsed: dict, seq, where=""):
    for name in ("channels", "positions", "values"):
        np.testing.assert_array_equal(parsed[name], getattr(seq, name), err_msg=f"{where} {name}")
    assert (int(parsed["height"]), int(parsed["width"])) == (seq.height, seq.width), where


def test_encode_images_dofn_routes_records_and_failures(color_photos):
    photo = color_photos["chelsea.png"]
    items = [
        transforms.SourceItem("photo.png", _save(Image.fromarray(photo), "PNG"), 3),
        transforms.SourceItem("array", photo, -1),
        transforms.SourceItem("empty.png", b"", 0),
        transforms.SourceItem("text.jpg", b"plain text", 0),
        transforms.SourceItem("floats", np.zeros((4, 4), np.float64), 0),
    ]
    cfg = DCTConfig(block_size=8, quality=75, resolution=128, clip=20)  # clips some values
    expected = encode(photo, cfg)
    assert expected.num_clipped > 0

    def check_records(got):
        assert sorted(r.key for r in got) == ["array", "photo.png"]
        for r in got:
            parsed = _parsed(r.record)
            _assert_same_triples(parsed, expected, r.key)
            assert int(parsed["label"]) == (3 if r.key == "photo.png" else -1)
            assert parsed["key"].decode() == r.key
            assert r.num_triples == len(expected)

    p = _test_pipeline()
    out = (
        p
        | beam.Create(items)
        | beam.ParDo(transforms.EncodeImages(cfg)).with_outputs(
            transforms.FAILED_TAG, main="records"
        )
    )
    assert_that(out.records, check_records, label="records")
    assert_that(
        out[transforms.FAILED_TAG] | beam.Map(lambda f: (f.key, f.reason)),
        equal_to(
            [
                ("empty.png", "empty_file"),
                ("text.jpg", "not_an_image"),
                ("floats", "unsupported_mode"),
            ]
        ),
        label="failures",
    )
    result = p.run()
    result.wait_until_finish()
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace("dct_gen"))["counters"]
    }
    assert counters["written"] == 2 and counters["failed"] == 3
    assert counters["failed_empty_file"] == counters["failed_not_an_image"] == 1
    assert counters["clipped_coefficients"] == 2 * expected.num_clipped


def test_write_shards_assigns_by_key_sorts_and_writes_empty_shards(tmp_path):
    keys = [f"img-{i:03d}.png" for i in range(40)]
    names = [f"part-{i}" for i in range(5)]
    with _test_pipeline() as p:
        written = (
            p
            | beam.Create([(k, k.encode()) for k in reversed(keys)])
            | transforms.WriteShards(str(tmp_path), names, "lines")
        )
        _ = (
            p
            | "NoItems" >> beam.Create([], reshuffle=False).with_output_types(tuple[str, bytes])
            | "WriteEmpty" >> transforms.WriteShards(str(tmp_path / "empty"), ["only"], "lines")
        )
        # Each shard reported with its index, name, count and size ("lines": key + newline).
        in_shard = [[k for k in keys if transforms.shard_of(k, 5) == i] for i in range(5)]
        expected = [
            transforms.WrittenShard(i, names[i], len(ks), sum(len(k) + 1 for k in ks))
            for i, ks in enumerate(in_shard)
        ]
        assert_that(written, equal_to(expected))
    seen = []
    for i, name in enumerate(names):
        lines = (tmp_path / name).read_text().splitlines()
        assert lines == sorted(lines)
        assert all(transforms.shard_of(k, 5) == i for k in lines)
        assert (tmp_path / name).stat().st_size == expected[i].bytes
        seen += lines
    assert sorted(seen) == keys
    assert (tmp_path / "empty" / "only").read_bytes() == b""
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]


def test_write_shards_refuses_duplicate_keys(tmp_path):
    with pytest.raises(Exception, match="share the key 'same.png'"):
        with _test_pipeline() as p:
            _ = (
                p
                | beam.Create([("same.png", b"a"), ("same.png", b"b"), ("other.png", b"c")])
                | transforms.WriteShards(str(tmp_path), ["one"], "lines")
            )


def test_shard_of_is_stable_and_spreads():
    # Fixed values: a hash that changed between processes would move records between shards.
    assert [transforms.shard_of(f"k{i}", 7) for i in range(8)] == [
        transforms.shard_of(f"k{i}", 7) for i in range(8)
    ]
    assert transforms.shard_of("imagenet/n01440764/img_1.JPEG", 1024) == (
        int.from_bytes(
            __import__("hashlib").sha256(b"imagenet/n01440764/img_1.JPEG").digest()[:8], "big"
        )
        % 1024
    )
    counts = np.bincount([transforms.shard_of(f"file-{i}.jpg", 8) for i in range(8000)])
    assert counts.min() > 850 and counts.max() < 1150


def test_length_summary_percentiles_and_histogram():
    counts = {10: 50, 20: 40, 100: 9, 1000: 1}
    s = outputs.length_summary(counts)
    assert (s["p50"], s["p90"], s["p99"], s["max"], s["min"]) == (10, 20, 100, 1000, 10)
    assert s["count"] == 100 and s["suggested_l_max"] == 100
    assert sum(s["histogram"]["counts"]) == 100
    assert s["histogram"]["counts"][1000 // s["histogram"]["bin_width"]] == 1
    assert s["length_filter_kept_fraction"]["max"] == pytest.approx(
        (50 * 0.01 + 40 * 0.02 + 9 * 0.1 + 1) / 100
    )
    assert outputs.length_summary({})["count"] == 0


# ----------------------------------------------------------------------------------------------
# Whole runs on a folder of real photos with planted bad files.


def read_split(output_dir, split="train") -> dict:
    """key -> parsed record, for every record of a completed split (checking its shard)."""
    out = {}
    paths = records.split_files(str(output_dir), split)
    for index, path in enumerate(paths):
        for raw in tf.data.TFRecordDataset(path):
            parsed = _parsed(raw)
            key = parsed["key"].decode()
            assert transforms.shard_of(key, len(paths)) == index
            assert key not in out
            out[key] = parsed
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """color/ and gray/ real photos, odd/ inputs to convert, bad/ inputs that must fail."""
    root = tmp_path_factory.mktemp("images")
    expected = {}
    for kind, paths in (("color", photos.color_photo_paths()), ("gray", photos.gray_photo_paths())):
        os.makedirs(root / kind)
        for path in paths:
            dst = str(root / kind / os.path.basename(path))
            shutil.copy(path, dst)
            expected[dst] = photos.load_rgb(path)
    for kind, table in (("odd", odd_inputs()), ("bad", bad_inputs())):
        os.makedirs(root / kind)
        for name, (data, *_rest) in table.items():
            (root / kind / name).write_bytes(data)
    for name, (_, image, exact) in odd_inputs().items():
        if exact:
            expected[str(root / "odd" / name)] = image
    bad = {str(root / "bad" / name): reason for name, (_, reason) in bad_inputs().items()}
    return root, expected, bad


@pytest.fixture(scope="module")
def folder_run(folder, tmp_path_factory):
    root, _, _ = folder
    out = tmp_path_factory.mktemp("out") / "photos"
    entry = pipeline.run_pipeline(
        output_dir=str(out),
        cfg=CFG,
        image_glob=str(root / "*" / "*"),
        labels_from_dirs=True,
        num_shards=3,
        max_failed_fraction=0.5,
        pipeline_args=IN_PROCESS,
    )
    return out, entry


def test_folder_records_equal_encode_of_the_same_images(folder, folder_run):
    root, expected, bad = folder
    out, _ = folder_run
    got = read_split(out)
    assert len(got) == len(os.listdir(root / "color")) + len(os.listdir(root / "gray")) + len(
        odd_inputs()
    )
    assert not set(bad) & set(got)
    label_names = ["bad", "color", "gray", "odd"]
    for key, image in expected.items():
        seq = encode(image, CFG)
        _assert_same_triples(got[key], seq, key)
        assert int(got[key]["label"]) == label_names.index(os.path.basename(os.path.dirname(key)))
    # Lossy odd inputs (JPEGs, alpha, 16-bit RGB) have a record too, of the decoded image.
    for name in odd_inputs():
        key = str(root / "odd" / name)
        data = (root / "odd" / name).read_bytes()
        _assert_same_triples(got[key], encode(images.decode_image(data), CFG), key)
    tiny = got[str(root / "odd" / "tiny_3x5.png")]
    assert int(tiny["height"]) <= CFG.resolution and len(tiny["channels"]) > 0


def test_folder_failures_are_listed_counted_and_named(folder, folder_run):
    root, expected, bad = folder
    out, entry = folder_run
    lines = (out / "failed-train.jsonl").read_text().splitlines()
    failed = {json.loads(line)["key"]: json.loads(line) for line in lines}
    assert {k: v["reason"] for k, v in failed.items()} == bad
    assert all(v["message"] for v in failed.values())
    counts = entry["counts"]
    reasons = {}
    for reason in bad.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    assert counts["failed"] == reasons and counts["failed_total"] == len(bad)
    assert counts["read"] == counts["written"] + counts["failed_total"]
    assert counts["written"] == len(read_split(out))


def test_folder_info_json_and_completed(folder_run):
    out, entry = folder_run
    info = json.loads((out / "info.json").read_text())
    assert info["format_version"] == records.FORMAT_VERSION
    assert DCTConfig.from_dict(info["representation"]) == CFG
    assert info["splits"]["train"] == entry
    assert entry["label_names"] == ["bad", "color", "gray", "odd"] and entry["num_classes"] == 4
    assert entry["num_shards"] == 3 and entry["source"]["kind"] == "image_glob"
    got = read_split(out)
    lengths = sorted(len(r["channels"]) + 1 for r in got.values())
    summary = entry["lengths"]
    assert summary["max"] == lengths[-1] and summary["min"] == lengths[0]
    assert summary["p50"] == lengths[int(np.ceil(0.5 * len(lengths))) - 1]
    assert summary["suggested_l_max"] == summary["p99"]
    counts = entry["counts"]
    assert counts["triples"] == sum(len(r["channels"]) for r in got.values())
    paths = records.split_files(str(out), "train")
    shard_bytes = sum(os.path.getsize(p) for p in paths)
    assert counts["record_bytes"] == shard_bytes
    # Each shard listed in order with its file's name, record count and size.
    assert entry["shards"] == [
        {
            "file": os.path.basename(p),
            "records": sum(1 for _ in tf.data.TFRecordDataset(p)),
            "bytes": os.path.getsize(p),
        }
        for p in paths
    ]
    assert [s["file"] for s in entry["shards"]] == [
        records.shard_name("train", i, 3) for i in range(3)
    ]
    assert counts["skipped"] == {} and "skipped_examples" not in entry
    assert 1.5 < counts["bytes_per_triple"] < 3.0
    assert (out / "COMPLETED").read_text() == "train\n"
    assert not [f for f in os.listdir(out) if ".tmp-" in f]


def test_existing_output_refused_then_overwritten_identically(folder, folder_run, tmp_path):
    root, _, _ = folder
    out, _ = folder_run
    kwargs = dict(
        cfg=CFG,
        image_glob=str(root / "*" / "*"),
        labels_from_dirs=True,
        num_shards=3,
        max_failed_fraction=0.5,
    )
    with pytest.raises(outputs.OutputExistsError, match="--overwrite"):
        pipeline.run_pipeline(output_dir=str(out), pipeline_args=IN_PROCESS, **kwargs)
    # A copy, overwritten while every bundle is replayed once (as a retried bundle would be):
    # the shards come out byte for byte the same, with no duplicate and no leftover.
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / records.shard_name("train", 0, 3)).write_bytes(b"stale")
    stale_extra = copy / records.shard_name("train", 0, 7)
    stale_extra.write_bytes(b"from an older run with 7 shards")
    pipeline.run_pipeline(
        output_dir=str(copy),
        overwrite=True,
        pipeline_args=IN_PROCESS + ["--direct_runner_bundle_repeat=1"],
        **kwargs,
    )
    for i in range(3):
        name = records.shard_name("train", i, 3)
        assert (copy / name).read_bytes() == (out / name).read_bytes(), name
    assert (copy / "failed-train.jsonl").read_text() == (out / "failed-train.jsonl").read_text()
    assert not stale_extra.exists()
    assert not [f for f in os.listdir(copy) if ".tmp-" in f]


def test_second_split_merges_and_keeps_labels(folder, folder_run, tmp_path):
    root, _, _ = folder
    out, entry = folder_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    val = tmp_path / "val"
    os.makedirs(val / "gray")
    shutil.copy(root / "gray" / "camera.png", val / "gray")
    os.makedirs(val / "color")
    shutil.copy(root / "color" / "chelsea.png", val / "color")
    val_entry = pipeline.run_pipeline(
        output_dir=str(copy),
        cfg=CFG,
        image_glob=str(val / "*" / "*.png"),
        labels_from_dirs=True,
        split="validation",
        num_shards=1,
        pipeline_args=IN_PROCESS,
    )
    # The labels follow the train split's names, not the sorted names of this split's folders.
    assert val_entry["label_names"] == entry["label_names"]
    got = read_split(copy, "validation")
    assert int(got[str(val / "gray" / "camera.png")]["label"]) == 2
    info = json.loads((copy / "info.json").read_text())
    assert sorted(info["splits"]) == ["train", "validation"]
    assert info["splits"]["train"] == entry
    assert (copy / "COMPLETED").read_text() == "train\nvalidation\n"
    # Another representation cannot join the directory.
    with pytest.raises(ValueError, match="one directory holds one representation"):
        pipeline.run_pipeline(
            output_dir=str(copy),
            cfg=DCTConfig(block_size=4, resolution=64),
            image_glob=str(val / "*" / "*.png"),
            split="test",
            pipeline_args=IN_PROCESS,
        )


def test_too_many_failures_fail_the_job_loudly(folder, tmp_path):
    root, _, bad = folder
    out = tmp_path / "out"
    with pytest.raises(outputs.FailedFractionError, match="max_failed_fraction") as e:
        pipeline.run_pipeline(
            output_dir=str(out),
            cfg=CFG,
            image_glob=str(root / "*" / "*"),
            num_shards=2,
            max_failed_fraction=0.01,
            pipeline_args=IN_PROCESS,
        )
    assert f"{len(bad)} of" in str(e.value) and "failed-train.jsonl" in str(e.value)
    info = json.loads((out / "info.json").read_text())
    assert info["splits"]["train"]["counts"]["failed_total"] == len(bad)
    assert len((out / "failed-train.jsonl").read_text().splitlines()) == len(bad)
    assert not (out / "COMPLETED").exists()
    with pytest.raises(FileNotFoundError, match="did not finish"):
        records.split_files(str(out), "train")


def test_too_many_failures_are_one_line_on_the_command_line(folder, tmp_path, capfd):
    root, _, bad = folder
    argv = [
        f"--output_dir={tmp_path / 'out'}",
        f"--image_glob={root / '*' / '*'}",
        "--block_size=4", "--quality=75", "--resolution=32", "--clip=200",
        "--num_shards=2", "--max_failed_fraction=0.01", *IN_PROCESS,
    ]  # fmt: skip
    assert build_dataset.main(argv) == 1
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    # Progress lines may come before it (every 10 s); the error is one line.
    lines = [line for line in err.splitlines() if line.startswith("beam_jobs.build_dataset: err")]
    assert len(lines) == 1 and f"{len(bad)} of" in lines[0], err
    assert all(line.startswith("beam_jobs.build_dataset: ") for line in err.splitlines()), err


# ----------------------------------------------------------------------------------------------
# A listing that names everything: broken links fail by name, special files and hidden files
# are passed over (never opened, never failures).


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory):
    """Two photo crops, a link to one, a broken link (in links/), a FIFO, a socket, macOS's
    hidden files and a hidden folder holding a good image."""
    root = tmp_path_factory.mktemp("odd") / "photos"
    crops = photos.write_crops(str(root), 2, seed=4)
    (root / "link.png").symlink_to(crops[0])
    os.makedirs(root / "links")
    (root / "links" / "gone.png").symlink_to(root / "deleted.png")
    os.mkfifo(root / "pipe.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "socket.png"))
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "._0000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    os.makedirs(root / ".thumbs")
    shutil.copy(crops[1], root / ".thumbs" / "0001.png")
    yield root
    sock.close()


def _listed(pattern):
    inputs, skipped = [], {}
    for item in transforms.list_inputs(pattern):
        if isinstance(item, transforms.Skipped):
            skipped[item.key] = (item.reason, item.message)
        else:
            inputs.append(item)
    return inputs, skipped


def test_listing_names_links_special_and_hidden_files(odd_folder, monkeypatch):
    root = str(odd_folder)
    inputs, skipped = _listed(f"{root}/*")
    assert inputs == [f"{root}/{n}" for n in ("0000.png", "0001.png", "link.png")]
    assert {k: r for k, (r, _) in skipped.items()} == {
        f"{root}/.DS_Store": "hidden",
        f"{root}/._0000.png": "hidden",
        f"{root}/pipe.png": "special_file",
        f"{root}/socket.png": "special_file",
    }
    assert skipped[f"{root}/pipe.png"][1].startswith("a FIFO")
    assert skipped[f"{root}/socket.png"][1].startswith("a socket")
    # The regular files are the ones Beam's own listing gives (its order, spelling).
    beam_paths = sorted(m.path for m in beam.io.filesystems.FileSystems.match([f"{root}/*"])[0]
                        .metadata_list)  # fmt: skip
    assert [p for p in beam_paths if p in inputs] == inputs
    # ** crosses folders, takes the broken link, and does not enter the hidden folder.
    inputs, skipped = _listed(f"{root}/**")
    assert f"{root}/links/gone.png" in inputs
    assert not [p for p in inputs + list(skipped) if "/.thumbs/" in p]
    # A pattern that spells the dot takes hidden files, as a shell glob does.
    assert _listed(f"{root}/.*")[0] == [f"{root}/.DS_Store", f"{root}/._0000.png"]
    assert _listed(f"{root}/.thumbs/*.png")[0] == [f"{root}/.thumbs/0001.png"]
    assert _listed(f"{root}/.DS_Store") == ([f"{root}/.DS_Store"], {})
    # A relative pattern lists relative paths, as Beam does.
    monkeypatch.chdir(odd_folder.parent)
    assert _listed("photos/0*.png")[0] == ["photos/0000.png", "photos/0001.png"]
    # An object store's listing (Beam's, here of the local folder) passes over hidden names too.
    monkeypatch.setattr(transforms, "is_local", lambda path: False)
    inputs, skipped = _listed(f"{root}/*")
    assert skipped == {
        f"{root}/{n}": ("hidden", transforms._hidden("").message)
        for n in (".DS_Store", "._0000.png")
    }
    assert f"{root}/0000.png" in inputs


def test_reading_refuses_links_to_nothing_and_special_files_unopened(odd_folder):
    failure = transforms._read_file(str(odd_folder / "links" / "gone.png"), None)
    assert failure.reason == "broken_link" and "deleted.png" in failure.message
    failure = transforms._read_file(str(odd_folder / "pipe.png"), None)  # would block if opened
    assert failure.reason == "read_error" and failure.message.startswith("a FIFO")
    item = transforms._read_file(str(odd_folder / "link.png"), ["photos"])
    assert item.data == (odd_folder / "0000.png").read_bytes() and item.label == 0


class _FifoWatch:
    """Opens the FIFO for writing whenever a reader has it open: the job would block on it
    otherwise, and `opened` tells whether anything ever did."""

    def __init__(self, path):
        self.path, self.opened = str(path), False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.05):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: nobody reads it
                continue
            self.opened = True
            os.write(fd, b"not an image")
            os.close(fd)

    def stop(self):
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def odd_folder_run(odd_folder, tmp_path_factory):
    """The job on everything below the folder, with progress lines every 0.1 s."""
    out = tmp_path_factory.mktemp("odd_out") / "data"
    lines = []
    watch = _FifoWatch(odd_folder / "pipe.png")
    try:
        entry = pipeline.run_pipeline(
            output_dir=str(out),
            cfg=TINY,
            image_glob=f"{odd_folder}/**",
            num_shards=2,
            max_failed_fraction=0.5,
            pipeline_args=IN_PROCESS,
            progress=lines.append,
            progress_every=0.1,
        )
    finally:
        watch.stop()
    return out, entry, lines, watch.opened


def test_broken_links_fail_by_name_and_special_files_are_skipped(odd_folder, odd_folder_run):
    out, entry, _, fifo_opened = odd_folder_run
    assert not fifo_opened
    counts = entry["counts"]
    # Read: the two crops, the link to one, the broken link; hidden and special files are not
    # inputs, and not failures.
    assert (counts["read"], counts["written"], counts["failed"]) == (4, 3, {"broken_link": 1})
    assert counts["skipped"] == {"hidden": 2, "special_file": 2}
    failed = [json.loads(line) for line in (out / "failed-train.jsonl").read_text().splitlines()]
    assert [(f["key"], f["reason"]) for f in failed] == [
        (str(odd_folder / "links" / "gone.png"), "broken_link")
    ]
    assert str(odd_folder / "deleted.png") in failed[0]["message"]
    assert {(s["key"], s["reason"]) for s in entry["skipped_examples"]} == {
        (str(odd_folder / n), r)
        for n, r in [
            (".DS_Store", "hidden"),
            ("._0000.png", "hidden"),
            ("pipe.png", "special_file"),
            ("socket.png", "special_file"),
        ]
    }
    assert sorted(read_split(out)) == [
        str(odd_folder / n) for n in ("0000.png", "0001.png", "link.png")
    ]


def test_hidden_files_do_not_count_against_the_failure_threshold(odd_folder, tmp_path):
    """A folder of a few photos and macOS's .DS_Store passes the default 1% threshold."""
    entry = pipeline.run_pipeline(
        output_dir=str(tmp_path / "out"),
        cfg=TINY,
        image_glob=f"{odd_folder}/*",
        num_shards=1,
        pipeline_args=IN_PROCESS,
    )
    assert entry["max_failed_fraction"] == 0.01 and entry["counts"]["failed_total"] == 0
    assert (tmp_path / "out" / "COMPLETED").read_text() == "train\n"


def test_a_glob_of_only_skipped_files_names_them(odd_folder, tmp_path):
    with pytest.raises(InputError, match=r"matches no file \(it passed over 1 hidden file, 1 spe"):
        pipeline.run_pipeline(
            output_dir=str(tmp_path / "out"), cfg=TINY, image_glob=f"{odd_folder}/[.p][Di]*"
        )
    assert not (tmp_path / "out").exists()


def test_progress_lines_count_toward_the_listings_total(odd_folder_run):
    _, entry, lines, _ = odd_folder_run
    assert lines, "no progress line in a run of several 0.1 s periods"
    pattern = re.compile(
        r"(\d+) of 4 inputs \(\d+%\) in \d+:\d\d:\d\d: (\d+) written, (\d+) failed"
        r"(; [\d.]+ inputs/s, ETA \d+:\d\d:\d\d)?$"
    )
    done = []
    for line in lines:
        m = pattern.match(line)
        assert m, line
        assert int(m[1]) == int(m[2]) + int(m[3]) <= 4
        done.append(int(m[1]))
    assert done == sorted(done)
    assert pipeline.progress_line({"written": 30, "failed": 10}, 100, 20.0) == (
        "40 of 100 inputs (40%) in 0:00:20: 30 written, 10 failed; 2.0 inputs/s, ETA 0:00:30"
    )
    assert pipeline.progress_line({}, None, 5.0) == "0 inputs in 0:00:05: 0 written, 0 failed"


def test_progress_files_sum_over_instances(tmp_path):
    a, b = transforms.Progress(str(tmp_path), every=3600), transforms.Progress(str(tmp_path))
    for _ in range(3):
        a.add("written")  # the first is written at once, the others wait for the period
    b.add("failed")
    assert transforms.read_progress(str(tmp_path)) == {"written": 1, "failed": 1}
    a.flush()
    assert transforms.read_progress(str(tmp_path)) == {"written": 3, "failed": 1}
    quiet = transforms.Progress(None)
    quiet.add("written")
    quiet.flush()
    assert len(os.listdir(tmp_path)) == 2


# ----------------------------------------------------------------------------------------------
# TFDS inputs.


def _mock_cifar10_metadata(data_dir, shard_lengths):
    """dataset_info.json for cifar10 in data_dir: tfds.beam.ReadFromTFDS needs prepared splits,
    and tfds.testing.mock_data then serves random examples for each shard."""
    builder = tfds.builder("cifar10", data_dir=str(data_dir))
    template = tfds.core.ShardedFileTemplate(
        data_dir=builder.data_dir,
        template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
        dataset_name="cifar10",
        split="train",
        filetype_suffix="tfrecord",
    )
    split = tfds.core.SplitInfo(
        name="train", shard_lengths=shard_lengths, num_bytes=0, filename_template=template
    )
    builder.info.set_splits(tfds.core.SplitDict([split]))
    os.makedirs(builder.data_dir, exist_ok=True)
    builder.info.write_to_directory(builder.data_dir)


def test_tfds_mock_cifar10_labelled(tmp_path):
    data_dir, out = tmp_path / "tfds", tmp_path / "out"
    _mock_cifar10_metadata(data_dir, [3, 3])
    cfg = DCTConfig(block_size=4, quality=75, resolution=32, clip=1200, ordering="interleaved")
    mock = tfds.testing.mock_data(
        num_examples=3, data_dir=str(data_dir), policy=tfds.testing.MockPolicy.USE_FILES
    )
    with mock:
        entry = pipeline.run_pipeline(
            output_dir=str(out),
            cfg=cfg,
            tfds_name="cifar10",
            tfds_data_dir=str(data_dir),
            split="train",
            num_shards=2,
            pipeline_args=IN_PROCESS,
        )
        # The same examples, decoded by TFDS itself, as the reference.
        builder = tfds.builder("cifar10", data_dir=str(data_dir))
        reference = {}
        for shard in range(2):
            ds = builder.as_dataset(
                split=f"train[{shard}shard]", read_config=tfds.ReadConfig(add_tfds_id=True)
            )
            for ex in tfds.as_numpy(ds):
                reference[ex["tfds_id"].decode()] = (ex["image"], int(ex["label"]))
    assert entry["source"]["image_key"] == "image" and entry["source"]["label_key"] == "label"
    assert entry["num_classes"] == 10 and entry["counts"]["written"] == 6
    got = read_split(out)
    assert sorted(got) == sorted(reference)
    for key, (image, label) in reference.items():
        assert image.shape == (32, 32, 3)
        _assert_same_triples(got[key], encode(image, cfg), key)
        assert int(got[key]["label"]) == label


def test_a_misspelt_tfds_name_is_one_line_with_close_names(tmp_path, capsys):
    with pytest.raises(InputError) as e:
        transforms.tfds_features("mnistt", "train", str(tmp_path))
    message = str(e.value)
    assert message.startswith("--tfds_name=mnistt: TFDS has no dataset 'mnistt'")
    assert message.endswith("did you mean mnist, kmnist, emnist?")  # not the 400-odd names
    # A config and version after the name: the name is what is looked up.
    with pytest.raises(InputError, match=r"no dataset 'cifar1O' .*did you mean cifar10"):
        transforms.tfds_features("cifar1O/plain:3.0.2", "train", str(tmp_path))
    argv = ["--tfds_name=mnistt", f"--output_dir={tmp_path}/out"]
    assert build_dataset.main(argv) == 1
    assert "did you mean mnist" in _one_error_line(capsys.readouterr().err, "--tfds_name=mnistt")


class DctTestPhotos(tfds.core.GeneratorBasedBuilder):
    """A real prepared TFDS dataset, with feature names that are not `image`/`label`."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = tfds.features.FeaturesDict(
            {
                "picture": tfds.features.Image(),
                "thumbnail": tfds.features.Image(),
                "kind": tfds.features.ClassLabel(names=["gray", "color"]),
            }
        )
        return tfds.core.DatasetInfo(builder=self, features=features)

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        paths = photos.gray_photo_paths()[:2] + photos.color_photo_paths()[:2]
        for i, path in enumerate(paths):
            image = photos.load_rgb(path)[:200, :200]
            yield (
                os.path.basename(path),
                {
                    "picture": image,
                    "thumbnail": image[::8, ::8],
                    "kind": int(i >= 2),
                },
            )


def test_tfds_prepared_dataset_with_its_own_feature_names(tmp_path):
    data_dir = tmp_path / "tfds"
    DctTestPhotos(data_dir=str(data_dir)).download_and_prepare()
    with pytest.raises(ValueError, match="pass --image_key"):
        transforms.tfds_features("dct_test_photos", "train", str(data_dir))
    with pytest.raises(ValueError, match="--split=validation"):
        transforms.tfds_features("dct_test_photos", "validation", str(data_dir), "picture")
    with pytest.raises(ValueError, match="--image_key=photo: .* has features"):
        transforms.tfds_features("dct_test_photos", "train", str(data_dir), "photo")
    cfg = DCTConfig(block_size=8, quality=75, resolution=64, clip=1200, ordering="luma_first")
    entry = pipeline.run_pipeline(
        output_dir=str(tmp_path / "out"),
        cfg=cfg,
        tfds_name="dct_test_photos",
        tfds_data_dir=str(data_dir),
        image_key="picture",
        split="train",
        num_shards=2,
        pipeline_args=IN_PROCESS,
    )
    assert entry["source"]["label_key"] == "kind"
    assert entry["label_names"] == ["gray", "color"]
    got = read_split(tmp_path / "out")
    assert len(got) == 4
    builder = tfds.builder("dct_test_photos", data_dir=str(data_dir))
    ds = builder.as_dataset(split="train", read_config=tfds.ReadConfig(add_tfds_id=True))
    for ex in tfds.as_numpy(ds):
        key = ex["tfds_id"].decode()
        _assert_same_triples(got[key], encode(ex["picture"], cfg), key)
        assert int(got[key]["label"]) == int(ex["kind"])
    # A subsplit, under a plain output name, beside the first split.
    half = pipeline.run_pipeline(
        output_dir=str(tmp_path / "out"),
        cfg=cfg,
        tfds_name="dct_test_photos",
        tfds_data_dir=str(data_dir),
        image_key="picture",
        split="train[:50%]",
        output_split="half",
        num_shards=1,
        pipeline_args=IN_PROCESS,
    )
    assert half["counts"]["written"] == 2 and half["source"]["split"] == "train[:50%]"
    assert set(read_split(tmp_path / "out", "half")) < set(got)


@pytest.mark.slow
def test_tfds_prepared_dataset_on_worker_processes(tmp_path):
    """Worker processes rebuild the TFDS reader from the prepared files (the dataset's builder
    class is defined here, in the test module, and is not pickled)."""
    data_dir = tmp_path / "tfds"
    DctTestPhotos(data_dir=str(data_dir)).download_and_prepare()
    cfg = DCTConfig(block_size=8, quality=75, resolution=64, clip=1200, ordering="interleaved")
    entry = pipeline.run_pipeline(
        output_dir=str(tmp_path / "out"),
        cfg=cfg,
        tfds_name="dct_test_photos",
        tfds_data_dir=str(data_dir),
        image_key="picture",
        num_shards=2,
        pipeline_args=["--direct_num_workers=2"],
    )
    assert entry["counts"]["written"] == 4 and entry["label_names"] == ["gray", "color"]
    got = read_split(tmp_path / "out")
    builder = tfds.builder("dct_test_photos", data_dir=str(data_dir))
    ds = builder.as_dataset(split="train", read_config=tfds.ReadConfig(add_tfds_id=True))
    for ex in tfds.as_numpy(ds):
        key = ex["tfds_id"].decode()
        _assert_same_triples(got[key], encode(ex["picture"], cfg), key)


# ----------------------------------------------------------------------------------------------
# The command line.


def _one_error_line(err: str, *needles: str) -> str:
    """The single line a user error prints (no traceback), checked to name each needle."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("beam_jobs.build_dataset: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def test_parse_args_flags_and_pass_through():
    argv = [
        "build_dataset",
        "--image_glob=/data/*/*.jpg",
        "--labels_from_dirs",
        "--output_dir=/tmp/out",
        "--quality=90",
        "--num_shards",
        "8",
        "--runner",
        "DirectRunner",
        "--direct_num_workers=2",
    ]
    kwargs, beam_args = build_dataset.parse_args(argv)
    assert kwargs["cfg"] == dataclasses.replace(pipeline.DEFAULT_REPRESENTATION, quality=90)
    assert kwargs["num_shards"] == 8 and kwargs["labels_from_dirs"]
    assert beam_args == ["--runner", "DirectRunner", "--direct_num_workers=2"]
    assert kwargs["pipeline_args"] == beam_args
    # The flags' defaults are the library's: the paper's LSUN row.
    defaults, _ = build_dataset.parse_args(["x", "--tfds_name=cifar10", "--output_dir=/o"])
    assert defaults["cfg"] == pipeline.DEFAULT_REPRESENTATION
    assert defaults["cfg"].resolution == 384 and defaults["max_failed_fraction"] == 0.01
    assert build_dataset.DEFAULT_REPRESENTATION is pipeline.DEFAULT_REPRESENTATION
    assert build_dataset.run_pipeline is pipeline.run_pipeline  # for scripts from before
    for args, error, message in [
        (["--output_dir=/o", "--num_shard=4"], UsageError, r"--num_shard \(did you mean --num_s"),
        (["--output_dir=/o", "stray"], UsageError, "'stray'"),
        (["--output_dir=/o", "--tfds_name=c", "--labels_from_dirs"], UsageError, "--image_glob"),
        (["--image_glob=/a/*"], UsageError, "--output_dir is required"),
        (["--output_dir=/o", "--tfds_name=c", "--block_size=12"], UsageError, "block_size=12"),
        (["--output_dir=/o", "--num_shards=x"], UsageError, "--num_shards"),
    ]:
        with pytest.raises(error, match=message):
            build_dataset.parse_args(["x", *args])


def test_the_flags_defaults_are_the_libraries():
    """build_dataset writes these out (so --help loads neither numpy nor Beam)."""
    assert build_dataset.REPRESENTATION_FIELDS == tuple(
        f.name for f in dataclasses.fields(DCTConfig)
    )
    assert build_dataset.ORDERINGS == ORDERINGS
    assert build_dataset.DEFAULT_MAX_PIXELS == images.DEFAULT_MAX_PIXELS


def _gin(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


BASE_ARGS = ["x", "--image_glob=/data/*.jpg", "--output_dir=/o"]


def test_gin_gives_the_representation_training_reads(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    # Every form of --gin_file that training accepts; an experiment includes its data file.
    for gin_file in [
        "gin/data/tiny.gin",
        "data/tiny.gin",
        "experiments/tiny.gin",
        os.path.join(ROOT, "gin", "data", "tiny.gin"),
    ]:
        kwargs, _ = build_dataset.parse_args([*BASE_ARGS, f"--gin_file={gin_file}"])
        assert kwargs["cfg"] == TINY, gin_file
    # A flag may repeat a binding, or fill a field the gin leaves unbound.
    partial = _gin(
        tmp_path,
        "partial.gin",
        "dct_config.block_size = 16\ndct_config.resolution = 256\ndct_config.quality = 60\n"
        "dct_config.clip = 900\nmodel_config.dropout = 0.0  # training's: parsed, not built\n",
    )
    kwargs, _ = build_dataset.parse_args(
        [*BASE_ARGS, f"--gin_file={partial}", "--quality=60", "--interval=2"]
    )
    assert kwargs["cfg"] == DCTConfig(
        block_size=16, quality=60, resolution=256, clip=900, ordering="interleaved", interval=2
    )
    kwargs, _ = build_dataset.parse_args(
        [*BASE_ARGS, "--gin_file=data/tiny.gin", "--gin_param=dct_config.quality = 90"]
    )
    assert kwargs["cfg"] == dataclasses.replace(TINY, quality=90)


def test_gin_that_gives_no_representation_or_contradicts_a_flag_is_refused(tmp_path):
    model_only = _gin(tmp_path, "model.gin", "model_config.hidden_size = 64\n")
    old = _gin(tmp_path, "old.gin", "build_dataset.resolution = 64\n")
    no_clip = _gin(
        tmp_path,
        "no_clip.gin",
        "dct_config.block_size = 8\ndct_config.quality = 75\ndct_config.resolution = 64\n",
    )
    typo = _gin(tmp_path, "typo.gin", "dct_config.blocksize = 8\n")
    bad = _gin(tmp_path, "bad.gin", "include 'data/tiny.gin'\ndct_config.block_size = 12\n")
    tiny = os.path.join(ROOT, "gin", "data", "tiny.gin")
    for args, error, message in [
        ([f"--gin_file={model_only}"], InputError, f"--gin_file {model_only}: binds no dct_conf"),
        ([f"--gin_file={old}"], InputError, "build_dataset.<field> bindings are no longer read"),
        ([f"--gin_file={no_clip}"], InputError, "not dct_config.clip; bind it, or give --clip"),
        ([f"--gin_file={typo}"], InputError, "blocksize"),
        ([f"--gin_file={bad}"], InputError, f"--gin_file {bad}: .*block_size=12"),
        (["--gin_file=/nowhere.gin"], InputError, "--gin_file /nowhere.gin: no such file"),
        (
            [f"--gin_file={tiny}", "--resolution=128"],
            UsageError,
            f"--resolution=128 contradicts dct_config.resolution = 64 in --gin_file {tiny}",
        ),
    ]:
        with pytest.raises(error, match=message):
            build_dataset.parse_args([*BASE_ARGS, *args])
    # With --clip the file above is complete; and each parse starts from a clear gin (the
    # bindings of an earlier file do not count for a later one).
    kwargs, _ = build_dataset.parse_args([*BASE_ARGS, f"--gin_file={no_clip}", "--clip=1200"])
    assert kwargs["cfg"] == TINY
    with pytest.raises(InputError, match="binds no dct_config"):
        build_dataset.parse_args([*BASE_ARGS, f"--gin_file={model_only}"])


def test_main_with_training_gin_writes_its_representation(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    crops = photos.write_crops(str(tmp_path / "crops"), 4, seed=3)
    out = tmp_path / "out"
    argv = [f"--image_glob={tmp_path}/crops/*.png", f"--output_dir={out}", "--num_shards=2"]
    code = build_dataset.main([*argv, "--gin_file", "gin/data/tiny.gin", *IN_PROCESS])
    printed, err = capsys.readouterr()
    assert code == 0, err
    # The job's own lines only (progress, then the summary), Beam's and TensorFlow's quiet.
    lines = (printed + err).splitlines()
    assert len(lines) <= 10 and all(line.startswith("beam_jobs.build_dataset: ") for line in lines)
    assert printed.startswith("beam_jobs.build_dataset: read 4 inputs in ")
    assert "wrote 4 records" in printed
    info = json.loads((out / "info.json").read_text())
    assert info["representation"]["resolution"] == 64
    assert DCTConfig.from_dict(info["representation"]) == TINY
    got = read_split(out)
    assert sorted(got) == sorted(crops)
    for path in crops:
        record = got[path]
        assert max(int(record["height"]), int(record["width"])) == 64
        _assert_same_triples(record, encode(photos.load_rgb(path), TINY), path)


def test_main_user_errors_are_one_line_with_their_exit_status(tmp_path, capsys):
    images_glob = f"--image_glob={tmp_path}/crops/*.png"
    photos.write_crops(str(tmp_path / "crops"), 1, seed=0)
    model_only = _gin(tmp_path, "model.gin", "model_config.hidden_size = 64\n")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    for argv, code, needles in [
        ([images_glob], 2, ["--output_dir is required"]),
        ([f"--output_dir={tmp_path}/o", "--num_shards=2"], 2, ["--image_glob or --tfds_name"]),
        ([f"--output_dir={tmp_path}/o", "--image_glob=/nowhere/*.png"], 1, ["--image_glob"]),
        ([f"--output_dir={a_file}", images_glob], 1, ["--output_dir", "not a directory"]),
        ([f"--output_dir={tmp_path}/o", images_glob, "--gin_file", model_only], 1, [model_only]),
        ([f"--output_dir={tmp_path}/o", images_glob, "--quality=x"], 2, ["--quality"]),
    ]:
        assert build_dataset.main(argv) == code, argv
        _one_error_line(capsys.readouterr().err, *needles)
    assert not (tmp_path / "o").exists()  # nothing is written before the inputs are checked


def test_help_is_fast_and_loads_no_library():
    """--help answers from the flags alone: importing the entry module loads neither Beam nor
    numpy nor TensorFlow, and gin only when --gin_file is given."""
    code = (
        "import sys, beam_jobs.build_dataset as b\n"
        "heavy = ('apache_beam', 'numpy', 'tensorflow', 'keras', 'gin', 'beam_jobs.pipeline')\n"
        "loaded = [m for m in heavy if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "assert b.main(['--help']) == 0\n"
        "assert not [m for m in heavy if m in sys.modules]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--max_failed_fraction" in done.stdout and "--gin_file" in done.stdout
    assert "docs/datasets.md" in done.stdout and "beam.md" not in done.stdout


def test_run_pipeline_argument_errors_name_the_flag(tmp_path):
    run = lambda **kw: pipeline.run_pipeline(output_dir=str(tmp_path), **kw)
    with pytest.raises(UsageError, match="exactly one input"):
        run()
    with pytest.raises(UsageError, match="exactly one input"):
        run(image_glob="/a/*", tfds_name="cifar10")
    with pytest.raises(InputError, match="matches no file"):
        run(image_glob=str(tmp_path / "none" / "*.jpg"))
    with pytest.raises(UsageError, match="--labels_from_dirs"):
        run(tfds_name="cifar10", labels_from_dirs=True)
    with pytest.raises(UsageError, match="--num_shards=0"):
        run(image_glob="/a/*", num_shards=0)
    with pytest.raises(UsageError, match="--output_split"):
        run(image_glob="/a/*", split="train[:10%]")
    with pytest.raises(UsageError, match="--max_failed_fraction=2"):
        run(image_glob="/a/*", max_failed_fraction=2)
    with pytest.raises(InputError, match="apache-beam\\[gcp\\]"):
        run(image_glob="gs://bucket/images/*.jpg")
    with pytest.raises(InputError, match="--tfds_name=cifar10: no prepared data"):
        run(tfds_name="cifar10", tfds_data_dir=str(tmp_path / "empty_tfds"))
    with pytest.raises(InputError, match="--tfds_name=no_such_dataset_xyz: TFDS has no data"):
        run(tfds_name="no_such_dataset_xyz", tfds_data_dir=str(tmp_path / "empty_tfds"))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"")
    with pytest.raises(UsageError, match="--runer"):
        run(image_glob=str(tmp_path / "in" / "*.png"), pipeline_args=["--runer=DirectRunner"])


def test_beam_code_imports_neither_tensorflow_nor_keras():
    """Workers that convert image files stay light: the job's modules pull in no TF or Keras."""
    code = (
        "import sys, beam_jobs.build_dataset, beam_jobs.pipeline, beam_jobs.transforms, "
        "beam_jobs.outputs, dct_gen.images; "
        "heavy = [m for m in ('tensorflow', 'keras', 'tensorflow_datasets') if m in sys.modules]; "
        "print(heavy); sys.exit(bool(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]


@pytest.mark.slow
def test_command_line_multi_processing_matches_in_process(folder, folder_run, tmp_path):
    """`python -m beam_jobs.build_dataset` on 2 worker processes writes the same bytes."""
    root, _, _ = folder
    out, _ = folder_run
    cmd = [
        sys.executable,
        "-m",
        "beam_jobs.build_dataset",
        f"--image_glob={root}/*/*",
        "--labels_from_dirs",
        f"--output_dir={tmp_path / 'cli'}",
        "--num_shards=3",
        "--max_failed_fraction=0.5",
        f"--block_size={CFG.block_size}",
        f"--resolution={CFG.resolution}",
        "--direct_num_workers=2",
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "wrote" in done.stdout
    for name in [records.shard_name("train", i, 3) for i in range(3)] + ["failed-train.jsonl"]:
        assert (tmp_path / "cli" / name).read_bytes() == (out / name).read_bytes(), name
    info = json.loads((tmp_path / "cli" / "info.json").read_text())
    assert (
        info["splits"]["train"]["counts"]
        == json.loads((out / "info.json").read_text())["splits"]["train"]["counts"]
    )


# ----------------------------------------------------------------------------------------------
# What the job prints, and worker processes that end with the driver.


def test_a_worker_whose_parent_is_not_the_driver_exits_before_importing_beam():
    """The worker's prelude: a worker whose driver is gone exits at once (here a shell stands
    between this process, the driver its command names, and the worker)."""
    command = pipeline.worker_command()
    assert command.startswith("exec ") and f"run_worker({os.getpid()}, 40)" in command
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")  # each import, listed on stderr
    done = subprocess.run(
        ["sh", "-c", f"({command})"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "ctypes" in done.stderr and "apache_beam" not in done.stderr, done.stderr[-2000:]


def _children(pid: int) -> dict[int, str]:
    """pid -> start time (in clock ticks since boot) of each child of a process, from /proc."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = open(f"/proc/{name}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out[int(name)] = fields[19]
    return out


def _alive(processes: dict[int, str]) -> list[int]:
    """Those of processes (pid -> start time) that still run: not gone, not a zombie, not
    another process that got the pid."""
    alive = []
    for pid, started in processes.items():
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in "ZX" and fields[19] == started:
            alive.append(pid)
    return alive


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_the_driver_ends_its_workers(tmp_path):
    photos.write_crops(str(tmp_path / "crops"), 40, seed=5, sides=(100, 200))
    cmd = [
        sys.executable,
        "-m",
        "beam_jobs.build_dataset",
        f"--image_glob={tmp_path}/crops/*.png",
        f"--output_dir={tmp_path}/out",
        "--num_shards=2",
        "--direct_running_mode=multi_processing",
        "--direct_num_workers=2",
    ]
    driver = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    workers = {}
    try:
        deadline = time.monotonic() + 180
        while len(workers) < 2 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            workers = _children(driver.pid)
        assert len(workers) == 2, "the job started no two worker processes"
        for pid in workers:
            assert "run_worker" in open(f"/proc/{pid}/cmdline").read()
        time.sleep(3)  # mid-run: the workers import Beam, or encode
        assert driver.poll() is None, "the job ended before it was killed: give it more images"
        driver.kill()
        driver.wait()
        deadline = time.monotonic() + 5
        while _alive(workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(workers), "worker processes outlived their killed driver"
    finally:
        for pid in _alive(workers):
            os.kill(pid, signal.SIGKILL)
        driver.kill()
        driver.wait()
        driver.stderr.close()


@pytest.mark.slow
def test_worker_processes_are_quiet_unless_asked(tmp_path):
    """Two worker processes on four images: the default output is the job's own lines; with
    --verbosity 1 the workers' Beam lines come back."""
    photos.write_crops(str(tmp_path / "crops"), 4, seed=3)
    cmd = [
        sys.executable,
        "-m",
        "beam_jobs.build_dataset",
        f"--image_glob={tmp_path}/crops/*.png",
        "--num_shards=2",
        "--resolution=64",
        "--direct_num_workers=2",
    ]
    run = lambda *args: subprocess.run(
        [*cmd, *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    done = run(f"--output_dir={tmp_path}/quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (done.stdout + done.stderr).splitlines()
    assert len(lines) <= 10, done.stdout + done.stderr
    assert all(line.startswith("beam_jobs.build_dataset: ") for line in lines), lines
    done = run(f"--output_dir={tmp_path}/verbose", "--verbosity=1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "INFO apache_beam.runners.worker.sdk_worker_main: Python sdk harness starting" in (
        done.stderr
    )
    assert "Worker: severity" not in done.stderr  # the driver does not repeat them
