"""Benchmark: training-step speed and memory of the DCTransformer, against its baselines.

    python bench/train.py [--steps 6] [--min_seconds 3] [--configs tiny,small] [--mixed_bfloat16]
        [--jit_compile]

Runs unchanged on this CPU and on a GPU. Three measurements, each against a baseline measured
in the same run, with a table and one JSON line per measurement:

1. Peak: the device's measured matmul rate, the denominator of model FLOP utilization (MFU):
   a chain of float32 2048^3 matmuls on a CPU, of bfloat16 8192^3 matmuls on a GPU.
2. Throughput, per config: target tokens per second (elements that carry loss) of a full train
   step (forward, loss, backward, Adam) on real batches from `dct_gen.data.make_dataset`, and
   MFU = `model.flops_per_token` x tokens/s / peak. Beside it, a plain single-decoder
   Transformer of the same width over the flattened sequence, three tokens (channel,
   position, value) per triple: the same encoder, cross-attention and heads, one decoder with
   all the blocks of the three stacked decoders (so about the same parameters), over windows
   three times longer. Both are reported per triple (one target triple = one token of the
   DCTransformer), with the ratio: the paper's case for stacked decoders (section 3.2).
3. Chunk position, per config: a step whose target chunk is the first of a long sequence
   against one whose chunk is its last full chunk, the same example repeated to fill a batch.
   The encoder always reads the G x G DCT image and the decoders a window of O + C elements,
   so time and memory should not depend on where the chunk sits (the paper's constant-cost
   claim). Time: the median of interleaved steps. Memory: the peak that TensorFlow's allocator
   holds during one step above what it held before (tf.config.experimental.get_memory_info):
   on a GPU in the same process; on a CPU in a child process that uses TF's BFC allocator
   (TF_CPU_ALLOCATOR_USE_BFC=true; the default CPU allocator keeps no statistics).

Each measurement times at least --steps steps and at least --min_seconds.

Configs (datasets are built by beam_jobs from crops of the bundled photos, cached under
runs/bench/, as bench/input_pipeline.py does):

- tiny:  gin/experiments/tiny.gin as it is (64 px, B = 8, d = 64, chunk 64 + 16), batch 8;
- small: tiny.gin at 128 px with d = 256 (4 heads of 64); encoder, channel, position and value
         stacks of 2, 2, 2 and 3 blocks of (1, 2); chunk 128 + 32, batch 4.

float32 by default (a CPU runs mixed_bfloat16 at float32 speed); --mixed_bfloat16 for a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import input_pipeline  # noqa: E402  (bench/input_pipeline.py: the cached photo-crop datasets)
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

from dct_gen import cli, configs, data, layers  # noqa: E402
from dct_gen import model as model_lib  # noqa: E402
from dct_gen.representation import DCTConfig  # noqa: E402

SMALL_PARAMS = [
    "dct_config.resolution = 128",
    "model_config.hidden_size = 256",
    "model_config.num_heads = 4",
    "model_config.key_size = 64",
    "model_config.encoder_spec = [(1, 2), (1, 2)]",
    "model_config.channel_spec = [(1, 2), (1, 2)]",
    "model_config.position_spec = [(1, 2), (1, 2)]",
    "model_config.value_spec = [(1, 2), (1, 2), (1, 2)]",
    "CHUNK_SIZE = 128",
    "OVERLAP = 32",
]

CONFIGS = {
    "tiny": dict(
        gin_files=["experiments/tiny.gin"],
        gin_params=[],
        batch_size=8,
        dataset="tiny",  # shared with bench/input_pipeline.py
        data=dict(
            cfg=DCTConfig(block_size=8, quality=75, resolution=64),
            crop=(48, 160),
            images=64,
        ),
    ),
    "small": dict(
        gin_files=["experiments/tiny.gin"],
        gin_params=SMALL_PARAMS,
        batch_size=4,
        dataset="train_small_128",
        data=dict(
            cfg=DCTConfig(block_size=8, quality=75, resolution=128),
            crop=(128, 512),
            images=32,
        ),
    ),
}

MODEL_KEYS = ("channels", "positions", "values", "dct_image")
BATCH_KEYS = MODEL_KEYS + ("loss_mask", "height", "width")


# ----------------------------------------------------------------------------------------------
# The baseline: one decoder over the flattened sequence (3 tokens per triple).


class Interleave(keras.layers.Layer):
    """(b, t, d) x 3 -> (b, 3t, d): c[0], p[0], v[0], c[1], ... (the flattened sequence)."""

    def call(self, inputs):
        c, p, v = inputs
        t, d = c.shape[1], c.shape[2]
        return ops.reshape(ops.stack([c, p, v], axis=2), (-1, 3 * t, d))


class TokenSlice(keras.layers.Layer):
    """(b, 3t, d) -> (b, t, d): every third token, starting at `index`."""

    def __init__(self, index, **kwargs):
        super().__init__(**kwargs)
        self.index = int(index)

    def call(self, x):
        t3, d = x.shape[1], x.shape[2]
        return ops.reshape(x, (-1, t3 // 3, 3, d))[:, :, self.index]


def build_flat_model(config: model_lib.ModelConfig) -> keras.Model:
    """A plain causal Transformer over 3 tokens per triple, as wide and deep as the model.

    Same encoder as `model.build_model`; the token stream is channel, position and value
    embeddings interleaved, shifted right by one token, plus a learned position embedding over
    the 3 (O + C) tokens; one decoder with the blocks of all three stacked decoders. Token
    3i + 0 predicts triple i's channel, 3i + 1 its position (having seen its channel), 3i + 2 its
    value (having seen both): the same conditionals and outputs as the DCTransformer, so
    `model.compute_losses` applies unchanged.
    """
    if config.num_classes:
        raise ValueError("the flat baseline is unconditional")
    dct, d, t = config.dct, config.hidden_size, config.window
    g = dct.grid
    common = dict(
        hidden_size=d,
        num_heads=config.num_heads,
        key_size=config.head_size,
        ffn_size=config.ffn_multiplier * d,
        dropout=config.dropout,
    )
    inputs = {
        name: keras.Input((t,), dtype="int32", name=name)
        for name in ("channels", "positions", "values")
    }
    inputs["dct_image"] = keras.Input((g, g, dct.stop_token), dtype="int32", name="dct_image")
    x = layers.DCTImageEmbedding(
        num_channels=dct.stop_token,
        clip=dct.clip,
        grid=g,
        hidden_size=d,
        kernel_size=config.kernel_size,
        stride=config.stride,
        value_dim=config.value_dim,
    )(inputs["dct_image"])
    x = keras.layers.Dropout(config.dropout)(x)
    memory = layers.TransformerStack(layer_spec=config.encoder_spec, final_norm=True, **common)(x)

    c = keras.layers.Embedding(dct.num_channels, d)(inputs["channels"])
    p = keras.layers.Embedding(dct.num_positions, d)(inputs["positions"])
    v = layers.OffsetEmbedding(dct.num_values, d, offset=dct.clip)(inputs["values"])
    e = layers.ShiftRight(d)(Interleave()([c, p, v]))  # (b, 3t, d)
    e = layers.ChunkPositionEmbedding(3 * t, d)(e)
    e = keras.layers.Dropout(config.dropout)(e)
    spec = config.channel_spec + config.position_spec + config.value_spec
    h = layers.TransformerStack(layer_spec=spec, decoder=True, **common)(e, memory)
    logits = (
        layers.OutputHead(dct.num_channels)(TokenSlice(0)(h)),
        layers.OutputHead(dct.num_positions)(TokenSlice(1)(h)),
        layers.OutputHead(dct.num_values)(TokenSlice(2)(h)),
    )
    if config.structural_mask:
        logits = model_lib.StructuralMask(dct.to_dict(), dtype="float32")(
            *logits, inputs["channels"], inputs["positions"]
        )
    outputs = dict(zip(model_lib.COMPONENTS, logits))
    return keras.Model(inputs=inputs, outputs=outputs, name="flat_transformer")


def flat_flops_per_triple(config: model_lib.ModelConfig) -> float:
    """Training FLOPs per target triple of `build_flat_model`, with `model.flops_per_token`'s
    counting: a window of 3 (O + C) tokens through one decoder holding every block."""
    flat = dataclasses.replace(
        config,
        chunk_size=3 * config.chunk_size,
        overlap=3 * config.overlap,
        channel_spec=config.channel_spec + config.position_spec + config.value_spec,
        position_spec=((0, 0),),
        value_spec=((0, 0),),
    )
    window = model_lib.flops_per_token(flat, training=False) * flat.chunk_size
    # flops_per_token puts all three heads on every token; here each head sees one token in 3.
    dct = config.dct
    vocab = dct.num_channels + dct.num_positions + dct.num_values
    window -= 2.0 * 2 * config.window * config.hidden_size * vocab
    return 3.0 * window / config.chunk_size


# ----------------------------------------------------------------------------------------------
# Device, configs, data, steps.


def gpu_present() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def measure_peak(gpu: bool) -> dict:
    """FLOP/s of a chain of large matmuls: bfloat16 8192^3 on a GPU, float32 2048^3 on a CPU."""
    n, reps, dtype = (8192, 20, tf.bfloat16) if gpu else (2048, 4, tf.float32)
    a = tf.cast(tf.random.stateless_normal((n, n), seed=[0, 1]), dtype)
    # Scaled so that the chain neither overflows nor vanishes.
    b = tf.cast(tf.random.stateless_normal((n, n), seed=[0, 2]) / np.sqrt(n), dtype)

    @tf.function
    def chain(x):
        for _ in range(reps):
            x = tf.matmul(x, b)
        return tf.reduce_sum(tf.cast(x[:1, :1], tf.float32))

    chain(a).numpy()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        chain(a).numpy()
        times.append(time.perf_counter() - start)
    return {
        "dtype": dtype.name,
        "matmul": f"{n}x{n}x{n}",
        "flops_per_s": 2.0 * n**3 * reps / min(times),
    }


def model_config(name: str) -> model_lib.ModelConfig:
    spec = CONFIGS[name]
    cli.parse_gin(spec["gin_files"], spec["gin_params"])
    return configs.model_config()


def dataset_dir(name: str, root: str) -> str:
    spec = CONFIGS[name]
    return input_pipeline.build(spec["dataset"], spec["data"], root)


def train_batches(config, data_dir: str, batch_size: int, count: int) -> list[dict]:
    ds = data.make_dataset(
        data_dir,
        "train",
        batch_size=batch_size,
        chunk_size=config.chunk_size,
        overlap=config.overlap,
        seed=0,
    )
    return [{k: b[k] for k in BATCH_KEYS} for b in ds.take(count)]


def chunk_batches(config, data_dir: str, batch_size: int) -> tuple[dict, dict, dict]:
    """The first and the last full chunk of the split's longest sequence, each repeated into a
    batch (eval mode cuts every chunk of every sequence in order)."""
    ds = data.make_dataset(
        data_dir,
        "train",
        mode="eval",
        batch_size=1,
        chunk_size=config.chunk_size,
        overlap=config.overlap,
        seed=0,
    )
    best, first, last = (-1, -1), None, None
    for example in ds:
        key = (int(example["length"][0]), -int(example["sequence_index"][0]))
        if key < best:
            continue
        if key > best:
            best, first, last = key, None, None
        full = int(example["loss_mask"].numpy().sum()) == config.chunk_size
        if int(example["chunk_index"][0]) == 0:
            first = example
        elif full:
            last = example
    if first is None or last is None:
        raise RuntimeError(f"{data_dir}: no sequence has two full chunks of {config.chunk_size}")
    info = {
        "length": best[0],
        "num_chunks": int(last["num_chunks"][0]),
        "start_chunk": 0,
        "late_chunk": int(last["chunk_index"][0]),
    }
    repeat = lambda ex: {k: tf.repeat(ex[k], batch_size, axis=0) for k in BATCH_KEYS}
    return repeat(first), repeat(last), info


def make_step(model, optimizer, dct: DCTConfig, jit_compile: bool):
    @tf.function(jit_compile=jit_compile)
    def step(batch):
        with tf.GradientTape() as tape:
            outputs = model_lib.forward(model, batch, training=True)
            loss = model_lib.compute_losses(outputs, batch, dct)["loss"]
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


def build_for_training(config, kind: str):
    keras.utils.set_random_seed(0)
    model = model_lib.build_model(config) if kind == "dctransformer" else build_flat_model(config)
    optimizer = keras.optimizers.Adam(1e-4)
    optimizer.build(model.trainable_variables)
    return model, optimizer


def tokens_of(batch: dict) -> int:
    return int(np.sum(batch["loss_mask"]))


def time_steps(step, batches: list[dict], steps: int, min_seconds: float) -> tuple[float, int]:
    """(seconds per step, steps timed) after two warm-up steps (tracing, compilation): rounds
    of `steps` steps until at least `min_seconds` have passed."""
    for i in range(2):
        step(batches[i % len(batches)]).numpy()
    start, done = time.perf_counter(), 0
    while True:
        for i in range(steps):
            loss = step(batches[(done + i) % len(batches)])
        value = float(loss.numpy())  # waits for the device
        done += steps
        elapsed = time.perf_counter() - start
        if not np.isfinite(value):
            raise FloatingPointError(f"the benchmark's loss is {value}")
        if elapsed >= min_seconds:
            return elapsed / done, done


# ----------------------------------------------------------------------------------------------
# Memory of one step.


def step_memory(step, batch: dict, device: str) -> dict:
    """Peak bytes TensorFlow's allocator on `device` held during one step (after a warm-up
    step), and that peak above what it held before the step."""
    step(batch).numpy()
    tf.config.experimental.reset_memory_stats(device)
    before = tf.config.experimental.get_memory_info(device)["current"]
    step(batch).numpy()
    peak = tf.config.experimental.get_memory_info(device)["peak"]
    return {"growth_bytes": peak - before, "peak_bytes": peak}


def cpu_step_memory(name: str, batches: dict, args, root: str) -> dict:
    """`step_memory` on the CPU for each batch, in a child process whose CPU allocator is TF's
    BFC allocator (TF_CPU_ALLOCATOR_USE_BFC=true), the one that keeps the statistics that
    get_memory_info reads; the timed steps keep the default allocator."""
    paths = []
    for tag, batch in batches.items():
        paths.append(os.path.join(root, f"train_{name}_{tag}.npz"))
        np.savez(paths[-1], **{k: np.asarray(v) for k, v in batch.items()})
    cmd = [sys.executable, os.path.abspath(__file__), "--configs", name]
    cmd += ["--memory_child", ",".join(f"{t}:{p}" for t, p in zip(batches, paths))]
    cmd += ["--jit_compile"] if args.jit_compile else []
    cmd += ["--mixed_bfloat16"] if args.mixed_bfloat16 else []
    env = {**os.environ, "TF_CPU_ALLOCATOR_USE_BFC": "true"}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def memory_child(name: str, spec: str, args) -> None:
    """Child of `cpu_step_memory`: prints {tag: step_memory} for each saved batch."""
    if os.environ.get("TF_CPU_ALLOCATOR_USE_BFC") != "true":
        raise RuntimeError("--memory_child needs TF_CPU_ALLOCATOR_USE_BFC=true")
    config = model_config(name)
    model, optimizer = build_for_training(config, "dctransformer")
    step = make_step(model, optimizer, config.dct, args.jit_compile)
    result = {}
    for item in spec.split(","):
        tag, path = item.split(":", 1)
        with np.load(path) as saved:
            batch = {k: tf.constant(saved[k]) for k in saved.files}
        result[tag] = step_memory(step, batch, "CPU:0")
    print(json.dumps(result))


# ----------------------------------------------------------------------------------------------
# The three measurements.


def throughput(name, config, batches, kind, args) -> dict:
    model, optimizer = build_for_training(config, kind)
    step = make_step(model, optimizer, config.dct, args.jit_compile)
    seconds, done = time_steps(step, batches, args.steps, args.min_seconds)
    tokens = statistics.mean(tokens_of(batches[i % len(batches)]) for i in range(done))
    if kind == "dctransformer":
        flops = model_lib.flops_per_token(config)
    else:
        flops = flat_flops_per_triple(config)
    result = {
        "measure": "throughput",
        "config": name,
        "model": kind,
        "parameters": int(model.count_params()),
        "batch": int(batches[0]["channels"].shape[0]),
        "window_triples": config.window,
        "sequence_tokens": config.window * (1 if kind == "dctransformer" else 3),
        "target_triples_per_step": tokens,
        "steps": done,
        "step_s": seconds,
        "triples_per_s": tokens / seconds,
        "sequence_tokens_per_s": tokens / seconds * (1 if kind == "dctransformer" else 3),
        "flops_per_triple": flops,
        "flops_per_s": flops * tokens / seconds,
    }
    return result, (model, optimizer, step)


def chunk_position(name, config, built, data_dir, args, root) -> dict:
    model, optimizer, step = built
    batch_size = CONFIGS[name]["batch_size"]
    start_batch, late_batch, info = chunk_batches(config, data_dir, batch_size)
    for b in (start_batch, late_batch):
        step(b).numpy()
    times = {"start": [], "late": []}
    # Interleaved, so that a change of load on the machine hits both alike.
    while not times["start"] or sum(times["start"] + times["late"]) < 2 * args.min_seconds:
        for _ in range(args.steps):
            for tag, b in (("start", start_batch), ("late", late_batch)):
                t0 = time.perf_counter()
                step(b).numpy()
                times[tag].append(time.perf_counter() - t0)
    pair = {"start": start_batch, "late": late_batch}
    if gpu_present():
        memory = {tag: step_memory(step, b, "GPU:0") for tag, b in pair.items()}
        method = "GPU:0 allocator, get_memory_info, peak during one step above its level before"
    else:
        memory = cpu_step_memory(name, pair, args, root)
        method = (
            "CPU:0 BFC allocator (TF_CPU_ALLOCATOR_USE_BFC, in a child process), "
            "get_memory_info, peak during one step above its level before"
        )
    start_s, late_s = statistics.median(times["start"]), statistics.median(times["late"])
    return {
        "measure": "chunk_position",
        "config": name,
        **info,
        "batch": batch_size,
        "steps": len(times["start"]),
        "start_step_s": start_s,
        "late_step_s": late_s,
        "time_ratio_late_over_start": late_s / start_s,
        "start_memory_bytes": memory["start"]["growth_bytes"],
        "late_memory_bytes": memory["late"]["growth_bytes"],
        "start_peak_bytes": memory["start"]["peak_bytes"],
        "late_peak_bytes": memory["late"]["peak_bytes"],
        "memory_ratio_late_over_start": (
            memory["late"]["growth_bytes"] / max(memory["start"]["growth_bytes"], 1)
        ),
        "memory_method": method,
    }


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--steps", type=int, default=6, help="Timed steps per measurement (at least)."
    )
    parser.add_argument(
        "--min_seconds", type=float, default=3.0, help="Time each measurement at least this long."
    )
    parser.add_argument("--configs", default="tiny,small", help=f"Of {sorted(CONFIGS)}.")
    parser.add_argument("--mixed_bfloat16", action="store_true", help="bfloat16 compute (GPU).")
    parser.add_argument("--jit_compile", action="store_true", help="XLA-compile the step.")
    parser.add_argument("--root", default=os.path.join("runs", "bench"), help="Dataset cache.")
    parser.add_argument("--memory_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps {args.steps}: must be at least 1")
    names = [n for n in args.configs.split(",") if n]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown or not names:
        parser.error(f"--configs {args.configs}: unknown {unknown}; known: {sorted(CONFIGS)}")
    if args.mixed_bfloat16:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    if args.memory_child:
        memory_child(names[0], args.memory_child, args)
        return
    os.makedirs(args.root, exist_ok=True)

    gpu = gpu_present()
    device = f"CPU x{os.cpu_count()}"
    if gpu:
        first = tf.config.list_physical_devices("GPU")[0]
        device = tf.config.experimental.get_device_details(first).get("device_name", first.name)
    peak = measure_peak(gpu)
    policy = keras.mixed_precision.global_policy().name
    print(f"device: {device}; step compute: {policy}; jit_compile: {args.jit_compile}")
    print(
        f"peak: {peak['dtype']} matmul {peak['matmul']}: {peak['flops_per_s'] / 1e9:,.1f} GFLOP/s"
    )
    print(json.dumps({"measure": "peak", "device": device, **peak}))

    rows = []
    for name in names:
        print(f"measuring {name} ...", flush=True)
        config = model_config(name)
        data_dir = dataset_dir(name, args.root)
        batches = train_batches(config, data_dir, CONFIGS[name]["batch_size"], min(args.steps, 4))
        dct_result, built = throughput(name, config, batches, "dctransformer", args)
        flat_result, _ = throughput(name, config, batches, "flat", args)
        ratio = dct_result["triples_per_s"] / flat_result["triples_per_s"]
        flops_ratio = flat_result["flops_per_triple"] / dct_result["flops_per_triple"]
        for r in (dct_result, flat_result):
            r["speedup_over_flat"] = ratio
            r["flops_ratio_flat_over_dctransformer"] = flops_ratio
        position = chunk_position(name, config, built, data_dir, args, args.root)
        rows.append((dct_result, flat_result, position))
        del built

    # The peak again: a busier machine at the start or at the end shows as a gap between the
    # two. MFU is against the higher one.
    peak_end = measure_peak(gpu)
    best = max(peak["flops_per_s"], peak_end["flops_per_s"])
    drift = peak_end["flops_per_s"] / peak["flops_per_s"]
    print(
        f"peak at the end: {peak_end['flops_per_s'] / 1e9:,.1f} GFLOP/s (end / start "
        f"{drift:.2f}); MFU is against {best / 1e9:,.1f}"
    )
    print(json.dumps({"measure": "peak_end", "device": device, **peak_end}))
    for dct_result, flat_result, position in rows:
        for r in (dct_result, flat_result):
            r["peak_flops_per_s"] = best
            r["mfu"] = r["flops_per_s"] / best
            print(json.dumps(r))
        print(json.dumps(position))

    print()
    print(
        "| config | model | params | batch x tokens | triples/step | step ms | triples/s | "
        "GFLOP/triple | GFLOP/s | MFU |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for dct_result, flat_result, _ in rows:
        for r in (dct_result, flat_result):
            label = {
                "dctransformer": "DCTransformer (3 decoders)",
                "flat": "flat (1 decoder, 3 tokens/triple)",
            }[r["model"]]
            print(
                f"| {r['config']} | {label} | {r['parameters'] / 1e6:.2f}M | "
                f"{r['batch']} x {r['sequence_tokens']} | {r['target_triples_per_step']:.0f} | "
                f"{r['step_s'] * 1e3:.0f} | {_fmt_rate(r['triples_per_s'])} | "
                f"{r['flops_per_triple'] / 1e9:.4f} | {r['flops_per_s'] / 1e9:.1f} | "
                f"{r['mfu']:.1%} |"
            )
        print(
            f"| {dct_result['config']} | ratio DCTransformer / flat | | | | | "
            f"**{dct_result['speedup_over_flat']:.2f}x** | "
            f"1 / {dct_result['flops_ratio_flat_over_dctransformer']:.2f} | | |"
        )
    print()
    print("| config | sequence length | chunks | chunk | step ms | step memory MiB | peak MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for _, _, p in rows:
        for tag in ("start", "late"):
            print(
                f"| {p['config']} | {p['length']} | {p['num_chunks']} | {p[f'{tag}_chunk']} | "
                f"{p[f'{tag}_step_s'] * 1e3:.0f} | {p[f'{tag}_memory_bytes'] / 2**20:.1f} | "
                f"{p[f'{tag}_peak_bytes'] / 2**20:.0f} |"
            )
        print(
            f"| {p['config']} | ratio late / start | | | "
            f"**{p['time_ratio_late_over_start']:.3f}** | "
            f"**{p['memory_ratio_late_over_start']:.3f}** | |"
        )
    if rows:
        print(f"step memory: {rows[0][2]['memory_method']}")


if __name__ == "__main__":
    main()
