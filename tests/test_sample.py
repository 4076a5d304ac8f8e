"""The sampler: cached decoding equals the full forward pass (also under mixed precision), the
stop token and the chunk limit stop sampling (each image's limit counted from its own first
chunk), samples are valid and seeded, upsampling and colorization keep their context, a task in
one call and its files, top-k/top-p filtering, in-graph decoding and the in-graph chunk loop,
and the command line: on a trained run (its files, the same seed giving the same bytes) and one
error line with the right exit status for each kind of bad flag or input."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from testing_helpers import build, real_window, small_config, stack_windows

from dct_gen import layers, photos, pictures, sample, sampling
from dct_gen import model as model_lib
from dct_gen import representation as rep
from dct_gen.errors import InputError, UsageError


def _with_ordering(config, ordering):
    return dataclasses.replace(config, dct=dataclasses.replace(config.dct, ordering=ordering))


def _bias_stop(model, config, bias):
    """Pushes the channel head towards (bias > 0) or away from (bias < 0) the stop token.

    With bias <= 0 the head also prefers the lowest channel rank the structural mask allows
    (the same channel again, else the next), so that sequences grow long instead of jumping to
    the last channels, where the mask forces the stop token.
    """
    dense = model_lib.model_layers(model).heads["channel"].logits
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


@pytest.mark.parametrize(
    "num_classes,prefill,overlap",
    [
        (None, False, 4),
        (None, True, 4),
        (3, False, 4),
        (3, True, 4),
        (None, False, 0),
        (3, True, 0),
    ],
)
def test_cached_decoding_equals_the_full_forward_pass(
    photo_sequences, num_classes, prefill, overlap
):
    config, seqs = photo_sequences
    config = dataclasses.replace(config, num_classes=num_classes, overlap=overlap)
    model = build(config)
    # The prefill needs a known overlap; with none, it does nothing.
    starts = (12, 24) if prefill else (0, 12, 24)
    windows = [
        real_window(s, config.dct, start, config.chunk_size, config.overlap)
        for s in seqs
        for start in starts
    ]
    batch = stack_windows(windows)
    batch["label"] = (np.arange(len(windows)) % 4 - 1).astype(np.int32)
    full = model_lib.forward(model, batch)
    cached, j0 = sampling.Sampler(model, config).cached_logits(batch, prefill=prefill)
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
    sampler = sampling.Sampler(model, config)
    state = sampler.sample(sampler.initial_state(3, 100), sampling.SampleOptions(), seed=0)
    assert int(state["steps"]) == 1
    np.testing.assert_array_equal(state["length"], 0)
    assert np.all(state["done"])
    np.testing.assert_array_equal(state["channels"][:, 0], config.dct.stop_token)


def _valid(state, config):
    lengths = state["length"].numpy()
    for i, n in enumerate(lengths):
        c, p, v = (state[k].numpy()[i, :n] for k in ("channels", "positions", "values"))
        rep.check_sequence(c, p, v, config.dct)  # raises on any broken rule
    return lengths


def test_without_overlap_later_chunks_follow_the_previous_chunk(photo_sequences):
    """With O = 0 the first element of chunk k > 0 has no previous element in its window: the
    decoders see the start vector there, as in training, and the structural mask follows the
    previous chunk's last element. Samples used to repeat (channel, position) pairs there, and
    the summed values overflowed the next chunk's embedding."""
    config, seqs = photo_sequences
    config = dataclasses.replace(config, overlap=0)
    model = build(config, seed=1)
    sampler = sampling.Sampler(model, config)
    # The training window of a later chunk, scored through the caches with the element before
    # it given: the model's own logits wherever the mask allows a move, on every element.
    start = 12
    batch = stack_windows([real_window(s, config.dct, start, 12, 0) for s in seqs])
    before = [np.array([getattr(s, k)[start - 1] for s in seqs]) for k in ("channels", "positions")]
    full = model_lib.forward(model, batch)
    cached, _ = sampler.cached_logits(batch, before=before)
    for name in ("channel", "position", "value"):
        got, want = np.asarray(cached[name]), np.asarray(full[name])
        np.testing.assert_allclose(got[:, 1:], want[:, 1:], atol=2e-5, rtol=1e-5)
        allowed = got[:, 0] > layers.MASK_VALUE
        np.testing.assert_allclose(got[:, 0][allowed], want[:, 0][allowed], atol=2e-5, rtol=1e-5)
    for i, s in enumerate(seqs):
        # The true element stays allowed. Its channel is the previous element's, so the
        # positions up to the previous one are masked, which the window alone cannot tell.
        c, p = s.channels[start], s.positions[start]
        assert c == s.channels[start - 1], "the window must start inside a channel's run"
        assert cached["channel"][i, 0, c] > layers.MASK_VALUE
        assert cached["position"][i, 0, p] > layers.MASK_VALUE
        taken = slice(0, s.positions[start - 1] + 1)
        assert np.all(cached["position"][i, 0, taken] == layers.MASK_VALUE)
        assert np.all(np.asarray(full["position"])[i, 0, taken] > layers.MASK_VALUE)

    # Sampling several chunks: every sequence follows every structural rule.
    _bias_stop(model, config, -1000.0)  # long sequences: every chunk boundary is crossed
    state = sampler.sample(
        sampler.initial_state(4, 4 * config.chunk_size), sampling.SampleOptions(max_chunks=4), 7
    )
    np.testing.assert_array_equal(_valid(state, config), 4 * config.chunk_size)


def test_samples_are_valid_seeded_and_cut_at_the_chunk_limit():
    config = small_config()
    model = build(config, seed=1)
    _bias_stop(model, config, -1000.0)  # never stops by itself
    sampler = sampling.Sampler(model, config)
    options = sampling.SampleOptions(max_chunks=3)

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
    # A huge temperature makes every allowed move about equally likely (the stop token among
    # them), and no masked one: the samples still follow every structural rule.
    state = sampler.initial_state(4, 3 * config.chunk_size)
    hot = sampler.sample(state, sampling.SampleOptions(temperature=1e30, max_chunks=3), seed=7)
    lengths = _valid(hot, config)
    assert lengths.min() < 3 * config.chunk_size, lengths  # the stop token is drawn now


def test_each_image_stops_on_its_own():
    config = small_config()
    model = build(config, seed=2)
    _bias_stop(model, config, -4.0)  # stops now and then
    sampler = sampling.Sampler(model, config)
    state = sampler.sample(
        sampler.initial_state(6, 400), sampling.SampleOptions(max_chunks=30), seed=3
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


@pytest.mark.slow  # traces the chunk twice: about 40 s
def test_the_chunk_loop_in_the_graph_draws_what_the_driver_draws():
    config = small_config()
    model = build(config, seed=1)
    _bias_stop(model, config, -4.0)
    sampler = sampling.Sampler(model, config)
    options = sampling.SampleOptions(max_chunks=3, top_p=0.9)
    state = sampler.initial_state(3, 3 * config.chunk_size)
    want = sampler.sample(state, options, seed=5)
    graph = tf.function(sampler.sample_graph)
    got = graph(state, 3, tf.constant([5, 0], tf.int64), 1.0, 0.9, 0)
    for k in ("channels", "positions", "values", "length", "done"):
        np.testing.assert_array_equal(got[k], want[k])


def test_filter_logits():
    logits = tf.math.log(tf.constant([[0.5, 0.3, 0.15, 0.05]]))
    keep = lambda **kw: (sampling.filter_logits(logits, **kw).numpy() > -1e8)[0].tolist()
    assert keep(temperature=1.0, top_p=1.0, top_k=0) == [True] * 4
    assert keep(temperature=1.0, top_p=1.0, top_k=2) == [True, True, False, False]
    # Nucleus: 0.5 < 0.7, 0.5 + 0.3 >= 0.7 -> the first two.
    assert keep(temperature=1.0, top_p=0.7, top_k=0) == [True, True, False, False]
    assert keep(temperature=1.0, top_p=0.81, top_k=0) == [True, True, True, False]
    assert keep(temperature=1.0, top_p=0.01, top_k=0) == [True, False, False, False]
    # The temperature divides the logits: the distribution is softmax(logits / T).
    for t in (0.5, 3.0):
        scaled = sampling.filter_logits(logits, temperature=t, top_p=1.0, top_k=0)
        np.testing.assert_allclose(tf.nn.softmax(scaled), tf.nn.softmax(logits / t), rtol=1e-6)


def test_extreme_temperatures_keep_the_structural_mask():
    # Two entries masked as the structural mask does it; 0.9, 0.6 and 0.3 allowed.
    mask = layers.MASK_VALUE
    logits = tf.constant([[0.3, mask, 0.9, mask, 0.6]])
    allowed = np.array([True, False, True, False, True])
    draw = lambda filtered: tf.random.stateless_categorical(filtered, 4000, [3, 4])[0].numpy()
    for t in (1e30, 3.4e38):
        # Every allowed move about equally likely, the masked ones still impossible.
        filtered = sampling.filter_logits(logits, temperature=t, top_p=1.0, top_k=0)
        np.testing.assert_array_equal(filtered[0].numpy()[~allowed], mask)
        np.testing.assert_allclose(tf.nn.softmax(filtered)[0].numpy()[allowed], 1 / 3, rtol=1e-6)
        counts = np.bincount(draw(filtered), minlength=5)
        assert counts[~allowed].sum() == 0 and counts[allowed].min() > 1200, counts
    for t in (1e-30, 1e-40, 1e-45):  # 1e-40 and 1e-45 are float32 subnormals (flushed to 0)
        # Greedy: the most likely move only, never an id outside the vocabulary.
        filtered = sampling.filter_logits(logits, temperature=t, top_p=1.0, top_k=0)
        assert np.isfinite(filtered.numpy()).all()
        np.testing.assert_array_equal(draw(filtered), 2)


@pytest.mark.parametrize(
    "kwargs,named",
    [
        (dict(temperature=0.0), "temperature=0.0: must be finite and > 0"),
        (dict(temperature=-1.0), "temperature=-1.0: must be finite and > 0"),
        (dict(temperature=float("inf")), "temperature=inf: must be finite and > 0"),
        (dict(temperature=float("nan")), "temperature=nan: must be finite and > 0"),
        (dict(temperature="2"), "temperature='2': must be a number"),
        # float32 would make these inf and 0.
        (dict(temperature=1e39), r"temperature=1e\+39: must lie in float32's range"),
        (dict(temperature=1e-39), r"temperature=1e-39: must lie in float32's range"),
        (dict(top_p=1e-39), r"top_p=1e-39: must be at least 1.175e-38"),
        (dict(top_p=1.5), r"top_p=1.5: must be in \(0, 1\]"),
        (dict(top_p=0.0), r"top_p=0.0: must be in \(0, 1\]"),
        (dict(top_p=float("nan")), r"top_p=nan: must be in \(0, 1\]"),
        (dict(top_p=float("inf")), r"top_p=inf: must be in \(0, 1\]"),
        (dict(top_k=-1), "top_k=-1: must be >= 0"),
        (dict(top_k=2.5), "top_k=2.5: must be an integer"),
        (dict(max_chunks=0), "max_chunks=0: must be >= 1"),
        (dict(max_chunks=True), "max_chunks=True: must be an integer"),
    ],
)
def test_sample_options_name_a_bad_option(kwargs, named):
    with pytest.raises(UsageError, match=f"^{named}"):
        sampling.SampleOptions(**kwargs)


def test_sample_options_take_numpy_numbers():
    options = sampling.SampleOptions(
        temperature=np.float32(0.5), top_p=np.float64(0.9), top_k=np.int64(3), max_chunks=2
    )
    assert (options.temperature, options.top_p, options.top_k) == (0.5, 0.9, 3)


def test_upsampling_keeps_its_context(color_photos):
    config = small_config()
    model = build(config, seed=3)
    _bias_stop(model, config, -1000.0)
    cfg = config.dct
    low = color_photos["chelsea.png"][::40, ::40]  # 8 x 11 pixels
    context, used = sampling.upsampling_context(low, cfg)
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

    sampler = sampling.Sampler(model, config)
    samples = sampling.sample_batches(
        sampler, 3, contexts=[context] * 3, options=sampling.SampleOptions(max_chunks=4), seed=1
    )
    for seq in samples.sequences:
        assert (seq.height, seq.width) == (context.height, context.width)
        for k in ("channels", "positions", "values"):
            np.testing.assert_array_equal(getattr(seq, k)[: len(context)], getattr(context, k))
        assert len(seq) > len(context)
    assert not np.array_equal(samples.sequences[0].values, samples.sequences[1].values)
    with pytest.raises(ValueError, match="interleaved"):
        sampling.upsampling_context(low, dataclasses.replace(cfg, ordering="luma_first"))


def test_a_task_in_one_call_and_its_files(color_photos, tmp_path):
    config = small_config()
    model = build(config, seed=3)
    _bias_stop(model, config, -1000.0)
    sampler = sampling.Sampler(model, config)
    low = [image[::40, ::40] for image in list(color_photos.values())[:2]]
    options = sampling.SampleOptions(max_chunks=2)
    samples = sampling.sample_task(
        sampler, "upsample", num_samples=2, images=low, options=options, seed=0
    )
    # Each image's samples together, each continuing that image's context for its own two
    # chunks, although the contexts differ in length (one batch, different first chunks).
    contexts = [sampling.upsampling_context(image, config.dct)[0] for image in low]
    assert len(contexts[0]) != len(contexts[1])
    assert len(samples.sequences) == 4
    c = config.chunk_size
    for i, seq in enumerate(samples.sequences):
        context = contexts[i // 2]
        np.testing.assert_array_equal(seq.values[: len(context)], context.values)
        assert len(seq) == (len(context) // c + 2) * c
    files = sampling.write_task(samples, str(tmp_path), "upsample", low, panel=32)
    assert os.path.basename(files["grid"][0]) == "upsample_grid.png"
    assert len(files["comparisons"]) == 2 and all(map(os.path.exists, files["comparisons"]))
    # Bad arguments are named; a task the model cannot do is bad input.
    with pytest.raises(UsageError, match="label=1"):
        sampling.sample_task(sampler, "upsample", num_samples=1, images=low, label=1)
    with pytest.raises(UsageError, match="images"):
        sampling.sample_task(sampler, "generate", num_samples=1, images=low)
    with pytest.raises(UsageError, match="num_samples=0"):
        sampling.sample_task(sampler, num_samples=0)
    with pytest.raises(InputError, match="luma_first"):
        sampling.sample_task(sampler, "colorize", num_samples=1, images=low)


def test_colorization_keeps_all_luma_and_draws_chroma(gray_photo):
    config = _with_ordering(small_config(), "luma_first")
    model = build(config, seed=4)
    _bias_stop(model, config, -1000.0)
    cfg = config.dct
    context, grey = sampling.colorization_context(gray_photo, cfg)
    assert np.all(context.channels < cfg.channels_per_plane)
    np.testing.assert_array_equal(context.channels, rep.encode(grey, cfg).channels[: len(context)])
    sampler = sampling.Sampler(model, config)
    samples = sampling.sample_batches(
        sampler,
        2,
        contexts=[context] * 2,
        context_is_base=True,
        options=sampling.SampleOptions(max_chunks=3),
        seed=0,
    )
    for seq in samples.sequences:
        for k in ("channels", "positions", "values"):
            np.testing.assert_array_equal(getattr(seq, k)[: len(context)], getattr(context, k))
        drawn = seq.channels[len(context) :]
        assert drawn.size > 0 and np.all(drawn >= cfg.channels_per_plane)
        rep.check_triples(seq.channels, seq.positions, seq.values, cfg)
    with pytest.raises(ValueError, match="luma_first"):
        sampling.colorization_context(gray_photo, small_config().dct)


def test_labels_are_checked():
    config = small_config(num_classes=3)
    sampler = sampling.Sampler(build(config), config)
    with pytest.raises(ValueError, match="label=3: out of range"):
        sampling.sample_batches(sampler, 2, labels=3, options=sampling.SampleOptions(), seed=0)
    unconditional = small_config()
    sampler = sampling.Sampler(build(unconditional), unconditional)
    with pytest.raises(ValueError, match="unconditional"):
        sampling.sample_batches(sampler, 2, labels=1, options=sampling.SampleOptions(), seed=0)


def test_in_graph_decoding_matches_the_codec(photo_sequences):
    config, seqs = photo_sequences
    cfg = config.dct
    n = max(len(s) for s in seqs)
    arrays = np.zeros((3, len(seqs), n), np.int32)
    for i, s in enumerate(seqs):
        for a, t in zip(arrays, (s.channels, s.positions, s.values)):
            a[i, : len(s)] = t
    lengths = np.array([len(s) for s in seqs], np.int32)
    images, heights, widths = sampling.images_tf(*arrays, lengths, cfg)
    for i, s in enumerate(seqs):
        h, w = rep.extent_from_positions(s.positions, cfg)
        assert (int(heights[i]), int(widths[i])) == (h, w)
        want = rep.decode(rep.DCTSequence(s.channels, s.positions, s.values, h, w), cfg)
        np.testing.assert_array_equal(images[i, :h, :w], want)
        assert not images[i, h:].numpy().any() and not images[i, :, w:].numpy().any()


def test_pictures(photo_sequences, tmp_path):
    config, seqs = photo_sequences
    cfg = config.dct
    samples = sampling.Samples(cfg, seqs, np.array([True, False]), np.zeros(2), np.array([-1, -1]))
    files = sampling.write_samples(samples, str(tmp_path), panel=64)
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


def test_sample_json_and_the_grid_say_how_each_sample_was_drawn(photo_sequences, tmp_path):
    config, seqs = photo_sequences
    cfg = config.dct
    samples = sampling.Samples(cfg, seqs, np.array([True, False]), np.zeros(2), np.array([1, 0]))
    info = dict(seed=7, temperature=0.9, top_p=0.95, top_k=0, checkpoint_step=30)
    plain = sampling.write_samples(samples, str(tmp_path / "plain"), panel=64)
    files = sampling.write_samples(
        samples, str(tmp_path / "info"), panel=64, info={**info, "label_names": ["sky", "sea"]}
    )
    summary = json.load(open(files["summary"][0]))
    for key, value in info.items():
        assert summary[key] == value
    assert summary["guidance"] is None
    assert [s["label_name"] for s in summary["samples"]] == ["sea", "sky"]
    assert [s["index"] for s in summary["samples"]] == [0, 1]
    caption = summary["samples"][0]["caption"]
    assert caption[:2] == ["label 1: sea", "seed 7 #0"] and "step 30" in caption
    assert "T 0.9 top-p 0.95" in caption
    assert json.load(open(plain["summary"][0]))["samples"][0]["label_name"] is None  # no names
    # The captions are drawn under the cells: the grid is taller than the bare one.
    bare = pictures.grid([pictures.enlarge(im, 64) for im in samples.images()])
    captioned = np.asarray(Image.open(files["grid"][0]))
    assert captioned.shape[0] > bare.shape[0]


def test_sampler_runs_under_keras_mixed_precision(photo_sequences):
    config, seqs = photo_sequences
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build(config)
    finally:
        keras.config.set_dtype_policy("float32")
    sampler = sampling.Sampler(model, config)
    # The decoders run in bfloat16 (their caches hold it), the logits in float32, and the
    # cached path agrees with the full forward pass to bfloat16's precision.
    keys, _ = sampler.empty_caches(1)["value"][0][0]
    assert keys.dtype == tf.bfloat16
    batch = stack_windows([real_window(s, config.dct, 12, 12, 4) for s in seqs])
    full = model_lib.forward(model, batch)
    cached, j0 = sampler.cached_logits(batch)
    real = batch["mask"][:, j0:] > 0
    for name in ("channel", "position", "value"):
        assert cached[name].dtype == tf.float32
        got, want = np.asarray(cached[name])[real], np.asarray(full[name])[:, j0:][real]
        np.testing.assert_array_equal(got == layers.MASK_VALUE, want == layers.MASK_VALUE)
        np.testing.assert_allclose(got, want, atol=0.15)
    state = sampler.sample(
        sampler.initial_state(2, 2 * config.chunk_size),
        sampling.SampleOptions(max_chunks=2),
        seed=0,
    )
    _valid(state, config)


def test_the_xla_compiled_sampler():
    config = small_config()
    model = build(config, seed=1)
    _bias_stop(model, config, -1000.0)
    sampler = sampling.Sampler(model, config, jit_compile=True)
    options = sampling.SampleOptions(max_chunks=2, top_p=0.9)
    state = sampler.sample(sampler.initial_state(3, 2 * config.chunk_size), options, seed=2)
    np.testing.assert_array_equal(_valid(state, config), 2 * config.chunk_size)
    again = sampler.sample(sampler.initial_state(3, 2 * config.chunk_size), options, seed=2)
    np.testing.assert_array_equal(state["values"], again["values"])


# ----------------------------------------------------------------------------------------------
# Classifier-free guidance and the null label.


def test_guided_logits_are_null_plus_g_times_cond_minus_null(photo_sequences):
    """The cached, guided path (one 2b batch: the labels, then -1) against two independent full
    forward passes, one with the labels and one with label -1: null + g * (cond - null) on every
    element, the structural mask applied after (masked moves stay masked)."""
    config, seqs = photo_sequences
    config = dataclasses.replace(config, num_classes=3)
    model = build(config, seed=5)
    windows = [real_window(s, config.dct, start, 12, 4) for s in seqs for start in (12, 24)]
    batch = stack_windows(windows)
    batch["label"] = np.array([0, 1, 2, 1], np.int32)
    cond = model_lib.forward(model, batch)
    null = model_lib.forward(model, {**batch, "label": np.full(4, -1, np.int32)})
    g = 2.5
    guided, j0 = sampling.Sampler(model, config).cached_logits(batch, guidance=g)
    real = batch["mask"][:, j0:] > 0
    assert real.sum() > 40
    for name in ("channel", "position", "value"):
        c, n = (np.asarray(x[name], np.float64)[:, j0:] for x in (cond, null))
        masked = c == layers.MASK_VALUE
        np.testing.assert_array_equal(masked, n == layers.MASK_VALUE)  # the mask is label-free
        want = np.where(masked, layers.MASK_VALUE, n + g * (c - n))
        got = np.asarray(guided[name])
        assert not np.allclose(want[real], c[real], atol=1e-3), name  # guidance changes them
        np.testing.assert_allclose(got[real], want[real], atol=1e-4, rtol=1e-5)


def test_guide_logits_keeps_the_halves_exactly_at_0_and_1():
    rng = np.random.default_rng(0)
    logits = tf.constant(rng.normal(size=(4, 7)) * 30, tf.float32)  # rows 0-1 cond, 2-3 null
    np.testing.assert_array_equal(sampling.guide_logits(logits, 1.0), logits[:2])
    np.testing.assert_array_equal(sampling.guide_logits(logits, 0.0), logits[2:])
    c, n = logits[:2].numpy(), logits[2:].numpy()
    np.testing.assert_allclose(sampling.guide_logits(logits, 3.0), n + 3 * (c - n), rtol=1e-6)
    # A huge scale stays finite and above MASK_VALUE (an allowed move is never taken for a
    # masked one).
    huge = sampling.guide_logits(logits, 3e38).numpy()
    assert np.isfinite(huge).all() and (huge > layers.MASK_VALUE).all()


def test_null_label_trained_reads_the_run_config():
    trained = lambda **train: sampling.null_label_trained({"train_config": train})
    assert trained(label_dropout=0.1)
    assert not trained(label_dropout=0.0)
    assert not trained()  # an older run: no label dropout, no trained null label
    assert not trained(label_dropout=None) and not trained(label_dropout=True)
    assert not sampling.null_label_trained({})
    assert sampling.run_label_names({"label_names": ["sky", "sea"]}) == ["sky", "sea"]
    assert sampling.run_label_names({"label_names": None}) is None
    assert sampling.run_label_names({}) is None
    with pytest.raises(InputError, match="label_names"):
        sampling.run_label_names({"label_names": "sky"})


def test_labels_resolve_from_an_index_or_a_name():
    names = ["sky", "sea", "sand"]
    assert sampling.resolve_label(None, 3, names) == -1
    assert sampling.resolve_label("2", 3, names) == 2
    assert sampling.resolve_label("-1", 3, names) == -1
    assert sampling.resolve_label("sea", 3, names) == 1
    with pytest.raises(UsageError, match=r"^label='cow': .*its classes: 0..2: sky, sea, sand"):
        sampling.resolve_label("cow", 3, names)
    with pytest.raises(UsageError, match=r"^label='cow': this model records no class names"):
        sampling.resolve_label("cow", 3, None)
    with pytest.raises(UsageError, match=r"^label='cow': this model is unconditional"):
        sampling.resolve_label("cow", None, None)


def test_guidance_and_the_null_label_are_checked(color_photos):
    """Refused before any sampling, each naming its argument: guidance on an unconditional
    model, a negative or infinite scale, and, for a class-conditional model whose null label was
    never trained, label -1 (the default of sampling and of upsampling) and any scale but 1."""
    for bad in (-0.5, float("inf"), float("nan")):
        with pytest.raises(UsageError, match=r"^guidance=.*: must be finite and >= 0"):
            sampling.SampleOptions(guidance=bad)
    with pytest.raises(UsageError, match="^guidance=True: must be a number"):
        sampling.SampleOptions(guidance=True)
    options = sampling.SampleOptions(max_chunks=1, guidance=2.0)
    unconditional = small_config()
    sampler = sampling.Sampler(build(unconditional), unconditional)
    state = sampler.initial_state(2, 20)
    with pytest.raises(UsageError, match=r"^guidance=2.0: this model is unconditional"):
        sampler.sample(state, options, seed=0)
    with pytest.raises(UsageError, match=r"^guidance=2.0: this model is unconditional"):
        sampling.sample_batches(sampler, 2, options=options, seed=0)
    sampler.check_guidance(1.0)  # 1 is no guidance: any model

    config = small_config(num_classes=3)
    sampler = sampling.Sampler(
        build(config), config, null_label_trained=False, label_names=["sky", "sea", "sand"]
    )
    untrained = r"^label=-1: this model was trained with train_config.label_dropout = 0"
    with pytest.raises(UsageError, match=untrained + r".*pass a class \(0..2: sky, sea, sand\)"):
        sampling.sample_batches(sampler, 2, options=sampling.SampleOptions(), seed=0)
    with pytest.raises(UsageError, match=untrained):
        sampler.sample(sampler.initial_state(2, 20), sampling.SampleOptions(), seed=0)
    low = [color_photos["chelsea.png"][::40, ::40]]
    with pytest.raises(UsageError, match=untrained):
        sampling.sample_task(sampler, "upsample", num_samples=1, images=low)
    with pytest.raises(UsageError, match=r"^guidance=2.0: guidance needs the null label"):
        sampling.sample_batches(sampler, 2, labels=1, options=options, seed=0)
    with pytest.raises(UsageError, match=r"^guidance=0.0: guidance needs the null label"):
        sampling.sample_task(
            sampler, num_samples=1, label=1, options=sampling.SampleOptions(guidance=0.0)
        )
    sampler.check_labels([0, 1, 2])
    sampler.check_guidance(1.0)


@pytest.mark.slow  # traces the plain and the guided chunk: about 20 s
def test_guided_sampling_draws_what_its_two_ends_draw(color_photos):
    """Guidance 1 draws exactly what plain conditional sampling draws (one pass), guidance 0
    exactly what sampling with label -1 draws (the null half of the 2b batch), other scales
    valid sequences of their own; upsampling takes a label and a scale."""
    config = small_config(num_classes=3)
    model = build(config, seed=1)
    _bias_stop(model, config, -4.0)
    sampler = sampling.Sampler(model, config)
    labels = np.array([0, 1, 2, 1], np.int32)

    def run(labels, guidance, seed=5):
        state = sampler.initial_state(4, 3 * config.chunk_size, label=labels)
        options = sampling.SampleOptions(max_chunks=3, top_p=0.95, guidance=guidance)
        return sampler.sample(state, options, seed=seed)

    keys = ("channels", "positions", "values", "length", "done")
    plain, one = run(labels, 1), run(labels, 1.0)
    for k in keys:
        np.testing.assert_array_equal(one[k], plain[k], err_msg=k)
    null, zero = run(np.full(4, -1, np.int32), 1.0), run(labels, 0.0)
    for k in keys:
        np.testing.assert_array_equal(zero[k], null[k], err_msg=k)
    assert not np.array_equal(plain["values"], null["values"])  # the labels matter
    strong = run(labels, 4.0)
    _valid(strong, config)
    assert not np.array_equal(strong["values"], plain["values"])

    config = small_config(num_classes=3)
    upsampler = sampling.Sampler(build(config, seed=3), config)
    low = [color_photos["chelsea.png"][::40, ::40]]
    samples = sampling.sample_task(
        upsampler, "upsample", num_samples=2, images=low, label=2,
        options=sampling.SampleOptions(max_chunks=2, guidance=3.0), seed=0,
    )  # fmt: skip
    context = sampling.upsampling_context(low[0], config.dct)[0]
    assert samples.labels.tolist() == [2, 2]
    for seq in samples.sequences:
        np.testing.assert_array_equal(seq.values[: len(context)], context.values)
        rep.check_sequence(seq.channels, seq.positions, seq.values, config.dct)


# ----------------------------------------------------------------------------------------------
# The command line (`python -m dct_gen.sample`), in-process.


def _error_line(capsys) -> str:
    """The one line a failed command printed on stderr (and no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert err.count("dct_gen.sample: error: ") == 1, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("dct_gen.sample: error: "), err
    return line


def _low_resolution_photo(path) -> str:
    from PIL import Image

    Image.fromarray(photos.load_rgb(photos.color_photo_paths()[0])[::64, ::64]).save(path)
    return str(path)


@pytest.mark.slow  # the trained_run fixture: a dataset and 30 training steps
def test_sample_command_line_on_a_trained_run(trained_run, tmp_path, capsys):
    model_dir = trained_run.model_dir
    out = str(tmp_path / "samples")
    argv = ["--model_dir", model_dir, "--num_samples", "3", "--seed", "4", "--out", out]
    argv += ["--max_chunks", "4", "--quiet", "--top_p", "0.95"]
    assert sample.main(argv) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["task"] == "generate" and report["samples"] == 3
    for i in range(3):
        for suffix in (".png", ".npz", "_heatmap.png", "_progressive.png"):
            assert os.path.exists(os.path.join(out, f"sample_{i:03d}{suffix}"))
    assert report["grid"] == os.path.join(out, "sample_grid.png")
    assert os.path.exists(report["grid"])
    first = open(os.path.join(out, "sample_000.png"), "rb").read()
    assert sample.main(argv) == 0  # same seed, same images
    assert open(os.path.join(out, "sample_000.png"), "rb").read() == first

    # Upsampling a low-resolution photo, two samples.
    low = _low_resolution_photo(tmp_path / "low.png")
    up = str(tmp_path / "up")
    argv = ["upsample", low, "--model_dir", model_dir, "--num_samples", "2", "--out", up]
    assert sample.main(argv + ["--max_chunks", "2", "--quiet"]) == 0
    assert os.path.exists(os.path.join(up, "upsample_000_comparison.png"))
    summary = json.load(open(os.path.join(up, "upsample.json")))
    assert len(summary["samples"]) == 2
    assert all(s["context_triples"] > 0 for s in summary["samples"])
    capsys.readouterr()

    # What the trained run cannot do is named, with the run (exit 1) or the flag (exit 2).
    argv = ["colorize", low, "--model_dir", model_dir, "--quiet", "--out", up]
    assert sample.main(argv) == 1
    line = _error_line(capsys)
    assert "--model_dir" in line and "luma_first" in line
    assert sample.main(["--model_dir", model_dir, "--label", "2", "--out", out]) == 2
    assert "--label=2" in _error_line(capsys)
    assert sample.main(["--model_dir", model_dir, "--label", "sky", "--out", out]) == 2
    assert "--label='sky': this model is unconditional" in _error_line(capsys)
    assert sample.main(["--model_dir", model_dir, "--guidance", "2", "--out", out]) == 2
    assert "--guidance=2.0: this model is unconditional" in _error_line(capsys)


def test_sample_command_line_bad_input_exits_1(tmp_path, capsys):
    missing = str(tmp_path / "nope")
    assert sample.main(["--model_dir", missing]) == 1
    line = _error_line(capsys)
    assert "--model_dir" in line and missing in line
    # A directory that is not a run, and one that is not a SavedModel.
    assert sample.main(["--model_dir", str(tmp_path)]) == 1
    line = _error_line(capsys)
    assert "--model_dir" in line and "config.json" in line
    assert sample.main(["--saved_model", str(tmp_path)]) == 1
    line = _error_line(capsys)
    assert "--saved_model" in line and "saved_model.pb" in line
    # Image files are read before any model: a missing or unreadable one is named.
    argv = ["upsample", str(tmp_path / "missing.png"), "--model_dir", missing]
    assert sample.main(argv) == 1
    assert "missing.png" in _error_line(capsys)
    (tmp_path / "text.png").write_text("not an image")
    assert sample.main(["colorize", str(tmp_path / "text.png"), "--model_dir", missing]) == 1
    assert "text.png" in _error_line(capsys)


@pytest.mark.parametrize(
    "argv,named",
    [
        (["--model_dir", "run", "--num_samples", "0"], "--num_samples"),
        (["--model_dir", "run", "--temperature", "0"], "--temperature"),
        (["--model_dir", "run", "--top_p", "1.5"], "--top_p"),
        # Infinite and NaN values are refused by name before any model loads.
        (["--model_dir", "run", "--temperature", "inf"], "--temperature=inf: must be finite"),
        (["--model_dir", "run", "--temperature=nan"], "--temperature=nan: must be finite"),
        (["--model_dir", "run", "--temperature", "-inf"], "--temperature=-inf: must be finite"),
        (["--saved_model", "sm", "--temperature", "inf"], "--temperature=inf: must be finite"),
        (["--model_dir", "run", "--top_p", "nan"], "--top_p=nan: must be in (0, 1]"),
        (["--saved_model", "sm", "--top_p", "inf"], "--top_p=inf: must be in (0, 1]"),
        (["--model_dir", "run", "--top_p", "0"], "--top_p=0.0: must be in (0, 1]"),
        (["--model_dir", "run", "--batch_size", "x"], "--batch_size"),
        (["--model_dir", "run", "--num_s", "3"], "num_s"),  # abbreviations are refused
        ([], "--model_dir"),
        (["--model_dir", "run", "--saved_model", "sm"], "--saved_model"),
        (["--saved_model", "sm", "--top_k", "3"], "--top_k"),
        (["upsample", "--model_dir", "run"], "IMAGE"),
        (["upsample", "a.png", "--model_dir", "run", "--temperature", "0.5"], "--temperature"),
        (["colorize", "a.png", "--model_dir", "run", "--top_k", "1"], "--top_k"),
        (["--model_dir", "run", "--guidance", "-1"], "--guidance=-1.0: must be finite and >= 0"),
        (["--model_dir", "run", "--guidance", "inf"], "--guidance=inf: must be finite and >= 0"),
        (["upsample", "a.png", "--saved_model", "sm", "--guidance=nan"], "--guidance=nan"),
        (["a.png", "--model_dir", "run"], "a.png"),  # images need a task word
    ],
)
def test_sample_command_line_bad_flags_exit_2(argv, named, capsys):
    assert sample.main(argv) == 2
    assert named in _error_line(capsys)


def test_sample_command_line_help(capsys):
    assert sample.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "python -m dct_gen.sample upsample IMAGE..." in out
    for flag in ("--model_dir", "--saved_model", "--num_samples", "--top_k", "--max_chunks"):
        assert flag in out


def _conditional_run(directory, test_configs, label_dropout) -> str:
    """A run directory of an untrained three-class model of the test config: config.json (with
    label_names and train_config.label_dropout) and one checkpoint, as training writes them."""
    from dct_gen import run_dir

    configs = test_configs("model_config.num_classes = 3")
    model = model_lib.build_model(configs["model_config"])
    os.makedirs(directory)
    run_dir.save_run_config(directory, configs["model_config"], configs["train_config"])
    path = os.path.join(directory, run_dir.RUN_CONFIG_FILE)
    raw = json.load(open(path))
    raw["train_config"]["label_dropout"] = label_dropout
    raw["label_names"] = ["sky", "sea", "sand"]
    run_dir.write_json(path, raw)
    # save(), not write(): the restore expects the save counter a training checkpoint has.
    run_dir.model_checkpoint(model).save(os.path.join(directory, "checkpoints", "ckpt"))
    return str(directory)


def test_sample_command_line_labels_of_a_class_conditional_run(tmp_path, test_configs, capsys):
    """--label takes an index or a class name from config.json; a run whose null label was never
    trained needs one, and says so when --label is left out; an unknown name lists the names."""
    untrained = _conditional_run(tmp_path / "untrained", test_configs, 0.0)
    out = str(tmp_path / "out")
    argv = ["--model_dir", untrained, "--out", out, "--quiet"]
    assert sample.main(argv) == 2
    line = _error_line(capsys)
    assert "--label is not given (no class): this class-conditional model was trained" in line
    assert "pass a class with --label (0..2: sky, sea, sand)" in line
    assert sample.main(argv + ["--label", "cow"]) == 2
    assert "--label='cow': not a class name of this model; its classes: 0..2: sky" in (
        _error_line(capsys)
    )
    assert not os.path.exists(out)


@pytest.mark.slow  # samples a class-conditional run with guidance: about 20 s
def test_sample_command_line_guides_a_named_class(tmp_path, test_configs, capsys):
    """What an untrained null label refuses; a class by name, guided, and sample.json's record
    of it; a trained null label sampled by default."""
    untrained = _conditional_run(tmp_path / "untrained", test_configs, 0.0)
    argv = ["--model_dir", untrained, "--out", str(tmp_path / "no"), "--quiet"]
    assert sample.main(argv + ["--label=-1"]) == 2
    assert "--label=-1: this class-conditional model" in _error_line(capsys)
    assert sample.main(argv + ["--label", "sea", "--guidance", "2"]) == 2
    assert "--guidance=2.0: guidance needs the null label" in _error_line(capsys)
    assert sample.main(argv + ["--label", "3"]) == 2
    assert "--label=3: out of range [-1, 3)" in _error_line(capsys)
    assert not os.path.exists(tmp_path / "no")

    trained = _conditional_run(tmp_path / "trained", test_configs, 0.1)
    out = str(tmp_path / "out")
    argv = ["--model_dir", trained, "--out", out, "--quiet", "--num_samples", "2"]
    argv += ["--max_chunks", "1", "--label", "sand", "--guidance", "2.5"]
    assert sample.main(argv) == 0
    summary = json.load(open(os.path.join(out, "sample.json")))
    assert summary["guidance"] == 2.5
    assert [(s["label"], s["label_name"]) for s in summary["samples"]] == [(2, "sand")] * 2
    caption = summary["samples"][0]["caption"]
    assert caption[0] == "label 2: sand" and "guidance 2.5" in " ".join(caption)
    # Without --label a trained null label is sampled; guidance 1 is not recorded.
    assert sample.main(argv[:-4] + ["--out", str(tmp_path / "plain")]) == 0
    summary = json.load(open(tmp_path / "plain" / "sample.json"))
    assert summary["guidance"] is None and summary["samples"][0]["label"] == -1
