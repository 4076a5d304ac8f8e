"""The `make demo` job: the whole system on the real photos bundled with scikit-image and
scikit-learn (nothing is downloaded), in about ten minutes on two CPU cores.

Steps (each a function `(out_dir) -> list of written paths`, registered in `STEPS`):

- `stats`: Figure 3 on the colour photos (dense vs sparse DCT vs JPEG bits per subpixel).
- `progressive`: Figure 2g strips (decoded prefixes) for two photos, in both orderings.
- `roundtrip`: one photo encoded to .npz triples and decoded back to PNG.
- `data`: the Beam job builds the datasets: random 64-120 px crops of eight photos for
  training, the whole of the other two held out (`test`); the same again in the luma_first
  ordering for colorization.
- `train`: gin/experiments/tiny.gin on the crops (TensorBoard logs and sample grids).
- `train_colorize`: the tiny model in the luma_first ordering on chroma targets.
- `evaluate`: exact bits per subpixel on the held-out photos, beside the bits JPEG's optimized
  Huffman coding spends on the same quantized coefficients.
- `sample`: a grid of samples with heatmaps and progressive strips; 8x upsampling of the
  held-out photos at 8 x 8 pixels; colorization of a grey photo.
- `export`: the SavedModel, and samples drawn from it.

A step that finished leaves DONE_DIR/<step>; a second run skips it (training itself resumes
from its checkpoints), so `make demo` can be interrupted and rerun.

    python -m dct_gen.demo --out runs/demo [--steps data,train,...] [--redo]
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence

from absl import flags

from dct_gen import cli
from dct_gen.errors import UsageError

FLAGS = cli.flag_values()
flags.DEFINE_string("out", os.path.join("runs", "demo"), "Output directory.", flag_values=FLAGS)
flags.DEFINE_string(
    "steps",
    "stats,progressive,roundtrip,data,train,train_colorize,evaluate,sample,export",
    "Comma-separated steps to run, in order.",
    flag_values=FLAGS,
)
flags.DEFINE_bool("redo", False, "Rerun steps already done.", flag_values=FLAGS)

QUALITIES = (10, 25, 50, 75, 90, 95)
PROGRESSIVE_PHOTOS = ("astronaut.png", "chelsea.png")


def _photos(names: Sequence[str]) -> list[str]:
    from dct_gen import photos

    by_name = {os.path.basename(p): p for p in photos.color_photo_paths()}
    return [by_name[n] for n in names if n in by_name]


def step_stats(out_dir: str) -> list[str]:
    """Figure 3 over every bundled colour photo, each at its own size."""
    from dct_gen import codec_files, photos

    result = codec_files.run_stats(
        photos.color_photo_paths(), os.path.join(out_dir, "stats"), qualities=QUALITIES
    )
    return list(result["files"].values())


def step_progressive(out_dir: str) -> list[str]:
    """Figure 2g strips: eight prefixes, each twice the length of the one before."""
    from dct_gen import codec_files

    written = []
    for path in _photos(PROGRESSIVE_PHOTOS):
        stem = os.path.splitext(os.path.basename(path))[0]
        for ordering in ("interleaved", "luma_first"):
            out = os.path.join(out_dir, "progressive", f"{stem}_{ordering}.png")
            codec_files.progressive_file(
                path, out, steps=8, spacing="geometric", panel_size=256, ordering=ordering
            )
            written.append(out)
    return written


def step_roundtrip(out_dir: str) -> list[str]:
    """One photo to triples (.npz) and back (.png)."""
    from dct_gen import codec_files

    npz_dir = os.path.join(out_dir, "roundtrip")
    records = codec_files.encode_files(_photos(PROGRESSIVE_PHOTOS[:1]), npz_dir, quality=75)
    decoded = [codec_files.decode_file(r["out"])["out"] for r in records]
    return [r["out"] for r in records] + decoded


# ----------------------------------------------------------------------------------------------
# The model: data, training, evaluation, sampling, export.

GIN = "experiments/tiny.gin"
TRAIN_STEPS = 1500
COLORIZE_STEPS = 600
HELD_OUT = ("chelsea.png", "coffee.png")


def _dirs(out_dir: str) -> dict[str, str]:
    return {
        "data": os.path.join(out_dir, "data"),
        "data_luma_first": os.path.join(out_dir, "data_luma_first"),
        "run": os.path.join(out_dir, "run"),
        "run_colorize": os.path.join(out_dir, "run_colorize"),
        "images": os.path.join(out_dir, "images"),
    }


def _configs(params: Sequence[str] = ()):
    import gin

    from dct_gen import cli, configs

    cli.parse_gin([GIN], list(params))
    try:
        return configs.dct_config(), configs.model_config(), configs.train_config()
    finally:
        gin.clear_config()


LUMA_FIRST = ("dct_config.ordering = 'luma_first'", "train_config.target_part = 'chroma'")


def step_data(out_dir: str) -> list[str]:
    """Beam: crops of eight photos for training, two whole photos held out; both orderings."""
    from beam_jobs.pipeline import run_pipeline
    from dct_gen import photos, pictures

    d = _dirs(out_dir)
    all_paths = photos.color_photo_paths()
    held = [p for p in all_paths if os.path.basename(p) in HELD_OUT]
    train_paths = [p for p in all_paths if p not in held]
    crops = os.path.join(d["images"], "train")
    photos.write_crops(crops, 480, seed=0, sides=(64, 120), paths=train_paths, flip=True)
    test = os.path.join(d["images"], "test")
    os.makedirs(test, exist_ok=True)
    for path in held:
        pictures.save_png(photos.load_rgb(path), os.path.join(test, os.path.basename(path)))
    written = []
    for key, params in (("data", ()), ("data_luma_first", LUMA_FIRST[:1])):
        cfg, _, _ = _configs(params)
        for split, folder in (("train", crops), ("test", test)):
            run_pipeline(
                output_dir=d[key],
                cfg=cfg,
                image_glob=f"{folder}/*.png",
                split=split,
                num_shards=2,
                overwrite=True,
            )
        written.append(os.path.join(d[key], "info.json"))
    return written


def _train(out_dir: str, key: str, data_key: str, params, steps: int, **kwargs) -> list[str]:
    from dct_gen import training

    d = _dirs(out_dir)
    dct, model_config, train_config = _configs(params)
    result = training.train(
        model_config=model_config,
        dct_config=dct,
        train_config=train_config,
        data_dir=d[data_key],
        model_dir=d[key],
        max_steps=steps,
        eval_split="test",
        eval_every=500,
        log_every=100,
        checkpoint_every=250,
        **kwargs,
    )
    print(f"   {result.stopped} at step {result.step}", flush=True)
    return [os.path.join(d[key], name) for name in ("metrics.jsonl", "eval.jsonl", "train")]


def step_train(out_dir: str) -> list[str]:
    """tiny.gin on the crops: about 4 minutes; TensorBoard sample grids every 500 steps."""
    return _train(out_dir, "run", "data", (), TRAIN_STEPS, sample_every=500, sample_max_chunks=40)


def step_train_colorize(out_dir: str) -> list[str]:
    """The tiny model in the luma_first ordering, trained on chroma targets only."""
    return _train(out_dir, "run_colorize", "data_luma_first", LUMA_FIRST, COLORIZE_STEPS)


HELD_OUT_SPLIT = "test"  # the dataset split of the held-out photos (images/test)


def headline(result: dict) -> str | None:
    """The demo's one-line result from an evaluation.json: the model's bits per subpixel on
    the held-out photos against JPEG's on the same coefficients (None without both)."""
    images = result.get("images") or {}
    if images.get("jpeg_bits_per_subpixel") is None:
        return None
    return (
        f"Held-out photos: {images['bits_per_subpixel']:.4f} bits per subpixel (model, step "
        f"{images['step']}; channel {images['channel_bits_per_subpixel']:.4f}, position "
        f"{images['position_bits_per_subpixel']:.4f}, value "
        f"{images['value_bits_per_subpixel']:.4f}) against {images['jpeg_bits_per_subpixel']:.4f}"
        f" (optimized JPEG, same coefficients): {100 * images['saving_vs_jpeg']:+.1f}%"
    )


def step_evaluate(out_dir: str) -> list[str]:
    """Exact bits per subpixel on the held-out photos against optimized JPEG's entropy coding
    of the same coefficients (and JPEG XL's recompression of that JPEG, when imagecodecs is
    installed): `python -m dct_gen.evaluate`'s evaluation.json."""
    from dct_gen import evaluation

    d = _dirs(out_dir)
    path = os.path.join(out_dir, "evaluation.json")
    result = evaluation.run_evaluation(
        model_dir=d["run"],
        data_dir=d["data"],
        split=HELD_OUT_SPLIT,
        images=os.path.join(d["images"], "test"),
        out=path,
        log=lambda line: print("\n".join("   " + part for part in line.split("\n")), flush=True),
    )
    line = headline(result)
    if line:
        print("   " + line, flush=True)
    return [path]


def step_sample(out_dir: str) -> list[str]:
    """Samples with heatmaps, 8x upsampling of the held-out photos, colorization."""
    import numpy as np
    from PIL import Image

    from dct_gen import photos

    d = _dirs(out_dir)
    out = os.path.join(out_dir, "samples")
    held = [os.path.join(d["images"], "test", name) for name in HELD_OUT]
    low = []
    for path in held:  # 8 x 8 pixel versions of the held-out photos
        image = photos.load_rgb(path)
        side = min(image.shape[:2])
        square = image[:side, :side]
        small = np.asarray(Image.fromarray(square).resize((8, 8), Image.Resampling.LANCZOS))
        target = os.path.join(out, "inputs", "low_" + os.path.basename(path))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        Image.fromarray(small).save(target)
        low.append(target)
    grey = os.path.join(out, "inputs", "grey_" + os.path.basename(held[0]))
    Image.fromarray(photos.load_rgb(held[0])).convert("L").save(grey)
    written = []
    generated = _samples(d["run"], out, "generate", num_samples=16, max_chunks=40, top_p=0.9)
    written += generated["grid"] + generated["heatmap_grid"]
    for task, run, inputs in (("upsample", d["run"], low), ("colorize", d["run_colorize"], [grey])):
        files = _samples(run, out, task, images=inputs, num_samples=3)
        written += files["grid"] + files["comparisons"] + files["heatmap_grid"]
    return written


def _samples(
    model_dir: str, out: str, task: str, *, images=(), num_samples: int, **options
) -> dict[str, list[str]]:
    """Samples of one task from a run, written under out (what `python -m dct_gen.sample`
    does)."""
    from dct_gen import images as images_lib
    from dct_gen import run_dir, sampling

    run = run_dir.load_run(model_dir, mixed_precision=False, log=lambda _: None)
    sampler = sampling.Sampler.from_run(run)
    options.setdefault("max_chunks", sampling.default_max_chunks(run.model_config))
    inputs = [images_lib.read_image(path) for path in images]
    samples = sampling.sample_task(
        sampler,
        task,
        num_samples=num_samples,
        images=inputs,
        options=sampling.SampleOptions(**options),
        seed=0,
    )
    return sampling.write_task(samples, out, task, inputs)


def step_export(out_dir: str) -> list[str]:
    """The SavedModel (sample, log_prob, upsample), and four samples drawn from it."""
    from dct_gen import sampling, saved_model

    d = _dirs(out_dir)
    saved = os.path.join(out_dir, "saved_model")
    saved_model.export_run(d["run"], saved)
    out = os.path.join(out_dir, "samples_saved_model")
    source = sampling.SavedModelSource(saved)
    samples = sampling.sample_task(source, "generate", num_samples=4, seed=1)
    files = sampling.write_task(samples, out, "generate")
    return [saved] + files["grid"]


STEPS: dict[str, Callable[[str], list[str]]] = {
    "stats": step_stats,
    "progressive": step_progressive,
    "roundtrip": step_roundtrip,
    "data": step_data,
    "train": step_train,
    "train_colorize": step_train_colorize,
    "evaluate": step_evaluate,
    "sample": step_sample,
    "export": step_export,
}
DONE_DIR = ".done"


def run(
    out_dir: str, steps: Sequence[str] = tuple(STEPS), redo: bool = False
) -> dict[str, list[str]]:
    """Runs the named steps in order, skipping those already done (unless redo); returns the
    files each wrote (or wrote before)."""
    import json

    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise ValueError(f"unknown steps {unknown}; known: {list(STEPS)}")
    done_dir = os.path.join(out_dir, DONE_DIR)
    os.makedirs(done_dir, exist_ok=True)
    written = {}
    for name in steps:
        marker = os.path.join(done_dir, name)
        if os.path.exists(marker) and not redo:
            with open(marker) as f:
                written[name] = json.load(f)
            print(f"== {name}: already done (delete {marker} or pass --redo to rerun)")
            continue
        summary = (STEPS[name].__doc__ or "").strip().split("\n")[0]
        print(f"== {name}: {summary}", flush=True)
        start = time.perf_counter()
        written[name] = STEPS[name](out_dir)
        with open(marker, "w") as f:
            json.dump(written[name], f)
        print(f"== {name}: done in {time.perf_counter() - start:.1f} s\n", flush=True)
    return written


def _main(args: list[str]) -> int:
    cli.no_positional(args)
    steps = [s.strip() for s in FLAGS.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise UsageError(f"--steps: unknown steps {unknown}; known: {','.join(STEPS)}")
    out = FLAGS.out
    written = run(out, steps, redo=FLAGS.redo)
    print(f"Demo outputs under {os.path.abspath(out)}:")
    for name, paths in written.items():
        for path in paths:
            print(f"  [{name}] {path}")
    evaluation = os.path.join(out, "evaluation.json")
    if "evaluate" in written and os.path.exists(evaluation):
        import json

        with open(evaluation) as f:
            line = headline(json.load(f))
        if line:
            print(line)
    if "sample" in written:
        print(f"Samples: {os.path.join(out, 'samples', 'sample_grid.png')}")
    if "train" in written:
        print(f"Watch the run: tensorboard --logdir {_dirs(out)['run']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, FLAGS, argv, prog="dct_gen.demo", doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
