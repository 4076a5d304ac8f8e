"""The TensorFlow ops agree with the numpy codec, eagerly and inside tf.function / tf.data."""

import numpy as np
import pytest
import tensorflow as tf
from testing_helpers import crop_even

from dct_gen import dct_ops
from dct_gen import representation as rep
from dct_gen.representation import DCTConfig, decode, encode


@pytest.fixture(scope="module")
def sequences(color_photos):
    cfg = DCTConfig(block_size=8, quality=75, resolution=256)
    seqs = [encode(color_photos[n], cfg) for n in ("chelsea.png", "astronaut.png", "coffee.png")]
    return cfg, seqs


def test_scatter_matches_numpy(sequences):
    cfg, seqs = sequences
    for seq in seqs:
        ours = dct_ops.dct_image_from_triples(seq.channels, seq.positions, seq.values, cfg)
        np.testing.assert_array_equal(ours.numpy(), rep.dct_image(seq, cfg))


def test_batched_prefix_scatter_in_graph(sequences):
    cfg, seqs = sequences
    length = max(len(s) for s in seqs) + 5
    stop = cfg.stop_token

    def pad(a, fill):
        return np.concatenate([a, np.full(length - len(a), fill, a.dtype)])

    # Padding holds junk (the stop token, an out-of-range position, big values): all ignored.
    channels = np.stack([pad(s.channels, stop) for s in seqs])
    positions = np.stack([pad(s.positions, 10**6) for s in seqs])
    values = np.stack([pad(s.values, 7) for s in seqs])
    prefixes = np.array([0, 1000, len(seqs[2])])
    fn = tf.function(lambda c, p, v, n: dct_ops.dct_image_from_triples(c, p, v, cfg, n))
    dense = fn(channels, positions, values, prefixes).numpy()
    for i, (seq, n) in enumerate(zip(seqs, prefixes)):
        np.testing.assert_array_equal(dense[i], rep.dct_image(seq, cfg, num_triples=n))


def test_scatter_inside_tf_data(sequences):
    cfg, seqs = sequences
    seq = seqs[0]
    ds = tf.data.Dataset.from_tensors((seq.channels, seq.positions, seq.values))
    ds = ds.map(lambda c, p, v: dct_ops.dct_image_from_triples(c, p, v, cfg, num_triples=500))
    (dense,) = list(ds.as_numpy_iterator())
    np.testing.assert_array_equal(dense, rep.dct_image(seq, cfg, num_triples=500))
    assert ds.element_spec.shape == (cfg.grid, cfg.grid, 3 * cfg.channels_per_plane)


@pytest.mark.parametrize("block_size, quality", [(8, 75), (8, 95), (4, 50), (16, 75)])
def test_encode_matches_numpy(block_size, quality, color_photos):
    cfg = DCTConfig(block_size=block_size, quality=quality, resolution=256)
    for name in ("chelsea.png", "astronaut.png"):
        image = rep.resize(color_photos[name], cfg)
        ours = tf.function(lambda x: dct_ops.encode_dct_image(x, cfg))(image).numpy()
        ref = rep.dct_image(encode(image, cfg), cfg)
        # Float summation order differs; a coefficient on a rounding edge may move by one.
        assert np.mean(ours == ref) > 0.999
        assert np.abs(ours - ref).max() <= 1


def test_encode_odd_sizes_and_small_images():
    cfg = DCTConfig(block_size=8, resolution=64)
    rng = np.random.default_rng(3)
    for shape in ((37, 64, 3), (64, 5, 3), (3, 3, 3), (48, 64, 3)):
        image = rng.integers(0, 256, size=shape, dtype=np.uint8)
        h, w = shape[:2]
        dense = dct_ops.encode_dct_image(image, cfg).numpy()
        assert dense.shape == (8, 8, 192)
        hb, wb = -(-h // 16) * 2, -(-w // 16) * 2
        assert not dense[hb:].any() and not dense[:, wb:].any(), "nothing outside the image"
        if rep.target_size(h, w, cfg) == (h, w):  # numpy leaves these unresized
            ref = rep.dct_image(encode(image, cfg), cfg)
            assert np.mean(dense == ref) > 0.999 and np.abs(dense - ref).max() <= 1


def test_decode_matches_numpy_batched(sequences):
    cfg, seqs = sequences
    dense = np.stack([rep.dct_image(s, cfg) for s in seqs])
    heights = np.array([s.height for s in seqs])
    widths = np.array([s.width for s in seqs])
    fn = tf.function(lambda d, h, w: dct_ops.decode_dct_image(d, cfg, h, w))
    canvas = fn(dense, heights, widths).numpy()
    assert canvas.shape == (3, cfg.resolution, cfg.resolution, 3) and canvas.dtype == np.uint8
    for i, seq in enumerate(seqs):
        np.testing.assert_array_equal(canvas[i, : seq.height, : seq.width], decode(seq, cfg))


def test_decode_unbatched_prefix(color_photos):
    cfg = DCTConfig(block_size=16, quality=75, resolution=512)
    image = crop_even(color_photos["coffee.png"], 32)
    seq = encode(image, cfg)
    for n in (0, len(seq) // 3, len(seq)):
        dense = dct_ops.dct_image_from_triples(seq.channels, seq.positions, seq.values, cfg, n)
        out = dct_ops.decode_dct_image(dense, cfg, seq.height, seq.width).numpy()
        np.testing.assert_array_equal(out[: seq.height, : seq.width], decode(seq, cfg, n))


@pytest.mark.parametrize("ordering", ["interleaved", "luma_first"])
def test_xla_encode_matches_numpy_encode(ordering, color_photos):
    for name, block_size in (("chelsea.png", 8), ("coffee.png", 16)):
        cfg = DCTConfig(block_size=block_size, quality=80, resolution=256, ordering=ordering)
        ours = dct_ops.encode(color_photos[name], cfg)
        ref = encode(color_photos[name], cfg)
        assert (ours.height, ours.width) == (ref.height, ref.width)
        # Same triples up to the odd coefficient on a rounding edge: compare dense images.
        a, b = rep.dct_image(ours, cfg), rep.dct_image(ref, cfg)
        assert np.mean(a == b) > 0.9995 and np.abs(a - b).max() <= 1
        assert abs(len(ours) - len(ref)) <= 0.002 * len(ref)
        rank = rep.channel_rank(block_size, ordering, cfg.interval)[ours.channels]
        assert np.all(np.diff(rank.astype(np.int64) * cfg.num_positions + ours.positions) > 0)
    with pytest.raises(ValueError, match="dtype"):
        dct_ops.encode(np.zeros((8, 8, 3), np.float32), cfg)
