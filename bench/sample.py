"""Benchmark: elements per second of cached sampling against a naive sampler; late-chunk cost.

    python bench/sample.py [--quick] [--batch_size 8] [--configs tiny,tiny_896,small_896]
        [--naive_steps 32] [--naive_seconds 30] [--repeats 3] [--max_seconds 60] [--no_xla]
        [--out runs/bench/sample.json]

Runs unchanged on this CPU and on a GPU. Per config, with the same model (random weights, see
below) and batch:

1. cached: `Sampler.sample_chunk` (`dct_gen.sampling`) over whole chunks: chunk 1 and chunk 10 of
   a long sequence, timed alternately (--repeats rounds at most, fewer once --max_seconds have
   passed; medians), after a warm-up call that traces (and compiles) on the same shapes with
   every image already done, so that it draws nothing. The sequence buffers hold the triples
   of the bundled photo with the most triples at the config's representation, repeated when
   it is too short (the cost does not depend on them); the state's `known` is the chunk's
   start, so each chunk prefills its overlap in one pass and draws C elements per image, as in
   unconditional sampling. Elements/s: the elements chunk 1 drew (all images) / its seconds.
2. naive: a sampler without key/value caches, with the same chunk structure. At every element
   step the three decoders run over the whole window (O + C elements) in full, with
   `Sampler.decode` over all W rows and empty caches, and the element's channel, position and
   value are drawn from its row, one after the other, exactly as the cached sampler draws
   them (structural mask, filtering, the same stateless keys). One tf.function per element
   step (static shapes); the chunk's encoder runs once, outside the timing, which favours the
   baseline. It is slow, so element steps of chunk 1 are timed (--naive_steps at most, fewer
   once --naive_seconds have passed), not whole chunks. Its draws are checked against the
   cached sampler's chunk 1 ("agree": the share of equal triples; float rounding may flip a
   rare draw).
3. cached XLA: as 1 with `Sampler(..., jit_compile=True)` (--no_xla skips it; an error is
   reported in place of the row).

Printed: the device, a speed table (elements/s, speed-up over naive; the target is at least
20x at a chunk of 896) and a constant-cost table (seconds per chunk at chunk 1 and at chunk 10,
and their ratio: the encoder reads the G x G DCT image and the decoders a window of O + C
elements wherever the chunk sits, so the ratio should be 1). The figures are wall time; beside
them, both tables give the same ratio by process CPU seconds (and the constant-cost table the
ratio of the fastest runs), which other work on a shared machine disturbs less. All figures go
to --out as JSON, with every run's wall and process CPU seconds.

Configs:

- tiny:      gin/experiments/tiny.gin (64 px, B = 8, d = 64, chunk 64 + overlap 16);
- tiny_896:  the same model at the paper's chunk 896 + overlap 128 (the chunk position table
             grows with the window);
- small_896: bench/train.py's small config (128 px, d = 256, 4 heads of 64; decoder stacks of
             2, 2 and 3 blocks) at chunk 896 + overlap 128.

Random weights are enough for speed, but a freshly built model samples nothing long: its ReZero
scalars are zero (every block an identity) and random channel draws quickly reach the last
channel, where the structural mask leaves only the stop token. So every block's ReZero scalars
are set to 0.5, the channel head's bias falls with the channel's rank in the ordering (the stop
token lowest of all) and the position head's with the position, so that draws walk through the
coefficients in small steps and no image stops: every chunk runs its C element steps.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_OUT = os.path.join(ROOT, "runs", "bench", "sample.json")

PAPER_CHUNK = ["CHUNK_SIZE = 896", "OVERLAP = 128"]
# base: "tiny" (gin/experiments/tiny.gin) or "small" (bench/train.py's small config).
CONFIGS = {
    "tiny": dict(base="tiny", params=[]),
    "tiny_896": dict(base="tiny", params=PAPER_CHUNK),
    "small_896": dict(base="small", params=PAPER_CHUNK),
}
TARGET_SPEEDUP = 20.0
TARGET_CHUNK = 896
FIRST_CHUNK, LATE_CHUNK = 1, 10
SEED = 1234

# The random model's settings (see the module docstring).
REZERO = 0.5
RANK_BIAS = 8.0  # channel head bias: -RANK_BIAS x rank in the ordering
STOP_BIAS = -30.0  # added to the stop token's bias
POSITION_BIAS = 0.5  # position head bias: -POSITION_BIAS x position

QUICK = {
    "configs": "tiny,tiny_896",
    "naive_steps": 8,
    "naive_seconds": 10.0,
    "repeats": 1,
    "max_seconds": 20.0,
}


# ----------------------------------------------------------------------------------------------
# Configs and models.


def _bench_train():
    """bench/train.py as a module (its small config); loaded on demand, never at import."""
    spec = importlib.util.spec_from_file_location("bench_train", os.path.join(HERE, "train.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def gin_setup(name: str) -> tuple[list[str], list[str]]:
    """The gin files and bindings of a config of CONFIGS."""
    spec = CONFIGS[name]
    if spec["base"] == "tiny":
        return ["experiments/tiny.gin"], list(spec["params"])
    small = _bench_train().CONFIGS["small"]
    return list(small["gin_files"]), list(small["gin_params"]) + list(spec["params"])


def build(name: str):
    """The model config and a random model that samples long sequences."""
    import keras
    import numpy as np

    from dct_gen import cli, configs, layers
    from dct_gen import model as model_lib
    from dct_gen import representation as rep

    cli.parse_gin(*gin_setup(name))
    model_config = configs.model_config()
    keras.utils.set_random_seed(SEED)
    model = model_lib.build_model(model_config)
    for layer in model.layers:
        if isinstance(layer, layers.TransformerStack):
            for block in layer.blocks:
                block.rezero.assign(np.full(block.rezero.shape, REZERO, np.float32))
    dct = model_config.dct
    rank = rep.channel_rank(dct.block_size, dct.ordering, dct.interval).astype(np.float32)
    bias = -RANK_BIAS * rank
    bias[dct.stop_token] += STOP_BIAS
    heads = model_lib.model_layers(model).heads
    heads["channel"].logits.bias.assign(bias)
    position_bias = -POSITION_BIAS * np.arange(dct.num_positions, dtype=np.float32)
    heads["position"].logits.bias.assign(position_bias)
    return model_config, model


def long_sequence(dct, length: int):
    """(channels, positions, values) int32 arrays of `length` triples: the bundled colour photo
    with the most triples at this representation, repeated when it is shorter; and a note."""
    import numpy as np

    from dct_gen import photos
    from dct_gen import representation as rep

    best, best_name = None, ""
    for path in photos.color_photo_paths():
        seq = rep.encode(rep.resize(photos.load_rgb(path), dct), dct)
        if best is None or len(seq) > len(best):
            best, best_name = seq, os.path.basename(path)
    times = math.ceil(length / len(best))
    arrays = [
        np.tile(np.asarray(t, np.int32), times)[:length]
        for t in (best.channels, best.positions, best.values)
    ]
    note = f"{best_name} ({len(best)} triples" + (f", repeated x{times})" if times > 1 else ")")
    return arrays, note


# ----------------------------------------------------------------------------------------------
# The naive baseline.


class NaiveSampler:
    """Samples element by element without caches: each step reruns the three decoders over the
    whole window (W = O + C elements) and reads the current element's row.

    step(j, window, memory, cross, label_vector, chunk_seed, temperature, top_p, top_k) draws
    the element at window index j into window (c, p, v), each (b, W) int32, and returns it.
    chunk_seed: the cached sampler's per-chunk key (the seed folded with the chunk index).
    """

    def __init__(self, sampler, jit_compile: bool = False):
        import tensorflow as tf

        self.sampler = sampler
        self.step = tf.function(self._step, jit_compile=jit_compile)

    def _step(self, j, window, memory, cross, label_vector, chunk_seed, temperature, top_p, top_k):
        import tensorflow as tf

        from dct_gen import sampling

        s = self.sampler
        w = s.window
        c_w, p_w, v_w = window
        b = tf.shape(c_w)[0]
        at_j = (tf.range(w) == j)[None, :]  # (1, W): the element's column
        prev_c = tf.where(j > 0, tf.gather(c_w, tf.maximum(j - 1, 0), axis=1), -1)
        prev_p = tf.where(j > 0, tf.gather(p_w, tf.maximum(j - 1, 0), axis=1), -1)
        empty = s.empty_caches(b)

        def draw(name, logits):
            key = tf.random.experimental.stateless_fold_in(
                chunk_seed, j * 3 + s.DECODERS.index(name)
            )
            filtered = sampling.filter_logits(logits, temperature, top_p, top_k)
            return tf.random.stateless_categorical(filtered, 1, key, dtype=tf.int32)[:, 0]

        def row(h):
            return tf.gather(h, j, axis=1)[:, None]  # (b, 1, d)

        # Channel: the whole window through the channel decoder.
        prev = [tf.pad(t[:, :-1], [[0, 0], [1, 0]]) for t in (c_w, p_w, v_w)]
        x = s.channel_input(prev, 0, w, label_vector)
        h, _ = s.decode("channel", x, empty["channel"], cross["channel"], 0)
        logits = s.heads["channel"](row(h))[:, 0]
        c = draw("channel", s.mask_logits("channel", logits, None, prev_c, prev_p))
        c_w = tf.where(at_j, c[:, None], c_w)

        # Position: the whole window again, with the element's channel in place.
        x = s.position_input(h, c_w)
        h, _ = s.decode("position", x, empty["position"], cross["position"], 0)
        logits = s.heads["position"](row(h))[:, 0]
        p = draw("position", s.mask_logits("position", logits, c, prev_c, prev_p))
        p_w = tf.where(at_j, p[:, None], p_w)

        # Value: and again, with its position in place.
        x = s.value_input(h, memory, p_w)
        h, _ = s.decode("value", x, empty["value"], cross["value"], 0)
        logits = s.heads["value"](row(h))[:, 0]
        v = draw("value", s.mask_logits("value", logits, c, prev_c, prev_p)) - s.dct.clip
        v_w = tf.where(at_j, v[:, None], v_w)
        return c_w, p_w, v_w


# ----------------------------------------------------------------------------------------------
# Measurements.


def device_name() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU: {details.get('device_name', gpus[0].name)} (x{len(gpus)})"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU: {model} ({cores} cores)"


def _draw_args():
    import tensorflow as tf

    seed = tf.constant([SEED, 0], tf.int64)
    # Plain sampling: temperature 1, no top-k or top-p (the defaults of SampleOptions).
    args = (tf.constant(1.0), tf.constant(1.0), tf.constant(0, tf.int32))
    return seed, args


def run_chunk(sampler, state, chunk: int) -> tuple[float, float, dict]:
    """Wall seconds and process CPU seconds of one `sample_chunk` call (outputs fetched), and
    its output state (numpy)."""
    import tensorflow as tf

    seed, args = _draw_args()
    start, cpu = time.perf_counter(), time.process_time()
    out = sampler.sample_chunk(state, tf.constant(chunk, tf.int32), seed, *args)
    out = {k: v.numpy() for k, v in out.items()}
    return time.perf_counter() - start, time.process_time() - cpu, out


def drawn(state, out, chunk: int, chunk_size: int) -> tuple[int, int]:
    """Elements that chunk `chunk` drew (all images, stop tokens included) and how many
    images stopped in it, from its input and output states."""
    import numpy as np

    start = state["base"].numpy() + chunk * chunk_size
    end = np.minimum(start + chunk_size, state["channels"].shape[1])
    stopped = ~state["done"].numpy() & (out["length"] < end)
    elements = np.where(stopped, out["length"] + 1, end) - np.maximum(start, state["known"].numpy())
    return int(np.maximum(elements, 0).sum()), int(stopped.sum())


def measure_cached(sampler, states: dict, chunk_size: int, args) -> tuple[dict, dict]:
    """Times the chunks of `states` ({chunk index: state}) alternately, --repeats times or
    until --max_seconds have passed (one round at least), after a warm-up on a state whose
    images are all done (same shapes: it traces and compiles, then draws nothing). Returns the
    figures and the first output of each chunk."""
    import tensorflow as tf

    first = min(states)
    idle = dict(states[first], done=tf.ones_like(states[first]["done"]))
    start = time.perf_counter()
    run_chunk(sampler, idle, first)
    warmup_s = time.perf_counter() - start
    times = {k: [] for k in states}
    cpu_times = {k: [] for k in states}
    outputs, elements, stopped = {}, {}, {}
    start = time.perf_counter()
    for _ in range(args.repeats):
        for k, state in states.items():
            seconds, cpu, out = run_chunk(sampler, state, k)
            times[k].append(seconds)
            cpu_times[k].append(cpu)
            outputs.setdefault(k, out)
            elements[k], stopped[k] = drawn(state, out, k, chunk_size)
        if time.perf_counter() - start > args.max_seconds:
            break
    late = max(states)
    median = {k: statistics.median(v) for k, v in times.items()}
    cpu = {k: statistics.median(v) for k, v in cpu_times.items()}
    result = {
        "warmup_s": warmup_s,
        "repeats": len(times[first]),
        "chunk_seconds": {str(k): v for k, v in times.items()},
        "chunk_first_s": median[first],
        "chunk_late_s": median[late],
        "late_over_first": median[late] / median[first],
        "late_over_first_min": min(times[late]) / min(times[first]),
        "chunk_cpu_seconds": {str(k): v for k, v in cpu_times.items()},
        "chunk_first_cpu_s": cpu[first],
        "chunk_late_cpu_s": cpu[late],
        "late_over_first_cpu": cpu[late] / cpu[first],
        "elements_per_chunk": elements[first],
        "elements_per_s": elements[first] / median[first],
        "elements_per_cpu_s": elements[first] / cpu[first],
        "stopped": {str(k): v for k, v in stopped.items()},
    }
    return result, outputs


def measure_naive(sampler, state, chunk: int, reference: dict, args) -> dict:
    """Times naive element steps of chunk `chunk` of `state` (its overlap known), up to
    --naive_steps or until --naive_seconds have passed, and compares the draws with
    `reference`, the cached sampler's output state of that chunk."""
    import numpy as np
    import tensorflow as tf

    from dct_gen import dct_ops

    naive = NaiveSampler(sampler)
    c, o, w = sampler.config.chunk_size, sampler.config.overlap, sampler.window
    batch = int(state["channels"].shape[0])
    buffers = [state[k] for k in ("channels", "positions", "values")]
    start = chunk * c  # base 0
    first = max(start - o, 0)
    dct_image = dct_ops.dct_image_from_triples(*buffers, sampler.dct, num_triples=start)
    memory, cross, label_vector = sampler.encode(dct_image, state["label"])
    seed, draw_args = _draw_args()
    chunk_seed = tf.random.experimental.stateless_fold_in(seed, tf.constant(chunk, tf.int32))
    window = tuple(t[:, first : first + w] for t in buffers)
    j0 = start - first

    def step(j, window):
        return naive.step(
            tf.constant(j), window, memory, cross, label_vector, chunk_seed, *draw_args
        )

    begin = time.perf_counter()
    step(j0, window)[0].numpy()  # trace
    trace_s = time.perf_counter() - begin
    steps = 0
    begin, cpu = time.perf_counter(), time.process_time()
    while steps < min(args.naive_steps, c) and (
        steps == 0 or time.perf_counter() - begin < args.naive_seconds
    ):
        window = step(j0 + steps, window)
        steps += 1
    window = [t.numpy() for t in window]
    seconds, cpu = time.perf_counter() - begin, time.process_time() - cpu
    cached = [reference[k][:, start : start + steps] for k in ("channels", "positions", "values")]
    same = np.all([a[:, j0 : j0 + steps] == b for a, b in zip(window, cached)], axis=0)
    return {
        "element_steps": steps,
        "seconds": seconds,
        "trace_s": trace_s,
        "elements_per_s": batch * steps / seconds,
        "cpu_seconds": cpu,
        "elements_per_cpu_s": batch * steps / cpu,
        "agree": float(same.mean()),
    }


def bench_config(name: str, args) -> dict:
    import numpy as np

    from dct_gen import sampling

    model_config, model = build(name)
    c, o, w = model_config.chunk_size, model_config.overlap, model_config.window
    batch = args.batch_size
    # Chunk LATE_CHUNK ends inside the buffer (a chunk that reaches its end finishes the image).
    capacity = (LATE_CHUNK + 1) * c + 1
    print(
        f"\n== {name}: {model_config.dct.resolution} px, d = {model_config.hidden_size}, chunk "
        f"{c} + overlap {o} (window {w}), batch {batch}, "
        f"{model.count_params() / 1e6:.2f}M parameters",
        flush=True,
    )
    (channels, positions, values), note = long_sequence(model_config.dct, LATE_CHUNK * c)
    longest = sampling.max_length(model_config.dct)
    if LATE_CHUNK * c >= longest:
        note += f"; chunk {LATE_CHUNK} lies past the longest possible sequence ({longest})"
    print(f"long sequence: {note}", flush=True)
    result = {
        "chunk_size": c,
        "overlap": o,
        "window": w,
        "batch_size": batch,
        "resolution": model_config.dct.resolution,
        "hidden_size": model_config.hidden_size,
        "parameters": int(model.count_params()),
        "sequence": note,
        "capacity": capacity,
    }

    sampler = sampling.Sampler(model, model_config)
    states = {}
    for k in (FIRST_CHUNK, LATE_CHUNK):
        known = k * c  # the chunk's start: its overlap is known, it draws C elements
        context = [
            np.broadcast_to(t[:known], (batch, known)) for t in (channels, positions, values)
        ]
        lengths = np.full([batch], known, np.int32)
        states[k] = sampler.initial_state(batch, capacity, context=(*context, lengths))

    kinds = [("cached", False)] + ([] if args.no_xla else [("cached_xla", True)])
    for kind, jit in kinds:
        try:
            if jit:
                sampler = sampling.Sampler(model, model_config, jit_compile=True)
            cached, outputs = measure_cached(sampler, states, c, args)
        except Exception as e:  # XLA may refuse an op on some device: report, go on
            result[kind] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
            print(f"{kind}: failed: {result[kind]['error']}", flush=True)
            continue
        result[kind] = cached
        stops = sum(cached["stopped"].values())
        print(
            f"{kind}: warm-up {cached['warmup_s']:.1f} s; {cached['repeats']} x chunk "
            f"{FIRST_CHUNK} and {LATE_CHUNK}: median {cached['chunk_first_s']:.2f} s and "
            f"{cached['chunk_late_s']:.2f} s ({cached['elements_per_chunk']} elements each); "
            f"{cached['elements_per_s']:,.0f} elements/s"
            + (f"; WARNING: {stops} images stopped" if stops else ""),
            flush=True,
        )
        if kind == "cached":
            naive = measure_naive(
                sampler, states[FIRST_CHUNK], FIRST_CHUNK, outputs[FIRST_CHUNK], args
            )
            result["naive"] = naive
            print(
                f"naive: {naive['element_steps']} element steps of chunk {FIRST_CHUNK} in "
                f"{naive['seconds']:.2f} s, {naive['elements_per_s']:,.1f} elements/s (agree "
                f"with cached: {naive['agree']:.0%})",
                flush=True,
            )
    for kind, _ in kinds:
        if "naive" in result and "error" not in result[kind]:
            for key, speed in (
                ("speedup", "elements_per_s"),
                ("speedup_cpu", "elements_per_cpu_s"),
            ):
                result[kind][key] = result[kind][speed] / result["naive"][speed]
    return result


# ----------------------------------------------------------------------------------------------
# Report.


def print_tables(results: dict, device: str, batch: int) -> list[str]:
    """Prints the speed and constant-cost tables; returns the target lines."""
    print(f"\ndevice: {device}; batch {batch}")
    print(
        "\nspeed: elements/s (all images of the batch, wall time); speed-up over naive by wall "
        "time and by process CPU time"
    )
    header = (
        f"{'config':<10} {'chunk+overlap':>13} {'sampler':<11} {'elements/s':>11} "
        f"{'speed-up':>9} {'CPU time':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        window = f"{r['chunk_size']}+{r['overlap']}"
        if "naive" in r:
            naive = r["naive"]["elements_per_s"]
            print(f"{name:<10} {window:>13} {'naive':<11} {naive:>11,.1f} {'1.0x':>9} {'1.0x':>9}")
        for kind in ("cached", "cached_xla"):
            if kind not in r:
                continue
            if "error" in r[kind]:
                print(f"{name:<10} {window:>13} {kind:<11} {'failed':>11}")
                continue
            x = r[kind]
            up, up_cpu = x.get("speedup", math.nan), x.get("speedup_cpu", math.nan)
            print(
                f"{name:<10} {window:>13} {kind:<11} {x['elements_per_s']:>11,.1f} "
                f"{up:>8.1f}x {up_cpu:>8.1f}x"
            )

    a, b = FIRST_CHUNK, LATE_CHUNK
    print(
        f"\nconstant cost: seconds per chunk at chunk {a} and chunk {b} (medians of n runs each), "
        "their ratio, the ratio of the fastest runs and that of the median process CPU seconds"
    )
    header = (
        f"{'config':<10} {'sampler':<11} {'n':>2} {f'chunk {a}':>9} {f'chunk {b}':>9} "
        f"{f'{b}/{a}':>6} {'fastest':>8} {'CPU time':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        for kind in ("cached", "cached_xla"):
            if kind in r and "error" not in r[kind]:
                x = r[kind]
                print(
                    f"{name:<10} {kind:<11} {x['repeats']:>2} {x['chunk_first_s']:>9.3f} "
                    f"{x['chunk_late_s']:>9.3f} {x['late_over_first']:>6.2f} "
                    f"{x['late_over_first_min']:>8.2f} {x['late_over_first_cpu']:>9.2f}"
                )

    lines = []
    for name, r in results.items():
        if r["chunk_size"] != TARGET_CHUNK:
            continue
        for kind in ("cached", "cached_xla"):
            if "speedup" in r.get(kind, {}):
                up = r[kind]["speedup"]
                verdict = "met" if up >= TARGET_SPEEDUP else "NOT met"
                lines.append(
                    f"target >= {TARGET_SPEEDUP:.0f}x at chunk {TARGET_CHUNK}: {name} {kind} "
                    f"{up:.1f}x ({verdict})"
                )
    print()
    for line in lines:
        print(line)
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"Of {list(CONFIGS)}.")
    parser.add_argument("--batch_size", type=int, default=8, help="Images sampled at once.")
    parser.add_argument(
        "--naive_steps", type=int, default=32, help="Naive element steps timed (at most)."
    )
    parser.add_argument(
        "--naive_seconds", type=float, default=30.0, help="Stop timing naive steps after this."
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="Timed runs of each of chunk 1 and chunk 10 (at most).",
    )
    parser.add_argument(
        "--max_seconds",
        type=float,
        default=60.0,
        help="Stop repeating the chunk timings after this (per sampler and config).",
    )
    parser.add_argument("--no_xla", action="store_true", help="Skip the jit_compile=True row.")
    parser.add_argument(
        "--quick", action="store_true", help=f"A short run: {QUICK} unless given explicitly."
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help="The JSON results.")
    args = parser.parse_args(argv)
    if args.quick:
        given = set(argv if argv is not None else sys.argv[1:])
        for key, value in QUICK.items():
            if not any(g == f"--{key}" or g.startswith(f"--{key}=") for g in given):
                setattr(args, key, value)
    names = [n for n in args.configs.split(",") if n]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown or not names:
        parser.error(f"--configs {args.configs}: unknown {unknown}; known: {list(CONFIGS)}")
    for flag in ("batch_size", "naive_steps", "naive_seconds", "repeats", "max_seconds"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} {getattr(args, flag)}: must be at least 1")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    device = device_name()
    print(f"device: {device}; TensorFlow {tf.__version__}", flush=True)
    start = time.perf_counter()
    results = {name: bench_config(name, args) for name in names}
    targets = print_tables(results, device, args.batch_size)
    total = time.perf_counter() - start
    print(f"total {total / 60:.1f} min")

    summary = {
        "device": device,
        "tensorflow": tf.__version__,
        "settings": {
            "batch_size": args.batch_size,
            "naive_steps": args.naive_steps,
            "naive_seconds": args.naive_seconds,
            "repeats": args.repeats,
            "max_seconds": args.max_seconds,
            "xla": not args.no_xla,
            "quick": args.quick,
            "chunks": [FIRST_CHUNK, LATE_CHUNK],
            "random_model": {
                "rezero": REZERO,
                "channel_rank_bias": RANK_BIAS,
                "stop_bias": STOP_BIAS,
                "position_bias": POSITION_BIAS,
            },
        },
        "configs": results,
        "targets": targets,
        "seconds": total,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
