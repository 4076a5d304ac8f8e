"""Benchmark: batches per second of the training input pipeline (dct_gen.data) on this CPU.

    python bench/input_pipeline.py [--batches 30] [--configs tiny,paper]

Two configs, each on a dataset that beam_jobs builds from the photos bundled with scikit-image
and scikit-learn (cached under runs/bench/; nothing is downloaded):

- tiny:  resolution 64, block 8, quality 75, chunk 64 + overlap 16, batch 16;
- paper: the LSUN representation (resolution 384, block 8, quality 75), chunk 896 + overlap
         128, batch 32: dense 48x48x192 input images.

Each config builds its dataset once, runs 5 warm-up batches, then times `--batches` batches,
and prints batches/s, examples/s and target tokens/s (elements that carry loss), with a JSON
line per config. The baseline for these numbers is the training step they feed: the training
benchmark (bench/train.py, once the model exists) reports the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dct_gen import photos  # noqa: E402
from dct_gen.representation import DCTConfig  # noqa: E402

CONFIGS = {
    "tiny": dict(
        cfg=DCTConfig(block_size=8, quality=75, resolution=64),
        chunk_size=64,
        overlap=16,
        batch_size=16,
        crop=(48, 160),
        images=64,
    ),
    "paper": dict(
        cfg=DCTConfig(block_size=8, quality=75, resolution=384),
        chunk_size=896,
        overlap=128,
        batch_size=32,
        crop=(256, 420),
        images=64,
    ),
}


def build(name: str, spec: dict, root: str) -> str:
    """The config's dataset, built by beam_jobs from random photo crops (once)."""
    from beam_jobs.pipeline import run_pipeline

    out = os.path.join(root, f"input_pipeline_{name}")
    if os.path.exists(os.path.join(out, "COMPLETED")):
        return out
    folder = os.path.join(root, f"input_pipeline_{name}_images")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = photos.color_photo_paths()
    lo, hi = spec["crop"]
    for i in range(spec["images"]):
        image = photos.load_rgb(paths[i % len(paths)])
        side = int(rng.integers(lo, min(hi, *image.shape[:2])))
        y = int(rng.integers(0, image.shape[0] - side + 1))
        x = int(rng.integers(0, image.shape[1] - side + 1))
        Image.fromarray(image[y : y + side, x : x + side]).save(f"{folder}/{i:03d}.png")
    run_pipeline(
        output_dir=out, cfg=spec["cfg"], image_glob=f"{folder}/*.png", num_shards=4, overwrite=True
    )
    return out


def measure(data_dir: str, spec: dict, batches: int) -> dict:
    from dct_gen import data

    ds = data.make_dataset(
        data_dir,
        "train",
        batch_size=spec["batch_size"],
        chunk_size=spec["chunk_size"],
        overlap=spec["overlap"],
        seed=0,
    )
    it = iter(ds)
    for _ in range(5):
        next(it)
    tokens = 0
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
        tokens += int(batch["loss_mask"].numpy().sum())
    elapsed = time.perf_counter() - start
    return {
        "batches_per_s": batches / elapsed,
        "examples_per_s": batches * spec["batch_size"] / elapsed,
        "target_tokens_per_s": tokens / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--configs", default="tiny,paper")
    parser.add_argument("--root", default=os.path.join("runs", "bench"))
    args = parser.parse_args()
    names = [n for n in args.configs.split(",") if n]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        parser.error(f"--configs: unknown {unknown}; known: {sorted(CONFIGS)}")
    print(f"input pipeline on {os.cpu_count()} CPUs; {args.batches} timed batches per config")
    print(f"{'config':8} {'batch':>6} {'window':>7} {'batches/s':>10} {'examples/s':>11} "
          f"{'tokens/s':>10}")  # fmt: skip
    for name in names:
        spec = CONFIGS[name]
        result = measure(build(name, spec, args.root), spec, args.batches)
        window = spec["chunk_size"] + spec["overlap"]
        print(
            f"{name:8} {spec['batch_size']:6d} {window:7d} {result['batches_per_s']:10.2f} "
            f"{result['examples_per_s']:11.1f} {result['target_tokens_per_s']:10.0f}"
        )
        print(json.dumps({"config": name, **{k: round(v, 3) for k, v in result.items()}}))


if __name__ == "__main__":
    main()
