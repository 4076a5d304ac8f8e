"""Images per second of the Beam dataset job, end to end, beside the codec's own rate.

    .venv/bin/python bench/beam.py [--copies 12] [--resolution 384] [--workers 1 2] [--out FILE]

The image set is the real photos bundled with scikit-image and scikit-learn, copied `--copies`
times under distinct names (so the job sees that many files). Rows:

- codec encode: `encode` alone on decoded arrays, in this process (one core);
- decode + encode + serialize: what one input costs in the job's DoFn, without Beam (one core);
- beam in-process: `run_pipeline` on the FnApiRunner in this process (one core);
- beam N worker(s): `run_pipeline` in the job's default local mode, multi-processing with N
  worker processes, wall time from the call to COMPLETED, worker start-up included.

The difference between the rows is Beam's overhead: planning, worker start-up, moving bytes
between stages, the shuffles that spread inputs and group shards, and writing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

# One BLAS thread in this process too (before numpy loads), as the job gives each worker: the
# rows then compare work per core.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from beam_jobs import pipeline  # noqa: E402
from dct_gen import images, photos, records  # noqa: E402
from dct_gen.representation import DCTConfig, encode  # noqa: E402


def make_image_set(root: str, copies: int) -> list[str]:
    paths = photos.color_photo_paths() + photos.gray_photo_paths()
    out = []
    for c in range(copies):
        folder = os.path.join(root, f"copy{c:03d}")
        os.makedirs(folder)
        for path in paths:
            dst = os.path.join(folder, os.path.basename(path))
            shutil.copy(path, dst)
            out.append(dst)
    return out


def per_image_rates(paths: list[str], cfg: DCTConfig) -> dict:
    originals = sorted(set(os.path.basename(p) for p in paths))
    by_name = {os.path.basename(p): p for p in paths}
    data = {n: open(by_name[n], "rb").read() for n in originals}
    arrays = {n: images.decode_image(d) for n, d in data.items()}
    encode(next(iter(arrays.values())), cfg)  # warm-up (tables, caches)
    reps = len(paths) // len(originals)
    t = time.perf_counter()
    for _ in range(reps):
        for a in arrays.values():
            encode(a, cfg)
    encode_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(reps):
        for n, d in data.items():
            seq = encode(images.decode_image(d), cfg)
            records.serialize_example(
                channels=seq.channels,
                positions=seq.positions,
                values=seq.values,
                height=seq.height,
                width=seq.width,
                key=n,
            )
    full_s = time.perf_counter() - t
    n = reps * len(originals)
    return {"codec encode": n / encode_s, "decode + encode + serialize": n / full_s}


def beam_rate(glob: str, n: int, cfg: DCTConfig, pipeline_args: list[str]) -> float:
    out = tempfile.mkdtemp(prefix="bench-beam-out-")
    try:
        t = time.perf_counter()
        entry = pipeline.run_pipeline(
            output_dir=out, cfg=cfg, image_glob=glob, num_shards=4, pipeline_args=pipeline_args
        )
        seconds = time.perf_counter() - t
    finally:
        shutil.rmtree(out, ignore_errors=True)
    assert entry["counts"]["written"] == n, entry["counts"]
    return n / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=12)
    parser.add_argument("--resolution", type=int, default=384)
    parser.add_argument("--block_size", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", help="Also write the figures as JSON here.")
    args = parser.parse_args()
    cfg = DCTConfig(block_size=args.block_size, quality=75, resolution=args.resolution)
    root = tempfile.mkdtemp(prefix="bench-beam-images-")
    try:
        paths = make_image_set(root, args.copies)
        glob = os.path.join(root, "*", "*")
        rates = per_image_rates(paths, cfg)
        rates["beam in-process"] = beam_rate(
            glob, len(paths), cfg, ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
        )
        for w in args.workers:
            rates[f"beam {w} worker{'s' if w > 1 else ''}"] = beam_rate(
                glob, len(paths), cfg, [f"--direct_num_workers={w}"]
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"{len(paths)} images ({len(paths) // args.copies} photos x {args.copies}), "
        f"resolution {cfg.resolution}, B = {cfg.block_size}, {os.cpu_count()} cores"
    )
    print("| what | images/s |\n| --- | --- |")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.1f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"images": len(paths), "cfg": cfg.to_dict(), "rates": rates}, f, indent=2)


if __name__ == "__main__":
    main()
