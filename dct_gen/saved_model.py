"""SavedModel export: `python -m dct_gen.export --model_dir DIR --out SAVED_MODEL`.

The SavedModel needs neither dct_gen nor Keras to run: load it with
`tf.saved_model.load(SAVED_MODEL)` and call its signatures (also in
`loaded.signatures[name]`):

  sample(num_samples int32, label int32, temperature float32, top_p float32, seed int64)
      -> images uint8 (n, R, R, 3), the canvas: sample i is images[i, :heights[i], :widths[i]];
         heights, widths int32 (n,); channels, positions, values int32 (n, L), padded, without
         the stop token; lengths int32 (n,); stopped bool (n,), whether each sample reached
         its stop token (else the chunk limit cut it).
  log_prob(channels int32 (L,), positions, values, height int32, width int32)
      -> bits_per_subpixel float32 (the sequence's exact negative log-likelihood, stop token
         included, over 3 * height * width), channel_/position_/value_bits_per_subpixel,
         nats float32.
  upsample(image uint8 (h, w, 3), seed int64)          interleaved models
      -> as sample, one image: B x upsampling (8x at B = 8) of the image, whose first channel of
         Y, Cb and Cr is the context (`dct_gen.sample.upsampling_context`); context_length.
  colorize(image uint8 (h, w, 1 or 3), seed int64)     luma_first models
      -> as sample, one image: the image's luma kept, its chroma sampled; context_length.

`loaded.config_json` holds the representation and model configuration (JSON). Each signature
checks its inputs in the graph and fails with an InvalidArgumentError whose message starts
with the argument's name: a label out of range, num_samples below 1 or above the cap, a
temperature or top_p out of range, an image of the wrong rank, channels or size, a sequence
whose arrays differ in length or hold ids out of range.

In-graph encoding (`dct_ops.encode_dct_image`) and resizing (`tf.image.resize`, Lanczos) can
differ from the numpy codec's on rare coefficients by one step; the context a signature builds
is still kept exactly in its output.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import tensorflow as tf

from dct_gen import data, dct_ops
from dct_gen import model as model_lib
from dct_gen import representation as rep
from dct_gen import sample as sample_lib

DEFAULT_MAX_SAMPLES = 64
MAX_IMAGE_SIDE = 8192  # upsample and colorize refuse larger inputs (they are resized anyway)
LOG_PROB_CHUNKS = 8  # chunks scored per model call in log_prob


def _target_size_tf(height, width, cfg: rep.DCTConfig):
    """`representation.target_size` in the graph."""
    long_side = tf.maximum(height, width)
    step = 2 * cfg.block_size
    short = tf.cast(tf.minimum(height, width), tf.float64) * cfg.resolution
    short = short / tf.cast(long_side, tf.float64)
    short = tf.cast(tf.round(short / step), tf.int32) * step  # round half to even, as Python
    short = tf.minimum(tf.maximum(short, step), cfg.resolution)
    same = long_side == cfg.resolution
    h = tf.where(same, height, tf.where(height >= width, cfg.resolution, short))
    w = tf.where(same, width, tf.where(height >= width, short, cfg.resolution))
    return h, w


def _resize_uint8(image, height, width):
    """Lanczos resize of a uint8 (h, w, c) image unless it already has that size."""

    def resize():
        out = tf.image.resize(tf.cast(image, tf.float32), [height, width], "lanczos3", True)
        return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)

    same = (tf.shape(image)[0] == height) & (tf.shape(image)[1] == width)
    return tf.cond(same, lambda: tf.cast(image, tf.uint8), resize)


class DCTransformerModule(tf.Module):
    """The exported object: a trained model's weights and the four signatures."""

    def __init__(
        self,
        model,
        model_config: model_lib.ModelConfig,
        target_part: str = "all",
        max_num_samples: int = DEFAULT_MAX_SAMPLES,
        max_chunks: int | None = None,
    ):
        super().__init__(name="dctransformer")
        self.model = model
        self._config = model_config
        self._cfg = model_config.dct
        self._sampler = sample_lib.Sampler(model, model_config)
        self._max_samples = int(max_num_samples)
        self._max_chunks = int(max_chunks or sample_lib.default_max_chunks(model_config))
        self._capacity = sample_lib.max_length(self._cfg) + 1
        self._target_part = target_part
        self.config_json = tf.Variable(
            json.dumps(
                {
                    "model_config": dataclasses.asdict(model_config),
                    "target_part": target_part,
                    "max_num_samples": self._max_samples,
                    "max_chunks": self._max_chunks,
                }
            ),
            trainable=False,
            name="config_json",
        )

    # ---- Shared pieces.

    def _checks(self, temperature, top_p):
        return [
            tf.debugging.assert_greater(temperature, 0.0, message="temperature: must be > 0"),
            tf.debugging.assert_greater(top_p, 0.0, message="top_p: must be in (0, 1]"),
            tf.debugging.assert_less_equal(top_p, 1.0, message="top_p: must be in (0, 1]"),
        ]

    def _finish(self, state, heights=None, widths=None):
        lengths = state["length"]
        images, heights, widths = sample_lib.images_tf(
            state["channels"], state["positions"], state["values"], lengths, self._cfg,
            heights, widths,
        )  # fmt: skip
        longest = tf.reduce_max(lengths)
        at_end = tf.gather(state["channels"], tf.minimum(lengths, self._capacity - 1), batch_dims=1)
        valid = tf.range(longest)[None, :] < lengths[:, None]
        out = {
            "images": images,
            "heights": heights,
            "widths": widths,
            "lengths": lengths,
            "stopped": (lengths < self._capacity) & (at_end == self._cfg.stop_token),
        }
        for name in ("channels", "positions", "values"):
            out[name] = tf.where(valid, state[name][:, :longest], 0)
        return out

    def _run(self, state, seed, temperature, top_p):
        seed = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
        return self._sampler.sample_graph(
            state, self._max_chunks, seed, temperature, top_p, tf.constant(0)
        )

    # ---- Signatures.

    @tf.function(
        input_signature=[
            tf.TensorSpec([], tf.int32, name="num_samples"),
            tf.TensorSpec([], tf.int32, name="label"),
            tf.TensorSpec([], tf.float32, name="temperature"),
            tf.TensorSpec([], tf.float32, name="top_p"),
            tf.TensorSpec([], tf.int64, name="seed"),
        ]
    )
    def sample(self, num_samples, label, temperature, top_p, seed):
        checks = self._checks(temperature, top_p)
        checks += [
            tf.debugging.assert_greater(num_samples, 0, message="num_samples: must be >= 1"),
            tf.debugging.assert_less_equal(
                num_samples,
                self._max_samples,
                message=f"num_samples: at most {self._max_samples} per call (the export's cap)",
            ),
        ]
        classes = self._config.num_classes
        if classes:
            checks += [
                tf.debugging.assert_greater_equal(
                    label, -1, message=f"label: out of range [-1, {classes}) (-1: no class)"
                ),
                tf.debugging.assert_less(
                    label, classes, message=f"label: out of range [-1, {classes}) (-1: no class)"
                ),
            ]
        else:
            checks.append(
                tf.debugging.assert_equal(
                    label, -1, message="label: the model is unconditional; pass -1"
                )
            )
        with tf.control_dependencies(checks):
            n = tf.identity(num_samples)
            state = self._sampler.initial_state(n, self._capacity, label=tf.fill([n], label))
        return self._finish(self._run(state, seed, temperature, top_p))

    def _image_checks(self, image, channels: tuple[int, ...], largest: int):
        shape = tf.shape(image)
        names = " or ".join(str(c) for c in channels)
        ok_channels = tf.reduce_any(tf.equal(shape[2], list(channels)))
        return [
            tf.debugging.assert_equal(
                ok_channels, True, message=f"image: must be (height, width, {names}) uint8"
            ),
            tf.debugging.assert_greater(
                tf.reduce_min(shape[:2]), 0, message="image: height and width must be >= 1"
            ),
            tf.debugging.assert_less_equal(
                tf.reduce_max(shape[:2]),
                largest,
                message=f"image: height and width must be <= {largest}",
            ),
        ]

    def _single(self, context, base, seed, height, width):
        c, p, v = context
        length = tf.shape(c)[0]
        state = self._sampler.initial_state(
            1,
            self._capacity,
            context=(c[None], p[None], v[None], length[None]),
            base=None if base is None else length[None],
            min_rank=None if base is None else self._cfg.channels_per_plane,
        )
        state = self._run(state, seed, tf.constant(1.0), tf.constant(1.0))
        out = self._finish(state, height[None], width[None])
        out["context_length"] = length
        return out

    def upsample(self, image, seed):
        cfg = self._cfg
        b = cfg.block_size
        with tf.control_dependencies(self._image_checks(image, (3,), MAX_IMAGE_SIDE)):
            image = tf.identity(image)
        h, w = _target_size_tf(tf.shape(image)[0] * b, tf.shape(image)[1] * b, cfg)
        low = _resize_uint8(image, h // b, w // b)
        blocky = tf.repeat(tf.repeat(low, b, axis=0), b, axis=1)
        dense = dct_ops.encode_dct_image(blocky, cfg)
        n = cfg.channels_per_plane
        context = dct_ops.triples_from_dct_image(dense, cfg, channels=(0, n, 2 * n))
        return self._single(context, None, seed, h, w)

    def colorize(self, image, seed):
        cfg = self._cfg
        with tf.control_dependencies(self._image_checks(image, (1, 3), MAX_IMAGE_SIDE)):
            image = tf.identity(image)

        def luma():
            rgb = tf.cast(image, tf.float32)
            y = tf.einsum("hwc,c->hw", rgb, tf.constant(rep._RGB_TO_YCBCR[0], tf.float32))
            return tf.cast(tf.clip_by_value(tf.floor(y + 0.5), 0, 255), tf.uint8)

        grey = tf.cond(tf.shape(image)[2] == 3, luma, lambda: tf.cast(image[:, :, 0], tf.uint8))
        h, w = _target_size_tf(tf.shape(grey)[0], tf.shape(grey)[1], cfg)
        grey = _resize_uint8(tf.repeat(grey[:, :, None], 3, axis=2), h, w)
        dense = dct_ops.encode_dct_image(grey, cfg)
        context = dct_ops.triples_from_dct_image(
            dense, cfg, channels=tuple(range(cfg.channels_per_plane))
        )
        return self._single(context, True, seed, h, w)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.int32, name="channels"),
            tf.TensorSpec([None], tf.int32, name="positions"),
            tf.TensorSpec([None], tf.int32, name="values"),
            tf.TensorSpec([], tf.int32, name="height"),
            tf.TensorSpec([], tf.int32, name="width"),
        ]
    )
    def log_prob(self, channels, positions, values, height, width):
        cfg, config = self._cfg, self._config
        size = tf.size(channels)
        checks = [
            tf.debugging.assert_equal(
                tf.size(positions), size, message="positions: must have the length of channels"
            ),
            tf.debugging.assert_equal(
                tf.size(values), size, message="values: must have the length of channels"
            ),
            tf.debugging.assert_less(
                size, self._capacity, message=f"channels: longer than {self._capacity - 1}"
            ),
        ]
        for name, t, low, high in (
            ("channels", channels, 0, cfg.stop_token),
            ("positions", positions, 0, cfg.num_positions),
            ("values", values, -cfg.clip, cfg.clip + 1),
        ):
            checks.append(
                tf.debugging.assert_equal(
                    tf.reduce_all((t >= low) & (t < high)),
                    True,
                    message=f"{name}: ids must lie in [{low}, {high})",
                )
            )
        for name, t in (("height", height), ("width", width)):
            checks += [
                tf.debugging.assert_greater(t, 0, message=f"{name}: must be >= 1"),
                tf.debugging.assert_less_equal(
                    t, cfg.resolution, message=f"{name}: must be <= {cfg.resolution}"
                ),
            ]
        with tf.control_dependencies(checks):
            stop = tf.constant([cfg.stop_token], tf.int32)
            zero = tf.zeros([1], tf.int32)
            seq = {
                "channels": tf.concat([channels, stop], 0),
                "positions": tf.concat([positions, zero], 0),
                "values": tf.concat([values, zero], 0),
                "height": height,
                "width": width,
                "label": tf.constant(-1),
                "sequence_index": tf.constant(0),
            }
        length = tf.size(seq["channels"])
        if self._target_part == "chroma":
            base = tf.reduce_sum(tf.cast(seq["channels"] < cfg.channels_per_plane, tf.int32))
        else:
            base = tf.constant(0)
        c = config.chunk_size
        num_chunks = (length - base + c - 1) // c
        names = ("channel_nats", "position_nats", "value_nats")

        def body(i, totals):
            ks = i * LOG_PROB_CHUNKS + tf.range(LOG_PROB_CHUNKS)
            valid = ks < num_chunks
            safe = tf.minimum(ks, num_chunks - 1)
            windows = tf.map_fn(
                lambda k: data._example(seq, base + k * c, k, num_chunks, cfg, c, config.overlap),
                safe,
                fn_output_signature={
                    **{k: tf.int32 for k in ("channels", "positions", "values", "indices")},
                    "loss_mask": tf.float32,
                    "mask": tf.float32,
                    "dct_image": tf.int32,
                    **{
                        k: tf.int32
                        for k in (
                            "chunk_index",
                            "num_chunks",
                            "chunk_start",
                            "length",
                            "height",
                            "width",
                            "label",
                            "sequence_index",
                        )
                    },  # fmt: skip
                },
            )
            outputs = model_lib.forward(self.model, windows)
            losses = model_lib.compute_losses(outputs, windows, cfg)
            weight = tf.cast(valid, tf.float32)
            return i + 1, [t + tf.reduce_sum(losses[n] * weight) for t, n in zip(totals, names)]

        steps = (num_chunks + LOG_PROB_CHUNKS - 1) // LOG_PROB_CHUNKS
        _, totals = tf.while_loop(
            lambda i, _: i < steps, body, (tf.constant(0), [tf.constant(0.0)] * 3)
        )
        subpixels = 3.0 * tf.cast(height, tf.float32) * tf.cast(width, tf.float32)
        to_bits = lambda nats: nats / np.log(2.0) / subpixels
        out = {f"{n.split('_')[0]}_bits_per_subpixel": to_bits(t) for n, t in zip(names, totals)}
        out["nats"] = tf.add_n(totals)
        out["bits_per_subpixel"] = to_bits(out["nats"])
        return out


def export(
    model,
    model_config: model_lib.ModelConfig,
    out: str,
    *,
    target_part: str = "all",
    max_num_samples: int = DEFAULT_MAX_SAMPLES,
    max_chunks: int | None = None,
) -> list[str]:
    """Writes the SavedModel to `out`; returns the signature names."""
    module = DCTransformerModule(
        model, model_config, target_part, max_num_samples=max_num_samples, max_chunks=max_chunks
    )
    image = tf.TensorSpec([None, None, None], tf.uint8, name="image")
    seed = tf.TensorSpec([], tf.int64, name="seed")
    signatures = {
        "sample": module.sample.get_concrete_function(),
        "log_prob": module.log_prob.get_concrete_function(),
    }
    if model_config.dct.ordering == "interleaved":
        module.upsample_fn = tf.function(module.upsample, input_signature=[image, seed])
        signatures["upsample"] = module.upsample_fn.get_concrete_function()
    if model_config.dct.ordering == "luma_first":
        module.colorize_fn = tf.function(module.colorize, input_signature=[image, seed])
        signatures["colorize"] = module.colorize_fn.get_concrete_function()
    tmp = out.rstrip("/") + ".tmp"
    if tf.io.gfile.exists(tmp):
        tf.io.gfile.rmtree(tmp)
    tf.saved_model.save(module, tmp, signatures=signatures)
    if tf.io.gfile.exists(out):
        tf.io.gfile.rmtree(out)
    tf.io.gfile.rename(tmp, out)
    return sorted(signatures)
