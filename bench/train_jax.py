"""The model's training step under Keras' JAX backend: throughput and bf16 MFU on an accelerator.

    KERAS_BACKEND=jax python bench/train_jax.py --batch_file BATCH.npz [--config lsun] [--batch 32]

`dct_gen.layers` and `dct_gen.model` use `keras.ops` only, so the same model runs under JAX.
This measures it where TensorFlow is not installed (for example a GPU machine with JAX): one
jit-compiled step (model.stateless_call, `model.compute_losses`, gradients, Adam's
stateless_apply) on a real batch that `python bench/train_jax.py --write_batch` cut with
`dct_gen.data` (TensorFlow needed for that part only), tiled to --batch examples. It prints
target tokens per second and model FLOP utilisation: `model.flops_per_token` x tokens/s over the
device's peak, measured in the same run as a chain of 8192^3 bfloat16 matmuls (float32 4096^3 on
a CPU). This is not bench/train.py's TensorFlow step; its figures are labelled as JAX's.

Configs: `lsun` (Table 3's LSUN model, 415M parameters, 384 px, B = 8, chunk 896 + 128) and
`small` (d = 256, 128 px; bench/train.py's small config).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from dct_gen.representation import DCTConfig  # noqa: E402

D4 = [(1, 2)] * 3 + [(1, 4)]
CONFIGS = {
    "lsun": dict(
        dct=DCTConfig(block_size=8, quality=75, resolution=384, clip=1200),
        hidden_size=896, num_heads=14, key_size=64, encoder_spec=[(1, 2)] * 4,
        channel_spec=D4, position_spec=D4, value_spec=[(1, 2)] * 5 + [(1, 7)],
        kernel_size=4, stride=2, chunk_size=896, overlap=128,
    ),
    "small": dict(
        dct=DCTConfig(block_size=8, quality=75, resolution=128, clip=1200),
        hidden_size=256, num_heads=4, key_size=64, encoder_spec=[(1, 2)] * 2,
        channel_spec=[(1, 2)] * 2, position_spec=[(1, 2)] * 2, value_spec=[(1, 2)] * 3,
        kernel_size=2, stride=2, chunk_size=128, overlap=32,
    ),
}  # fmt: skip
KEYS = ("channels", "positions", "values", "loss_mask", "mask", "dct_image", "height", "width",
        "label", "chunk_index", "length")  # fmt: skip


def write_batch(config: str, path: str, examples: int) -> None:
    """Cuts `examples` real training examples for the config with dct_gen.data (TensorFlow)."""
    os.environ["KERAS_BACKEND"] = "tensorflow"
    from bench.input_pipeline import CONFIGS as PIPELINES
    from bench.input_pipeline import build
    from dct_gen import data

    spec = dict(PIPELINES["paper" if config == "lsun" else "tiny"])
    cfg = CONFIGS[config]
    spec.update(cfg=cfg["dct"], chunk_size=cfg["chunk_size"], overlap=cfg["overlap"])
    name = "paper" if config == "lsun" else f"jax_{config}"
    data_dir = build(name, spec, os.path.join("runs", "bench"))
    ds = data.make_dataset(data_dir, "train", batch_size=examples, chunk_size=cfg["chunk_size"],
                           overlap=cfg["overlap"], seed=0)  # fmt: skip
    batch = next(iter(ds))
    arrays = {k: batch[k].numpy() for k in KEYS}
    arrays["dct_image"] = arrays["dct_image"].astype(np.int16)  # |v| <= clip: fits; smaller file
    np.savez_compressed(path, **arrays)
    print(f"wrote {path}: {examples} examples of {config}")


def peak_flops(jax, jnp, seconds: float = 2.0) -> tuple[float, str]:
    on_cpu = jax.devices()[0].platform == "cpu"
    n, dtype = (4096, jnp.float32) if on_cpu else (8192, jnp.bfloat16)
    a = jnp.ones((n, n), dtype)
    step = jax.jit(lambda x: (x @ a) * (1.0 / n))
    x = step(a).block_until_ready()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        x = step(x)
        count += 1
    x.block_until_ready()
    elapsed = time.perf_counter() - start
    return 2 * n**3 * count / elapsed, f"{jnp.dtype(dtype).name} {n}^3 matmuls"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="lsun")
    parser.add_argument("--batch_file", required=True)
    parser.add_argument("--write_batch", type=int, default=0, help="write N examples and exit")
    parser.add_argument("--batch", type=int, default=32, help="examples per step (tiled)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--float32", action="store_true", help="no mixed bfloat16")
    args = parser.parse_args()
    if args.write_batch:
        write_batch(args.config, args.batch_file, args.write_batch)
        return

    # Keras reads its backend once, at import: set it first (nothing above imported Keras).
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import jax
    import jax.numpy as jnp
    import keras

    from dct_gen import model as model_lib

    if not args.float32:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    config = model_lib.ModelConfig(**CONFIGS[args.config])
    saved = dict(np.load(args.batch_file))
    reps = -(-args.batch // len(saved["channels"]))
    batch = {
        k: jnp.asarray(np.concatenate([v.astype(np.int32 if v.dtype == np.int16 else v.dtype)]
                                      * reps)[: args.batch])
        for k, v in saved.items()
    }  # fmt: skip
    model = model_lib.build_model(config)
    optimizer = keras.optimizers.Adam(1e-4)
    optimizer.build(model.trainable_variables)
    dct = config.dct
    inputs = {k: batch[k] for k in ("channels", "positions", "values", "dct_image")}

    def loss_fn(trainable, non_trainable):
        outputs, non_trainable = model.stateless_call(trainable, non_trainable, inputs,
                                                      training=True)  # fmt: skip
        return model_lib.compute_losses(outputs, batch, dct)["loss"], non_trainable

    @jax.jit
    def step(trainable, non_trainable, opt_vars):
        (loss, non_trainable), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            trainable, non_trainable
        )
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return loss, trainable, non_trainable, opt_vars

    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
    )
    start = time.perf_counter()
    loss, *state = step(*state)
    loss.block_until_ready()
    compile_s = time.perf_counter() - start
    for _ in range(2):
        loss, *state = step(*state)
    loss.block_until_ready()
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        loss, *state = step(*state)
        loss.block_until_ready()
        times.append(time.perf_counter() - t)
    step_s = float(np.median(times))
    tokens = float(np.asarray(batch["loss_mask"]).sum())
    peak, how = peak_flops(jax, jnp)
    flops = model_lib.flops_per_token(config)
    result = {
        "backend": "jax",
        "device": str(jax.devices()[0].device_kind),
        "config": args.config,
        "parameters": int(model.count_params()),
        "precision": "float32" if args.float32 else "mixed_bfloat16",
        "batch": args.batch,
        "window": config.chunk_size + config.overlap,
        "compile_s": round(compile_s, 1),
        "step_ms": round(1e3 * step_s, 2),
        "target_tokens_per_s": round(tokens / step_s),
        "model_tflops_per_s": round(flops * tokens / step_s / 1e12, 2),
        "peak_tflops_per_s": round(peak / 1e12, 1),
        "peak": how,
        "mfu": round(flops * tokens / step_s / peak, 4),
        "loss": float(loss),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
