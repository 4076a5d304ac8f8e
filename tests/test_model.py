"""The DCTransformer model: shapes, causality, serialization, mixed precision, the structural
mask and the loss, on small configs and on windows cut from real photos; cached decoding of a
PAR block and a decoder stack (`call_with_cache` step by step equals `call`) and the layers
`model_layers` hands to it."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from testing_helpers import build, random_batch, real_window, small_config, stack_windows

from dct_gen import layers
from dct_gen import model as model_lib
from dct_gen.layers import MASK_VALUE
from dct_gen.representation import DCTConfig, channel_rank, encode


@pytest.fixture(scope="module")
def photo_sequences(color_photos):
    """A few photos encoded at long side 32, block 4, both orderings."""
    out = {}
    for ordering in ("interleaved", "luma_first"):
        cfg = DCTConfig(block_size=4, quality=75, resolution=32, clip=60, ordering=ordering)
        out[ordering] = (cfg, [encode(img, cfg) for img in list(color_photos.values())[:3]])
    return out


def numpy_outputs(model, batch):
    return {k: np.asarray(v) for k, v in model_lib.forward(model, batch).items()}


# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "block_size,resolution,num_classes,kernel,stride",
    [(4, 32, None, 4, 2), (4, 32, 5, 3, 3), (8, 64, None, 2, 2), (8, 48, 3, 4, 2)],
)
def test_output_shapes(block_size, resolution, num_classes, kernel, stride):
    config = small_config(block_size, resolution, num_classes, kernel_size=kernel, stride=stride)
    model = build(config)
    dct = config.dct
    assert ("label" in model_lib.input_names(model)) == bool(num_classes)
    out = model_lib.forward(model, random_batch(config, batch=3))
    t = config.window
    assert out["channel"].shape == (3, t, 3 * block_size**2 + 1)
    assert out["position"].shape == (3, t, dct.grid**2)
    assert out["value"].shape == (3, t, 2 * dct.clip + 1)
    assert all(v.dtype == tf.float32 for v in out.values())
    encoder = model.get_layer("encoder")
    assert encoder.output.shape[1] == math.ceil(dct.grid / stride) ** 2
    assert model.count_params() == model_lib.count_parameters(config)


def test_window_length_is_free():
    """A shorter window (a sampler's prefix) runs and agrees with the full window's prefix."""
    config = small_config(structural_mask=False)
    model = build(config)
    batch = random_batch(config)
    full = numpy_outputs(model, batch)
    short = {
        k: (v[:, :5] if k in ("channels", "positions", "values") else v) for k, v in batch.items()
    }
    part = numpy_outputs(model, short)
    for k in full:
        np.testing.assert_allclose(part[k], full[k][:, :5], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("structural_mask", [False, True])
def test_causality(structural_mask):
    config = small_config(num_classes=3, structural_mask=structural_mask)
    model = build(config, seed=1)
    batch = random_batch(config, seed=1)
    base = numpy_outputs(model, batch)
    rng = np.random.default_rng(7)
    t_max = config.window
    for t in (0, 3, t_max - 2):
        changed = dict(batch)
        for name, high in (("channels", 49), ("positions", 64), ("values", 121)):
            x = batch[name].copy()
            x[:, t + 1 :] = rng.integers(0, high, x[:, t + 1 :].shape) - (
                60 if name == "values" else 0
            )
            changed[name] = x
        out = numpy_outputs(model, changed)
        for k in base:
            np.testing.assert_allclose(
                out[k][:, : t + 1], base[k][:, : t + 1], rtol=1e-5, atol=1e-5
            )
            # The change does reach the later outputs (the test has teeth); element t + 1's
            # channel logits depend on elements <= t only.
            later = t + 2 if k == "channel" else t + 1
            if later < t_max:
                assert np.abs(out[k][:, later:] - base[k][:, later:]).max() > 1e-4

    # Within element t: its channel logits ignore its own triple, its position logits its
    # position and value, its value logits its value.
    t = 6
    for name, unaffected in (
        ("channels", ["channel"]),
        ("positions", ["channel", "position"]),
        ("values", ["channel", "position", "value"]),
    ):
        changed = dict(batch)
        x = batch[name].copy()
        x[:, t] = (x[:, t] + 7) % (49 if name == "channels" else 60)
        changed[name] = x
        out = numpy_outputs(model, changed)
        for k in unaffected:
            np.testing.assert_allclose(out[k][:, t], base[k][:, t], rtol=1e-5, atol=1e-5)


def test_encoder_never_sees_the_targets():
    config = small_config(num_classes=3)
    model = build(config)
    encoder = keras.Model(model.inputs, model.get_layer("encoder").output)
    batch = random_batch(config)
    names = model_lib.input_names(model)
    base = np.asarray(encoder({k: batch[k] for k in names}))
    changed = dict(batch)
    for name in ("channels", "positions", "values"):
        changed[name] = np.flip(batch[name], axis=1).copy()
    out = np.asarray(encoder({k: changed[k] for k in names}))
    np.testing.assert_array_equal(out, base)
    changed["dct_image"] = batch["dct_image"] + 1
    assert np.abs(np.asarray(encoder({k: changed[k] for k in names})) - base).max() > 1e-4


def test_get_config_round_trip():
    config = small_config(num_classes=4)
    model = build(config)
    restored = keras.Model.from_config(model.get_config())
    assert restored.get_config() == model.get_config()
    assert restored.count_params() == model.count_params()
    restored.set_weights(model.get_weights())
    batch = random_batch(config)
    a, b = numpy_outputs(model, batch), numpy_outputs(restored, batch)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-6)
    # Each custom layer on its own.
    for layer in model.layers:
        if type(layer).__module__.startswith("dct_gen"):
            clone = type(layer).from_config(layer.get_config())
            assert clone.get_config() == layer.get_config(), type(layer).__name__


def test_rezero_starts_at_zero():
    model = model_lib.build_model(small_config())
    stacks = [x for x in model.layers if isinstance(x, layers.TransformerStack)]
    assert len(stacks) == 4
    for stack in stacks:
        for block in stack.blocks:
            np.testing.assert_array_equal(block.rezero.numpy(), 0.0)


def _train_step(model, optimizer, batch, dct):
    with tf.GradientTape() as tape:
        out = model_lib.forward(model, batch, training=True)
        loss = model_lib.compute_losses(out, batch, dct)["loss"]
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss, out


def test_mixed_bfloat16_training_step(photo_sequences):
    cfg, seqs = photo_sequences["interleaved"]
    config = small_config(dropout=0.1, chunk_size=24, overlap=4)
    batch = stack_windows([real_window(s, cfg, 30, 24, 4) for s in seqs[:2]])
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(0)
        model = model_lib.build_model(config)
        optimizer = keras.optimizers.Adam(1e-3)
        before = [v.numpy().copy() for v in model.trainable_variables]
        loss, out = _train_step(model, optimizer, batch, config.dct)
        assert np.isfinite(float(loss))
        assert model.get_layer("encoder").compute_dtype == "bfloat16"
        assert all(v.dtype == tf.float32 for v in out.values())
        assert all(v.dtype == "float32" for v in model.trainable_variables)
        rezero = [v for v in model.trainable_variables if "rezero" in v.path]
        assert rezero and all(np.abs(v.numpy()).min() > 0 for v in rezero)
        # At step 1 the branches get no gradient (their ReZero scale is 0); from step 2 they do.
        loss, _ = _train_step(model, optimizer, batch, config.dct)
        assert np.isfinite(float(loss))
        after = [v.numpy() for v in model.trainable_variables]
        changed = sum(not np.array_equal(a, b) for a, b in zip(before, after))
        assert changed >= 0.9 * len(before)
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.slow  # about 20 s: XLA compiles the whole step on the CPU
def test_the_training_step_compiles_with_xla(photo_sequences):
    """The full step (forward, structural mask, losses, gradients, clipping, Adam) under
    jit_compile=True: every op has an XLA kernel and every shape is static, as a TPU needs. The
    compiled step computes what the traced one does."""
    from dct_gen import training

    cfg, seqs = photo_sequences["interleaved"]
    config = small_config(chunk_size=24, overlap=4)
    batch = stack_windows([real_window(s, cfg, 30, 24, 4) for s in seqs[:2]])
    strategy = tf.distribute.get_strategy()
    results = {}
    for jit in (False, True):
        model = build(config, seed=0)
        optimizer = keras.optimizers.Adam(1e-3)
        optimizer.build(model.trainable_variables)
        step = training.make_train_step(strategy, model, optimizer, config.dct, 1.0, jit)
        first = step(batch)
        second = step(batch)  # after an update: the optimizer's compiled apply ran
        results[jit] = [{k: float(v) for k, v in out.items()} for out in (first, second)]
        if jit:
            hlo = step.experimental_get_compiler_ir(batch)(stage="hlo")
            assert "HloModule" in hlo
    for traced, compiled in zip(results[False], results[True]):
        assert np.isfinite(compiled["loss"]) and compiled["tokens"] == traced["tokens"]
        for k in ("loss", "grad_norm", "bits_per_subpixel"):
            np.testing.assert_allclose(compiled[k], traced[k], rtol=1e-4, err_msg=k)


@pytest.mark.slow  # about 15 s: tracing the step for two replicas
def test_distributed_step_on_two_cpus(photo_sequences, two_cpu_strategy):
    """The step under MirroredStrategy, optimizer built in scope first."""
    cfg, seqs = photo_sequences["interleaved"]
    config = small_config(chunk_size=24, overlap=4)
    batch = stack_windows([real_window(s, cfg, 0, 24, 4) for s in seqs[:2]])
    strategy = two_cpu_strategy
    with strategy.scope():
        model = model_lib.build_model(config)
        optimizer = keras.optimizers.Adam(1e-3)
        optimizer.build(model.trainable_variables)
    dataset = tf.data.Dataset.from_tensors(batch)
    inputs = next(iter(strategy.experimental_distribute_dataset(dataset)))

    @tf.function
    def step(b):
        loss, _ = _train_step(model, optimizer, b, config.dct)
        return loss

    losses = strategy.run(step, args=(inputs,))
    assert all(np.isfinite(x.numpy()) for x in strategy.experimental_local_results(losses))
    assert int(optimizer.iterations.numpy()) == 1


# ----------------------------------------------------------------------------------------------
# The structural mask.


@pytest.mark.parametrize("ordering", ["interleaved", "luma_first"])
@pytest.mark.parametrize("block_size", [4, 8])
def test_real_sequences_satisfy_the_structural_rules(color_photos, ordering, block_size):
    """Every element of every encoded photo is allowed given its predecessor: the mask never
    removes a possible move."""
    cfg = DCTConfig(
        block_size=block_size, quality=90, resolution=16 * block_size, clip=400, ordering=ordering
    )
    tables = model_lib.structural_tables(cfg)
    for img in list(color_photos.values())[:3]:
        seq = encode(img, cfg)
        c = np.append(seq.channels, cfg.stop_token)
        p = np.append(seq.positions, 0)
        v = np.append(seq.values, 0) + cfg.clip
        prev_c, prev_p = np.append(-1, c[:-1]), np.append(-1, p[:-1])
        ch = np.asarray(model_lib.channel_allowed(prev_c, prev_p, tables))
        pos = np.asarray(model_lib.position_allowed(c, prev_c, prev_p, tables))
        val = np.asarray(model_lib.value_allowed(c, tables))
        i = np.arange(c.size)
        assert ch[i, c].all() and pos[i, p].all() and val[i, v].all()
        # The mask has teeth on real data: it rules out some channels and many positions.
        assert ch.mean() < 0.95 and pos.mean() < 0.8 and not val[:-1, cfg.clip].any()


def test_structural_rules_by_hand():
    cfg = DCTConfig(block_size=4, quality=75, resolution=32, clip=5)  # G = 8, 48 channels
    t = model_lib.structural_tables(cfg)
    rank = channel_rank(4, "interleaved", 4)
    order = np.argsort(rank)  # channels in order, stop last
    c3 = int(order[3])
    ch = np.asarray(model_lib.channel_allowed(np.array([c3]), np.array([10]), t))[0]
    np.testing.assert_array_equal(ch, rank >= 3)  # no going back; the same channel may repeat
    ch = np.asarray(model_lib.channel_allowed(np.array([0]), np.array([63]), t))[0]
    assert not ch[0] and ch[cfg.stop_token]  # luma channel at its last position: no repeat
    assert np.asarray(model_lib.channel_allowed(np.array([-1]), np.array([-1]), t)).all()
    # Positions: same channel strictly after; chroma on even rows and columns; stop at 0.
    pos = np.asarray(model_lib.position_allowed(np.array([0]), np.array([0]), np.array([10]), t))
    np.testing.assert_array_equal(pos[0], np.arange(64) > 10)
    cb = 16
    pos = np.asarray(model_lib.position_allowed(np.array([cb]), np.array([0]), np.array([60]), t))
    rows, cols = np.arange(64) // 8, np.arange(64) % 8
    np.testing.assert_array_equal(pos[0], (rows % 2 == 0) & (cols % 2 == 0))
    stop = cfg.stop_token
    pos = np.asarray(model_lib.position_allowed(np.array([stop]), np.array([3]), np.array([4]), t))
    np.testing.assert_array_equal(pos[0], np.arange(64) == 0)
    val = np.asarray(model_lib.value_allowed(np.array([2, stop]), t))
    np.testing.assert_array_equal(val[0], np.arange(11) != 5)
    np.testing.assert_array_equal(val[1], np.arange(11) == 5)


def test_structural_mask_in_the_model(photo_sequences):
    cfg, seqs = photo_sequences["interleaved"]
    windows = [real_window(s, cfg, start, 24, 8) for s in seqs for start in (0, 40, len(s) - 10)]
    batch = stack_windows(windows)
    on_config = small_config(chunk_size=24, overlap=8, structural_mask=True)
    masked = numpy_outputs(build(on_config), batch)
    unmasked = numpy_outputs(
        build(small_config(chunk_size=24, overlap=8, structural_mask=False)), batch
    )
    for k in masked:
        assert not (unmasked[k] == MASK_VALUE).any()
        off = masked[k] == MASK_VALUE
        assert off.any()
        # Same weights (same seed): the mask changes only what it removes.
        np.testing.assert_allclose(masked[k][~off], unmasked[k][~off], rtol=1e-5, atol=1e-5)
        probs = tf.nn.softmax(masked[k]).numpy()
        assert (probs[off] == 0).all()  # no mass on impossible moves
    losses_on = model_lib.compute_losses(masked, batch, cfg)
    losses_off = model_lib.compute_losses(unmasked, batch, cfg)
    assert np.isfinite(float(losses_on["loss"]))
    # Removing impossible moves can only lower the loss of real data.
    assert float(losses_on["loss"]) < float(losses_off["loss"])
    assert (np.asarray(losses_on["nats"]) <= np.asarray(losses_off["nats"]) + 1e-4).all()


# ----------------------------------------------------------------------------------------------
# The loss.


def _log_softmax(x):
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_loss_matches_a_hand_computation(photo_sequences):
    cfg, seqs = photo_sequences["interleaved"]
    seq = seqs[0]
    # The last window holds the stop token and trailing padding.
    windows = [real_window(seq, cfg, 20, 12, 4), real_window(seq, cfg, len(seq) - 5, 12, 4)]
    batch = stack_windows(windows)
    out = numpy_outputs(build(small_config()), batch)
    losses = {k: np.asarray(v) for k, v in model_lib.compute_losses(out, batch, cfg).items()}

    nats = np.zeros((2, 3))
    for b in range(2):
        for t in range(batch["channels"].shape[1]):
            if batch["loss_mask"][b, t] == 0:
                continue
            c, p = batch["channels"][b, t], batch["positions"][b, t]
            v = batch["values"][b, t] + cfg.clip
            nats[b, 0] -= _log_softmax(out["channel"][b, t])[c]
            if c != cfg.stop_token:
                nats[b, 1] -= _log_softmax(out["position"][b, t])[p]
                nats[b, 2] -= _log_softmax(out["value"][b, t])[v]
    assert batch["channels"][1].tolist().count(cfg.stop_token) == 1
    for i, name in enumerate(model_lib.COMPONENTS):
        np.testing.assert_allclose(losses[f"{name}_nats"], nats[:, i], rtol=1e-4)
    tokens = batch["loss_mask"].sum()
    assert losses["tokens"] == tokens == 12 + 6  # the last window: 5 elements and the stop
    np.testing.assert_allclose(losses["loss"], nats.sum() / tokens, rtol=1e-4)
    subpixels = 3.0 * seq.height * seq.width
    bpd = nats.sum(1) / math.log(2) / subpixels
    np.testing.assert_allclose(losses["bits_per_subpixel_per_example"], bpd, rtol=1e-4)
    np.testing.assert_allclose(losses["bits_per_subpixel"], bpd.mean(), rtol=1e-4)
    np.testing.assert_allclose(
        losses["value_bits_per_subpixel"], (nats[:, 2] / math.log(2) / subpixels).mean(), rtol=1e-4
    )


def test_flops_per_token_scales_with_the_model():
    small = small_config()
    flops = model_lib.flops_per_token(small)
    assert flops == 3 * model_lib.flops_per_token(small, training=False)
    # At least 6 FLOPs per decoder parameter per token (each decoder weight is used once per
    # window element, and the window holds more elements than the chunk's targets).
    assert flops > 6 * model_lib.count_parameters(small) * 0.5
    wider = small_config(hidden_size=64)
    assert model_lib.flops_per_token(wider) > 2 * flops


# ----------------------------------------------------------------------------------------------
# Cached decoding: call_with_cache, a few elements at a time, equals call on the whole window.


def _decoder_inputs(t=7, s=5, d=32, seed=0):
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.normal(size=(2, t, d)), tf.float32)
    memory = tf.constant(rng.normal(size=(2, s, d)), tf.float32)
    return x, memory


def _nonzero_rezero(blocks, seed=0):
    for block in blocks:
        block.rezero.assign(np.random.default_rng(seed).uniform(0.5, 1.0, block.rezero.shape))


def _step_by_step(layer, x, cross, cache, jit_compile, prefill=3):
    """The first `prefill` rows at once, then one row at a time (indices as tensors)."""
    t = x.shape[1]
    out, cache = layer.call_with_cache(x[:, :prefill], cache, cross, 0, jit_compile=jit_compile)
    outs = [out]
    for j in range(prefill, t):
        index = tf.constant(j)
        out, cache = layer.call_with_cache(
            x[:, j : j + 1], cache, cross, index, jit_compile=jit_compile
        )
        outs.append(out)
    return tf.concat(outs, axis=1), cache


# XLA: about 20 s of compiling (the default suite's XLA sampler test covers that path too).
@pytest.mark.parametrize("jit_compile", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_a_decoder_stack_with_cache_equals_its_call(jit_compile):
    keras.utils.set_random_seed(3)
    x, memory = _decoder_inputs()
    stack = layers.TransformerStack(
        32, 2, 16, 64, layer_spec=[(1, 1), (2, 0)], decoder=True, final_norm=True
    )
    stack.build(x.shape, memory.shape)
    _nonzero_rezero(stack.blocks)
    full = stack(x, memory)

    def cached(x, memory):
        cross = stack.project_cross(memory)
        return _step_by_step(stack, x, cross, stack.empty_cache(2, x.shape[1]), jit_compile)

    # Eagerly, or compiled with XLA (where the cache update is another op).
    run = tf.function(cached, jit_compile=True) if jit_compile else cached
    out, cache = run(x, memory)
    np.testing.assert_allclose(out.numpy(), full.numpy(), rtol=1e-5, atol=1e-5)
    # One (keys, values) pair per self-attention sublayer of each block, the window filled.
    assert [len(block_cache) for block_cache in cache] == [1, 2]
    keys, _ = cache[1][1]
    assert keys.shape == (2, 2, x.shape[1], 16)
    assert np.abs(keys.numpy()).max(axis=(0, 1, 3)).min() > 0  # every position written

    encoder = layers.TransformerStack(32, 2, 16, 64, layer_spec=[(1, 1)])
    with pytest.raises(ValueError, match="decoder"):
        encoder.call_with_cache(x, [], [], 0)


def test_a_par_block_with_cache_equals_its_call():
    keras.utils.set_random_seed(4)
    x, memory = _decoder_inputs(seed=1)
    block = layers.PARBlock(
        32, 2, 16, 64, num_attention=2, num_dense=1, causal=True, cross_attention=True
    )
    block.build(x.shape, memory.shape)
    _nonzero_rezero([block], seed=1)
    full = block(x, memory)
    cross = block.project_cross(memory)
    assert len(cross) == 2 and cross[0][0].shape == (2, 2, memory.shape[1], 16)
    out, _ = _step_by_step(block, x, cross, block.empty_cache(2, x.shape[1]), False, prefill=1)
    np.testing.assert_allclose(out.numpy(), full.numpy(), rtol=1e-5, atol=1e-5)


def test_model_layers_are_the_models_own():
    config = small_config(num_classes=3)
    model = build(config)
    parts = model_lib.model_layers(model)
    assert parts.encoder is model.get_layer("encoder")
    for name in model_lib.COMPONENTS:
        assert parts.decoders[name] is model.get_layer(f"{name}_decoder")
        assert parts.heads[name] is model.get_layer(f"{name}_head")
        assert parts.embeddings[name] is model.get_layer(f"{name}_embedding")
    assert parts.label_embedding is model.get_layer("label_embedding")
    assert parts.chunk_positions.shape == (config.window, config.hidden_size)
    assert model_lib.model_layers(build(small_config())).label_embedding is None
