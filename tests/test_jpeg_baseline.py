"""The JPEG baseline: our coefficients written into real JPEG files, read back and measured."""

import io
import os

import jpeglib
import numpy as np
import pytest
from PIL import Image

from dct_gen import jpeg_baseline as jb
from dct_gen import photos
from dct_gen import representation as rep
from dct_gen.representation import DCTConfig

CFG = DCTConfig(block_size=8, quality=75, resolution=128)


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    """Every bundled colour photo, resized once to the 128-pixel canvas (fast to code)."""
    return {
        os.path.basename(p): rep.resize(photos.load_rgb(p), CFG) for p in photos.color_photo_paths()
    }


@pytest.mark.parametrize("optimize", [True, False])
def test_the_file_holds_exactly_our_coefficients(images, optimize, tmp_path):
    for name, image in images.items():
        result = jb.jpeg_bits(image, CFG, optimize=optimize, return_bytes=True)
        ours, height, width = jb.planes_from_image(image, CFG)
        back = jb.read_coefficients(result["jpeg"])
        for plane, a, b in zip(("Y", "Cb", "Cr"), ours, back):
            assert a.shape == b.shape, (name, plane)
            np.testing.assert_array_equal(a, b, err_msg=f"{name} {plane}")
        # A standard decoder reads the file, at the padded size, with the codec's tables.
        path = tmp_path / "ours.jpg"
        path.write_bytes(result["jpeg"])
        jpeg = jpeglib.read_dct(str(path))
        luma_t, chroma_t = rep.quant_tables(8, CFG.quality)
        np.testing.assert_array_equal(jpeg.qt[0], luma_t)
        np.testing.assert_array_equal(jpeg.qt[1], chroma_t)
        decoded = Image.open(io.BytesIO(result["jpeg"]))
        assert decoded.size == (-(-width // 16) * 16, -(-height // 16) * 16)
        assert (result["height"], result["width"]) == (height, width)


def test_a_decoder_shows_the_codecs_image(images):
    """Pixels decoded by libjpeg from our coefficients match the codec's own decoder closely."""
    image = images["astronaut.png"]
    result = jb.jpeg_bits(image, CFG, return_bytes=True)
    libjpeg = np.asarray(Image.open(io.BytesIO(result["jpeg"])).convert("RGB"))
    ours = rep.decode(rep.encode(image, CFG), CFG)
    diff = np.abs(libjpeg.astype(int) - ours.astype(int))
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 4


def test_a_sequence_and_its_image_give_the_same_bits(images):
    for name in ("chelsea.png", "coffee.png", "china.jpg"):
        if name not in images:
            continue
        image = images[name]
        from_image = jb.jpeg_bits(image, CFG)
        from_sequence = jb.jpeg_bits(rep.encode(image, CFG), CFG)
        for key in jb.KEYS + ("bits_per_subpixel", "height", "width", "subpixels"):
            assert from_image[key] == from_sequence[key], (name, key)


def test_accounting_adds_up(images):
    r = jb.jpeg_bits(images["astronaut.png"], CFG)
    assert r["scan_bits"] + r["table_bits"] + r["header_bits"] == r["file_bits"]
    assert r["entropy_bits"] == r["scan_bits"] - r["stuffing_bits"]
    assert r["scan_and_table_bits"] == r["scan_bits"] + r["table_bits"]
    assert r["huffman_bits"] == r["entropy_bits"] - r["extra_bits"] > 0
    assert r["extra_bits_per_subpixel"] == r["extra_bits"] / r["subpixels"]
    assert r["subpixels"] == 3 * 128 * 128
    assert r["bits_per_subpixel"] == r["entropy_bits"] / r["subpixels"]
    # Four optimized tables (DC and AC, luma and chroma); headers that do not depend on the
    # content: SOI 2, APP0 18, 2 x DQT 69, SOF0 19, SOS 14, EOI 2 bytes.
    assert r["header_bits"] == 8 * (2 + 18 + 2 * 69 + 19 + 14 + 2)
    assert 0 < r["table_bits"] < 8 * 4 * (2 + 2 + 17 + 162)


def test_segment_parser_on_a_hand_made_file():
    soi, eoi = b"\xff\xd8", b"\xff\xd9"
    dht = b"\xff\xc4" + (5).to_bytes(2, "big") + b"abc"
    sos = b"\xff\xda" + (4).to_bytes(2, "big") + b"xy"
    scan = b"\x12\xff\x00\x34\xff\xd0\x56"  # one stuffed byte, one restart marker
    bits = jb.segment_bits(soi + dht + sos + scan + eoi)
    assert bits["table_bits"] == 8 * 7
    assert bits["scan_bits"] == 8 * len(scan)
    assert bits["stuffing_bits"] == 8
    assert bits["header_bits"] == 8 * (2 + 6 + 2)
    with pytest.raises(ValueError, match="not a JPEG"):
        jb.segment_bits(b"\x89PNG")


def test_bits_fall_with_quality(images):
    for name in ("astronaut.png", "flower.jpg"):
        if name not in images:
            continue
        bits = [
            jb.jpeg_bits(images[name], DCTConfig(quality=q, resolution=128))["bits_per_subpixel"]
            for q in (95, 75, 50, 25, 10)
        ]
        assert all(a > b for a, b in zip(bits, bits[1:])), (name, bits)


def test_optimized_tables_never_cost_more(images):
    for name, image in images.items():
        opt = jb.jpeg_bits(image, CFG, optimize=True)
        std = jb.jpeg_bits(image, CFG, optimize=False)
        assert opt["entropy_bits"] <= std["entropy_bits"], name
        assert opt["scan_and_table_bits"] < std["scan_and_table_bits"], name
        assert opt["file_bits"] < std["file_bits"], name
        # Tables change the codes, not the bits appended after them.
        assert opt["extra_bits"] == std["extra_bits"], name


def test_pillow_codes_nearly_the_same_bits(images):
    """Pillow's JPEG of the same pixels codes libjpeg's own (99%+ equal) coefficients."""
    ours = jb.summarize([jb.jpeg_bits(im, CFG) for im in images.values()])
    pillow = jb.summarize([jb.pillow_jpeg_bits(im, CFG) for im in images.values()])
    assert pillow["images"] == ours["images"] == len(images)
    ratio = ours["bits_per_subpixel"] / pillow["bits_per_subpixel"]
    assert 0.97 < ratio < 1.03, ratio
    assert pillow["header_bits"] == ours["header_bits"]


def test_extra_bits_by_hand():
    """One 16x16 image: four luma blocks, one chroma block each, a few known coefficients."""
    y = np.zeros((2, 2, 64), np.int32)
    y[0, 0, 0], y[0, 1, 0], y[1, 0, 0], y[1, 1, 0] = 5, 5, -3, 0  # DC diffs 5, 0, -8, 3
    y[0, 0, 1], y[1, 1, 63] = 1, -200  # AC: 1 bit, 8 bits
    cb = np.zeros((1, 1, 64), np.int32)
    cb[0, 0, 0] = 1  # 1 bit
    cr = np.zeros((1, 1, 64), np.int32)
    cr[0, 0, 2] = 7  # 3 bits
    # DC: |5| 3 bits, 0, |-8| 4 bits, |3| 2 bits; AC 1 + 8; chroma 1 + 3.
    assert jb.extra_bits([y, cb, cr]) == 3 + 0 + 4 + 2 + 1 + 8 + 1 + 3
    cfg = DCTConfig(resolution=16)
    seq = rep.triples_from_planes([p.transpose(2, 0, 1) for p in (y, cb, cr)], 16, 16, cfg)
    result = jb.jpeg_bits(seq, cfg, return_bytes=True)
    assert result["extra_bits"] == 22
    for a, b in zip((y, cb, cr), jb.read_coefficients(result["jpeg"])):
        np.testing.assert_array_equal(a, b)


def test_summarize_means_and_pools():
    a = {k: 0 for k in jb.KEYS} | {"subpixels": 100, "entropy_bits": 50}
    b = {k: 0 for k in jb.KEYS} | {"subpixels": 300, "entropy_bits": 60}
    for r in (a, b):
        for k in jb.KEYS:
            r[f"{k[:-5]}_bits_per_subpixel"] = r[k] / r["subpixels"]
    s = jb.summarize([a, b])
    assert s["bits_per_subpixel"] == pytest.approx((0.5 + 0.2) / 2)  # mean over images
    assert s["bits_per_subpixel_pooled"] == pytest.approx(110 / 400)  # summed over summed
    assert s["entropy_bits"] == 110 and s["subpixels"] == 400 and s["images"] == 2
    with pytest.raises(ValueError):
        jb.summarize([])


def test_odd_sized_images_are_padded_to_whole_mcus(images):
    """Long side = resolution with a short side off the 2B grid: the codec rounds it (100 to 96),
    and the file, the planes and the sequence agree on the rounded image (odd sizes now come only
    from records written before that rule)."""
    image = images["astronaut.png"][:, :100]  # 128 x 100: the codec makes it 128 x 96
    result = jb.jpeg_bits(image, CFG, return_bytes=True)
    assert (result["height"], result["width"]) == (128, 96)
    assert result["subpixels"] == 3 * 128 * 96
    ours, _, _ = jb.planes_from_image(image, CFG)
    assert ours[0].shape[:2] == (16, 12)
    for a, b in zip(ours, jb.read_coefficients(result["jpeg"])):
        np.testing.assert_array_equal(a, b)
    seq = rep.encode(image, CFG)
    for a, b in zip(ours, jb.planes_from_sequence(seq, CFG)):
        np.testing.assert_array_equal(a, b)


def test_block_size_other_than_8_is_refused(images):
    cfg = DCTConfig(block_size=16, quality=75, resolution=128)
    image = images["astronaut.png"]
    for call in (
        lambda: jb.jpeg_bits(image, cfg),
        lambda: jb.jpeg_bits(rep.encode(image, cfg), cfg),
        lambda: jb.pillow_jpeg_bits(image, cfg),
    ):
        with pytest.raises(ValueError, match="block_size=16.*block_size = 8"):
            call()


def test_values_baseline_jpeg_cannot_code_are_refused():
    cfg = DCTConfig(resolution=32, clip=1200)
    seq = rep.DCTSequence(
        channels=np.array([0, 1], np.int32),
        positions=np.array([0, 0], np.int32),
        values=np.array([5, 1100], np.int32),  # an AC value above 1023
        height=32,
        width=32,
    )
    with pytest.raises(ValueError, match="AC coefficient of magnitude 1100"):
        jb.jpeg_bits(seq, cfg)
    dc = rep.DCTSequence(  # DC 1200 then -1200: a difference of 2400
        channels=np.array([0, 0], np.int32),
        positions=np.array([0, 1], np.int32),
        values=np.array([1200, -1200], np.int32),
        height=32,
        width=32,
    )
    with pytest.raises(ValueError, match="DC difference of 2400"):
        jb.jpeg_bits(dc, cfg)


def test_triples_outside_the_stored_size_are_refused():
    cfg = DCTConfig(resolution=64)
    seq = rep.DCTSequence(
        channels=np.array([0], np.int32),
        positions=np.array([5], np.int32),  # block column 5: outside a 32-pixel-wide image
        values=np.array([3], np.int32),
        height=32,
        width=32,
    )
    with pytest.raises(ValueError, match="outside"):
        jb.jpeg_bits(seq, cfg)
