"""Held-out bits per subpixel of three model sizes against optimized JPEG on the same coefficients.

    python bench/quality.py [--minutes 10,15,30 | --steps N,N,N] [--widths 64,128,256]
        [--crop 128] [--quality 75] [--train_images 2000] [--heldout_images 100]
        [--root runs/bench/quality] [--quick]

The question: is a trained DCTransformer a better entropy coder of the sparse DCT representation
than JPEG's Huffman coding of the same quantized coefficients? (Context-model recompressors of
JPEG files such as Lepton and packJPG save 20-23%; the target here is at least 25% fewer bits
on held-out photos.) Steps, each cached under --root so that a rerun resumes:

1. Data: square crops of one side (--crop) of the photos bundled with scikit-image and
   scikit-learn (`dct_gen.photos`), written as PNGs and converted by the Beam job
   (`beam_jobs.pipeline.run_pipeline`) in tiny.gin's representation (long side 64, B = 8;
   --quality, default 75). Training crops come from eight photos (mirrored about half the
   time), held-out crops from two others (`structural_mask.HELD_OUT`: china.jpg, flower.jpg), as
   in `bench/structural_mask.py`. Every crop is resized to the same size, so means over images
   and pooled sums agree.
2. JPEG: `dct_gen.jpeg_baseline.jpeg_bits` of every held-out *record* (the very triples the model
   is scored on), written into a 4:2:0 JPEG with per-image optimized Huffman tables. Headline:
   the entropy-coded scan data, Huffman tables not charged (about the least JPEG's Huffman
   coding can spend; see that module); the scan plus the tables is reported too, and Pillow's
   own JPEG of the same crops as a cross-check.
3. Models: `gin/experiments/tiny.gin` at three widths (--widths: hidden size d, 4 heads of d / 4;
   the layer specs stay tiny.gin's), trained by `dct_gen.training.train` for --steps steps each, or
   for about --minutes minutes each: a short timing run per width converts minutes to steps
   once, and the plan is saved (plan.json), so that a rerun trains the same runs to the same
   length and resumes from their checkpoints.
4. Evaluation: the exact held-out bits per subpixel from the end of each run (`eval.jsonl`,
   `dct_gen.training.evaluate`: mean over sequences, stop token included), split into channel,
   position and value.

Prints a table (model, parameters, steps, minutes of wall time in `train` including start-up and
evaluation, bits per subpixel total / channel / position / value, JPEG, saving against JPEG:
1 - model / JPEG) and writes, under --root/<settings>/: results.json (every
figure, per-image JPEG results, the plan, the settings), scaling.png (bits per subpixel against
parameters, log scale, with the JPEG lines and the -25% target: a small Figure 9 of the paper),
and the datasets and runs. --quick is a smoke test of the whole path (about 3 minutes).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dct_gen import jpeg_baseline, photos, pictures, plots  # noqa: E402
from dct_gen.representation import DCTConfig  # noqa: E402


def _held_out_photos() -> tuple[str, ...]:
    """The held-out photos of bench/structural_mask.py, so both benchmarks split alike."""
    path = os.path.join(ROOT, "bench", "structural_mask.py")
    spec = importlib.util.spec_from_file_location("bench_structural_mask", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tuple(module.HELD_OUT)


HELD_OUT = _held_out_photos()

GIN_FILE = "experiments/tiny.gin"
NUM_HEADS = 4
COMPONENTS = ("channel", "position", "value")
TARGET_SAVING = 0.25
PER_IMAGE_KEYS = ("key", "length", "height", "width", "entropy_bits", "extra_bits",
                  "table_bits", "scan_bits", "file_bits")  # fmt: skip
QUICK = {
    "minutes": "0.15,0.15,0.15",
    "steps": None,
    "timing_steps": 20,
    "widths": "32,64,128",
    "train_images": 48,
    "heldout_images": 12,
}


# ----------------------------------------------------------------------------------------------
# Settings and data.


def settings_tag(args: argparse.Namespace) -> str:
    """The folder name that identifies a dataset and its JPEG baseline."""
    return (
        f"crop{args.crop}_q{args.quality}_r{args.resolution}_train{args.train_images}"
        f"_heldout{args.heldout_images}"
    )


def representation(args: argparse.Namespace) -> DCTConfig:
    return DCTConfig(block_size=8, quality=args.quality, resolution=args.resolution)


def build_data(out_dir: str, args: argparse.Namespace) -> str:
    """Writes the crops and converts them with the Beam job, once (COMPLETED lists both)."""
    from beam_jobs.pipeline import run_pipeline

    data_dir = os.path.join(out_dir, "data")
    done = os.path.join(data_dir, "COMPLETED")
    if os.path.exists(done):
        with open(done) as f:
            if {"train", "validation"} <= set(f.read().split()):
                return data_dir
    all_paths = photos.color_photo_paths()
    held = [p for p in all_paths if os.path.basename(p) in HELD_OUT]
    train = [p for p in all_paths if p not in held]
    if len(held) != len(HELD_OUT) or not train:
        raise FileNotFoundError(f"bundled photos missing: found {all_paths}")
    side = (args.crop, args.crop + 1)
    for split, paths, count, seed, flip in (
        ("train", train, args.train_images, 0, True),
        ("validation", held, args.heldout_images, 1, False),
    ):
        folder = os.path.join(out_dir, "images", split)
        photos.write_crops(folder, count, seed=seed, sides=side, paths=paths, flip=flip)
        run_pipeline(output_dir=data_dir, cfg=representation(args), image_glob=f"{folder}/*.png",
                     split=split, num_shards=4, overwrite=True)  # fmt: skip
    return data_dir


def read_split(data_dir: str, split: str) -> list:
    """The split's records as DCTSequences (with their keys), in shard order."""
    import tensorflow as tf

    from dct_gen import records
    from dct_gen.representation import DCTSequence

    out = []
    ds = tf.data.TFRecordDataset(records.split_files(data_dir, split)).map(records.parse_example)
    for r in ds:
        seq = DCTSequence(r["channels"].numpy(), r["positions"].numpy(), r["values"].numpy(),
                          int(r["height"]), int(r["width"]))  # fmt: skip
        out.append((r["key"].numpy().decode(), seq))
    return out


def jpeg_baseline_of(data_dir: str, out_dir: str, cfg: DCTConfig) -> dict:
    """JPEG's bits on every held-out record (and Pillow's on the held-out PNGs), summarized."""
    from dct_gen import images

    per_image = []
    for key, seq in read_split(data_dir, "validation"):
        r = jpeg_baseline.jpeg_bits(seq, cfg)
        per_image.append({"key": key, "length": len(seq), **r})
    folder = os.path.join(out_dir, "images", "validation")
    pillow = [
        jpeg_baseline.pillow_jpeg_bits(images.read_image(os.path.join(folder, name)), cfg)
        for name in sorted(os.listdir(folder))
        if name.endswith(".png")
    ]
    return {
        "coefficients": jpeg_baseline.summarize(per_image),
        "pillow": jpeg_baseline.summarize(pillow),
        "per_image": [{k: r[k] for k in PER_IMAGE_KEYS} for r in per_image],
    }


# ----------------------------------------------------------------------------------------------
# Models.


def gin_params(width: int, args: argparse.Namespace) -> list[str]:
    if width % NUM_HEADS:
        raise ValueError(f"width {width} is not a multiple of {NUM_HEADS} heads")
    return [
        f"dct_config.quality = {args.quality}",
        f"dct_config.resolution = {args.resolution}",
        f"model_config.hidden_size = {width}",
        f"model_config.num_heads = {NUM_HEADS}",
        f"model_config.key_size = {width // NUM_HEADS}",
        *args.gin_param,
    ]


def configs_for(width: int, args: argparse.Namespace):
    from dct_gen import cli, configs

    cli.parse_gin([GIN_FILE], gin_params(width, args))
    return configs.dct_config(), configs.model_config(), configs.train_config()


def parameters(width: int, args: argparse.Namespace) -> int:
    from dct_gen import model as model_lib

    return int(model_lib.count_parameters(configs_for(width, args)[1]))


def run_training(width: int, steps: int, data_dir: str, model_dir: str, args, **kw):
    """dct_gen.training.train on tiny.gin at this width; returns (TrainResult, seconds)."""
    import keras

    from dct_gen import training

    dct, model_config, train_config = configs_for(width, args)
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "bench_gin_params.json"), "w") as f:
        json.dump({"gin_file": GIN_FILE, "gin_params": gin_params(width, args)}, f, indent=1)
    keras.backend.clear_session()
    start = time.perf_counter()
    result = training.train(
        model_config=model_config, dct_config=dct, train_config=train_config, data_dir=data_dir,
        model_dir=model_dir, max_steps=steps, seed=args.seed, **kw,
    )  # fmt: skip
    # Wall time summed over every invocation that trained this run (resumed runs add up).
    path = os.path.join(model_dir, "bench_seconds.json")
    seconds = time.perf_counter() - start if result.stopped != "already_done" else 0.0
    if os.path.exists(path):
        with open(path) as f:
            seconds += json.load(f)["seconds"]
    with open(path, "w") as f:
        json.dump({"seconds": seconds}, f)
    return result, seconds


def seconds_per_step(width: int, data_dir: str, out_dir: str, args) -> float:
    """Times a short run at this width (after its compilation): the median step time."""
    stamps = []
    model_dir = os.path.join(out_dir, "timing", f"d{width}_{time.time_ns()}")
    run_training(width, args.timing_steps, data_dir, model_dir, args, log_every=10**9,
                 checkpoint_every=10**9,
                 step_callback=lambda step, m: stamps.append(time.perf_counter()))  # fmt: skip
    shutil.rmtree(model_dir, ignore_errors=True)
    gaps = [b - a for a, b in zip(stamps[10:], stamps[11:])]  # the first steps compile
    return statistics.median(gaps)


def make_plan(widths: list[int], data_dir: str, out_dir: str, args) -> dict:
    """Steps per width: --steps as given, else --minutes converted with a timing run (saved)."""
    if args.steps:
        steps = [int(s) for s in args.steps.split(",")]
        if len(steps) != len(widths):
            raise SystemExit(f"--steps has {len(steps)} entries for {len(widths)} widths")
        return {"widths": widths, "steps": steps, "source": "--steps"}
    minutes = [float(m) for m in args.minutes.split(",")]
    if len(minutes) != len(widths):
        raise SystemExit(f"--minutes has {len(minutes)} entries for {len(widths)} widths")
    path = os.path.join(out_dir, "plan.json")
    key = {"widths": widths, "minutes": minutes, "gin_param": list(args.gin_param)}
    if os.path.exists(path):
        with open(path) as f:
            plan = json.load(f)
        if all(plan.get(k) == v for k, v in key.items()):
            print(f"plan from {path}: steps {plan['steps']}")
            return plan
        raise SystemExit(
            f"{path} was made for { ({k: plan.get(k) for k in key}) }, not {key}: delete it (and "
            "the runs it planned) or pass --steps"
        )
    plan = dict(key, steps=[], seconds_per_step=[], source="--minutes")
    for width, budget in zip(widths, minutes):
        rate = seconds_per_step(width, data_dir, out_dir, args)
        # 90% of the budget for steps; the rest covers start-up, checkpoints and evaluation.
        steps = int(0.9 * budget * 60 / rate)
        steps = max(10, steps // 50 * 50 if steps >= 500 else steps // 10 * 10)
        plan["steps"].append(steps)
        plan["seconds_per_step"].append(rate)
        print(f"d = {width}: {1000 * rate:.0f} ms per step -> {steps} steps in {budget:g} min")
    with open(path, "w") as f:
        json.dump(plan, f, indent=1)
    return plan


def final_eval(model_dir: str, steps: int) -> dict:
    path = os.path.join(model_dir, "eval.jsonl")
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    done = [r for r in records if r["step"] == steps and not r.get("partial")]
    if not done:
        raise RuntimeError(f"{path} has no complete evaluation at step {steps}")
    return done[-1]


# ----------------------------------------------------------------------------------------------
# Report.


def saving(model_bpsp: float, jpeg_bpsp: float) -> float:
    """The model's saving against JPEG, as a fraction of JPEG's bits (positive: fewer bits)."""
    return 1.0 - model_bpsp / jpeg_bpsp


def format_table(rows: list[dict], jpeg: dict) -> str:
    j = jpeg["coefficients"]
    head = ("| model | params | steps | minutes | bpsp | channel | position | value | JPEG bpsp "
            "| saving | JPEG + tables | saving |")  # fmt: skip
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        lines.append(
            f"| d = {r['width']} | {r['parameters']:,} | {r['steps']} | {r['minutes']:.1f} "
            f"| {r['bits_per_subpixel']:.4f} | {r['channel_bits_per_subpixel']:.4f} "
            f"| {r['position_bits_per_subpixel']:.4f} | {r['value_bits_per_subpixel']:.4f} "
            f"| {j['bits_per_subpixel']:.4f} | {100 * r['saving']:.1f}% "
            f"| {j['scan_and_table_bits_per_subpixel']:.4f} "
            f"| {100 * r['saving_with_tables']:.1f}% |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], jpeg: dict, title: str, size=(760, 500)):
    """Bits per subpixel against parameters (log x), JPEG's two figures and the target as
    lines (`dct_gen.plots.scaling_plot`); an RGB uint8 array."""
    j = jpeg["coefficients"]
    references = {
        "JPEG + Huffman tables": j["scan_and_table_bits_per_subpixel"],
        "JPEG (optimized Huffman, tables free)": j["bits_per_subpixel"],
        f"{100 * TARGET_SAVING:.0f}% below JPEG": (1 - TARGET_SAVING) * j["bits_per_subpixel"],
    }
    models = [
        {"parameters": r["parameters"], "bits_per_subpixel": r["bits_per_subpixel"],
         "label": f"d={r['width']}"}
        for r in rows
    ]  # fmt: skip
    return plots.scaling_plot(models, references, title, size=size)


# ----------------------------------------------------------------------------------------------
# Entry point.


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", default="64,128,256", help="hidden sizes of the 3 models")
    parser.add_argument("--minutes", default="10,15,30", help="training minutes per model")
    parser.add_argument("--steps", default=None, help="steps per model (overrides --minutes)")
    parser.add_argument("--crop", type=int, default=128, help="side of the square photo crops")
    parser.add_argument("--quality", type=int, default=75)
    parser.add_argument("--resolution", type=int, default=64, help="tiny.gin's long side")
    parser.add_argument("--train_images", type=int, default=2000)
    parser.add_argument("--heldout_images", type=int, default=100)
    parser.add_argument("--timing_steps", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gin_param", action="append", default=[],
                        help="extra gin binding for every model (repeatable)")  # fmt: skip
    parser.add_argument("--root", default=os.path.join(ROOT, "runs", "bench", "quality"))
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: tiny data and models, 30 steps each")  # fmt: skip
    args = parser.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
        args.root = os.path.join(args.root, "quick")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    widths = [int(w) for w in args.widths.split(",")]
    cfg = representation(args)
    tag = settings_tag(args)
    out_dir = os.path.join(args.root, tag)
    os.makedirs(out_dir, exist_ok=True)

    start = time.perf_counter()
    data_dir = build_data(out_dir, args)
    print(f"data: {data_dir} ({time.perf_counter() - start:.0f} s)")
    jpeg = jpeg_baseline_of(data_dir, out_dir, cfg)
    j = jpeg["coefficients"]
    print(f"JPEG on {j['images']} held-out images: {j['bits_per_subpixel']:.4f} bits per "
          f"subpixel (entropy-coded scan), {j['scan_and_table_bits_per_subpixel']:.4f} with the "
          f"Huffman tables, {j['file_bits_per_subpixel']:.4f} the whole file; Pillow's JPEG of "
          f"the same crops {jpeg['pillow']['bits_per_subpixel']:.4f}. Of the scan: Huffman "
          f"codes {j['huffman_bits_per_subpixel']:.4f}, appended sign and low bits "
          f"{j['extra_bits_per_subpixel']:.4f}")  # fmt: skip

    plan = make_plan(widths, data_dir, out_dir, args)
    rows = []
    for width, steps in zip(widths, plan["steps"]):
        model_dir = os.path.join(out_dir, "runs", f"d{width}_steps{steps}")
        result, seconds = run_training(
            width, steps, data_dir, model_dir, args, eval_split="validation", eval_every=steps,
            log_every=max(10, steps // 20), checkpoint_every=max(50, steps // 10),
            keep_checkpoints=2,
        )  # fmt: skip
        if result.stopped == "sigterm":
            raise SystemExit("stopped by SIGTERM: run the same command again to resume")
        evaluation = final_eval(model_dir, steps)
        if int(evaluation["sequences"]) != j["images"]:
            raise RuntimeError(f"evaluated {evaluation['sequences']} sequences, JPEG {j['images']}")
        row = {"width": width, "parameters": parameters(width, args), "steps": steps,
               "minutes": seconds / 60, "stopped": result.stopped, "model_dir": model_dir,
               "gin_params": gin_params(width, args)}  # fmt: skip
        for key in ("bits_per_subpixel",) + tuple(f"{c}_bits_per_subpixel" for c in COMPONENTS):
            row[key] = evaluation[key]
        row["saving"] = saving(row["bits_per_subpixel"], j["bits_per_subpixel"])
        row["saving_with_tables"] = saving(
            row["bits_per_subpixel"], j["scan_and_table_bits_per_subpixel"]
        )
        rows.append(row)

    title = (f"held-out {args.crop}px crops -> {args.resolution}px, q {args.quality}: "
             f"{j['images']} images")  # fmt: skip
    table = format_table(rows, jpeg)
    print(f"\n{title}\n\n{table}\n")
    best = min(rows, key=lambda r: r["bits_per_subpixel"])
    verdict = "met" if best["saving"] >= TARGET_SAVING else "not met"
    print(f"best: d = {best['width']}, {100 * best['saving']:.1f}% fewer bits than JPEG's "
          f"entropy-coded scan (target {100 * TARGET_SAVING:.0f}%: {verdict}); "
          f"{100 * best['saving_with_tables']:.1f}% fewer than the scan and its Huffman "
          "tables")  # fmt: skip
    results = {
        "settings": {k: v for k, v in vars(args).items()},
        "representation": cfg.to_dict(),
        "plan": plan,
        "models": rows,
        "jpeg": jpeg,
        "target_saving": TARGET_SAVING,
        "best_saving": best["saving"],
        "target_met": best["saving"] >= TARGET_SAVING,
        "seconds": time.perf_counter() - start,
    }
    path = os.path.join(out_dir, "results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    png = os.path.join(out_dir, "scaling.png")
    pictures.save_png(plot(rows, jpeg, title), png)
    print(f"wrote {path}\nwrote {png}")


if __name__ == "__main__":
    main()
