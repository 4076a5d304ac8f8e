"""The sparse DCT codec against independent references: scipy's DCT, libjpeg's coefficients
(through jpeglib), Pillow's JPEG round trip, and closed-form answers."""

import io
import os

import jpeglib
import numpy as np
import pytest
import scipy.fft
from PIL import Image
from testing_helpers import crop_even

from dct_gen import representation as rep
from dct_gen.representation import DCTConfig, decode, encode

# ITU-T T.81 figure A.6 (libjpeg's jpeg_natural_order): natural index of each zigzag index.
JPEG_ZIGZAG_8 = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48,
    41, 34, 27, 20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23,
    30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
]  # fmt: skip


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def config_for(image: np.ndarray, **kw) -> DCTConfig:
    """A config whose canvas equals the image's long side, so nothing is resized."""
    b = kw.get("block_size", 8)
    res = -(-max(image.shape[:2]) // (2 * b)) * 2 * b
    assert res == max(image.shape[:2]), "crop the image to a multiple of 2B first"
    return DCTConfig(resolution=res, **kw)


def libjpeg_coefficients(image: np.ndarray, quality: int, tmp_path) -> jpeglib.DCTJPEG:
    path = os.path.join(tmp_path, f"q{quality}.jpg")
    Image.fromarray(image).save(path, "JPEG", quality=quality, subsampling=2)
    return jpeglib.read_dct(path)


# --------------------------------------------------------------------------------------------
# Transform pieces.


@pytest.mark.parametrize("block_size", [4, 8, 16, 32])
def test_block_dct_matches_scipy(block_size):
    rng = np.random.default_rng(block_size)
    plane = rng.uniform(-128, 127, size=(4 * block_size, 6 * block_size)).astype(np.float32)
    ours = rep.block_dct(plane, block_size)
    blocks = plane.reshape(4, block_size, 6, block_size).transpose(0, 2, 1, 3)
    ref = scipy.fft.dctn(blocks.astype(np.float64), axes=(2, 3), norm="ortho")
    np.testing.assert_allclose(ours, ref, atol=1e-3)
    # The channel-major zigzag layout holds the same numbers.
    zz = rep.block_dct_zigzag(plane, block_size)
    flat = ref.reshape(4, 6, -1)[:, :, rep.zigzag(block_size)].transpose(2, 0, 1)
    np.testing.assert_allclose(zz, flat, atol=1e-3)
    # And the inverse inverts it.
    np.testing.assert_allclose(rep.block_idct(ours), plane, atol=1e-3)


def test_dct_scale_is_2_over_b():
    # A constant block c has DC = B * c under the orthonormal DCT (eq. 1 with 2/B scaling).
    for b in (4, 8, 16, 32):
        d = rep.block_dct(np.full((b, b), 3.0, np.float32), b)
        assert d[0, 0, 0, 0] == pytest.approx(3.0 * b, rel=1e-5)


def test_zigzag_8_is_jpeg_order():
    assert rep.zigzag(8).tolist() == JPEG_ZIGZAG_8


@pytest.mark.parametrize("block_size", [4, 8, 16, 32])
def test_zigzag_generalises(block_size):
    zz = rep.zigzag(block_size)
    assert sorted(zz.tolist()) == list(range(block_size * block_size))
    diag = zz // block_size + zz % block_size
    assert np.all(np.diff(diag) >= 0), "low to high frequency, anti-diagonal by anti-diagonal"
    assert zz[1] == 1 and zz[2] == block_size  # (0, 1) then (1, 0), as in JPEG


def test_quant_tables_closed_form():
    luma, chroma = rep.quant_tables(8, 50)
    np.testing.assert_array_equal(luma, rep.LUMA_BASE_TABLE)  # s(50) = 100
    np.testing.assert_array_equal(chroma, rep.CHROMA_BASE_TABLE)
    luma, _ = rep.quant_tables(8, 100)
    assert np.all(luma == 1)
    luma, _ = rep.quant_tables(8, 10)  # s = 500: floor((500 * 16 + 50) / 100) = 80
    assert luma[0, 0] == 80
    luma, _ = rep.quant_tables(8, 1)  # s = 5000: 5000 * 121 / 100 = 6050, under the 32767 clamp
    assert luma[6, 5] == (5000 * 121 + 50) // 100
    # Nearest-neighbour resizing: at B = 16 each base entry covers a 2x2 cell; at B = 4 every
    # other entry is kept.
    l16, c16 = rep.quant_tables(16, 75)
    l8, c8 = rep.quant_tables(8, 75)
    np.testing.assert_array_equal(l16[::2, ::2], l8)
    np.testing.assert_array_equal(l16[1::2, 1::2], l8)
    np.testing.assert_array_equal(c16[1::2, ::2], c8)
    l4, _ = rep.quant_tables(4, 75)
    np.testing.assert_array_equal(l4, l8[::2, ::2])


@pytest.mark.parametrize("quality", [50, 75, 90])
def test_quant_tables_equal_libjpeg(quality, tmp_path, color_photos):
    image = crop_even(color_photos["astronaut.png"])[:64, :64]
    jpeg = libjpeg_coefficients(image, quality, tmp_path)
    luma, chroma = rep.quant_tables(8, quality)
    np.testing.assert_array_equal(jpeg.qt[0], luma)
    np.testing.assert_array_equal(jpeg.qt[1], chroma)


# --------------------------------------------------------------------------------------------
# Agreement with libjpeg and Pillow.


@pytest.mark.parametrize("quality", [50, 75, 90])
def test_coefficients_match_libjpeg(quality, tmp_path, color_photos):
    zz = rep.zigzag(8)
    for name in ("astronaut.png", "chelsea.png", "coffee.png", "china.jpg"):
        image = crop_even(color_photos[name])
        cfg = config_for(image, quality=quality)
        planes, clipped, height, width = rep.quantized_planes(image, cfg)
        assert (height, width) == image.shape[:2] and clipped == 0
        jpeg = libjpeg_coefficients(image, quality, tmp_path)
        agree = total = nonzero = 0
        for ours, theirs in zip(planes, (jpeg.Y, jpeg.Cb, jpeg.Cr)):
            theirs = theirs.reshape(theirs.shape[0], theirs.shape[1], 64)[:, :, zz]
            assert theirs.shape == ours.shape
            agree += np.count_nonzero(theirs == ours)
            total += theirs.size
            nonzero += np.count_nonzero(theirs)
        assert agree / total >= 0.99, (name, quality, agree / total)
        length = len(encode(image, cfg))
        assert abs(length - nonzero) / nonzero <= 0.02, (name, quality, length, nonzero)


@pytest.mark.parametrize("quality", [50, 75, 90])
def test_psnr_close_to_pillow_round_trip(quality, color_photos):
    for name in ("astronaut.png", "coffee.png", "rocket.jpg", "flower.jpg"):
        image = crop_even(color_photos[name])
        cfg = config_for(image, quality=quality)
        ours = psnr(decode(encode(image, cfg), cfg), image)
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "JPEG", quality=quality, subsampling=2)
        pillow = psnr(np.asarray(Image.open(buf).convert("RGB")), image)
        assert ours >= pillow - 0.5, (name, quality, ours, pillow)


def test_fancy_upsampling_beats_pixel_repetition(color_photos):
    image = crop_even(color_photos["coffee.png"])
    cfg = config_for(image, quality=90)
    seq = encode(image, cfg)
    fancy = psnr(decode(seq, cfg), image)
    # The same coefficients with nearest-neighbour chroma upsampling.
    dense = rep.dct_image(seq, cfg)
    original = rep.upsample_chroma
    try:
        rep.upsample_chroma = lambda p: np.repeat(np.repeat(p, 2, axis=0), 2, axis=1)
        repeated = psnr(rep.decode_dct_image(dense, cfg, seq.height, seq.width), image)
    finally:
        rep.upsample_chroma = original
    assert fancy > repeated + 0.1, (fancy, repeated)


def test_quality_100_is_near_lossless(color_photos, gray_photo):
    for name in ("astronaut.png", "chelsea.png"):
        image = crop_even(color_photos[name])
        cfg = config_for(image, quality=100)
        restored = decode(encode(image, cfg), cfg)
        # Luma survives almost exactly; colour loses only what 4:2:0 subsampling drops.
        y = lambda im: im.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        assert psnr(y(restored), y(image)) > 50, name
        assert psnr(restored, image) > 40, name
    gray = gray_photo[:512, :512]
    cfg = config_for(gray, quality=100)
    restored = decode(encode(gray, cfg), cfg)
    assert np.abs(restored[..., 0].astype(int) - gray).max() <= 1
    assert psnr(restored[..., 0], gray) > 55


def test_psnr_rises_with_quality(color_photos):
    image = crop_even(color_photos["china.jpg"])
    scores = [psnr(decode(encode(image, c), c), image) for c in
              (config_for(image, quality=q) for q in (10, 25, 50, 75, 90, 100))]  # fmt: skip
    assert scores == sorted(scores), scores


# --------------------------------------------------------------------------------------------
# Triples, orderings, DCT images.


def test_sequence_contract(color_photos):
    image = crop_even(color_photos["chelsea.png"])
    cfg = config_for(image)
    seq = encode(image, cfg)
    assert seq.channels.ndim == seq.positions.ndim == seq.values.ndim == 1
    assert len(seq.channels) == len(seq.positions) == len(seq.values) == len(seq) > 0
    for arr in (seq.channels, seq.positions, seq.values):
        assert np.issubdtype(arr.dtype, np.integer)
    assert np.all(seq.values != 0)
    assert seq.channels.max() < cfg.stop_token, "no stop token is stored"
    assert seq.positions.max() < cfg.num_positions
    chroma = seq.channels >= cfg.channels_per_plane
    rows, cols = np.divmod(seq.positions[chroma], cfg.grid)
    assert np.all(rows % 2 == 0) and np.all(cols % 2 == 0), "chroma positions are doubled"
    assert (seq.height, seq.width) == image.shape[:2]
    rep.check_triples(seq.channels, seq.positions, seq.values, cfg)


def test_triples_are_the_nonzeros_of_the_dct_image(color_photos):
    image = crop_even(color_photos["coffee.png"])
    cfg = config_for(image, quality=60)
    seq = encode(image, cfg)
    planes, _, _, _ = rep.quantized_planes(image, cfg)
    n = cfg.channels_per_plane
    for plane_index, plane in enumerate(planes):
        sel = (seq.channels // n) == plane_index
        assert sel.sum() == np.count_nonzero(plane)
        scale = 1 if plane_index == 0 else 2
        r, c = np.divmod(seq.positions[sel], cfg.grid)
        got = plane[r // scale, c // scale, seq.channels[sel] - plane_index * n]
        np.testing.assert_array_equal(got, seq.values[sel])


def _check_order(seq, cfg):
    rank = rep.channel_rank(cfg.block_size, cfg.ordering, cfg.interval)[seq.channels]
    key = rank.astype(np.int64) * cfg.num_positions + seq.positions
    assert np.all(np.diff(key) > 0), "sorted by channel rank, positions strictly ascending"


def test_interleaved_ordering(color_photos):
    order = rep.channel_order(8, "interleaved", 4)
    assert order[:3].tolist() == [0, 64, 128], "Y0, Cb0, Cr0 first"
    assert sorted(order.tolist()) == list(range(192))
    # Chroma zigzag index i follows luma zigzag index 4i.
    pos = {c: i for i, c in enumerate(order.tolist())}
    for i in range(1, 16):
        assert pos[4 * i] < pos[64 + i] < pos[128 + i] < pos[4 * i + 1]
    # Interval 1 interleaves plane by plane.
    assert rep.channel_order(4, "interleaved", 1)[:6].tolist() == [0, 16, 32, 1, 17, 33]
    image = crop_even(color_photos["astronaut.png"])
    cfg = config_for(image)
    seq = encode(image, cfg)
    first = [int(c) for c in dict.fromkeys(seq.channels.tolist())][:3]
    assert first == [0, 64, 128]
    _check_order(seq, cfg)


def test_luma_first_ordering(color_photos):
    image = crop_even(color_photos["astronaut.png"])
    cfg = config_for(image, ordering="luma_first")
    seq = encode(image, cfg)
    is_luma = seq.channels < cfg.channels_per_plane
    last_luma = np.flatnonzero(is_luma).max()
    assert np.all(is_luma[: last_luma + 1]) and not np.any(is_luma[last_luma + 1 :])
    _check_order(seq, cfg)


@pytest.mark.parametrize("block_size", [4, 8, 16])
def test_orderings_decode_to_the_same_image(block_size, color_photos):
    image = crop_even(color_photos["chelsea.png"], 2 * block_size)
    restored = []
    for ordering, interval in (("interleaved", 4), ("interleaved", 1), ("luma_first", 4)):
        cfg = config_for(image, block_size=block_size, ordering=ordering, interval=interval)
        seq = encode(image, cfg)
        _check_order(seq, cfg)
        restored.append(decode(seq, cfg))
    for other in restored[1:]:
        np.testing.assert_array_equal(restored[0], other)


@pytest.mark.parametrize("block_size", [4, 16, 32])
def test_other_block_sizes_round_trip(block_size, color_photos):
    image = crop_even(color_photos["astronaut.png"], 64)
    cfg = config_for(image, block_size=block_size, quality=90)
    seq = encode(image, cfg)
    assert seq.positions.max() < cfg.grid**2 and seq.channels.max() < 3 * block_size**2
    assert psnr(decode(seq, cfg), image) > 30


def test_progressive_decoding(color_photos):
    image = crop_even(color_photos["coffee.png"])
    cfg = config_for(image)
    seq = encode(image, cfg)
    empty = decode(seq, cfg, num_triples=0)
    assert empty.shape == image.shape and np.all(empty == 128), "no triples: mid-gray"
    steps = np.linspace(0, len(seq), 9).astype(int)
    scores = [psnr(decode(seq.prefix(n), cfg), image) for n in steps]
    assert all(b >= a - 0.05 for a, b in zip(scores, scores[1:])), scores
    assert scores[-1] - scores[1] > 5
    np.testing.assert_array_equal(decode(seq.prefix(len(seq)), cfg), decode(seq, cfg))


def test_clipping_is_counted():
    # A hard black/white checkerboard has large high-frequency coefficients.
    board = (np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)
    image = np.repeat(board[:, :, None], 3, axis=2)
    big = DCTConfig(resolution=64, quality=100, clip=32767)
    planes, clipped, _, _ = rep.quantized_planes(image, big)
    assert clipped == 0
    expected = sum(int(np.count_nonzero(np.abs(p) > 100)) for p in planes)
    assert expected > 0
    small = DCTConfig(resolution=64, quality=100, clip=100)
    seq = encode(image, small)
    assert seq.num_clipped == expected
    assert np.abs(seq.values).max() == 100
    unclipped = encode(image, big)
    np.testing.assert_array_equal(np.clip(unclipped.values, -100, 100), seq.values)
    assert encode(image, big).num_clipped == 0


def test_dct_image(color_photos):
    image = crop_even(color_photos["chelsea.png"])
    cfg = DCTConfig(resolution=512)
    seq = encode(image, cfg)
    dense = rep.dct_image(seq, cfg)
    assert dense.shape == (cfg.grid, cfg.grid, 3 * cfg.channels_per_plane)
    assert np.count_nonzero(dense) == len(seq)
    r, c = np.divmod(seq.positions, cfg.grid)
    np.testing.assert_array_equal(dense[r, c, seq.channels], seq.values)
    prefix = rep.dct_image(seq, cfg, num_triples=100)
    assert np.count_nonzero(prefix) == 100


# --------------------------------------------------------------------------------------------
# Sizes, resizing, inputs.


def test_resize_long_side_and_aspect():
    cfg = DCTConfig(block_size=8, resolution=256)
    assert rep.target_size(300, 451, cfg) == (176, 256)  # 300 * 256 / 451 = 170.3 -> 176
    assert rep.target_size(451, 300, cfg) == (256, 176)
    assert rep.target_size(100, 100, cfg) == (256, 256)  # upscaled
    assert rep.target_size(5, 35, cfg) == (32, 256)  # 36.6 rounds to the multiple of 16: 32
    assert rep.target_size(1, 1000, cfg) == (16, 256)  # at least 2B
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(300, 451, 3), dtype=np.uint8)
    seq = encode(image, cfg)
    assert (seq.height, seq.width) == (176, 256)
    assert decode(seq, cfg).shape == (176, 256, 3)


def test_resize_is_a_no_op_only_for_the_target_size():
    rng = np.random.default_rng(1)
    cfg = DCTConfig(resolution=512)
    image = rng.integers(0, 256, size=(304, 512, 3), dtype=np.uint8)
    assert rep.resize(image, cfg) is image
    # The long side already equals the resolution: the short side is still rounded to a
    # multiple of 2B = 16 (301 -> 304, 295 -> 288 on the other axis), so that the extent rule
    # recovers the size of the image.
    assert rep.target_size(301, 512, cfg) == (304, 512)
    assert rep.target_size(512, 295, cfg) == (512, 288)
    for shape in ((301, 512, 3), (512, 295, 3)):
        image = rng.integers(0, 256, size=shape, dtype=np.uint8)
        seq = encode(image, cfg)
        size = rep.target_size(*shape[:2], cfg)
        assert (seq.height, seq.width) == size
        assert decode(seq, cfg).shape == (*size, 3)
        assert rep.extent_from_positions(seq.positions, cfg) == size


def test_extent_rule_recovers_resized_sizes(color_photos):
    cfg = DCTConfig(resolution=256)
    for image in color_photos.values():
        seq = encode(image, cfg)
        assert rep.extent_from_positions(seq.positions, cfg) == (seq.height, seq.width)


def test_grayscale_and_rgba_inputs(gray_photo):
    cfg = DCTConfig(resolution=512)
    gray = gray_photo[:512, :512]
    a = encode(gray, cfg)
    b = encode(gray[:, :, None], cfg)
    c = encode(np.repeat(gray[:, :, None], 3, axis=2), cfg)
    for other in (b, c):
        np.testing.assert_array_equal(a.channels, other.channels)
        np.testing.assert_array_equal(a.values, other.values)
    assert a.channels.max() < cfg.channels_per_plane, "gray has no chroma"
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = 10
    rgba[:32, :, 3] = 255  # top opaque dark, bottom fully transparent
    np.testing.assert_array_equal(rep.as_rgb(rgba)[40, 0], [255, 255, 255])
    np.testing.assert_array_equal(rep.as_rgb(rgba)[0, 0], [10, 10, 10])
    assert len(encode(rgba, DCTConfig(resolution=64))) > 0


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((8, 8, 3), np.float32), "dtype"),
        (np.zeros((8, 8, 3), np.uint16), "dtype"),
        (np.zeros((0, 8, 3), np.uint8), "empty"),
        (np.zeros((8, 8, 2), np.uint8), "not an image"),
        (np.zeros((2, 8, 8, 3), np.uint8), "not an image"),
        (np.zeros((8,), np.uint8), "not an image"),
    ],
)
def test_bad_inputs_raise(bad, message):
    with pytest.raises(ValueError, match=message):
        encode(bad, DCTConfig(resolution=64))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"block_size": 12}, "block_size"),
        ({"quality": 0}, "quality"),
        ({"quality": 101}, "quality"),
        ({"resolution": 100}, "resolution"),
        ({"clip": 0}, "clip"),
        ({"ordering": "zigzag"}, "ordering"),
        ({"interval": 0}, "interval"),
    ],
)
def test_bad_configs_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DCTConfig(**kwargs)


def test_config_dict_round_trip():
    cfg = DCTConfig(block_size=16, quality=50, resolution=256, clip=800, ordering="luma_first")
    assert DCTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        DCTConfig.from_dict({**cfg.to_dict(), "colour": 1})
    assert cfg.num_channels == 3 * 256 + 1 and cfg.stop_token == 768
    assert cfg.num_positions == 16 * 16 and cfg.num_values == 1601


def test_check_triples_rejects_out_of_range():
    cfg = DCTConfig(resolution=64)
    ok = np.array([0, 64]), np.array([0, 2]), np.array([3, -1])
    rep.check_triples(*ok, cfg)
    with pytest.raises(ValueError, match="length"):
        rep.check_triples(np.array([0]), np.array([0, 1]), np.array([1]), cfg)
    with pytest.raises(ValueError, match="channels"):
        rep.check_triples(np.array([192]), np.array([0]), np.array([1]), cfg)
    with pytest.raises(ValueError, match="positions"):
        rep.check_triples(np.array([0]), np.array([64]), np.array([1]), cfg)
    with pytest.raises(ValueError, match="values"):
        rep.check_triples(np.array([0]), np.array([0]), np.array([1201]), cfg)
    with pytest.raises(ValueError, match="chroma"):
        rep.check_triples(np.array([64]), np.array([1]), np.array([1]), cfg)


def _sequence(cfg, triples):
    c, p, v = (np.array(t, np.int32) for t in zip(*triples))
    return c, p, v


def test_check_sequence_accepts_what_the_codec_writes(color_photos):
    for ordering in rep.ORDERINGS:
        cfg = DCTConfig(block_size=4, resolution=64, ordering=ordering)
        for image in list(color_photos.values())[:2]:
            seq = encode(image, cfg)
            rep.check_sequence(seq.channels, seq.positions, seq.values, cfg, seq.height, seq.width)
            assert not rep.sequence_violations(seq.channels, seq.positions, seq.values, cfg).any()
    empty = np.zeros(0, np.int32)
    rep.check_sequence(empty, empty, empty, cfg, 8, 8)


# (changes to the valid sequence below, the message check_sequence gives). The config: B = 4,
# G = 16 (resolution 64), interleaved: Y0 (channel 0), Cb0 (16), Cr0 (32), Y1 (1), ... in turn.
# The image is 24 x 40: blocks rows [0, 6), columns [0, 10).
VALID = [(0, 0, 5), (0, 17, -3), (16, 2, 4), (32, 34, 1), (1, 5, 2)]
BROKEN_SEQUENCES = [
    ({1: (0, 17, 0)}, "triple 1: value 0 (channel 0, position 17); stored values are never zero"),
    (
        {3: (0, 40, 2)},
        "triple 3: channel 0 comes before channel 16 of the previous triple in the interleaved "
        "ordering; channels must follow the ordering",
    ),
    (
        {1: (0, 0, 2)},
        "triple 1: position 0 of channel 0 does not come after position 0 of the previous "
        "triple; positions must ascend within a channel",
    ),
    (
        {1: (0, 16, 2), 2: (16, 3, 4)},  # 16 is one row down, the same channel: still ascending
        "triple 2: chroma channel 16 at position 3 (row 0, column 3); chroma sits at even rows "
        "and columns only",
    ),
    (
        {2: (16, 32, 4)},  # row 2, column 0: even, a chroma position, inside
        None,
    ),
    (
        {4: (1, 6 * 16, 2)},
        "triple 4: position 96 (row 6, column 0) lies outside the 24x40 image, whose blocks are "
        "rows [0, 6) and columns [0, 10)",
    ),
    (
        {4: (1, 10, 2)},
        "triple 4: position 10 (row 0, column 10) lies outside the 24x40 image, whose blocks "
        "are rows [0, 6) and columns [0, 10)",
    ),
    ({0: (48, 0, 1)}, "triple 0: channel 48 outside [0, 48) (the stop token 48 is not stored)"),
    ({4: (1, 256, 1)}, "triple 4: position 256 outside [0, 256)"),
    ({3: (32, 34, -1201)}, "triple 3: value -1201 outside [-1200, 1200]"),
    # Two rules broken: the first triple that breaks one is named.
    ({1: (0, 17, 0), 3: (0, 40, 2)}, "triple 1: value 0"),
]


@pytest.mark.parametrize("changes,message", BROKEN_SEQUENCES)
def test_check_sequence_names_the_first_broken_triple_and_rule(changes, message):
    cfg = DCTConfig(block_size=4, resolution=64)
    triples = [changes.get(i, t) for i, t in enumerate(VALID)]
    c, p, v = _sequence(cfg, triples)
    if message is None:
        rep.check_sequence(c, p, v, cfg, 24, 40)
        return
    with pytest.raises(ValueError) as raised:
        rep.check_sequence(c, p, v, cfg, 24, 40)
    assert str(raised.value).startswith(message), str(raised.value)
    i = int(message.split(":")[0].split()[1])
    broken = rep.sequence_violations(c, p, v, cfg, 24, 40)
    assert np.flatnonzero(broken.any(axis=0))[0] == i
    # Without the image size the image rule is not checked.
    if "outside the" in message:
        rep.check_sequence(c, p, v, cfg)


def test_bits_closed_form():
    cfg = DCTConfig(block_size=8, resolution=64, clip=1200)
    # 64x64: 4096 luma + 2 * 1024 chroma coefficients, log2(2401) bits each.
    assert rep.dense_bits(64, 64, cfg) == pytest.approx(6144 * np.log2(2401))
    per = np.log2(193) + np.log2(64) + np.log2(2401)
    assert rep.sparse_bits(99, cfg) == pytest.approx(100 * per)
    assert rep.num_subpixels(64, 32) == 3 * 64 * 32
