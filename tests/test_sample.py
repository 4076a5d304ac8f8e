"""The sampler: cached decoding equals the full forward pass, the stop token and the chunk limit
stop sampling, samples are valid and seeded, upsampling and colorization keep their context,
top-k/top-p filtering, in-graph decoding, and the command line on a trained run."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_model import build, real_window, small_config, stack_windows

from dct_gen import model as model_lib
from dct_gen import pictures, sample
from dct_gen import representation as rep


def _with_ordering(config, ordering):
    return dataclasses.replace(config, dct=dataclasses.replace(config.dct, ordering=ordering))


def _bias_stop(model, config, bias):
    """Pushes the channel head towards (bias > 0) or away from (bias < 0) the stop token.

    With bias <= 0 the head also prefers the lowest channel rank the structural mask allows
    (the same channel again, else the next), so that sequences grow long instead of jumping to
    the last channels, where the mask forces the stop token.
    """
    dense = model.get_layer("channel_head").logits
    rank = model_lib.structural_tables(config.dct).rank
    b = np.zeros(dense.bias.shape, np.float32) if bias > 0 else -3.0 * rank.astype(np.float32)
    b[config.dct.stop_token] = bias
    dense.bias.assign(b)
    if bias > 0:
        dense.kernel.assign(np.zeros(dense.kernel.shape, np.float32))


@pytest.fixture(scope="module")
def photo_sequences(color_photos):
    config = small_config()
    return config, [rep.encode(im, config.dct) for im in list(color_photos.values())[:2]]


@pytest.mark.parametrize("num_classes", [None, 3])
@pytest.mark.parametrize("prefill", [False, True])
def test_cached_decoding_equals_the_full_forward_pass(photo_sequences, num_classes, prefill):
    config, seqs = photo_sequences
    config = dataclasses.replace(config, num_classes=num_classes)
    model = build(config)
    starts = (12, 24) if prefill else (0, 12, 24)  # the prefill needs a known overlap
    windows = [
        real_window(s, config.dct, start, config.chunk_size, config.overlap)
        for s in seqs
        for start in starts
    ]
    batch = stack_windows(windows)
    batch["label"] = (np.arange(len(windows)) % 4 - 1).astype(np.int32)
    full = model_lib.forward(model, batch)
    cached, j0 = sample.Sampler(model, config).cached_logits(batch, prefill=prefill)
    assert j0 == (config.overlap if prefill else 0)
    real = batch["mask"][:, j0:] > 0
    assert real.sum() > 40
    for name in ("channel", "position", "value"):
        got = np.asarray(cached[name])
        want = np.asarray(full[name])[:, j0:]
        np.testing.assert_allclose(got[real], want[real], atol=2e-5, rtol=1e-5)


def test_a_model_that_only_stops_stops_after_one_step():
    config = small_config()
    model = build(config)
    _bias_stop(model, config, 50.0)
    sampler = sample.Sampler(model, config)
    state = sampler.sample(sampler.initial_state(3, 100), sample.SampleOptions(), seed=0)
    assert int(state["steps"]) == 1
    np.testing.assert_array_equal(state["length"], 0)
    assert np.all(state["done"])
    np.testing.assert_array_equal(state["channels"][:, 0], config.dct.stop_token)


def _valid(state, config):
    lengths = state["length"].numpy()
    for i, n in enumerate(lengths):
        c, p, v = (state[k].numpy()[i, :n] for k in ("channels", "positions", "values"))
        rep.check_triples(c, p, v, config.dct)  # raises on any broken rule
    return lengths


def test_samples_are_valid_seeded_and_cut_at_the_chunk_limit():
    config = small_config()
    model = build(config, seed=1)
    _bias_stop(model, config, -1000.0)  # never stops by itself
    sampler = sample.Sampler(model, config)
    options = sample.SampleOptions(max_chunks=3)

    def run(seed):
        state = sampler.initial_state(4, 3 * config.chunk_size)
        return sampler.sample(state, options, seed=seed)

    a, b, c = run(7), run(7), run(8)
    lengths = _valid(a, config)
    # Three chunks of C elements each, nothing stops: the buffer is full and nothing finished.
    np.testing.assert_array_equal(lengths, 3 * config.chunk_size)
    assert int(a["steps"]) == 3 * config.chunk_size
    for k in ("channels", "positions", "values"):
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["values"], c["values"])


def test_each_image_stops_on_its_own():
    config = small_config()
    model = build(config, seed=2)
    _bias_stop(model, config, -4.0)  # stops now and then
    sampler = sample.Sampler(model, config)
    state = sampler.sample(
        sampler.initial_state(6, 400), sample.SampleOptions(max_chunks=30), seed=3
    )
    lengths = _valid(state, config)
    assert np.all(state["done"])
    assert len(set(lengths.tolist())) > 1, lengths  # they stopped at different elements
    channels = state["channels"].numpy()
    for i, n in enumerate(lengths):
        assert channels[i, n] == config.dct.stop_token
        assert not channels[i, n + 1 :].any(), "nothing is written after an image's stop"
    # The batch ran until its longest image stopped: one step per element plus the prefills.
    assert int(state["steps"]) <= lengths.max() + 1


def test_filter_logits():
    logits = tf.math.log(tf.constant([[0.5, 0.3, 0.15, 0.05]]))
    keep = lambda **kw: (sample.filter_logits(logits, **kw).numpy() > -1e8)[0].tolist()
    assert keep(temperature=1.0, top_p=1.0, top_k=0) == [True] * 4
    assert keep(temperature=1.0, top_p=1.0, top_k=2) == [True, True, False, False]
    # Nucleus: 0.5 < 0.7, 0.5 + 0.3 >= 0.7 -> the first two.
    assert keep(temperature=1.0, top_p=0.7, top_k=0) == [True, True, False, False]
    assert keep(temperature=1.0, top_p=0.81, top_k=0) == [True, True, True, False]
    assert keep(temperature=1.0, top_p=0.01, top_k=0) == [True, False, False, False]
    scaled = sample.filter_logits(logits, temperature=0.5, top_p=1.0, top_k=0)
    np.testing.assert_allclose(scaled, logits * 2.0, rtol=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        sample.SampleOptions(temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        sample.SampleOptions(top_p=1.5)


def test_upsampling_keeps_its_context(color_photos):
    config = small_config()
    model = build(config, seed=3)
    _bias_stop(model, config, -1000.0)
    cfg = config.dct
    low = color_photos["chelsea.png"][::40, ::40]  # 8 x 11 pixels
    context, used = sample.upsampling_context(low, cfg)
    b = cfg.block_size
    assert max(context.height, context.width) == cfg.resolution
    assert used.shape[:2] == (context.height // b, context.width // b)
    n = cfg.channels_per_plane
    assert set(np.unique(context.channels)) <= {0, n, 2 * n}
    # The DC of luma block (r, c) is its quantized level-shifted mean: B * (Y - 128) / q.
    y, _, _ = rep.rgb_to_ycbcr(used)  # Y - 128, rounded as libjpeg does
    q = rep.zigzag_quant_vector(b, cfg.quality)[0]
    dense = rep.dct_image(context, cfg)
    expected = rep._round_half_away(b * y / q)
    np.testing.assert_array_equal(dense[: used.shape[0], : used.shape[1], 0], expected)

    sampler = sample.Sampler(model, config)
    samples = sample.sample_batches(
        sampler, 3, contexts=[context] * 3, options=sample.SampleOptions(max_chunks=4), seed=1
    )
    for seq in samples.sequences:
        assert (seq.height, seq.width) == (context.height, context.width)
        for k in ("channels", "positions", "values"):
            np.testing.assert_array_equal(getattr(seq, k)[: len(context)], getattr(context, k))
        assert len(seq) > len(context)
    assert not np.array_equal(samples.sequences[0].values, samples.sequences[1].values)
    with pytest.raises(ValueError, match="interleaved"):
        sample.upsampling_context(low, dataclasses.replace(cfg, ordering="luma_first"))


def test_colorization_keeps_all_luma_and_draws_chroma(gray_photo):
    config = _with_ordering(small_config(), "luma_first")
    model = build(config, seed=4)
    _bias_stop(model, config, -1000.0)
    cfg = config.dct
    context, grey = sample.colorization_context(gray_photo, cfg)
    assert np.all(context.channels < cfg.channels_per_plane)
    np.testing.assert_array_equal(context.channels, rep.encode(grey, cfg).channels[: len(context)])
    sampler = sample.Sampler(model, config)
    samples = sample.sample_batches(
        sampler,
        2,
        contexts=[context] * 2,
        context_is_base=True,
        options=sample.SampleOptions(max_chunks=3),
        seed=0,
    )
    for seq in samples.sequences:
        for k in ("channels", "positions", "values"):
            np.testing.assert_array_equal(getattr(seq, k)[: len(context)], getattr(context, k))
        drawn = seq.channels[len(context) :]
        assert drawn.size > 0 and np.all(drawn >= cfg.channels_per_plane)
        rep.check_triples(seq.channels, seq.positions, seq.values, cfg)
    with pytest.raises(ValueError, match="luma_first"):
        sample.colorization_context(gray_photo, small_config().dct)


def test_labels_are_checked():
    config = small_config(num_classes=3)
    sampler = sample.Sampler(build(config), config)
    with pytest.raises(ValueError, match="label 3 is out of range"):
        sample.sample_batches(sampler, 2, labels=3, options=sample.SampleOptions(), seed=0)
    unconditional = small_config()
    sampler = sample.Sampler(build(unconditional), unconditional)
    with pytest.raises(ValueError, match="unconditional"):
        sample.sample_batches(sampler, 2, labels=1, options=sample.SampleOptions(), seed=0)


def test_in_graph_decoding_matches_the_codec(photo_sequences):
    config, seqs = photo_sequences
    cfg = config.dct
    n = max(len(s) for s in seqs)
    arrays = np.zeros((3, len(seqs), n), np.int32)
    for i, s in enumerate(seqs):
        for a, t in zip(arrays, (s.channels, s.positions, s.values)):
            a[i, : len(s)] = t
    lengths = np.array([len(s) for s in seqs], np.int32)
    images, heights, widths = sample.images_tf(*arrays, lengths, cfg)
    for i, s in enumerate(seqs):
        h, w = rep.extent_from_positions(s.positions, cfg)
        assert (int(heights[i]), int(widths[i])) == (h, w)
        want = rep.decode(rep.DCTSequence(s.channels, s.positions, s.values, h, w), cfg)
        np.testing.assert_array_equal(images[i, :h, :w], want)
        assert not images[i, h:].numpy().any() and not images[i, :, w:].numpy().any()


def test_pictures(photo_sequences, tmp_path):
    config, seqs = photo_sequences
    cfg = config.dct
    samples = sample.Samples(cfg, seqs, np.array([True, False]), np.zeros(2), np.array([-1, -1]))
    files = sample.write_samples(samples, str(tmp_path), panel=64)
    for key in ("images", "triples", "heatmaps", "progressive"):
        assert len(files[key]) == 2 and all(os.path.exists(p) for p in files[key])
    summary = json.load(open(files["summary"][0]))
    assert [s["stopped"] for s in summary["samples"]] == [True, False]
    hm = pictures.heatmap(seqs[0], cfg)
    assert hm.shape == (seqs[0].height, seqs[0].width, 3)
    # The busiest block is white, a block without triples black.
    counts = np.bincount(seqs[0].positions, minlength=cfg.num_positions)
    r, c = divmod(int(counts.argmax()), cfg.grid)
    b = cfg.block_size
    np.testing.assert_array_equal(hm[r * b, c * b], [255, 255, 255])


def test_sampler_runs_under_keras_mixed_precision(photo_sequences):
    config, seqs = photo_sequences
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build(config)
    finally:
        keras.config.set_dtype_policy("float32")
    sampler = sample.Sampler(model, config)
    state = sampler.sample(
        sampler.initial_state(2, 2 * config.chunk_size),
        sample.SampleOptions(max_chunks=2),
        seed=0,
    )
    _valid(state, config)


def test_the_xla_compiled_sampler():
    config = small_config()
    model = build(config, seed=1)
    _bias_stop(model, config, -1000.0)
    sampler = sample.Sampler(model, config, jit_compile=True)
    options = sample.SampleOptions(max_chunks=2, top_p=0.9)
    state = sampler.sample(sampler.initial_state(3, 2 * config.chunk_size), options, seed=2)
    np.testing.assert_array_equal(_valid(state, config), 2 * config.chunk_size)
    again = sampler.sample(sampler.initial_state(3, 2 * config.chunk_size), options, seed=2)
    np.testing.assert_array_equal(state["values"], again["values"])
