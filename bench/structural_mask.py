"""What the structural logit mask does to held-out bits per subpixel: tiny.gin, mask on vs off.

    python bench/structural_mask.py [--steps 1500] [--train_images 400] [--root runs/bench]

Builds (once, cached under --root) a dataset with the Beam job in tiny.gin's representation:
training crops from eight of the photos bundled with scikit-image and scikit-learn, held-out
crops from two others. Then trains `gin/experiments/tiny.gin` twice with the same seed and data,
`model_config.structural_mask = True` and `= False`, each for --steps steps, and prints the exact
held-out bits per subpixel of both (total and per component, from each run's eval.jsonl) and
their difference. Runs use `python -m dct_gen.train`, so the figures are the training command's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dct_gen import photos  # noqa: E402
from dct_gen.representation import DCTConfig  # noqa: E402

HELD_OUT = ("china.jpg", "flower.jpg")
REPRESENTATION = DCTConfig(block_size=8, quality=75, resolution=64)  # tiny.gin's
COMPONENTS = ("bits_per_subpixel", "channel_bits_per_subpixel", "position_bits_per_subpixel",
              "value_bits_per_subpixel")  # fmt: skip


def build(root: str, train_images: int) -> str:
    from beam_jobs.pipeline import run_pipeline

    out = os.path.join(root, f"structural_mask_data_{train_images}")
    done = os.path.join(out, "COMPLETED")
    if os.path.exists(done) and "validation" in open(done).read().split():
        return out
    all_paths = photos.color_photo_paths()
    held = [p for p in all_paths if os.path.basename(p) in HELD_OUT]
    train = [p for p in all_paths if p not in held]
    for split, paths, count, seed in (("train", train, train_images, 0),
                                      ("validation", held, 40, 1)):  # fmt: skip
        folder = os.path.join(root, f"structural_mask_images_{train_images}", split)
        photos.write_crops(folder, count, seed=seed, sides=(48, 160), paths=paths, flip=True)
        run_pipeline(output_dir=out, cfg=REPRESENTATION, image_glob=f"{folder}/*.png",
                     split=split, num_shards=4, overwrite=True)  # fmt: skip
    return out


def train(data_dir: str, model_dir: str, mask: bool, steps: int) -> dict:
    command = [
        sys.executable, "-m", "dct_gen.train", "--gin_file", "experiments/tiny.gin",
        "--gin_param", f"model_config.structural_mask = {mask}",
        "--data_dir", data_dir, "--model_dir", model_dir, "--max_steps", str(steps),
        "--eval_split", "validation", "--eval_every", str(steps), "--log_every", "250",
        "--checkpoint_every", str(steps), "--seed", "0",
    ]  # fmt: skip
    subprocess.run(command, check=True, cwd=ROOT)
    with open(os.path.join(model_dir, "eval.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--train_images", type=int, default=400)
    parser.add_argument("--root", default=os.path.join(ROOT, "runs", "bench"))
    args = parser.parse_args()
    data_dir = build(args.root, args.train_images)
    results = {}
    for mask in (True, False):
        name = f"structural_mask_{'on' if mask else 'off'}_{args.steps}"
        model_dir = os.path.join(args.root, name)
        results[mask] = train(data_dir, model_dir, mask, args.steps)
    print(f"\nheld-out bits per subpixel after {args.steps} steps of tiny.gin "
          f"({int(results[True]['sequences'])} held-out crops)")  # fmt: skip
    print(f"{'':28} {'mask on':>9} {'mask off':>9} {'change':>8}")
    for key in COMPONENTS:
        on, off = results[True][key], results[False][key]
        print(f"{key:28} {on:9.4f} {off:9.4f} {100 * (on - off) / off:7.1f}%")
    print(json.dumps({"steps": args.steps, "mask_on": {k: results[True][k] for k in COMPONENTS},
                      "mask_off": {k: results[False][k] for k in COMPONENTS}}))  # fmt: skip


if __name__ == "__main__":
    main()
