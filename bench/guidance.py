"""Classifier-free guidance: how much it makes samples look like their class, and what it costs.

    python bench/guidance.py [--steps 1500] [--train_images 400] [--samples 16]
        [--scales 0,1,2,4] [--root runs/bench/guidance] [--quick]

The question: does guidance (logits = null + g * (conditional - null) at every channel,
position and value draw) make a class-conditional DCTransformer's samples more typical of their
class, and at what price per sampled element? Steps, each cached under --root so that a rerun
resumes:

1. Data: a two-class dataset of visually different groups of the bundled photos
   (`dct_gen.photos`): crops of the Hubble deep field (dark, sparse) and of the coffee cup
   (bright, warm), in folders named after them, converted by the Beam job with labels from
   the folders (`beam_jobs.pipeline.run_pipeline`) in tiny.gin's representation (long side 64,
   B = 8).
2. Model: `gin/experiments/tiny.gin`, class-conditional because the dataset is labelled (its
   classes come from info.json), with the default label dropout 0.1 (the null label is
   trained), trained by `dct_gen.training.train` for --steps steps.
3. Samples: for each guidance scale g (--scales; g = 1 is plain conditional sampling, one
   pass; g = 0 is unconditional), --samples samples of each class at temperature 1, top-p 1,
   the same seeds at every scale (`dct_gen.sampling.sample_batches`).
4. Class consistency, with the model as its own Bayes classifier: each sample drawn for class
   y is scored under both classes (`dct_gen.evaluation.score_sequences`, the exact
   log-likelihood, every chunk) and counts as consistent when log p(x | y) > log p(x | y').
   About 0.5 means the samples carry no class; g = 0 shows that baseline. Where that
   saturates, the margin says more: the mean of (log p(x | y) - log p(x | y')) per element,
   stop token included, in nats.
5. Cost: sampling seconds per sampled element at each scale (the sampler traced once before
   the clock starts), and its ratio to g = 1.

Prints a table (g, consistency per class and overall, margin, mean length, milliseconds per
element, cost against g = 1) and writes, under --root: results.json (every figure and the
settings) and samples_g{G}.png (a captioned grid per scale: a row per class).
--quick is a smoke test of the whole path (about 2 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dct_gen import photos, pictures  # noqa: E402

GIN_FILE = "experiments/tiny.gin"
# Two visually different groups (the folder names are the class names, in sorted order).
CLASSES = {"coffee": "coffee.png", "hubble_deep_field": "hubble_deep_field.jpg"}
QUICK = {"steps": 40, "train_images": 40, "samples": 4, "scales": "0,1,2"}


def build_data(out_dir: str, train_images: int) -> str:
    """The two-class dataset (cached: a COMPLETED dataset is reused)."""
    from beam_jobs.pipeline import run_pipeline
    from dct_gen import cli, configs

    data_dir = os.path.join(out_dir, "data")
    if os.path.exists(os.path.join(data_dir, "COMPLETED")):
        return data_dir
    by_file = {os.path.basename(p): p for p in photos.color_photo_paths()}
    images = os.path.join(out_dir, "images")
    for i, (name, file) in enumerate(sorted(CLASSES.items())):
        photos.write_crops(
            os.path.join(images, name),
            train_images // len(CLASSES),
            seed=i,
            sides=(64, 160),
            paths=[by_file[file]],
            flip=True,
        )
    cli.parse_gin([GIN_FILE], [])
    try:
        cfg = configs.dct_config()
    finally:
        import gin

        gin.clear_config()
    run_pipeline(
        output_dir=data_dir,
        cfg=cfg,
        image_glob=f"{images}/*/*.png",
        labels_from_dirs=True,
        split="train",
        num_shards=2,
    )
    return data_dir


def train(data_dir: str, model_dir: str, steps: int) -> None:
    """tiny.gin on the labelled dataset: class-conditional by the dataset's classes."""
    import gin

    from dct_gen import cli, configs, records, training

    cli.parse_gin([GIN_FILE], [])
    try:
        model_config, train_config = configs.configs_for_dataset(
            records.read_info(data_dir), "train", f"{data_dir}/info.json"
        )
    finally:
        gin.clear_config()
    training.train(
        model_config=model_config,
        train_config=train_config,
        data_dir=data_dir,
        model_dir=model_dir,
        max_steps=steps,
        log_every=max(steps // 10, 1),
        checkpoint_every=steps,
        sample_every=0,
    )


def measure(model_dir: str, scales: list[float], samples: int, out_dir: str) -> list[dict]:
    """Samples of each class at each scale, their class consistency and their cost."""
    import numpy as np

    from dct_gen import evaluation, run_dir, sampling

    run = run_dir.load_run(model_dir, log=lambda _: None)
    sampler = sampling.Sampler.from_run(run)
    names = sampler.label_names or [str(k) for k in range(run.model_config.num_classes)]
    num_classes = run.model_config.num_classes
    rows = []
    for g in scales:
        options = sampling.SampleOptions(guidance=g)
        # Trace the sampler for this path (guided or not) and batch before the clock starts.
        sampling.sample_batches(
            sampler, samples, options=options, seed=999, labels=0, batch_size=samples
        )
        drawn, seconds, elements = [], 0.0, 0
        for y in range(num_classes):
            start = time.perf_counter()
            out = sampling.sample_batches(
                sampler, samples, options=options, seed=1000 + y, labels=y, batch_size=samples
            )
            seconds += time.perf_counter() - start
            elements += sum(len(s) for s in out.sequences)
            drawn.append(out)
        consistent, margins = [], []
        for y, out in enumerate(drawn):
            nats = np.stack(
                [
                    [s["nats"] for s in evaluation.score_sequences(run, out.sequences, labels=k)]
                    for k in range(num_classes)
                ]
            )  # (classes, samples)
            others = np.delete(nats, y, axis=0).min(axis=0)
            consistent.append(float(np.mean(nats[y] < others)))
            # The margin per element (stop token included): how much likelier the own class is.
            lengths = np.array([len(s) + 1 for s in out.sequences])
            margins.append(float(np.mean((others - nats[y]) / lengths)))
        captions = [[names[y], f"g {g:g}"] for y in range(num_classes) for _ in range(samples)]
        grid = pictures.grid(
            [pictures.enlarge(im, 128) for out in drawn for im in out.images()],
            columns=samples,
            captions=captions,
        )
        pictures.save_png(grid, os.path.join(out_dir, f"samples_g{g:g}.png"))
        rows.append(
            {
                "guidance": g,
                "consistency": float(np.mean(consistent)),
                "consistency_by_class": dict(zip(names, consistent)),
                "margin_nats_per_element": float(np.mean(margins)),
                "mean_length": elements / (num_classes * samples),
                "seconds_per_element": seconds / max(elements, 1),
            }
        )
        print(f"g={g:g}: consistency {rows[-1]['consistency']:.3f}", flush=True)
    base = next((r["seconds_per_element"] for r in rows if r["guidance"] == 1.0), None)
    for r in rows:
        r["cost_vs_unguided"] = r["seconds_per_element"] / base if base else None
    return rows


def format_table(rows: list[dict], names: list[str]) -> str:
    head = ["g", *[f"consistent ({n})" for n in names], "consistent", "margin (nats / element)",
            "mean length", "ms / element", "cost vs g = 1"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for r in rows:
        cost = "-" if r["cost_vs_unguided"] is None else f"{r['cost_vs_unguided']:.2f}x"
        cells = [f"{r['guidance']:g}", *[f"{r['consistency_by_class'][n]:.2f}" for n in names],
                 f"{r['consistency']:.2f}", f"{r['margin_nats_per_element']:.3f}",
                 f"{r['mean_length']:.0f}",
                 f"{1000 * r['seconds_per_element']:.2f}", cost]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--steps", type=int, default=1500, help="training steps (default 1500)")
    p.add_argument("--train_images", type=int, default=400, help="crops, both classes (400)")
    p.add_argument("--samples", type=int, default=16, help="samples per class and scale (16)")
    p.add_argument("--scales", default="0,1,2,4", help="guidance scales (default 0,1,2,4)")
    p.add_argument("--root", default=os.path.join(ROOT, "runs", "bench", "guidance"))
    p.add_argument("--quick", action="store_true", help="a smoke test (about 2 minutes)")
    args = p.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    try:
        args.scale_list = [float(s) for s in args.scales.split(",")]
    except ValueError:
        p.error(f"--scales={args.scales}: expected numbers separated by commas")
    if any(not s >= 0 for s in args.scale_list):
        p.error(f"--scales={args.scales}: every scale must be >= 0")
    for name in ("steps", "train_images", "samples"):
        if getattr(args, name) < 1:
            p.error(f"--{name}={getattr(args, name)}: must be >= 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    tag = f"steps{args.steps}_images{args.train_images}"
    out_dir = os.path.join(args.root, tag)
    os.makedirs(out_dir, exist_ok=True)
    start = time.perf_counter()
    data_dir = build_data(out_dir, args.train_images)
    model_dir = os.path.join(out_dir, "run")
    train(data_dir, model_dir, args.steps)
    rows = measure(model_dir, args.scale_list, args.samples, out_dir)
    names = sorted(CLASSES)
    table = format_table(rows, names)
    results = {
        "settings": {k: v for k, v in vars(args).items() if k != "scale_list"},
        "classes": names,
        "rows": rows,
        "minutes": (time.perf_counter() - start) / 60,
    }
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(table)
    print(f"results: {os.path.join(out_dir, 'results.json')} ({results['minutes']:.1f} min)")


if __name__ == "__main__":
    main()
