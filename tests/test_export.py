"""A trained run (the test config, on records of real photo crops) through the sampling command
line and the SavedModel export; the SavedModel is then loaded in a fresh Python process that
never imports dct_gen, where it samples, scores a sequence exactly as training evaluation does,
and names the argument of each bad input."""

import json
import os
import subprocess
import sys
import textwrap

import gin
import numpy as np
import pytest
import tensorflow as tf

from beam_jobs.build_dataset import run_pipeline
from dct_gen import configs, export, photos, records, run_dir, sample, train

GIN = "experiments/test.gin"
# A trained run and a SavedModel export take about two minutes: `make test-slow`.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("export"))
    configs.parse([GIN])
    try:
        dct, model_config, train_config = (
            configs.dct_config(),
            configs.model_config(),
            configs.train_config(),
        )
    finally:
        gin.clear_config()
    data_dir = os.path.join(tmp, "data")
    for split, count, seed in (("train", 12, 0), ("one", 1, 5)):
        images = os.path.join(tmp, split)
        photos.write_crops(images, count, seed=seed)
        run_pipeline(output_dir=data_dir, cfg=dct, image_glob=f"{images}/*.png", split=split)
    model_dir = os.path.join(tmp, "run")
    train.train(
        model_config=model_config,
        dct_config=dct,
        train_config=train_config,
        data_dir=data_dir,
        model_dir=model_dir,
        max_steps=20,
        eval_split="one",
        eval_every=20,
        peak_flops=1e11,
        log=lambda _: None,
    )
    return tmp, data_dir, model_dir, model_config, train_config


def test_a_run_loads_from_its_config_json(tmp_path, run):
    _, _, model_dir, model_config, train_config = run
    assert not os.path.exists(os.path.join(model_dir, run_dir.OPERATIVE_CONFIG_FILE))
    loaded = run_dir.load_run(model_dir, mixed_precision=False, log=lambda _: None)
    assert (loaded.model_config, loaded.train_config, loaded.step) == (
        model_config,
        train_config,
        20,
    )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_dir.load_run(str(tmp_path / "missing"))


def test_sample_command_line_on_a_trained_run(run, capsys):
    tmp, _, model_dir, _, _ = run
    out = os.path.join(tmp, "samples")
    argv = ["--model_dir", model_dir, "--num_samples", "3", "--seed", "4", "--out", out]
    argv += ["--max_chunks", "4", "--quiet", "--top_p", "0.95"]
    assert sample.main(argv) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["samples"] == 3
    for i in range(3):
        for suffix in (".png", ".npz", "_heatmap.png", "_progressive.png"):
            assert os.path.exists(os.path.join(out, f"sample_{i:03d}{suffix}"))
    assert os.path.exists(os.path.join(out, "sample_grid.png"))
    first = open(os.path.join(out, "sample_000.png"), "rb").read()
    assert sample.main(argv) == 0  # same seed, same images
    assert open(os.path.join(out, "sample_000.png"), "rb").read() == first

    # Upsampling a low-resolution photo, two samples.
    low = os.path.join(tmp, "low.png")
    from PIL import Image

    Image.fromarray(photos.load_rgb(photos.color_photo_paths()[0])[::64, ::64]).save(low)
    up = os.path.join(tmp, "up")
    argv = ["upsample", low, "--model_dir", model_dir, "--num_samples", "2", "--out", up]
    assert sample.main(argv + ["--max_chunks", "2", "--quiet"]) == 0
    assert os.path.exists(os.path.join(up, "upsample_000_comparison.png"))
    summary = json.load(open(os.path.join(up, "upsample.json")))
    assert all(s["context_triples"] > 0 for s in summary["samples"])

    # Bad input is named.
    assert sample.main(["--model_dir", os.path.join(tmp, "nope")]) == 2
    assert "nope" in capsys.readouterr().err
    argv = ["colorize", low, "--model_dir", model_dir, "--quiet", "--out", up]
    assert sample.main(argv) == 2
    assert "luma_first" in capsys.readouterr().err
    assert sample.main(["--model_dir", model_dir, "--num_samples", "0"]) == 2
    assert "--num_samples" in capsys.readouterr().err


FRESH = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    path, seq_file = sys.argv[1], sys.argv[2]
    m = tf.saved_model.load(path)
    out = {"signatures": sorted(m.signatures.keys())}
    s = m.signatures["sample"](
        num_samples=tf.constant(2), label=tf.constant(-1), temperature=tf.constant(1.0),
        top_p=tf.constant(1.0), seed=tf.constant(3, tf.int64))
    again = m.signatures["sample"](
        num_samples=tf.constant(2), label=tf.constant(-1), temperature=tf.constant(1.0),
        top_p=tf.constant(1.0), seed=tf.constant(3, tf.int64))
    out["sample_shapes"] = {k: v.shape.as_list() for k, v in s.items()}
    out["lengths"] = s["lengths"].numpy().tolist()
    out["same_seed_same_images"] = bool(np.array_equal(s["images"], again["images"]))
    seq = np.load(seq_file)
    lp = m.signatures["log_prob"](
        channels=tf.constant(seq["channels"]), positions=tf.constant(seq["positions"]),
        values=tf.constant(seq["values"]), height=tf.constant(int(seq["height"])),
        width=tf.constant(int(seq["width"])))
    out["log_prob"] = {k: float(v) for k, v in lp.items()}
    img = np.asarray(np.random.default_rng(0).integers(0, 256, (3, 4, 3)), np.uint8)
    up = m.signatures["upsample"](image=tf.constant(img), seed=tf.constant(1, tf.int64))
    n = int(up["context_length"])
    out["upsample"] = {"context_length": n, "length": int(up["lengths"][0]),
                       "height": int(up["heights"][0]), "width": int(up["widths"][0])}
    errors = {}
    bad = {
        "num_samples_zero": ("sample", dict(num_samples=tf.constant(0), label=tf.constant(-1))),
        "num_samples_cap": ("sample", dict(num_samples=tf.constant(10**6), label=tf.constant(-1))),
        "label": ("sample", dict(num_samples=tf.constant(1), label=tf.constant(7))),
        "image": ("upsample", dict(image=tf.zeros([4, 4, 2], tf.uint8))),
        "positions": ("log_prob", dict(positions=tf.constant(seq["positions"][:-1]))),
    }
    for name, (sig, kwargs) in bad.items():
        args = dict(temperature=tf.constant(1.0), top_p=tf.constant(1.0)) if sig == "sample" else {}
        if sig == "log_prob":
            args = dict(channels=tf.constant(seq["channels"]), values=tf.constant(seq["values"]),
                        height=tf.constant(int(seq["height"])),
                        width=tf.constant(int(seq["width"])))
        else:
            args["seed"] = tf.constant(0, tf.int64)
        args.update(kwargs)
        try:
            m.signatures[sig](**args)
            errors[name] = None
        except tf.errors.InvalidArgumentError as e:
            errors[name] = e.message
    out["errors"] = errors
    out["dct_gen_imported"] = any(k.startswith("dct_gen") for k in sys.modules)
    print(json.dumps(out))
    """
)


def test_saved_model_in_a_fresh_process(run):
    tmp, data_dir, model_dir, model_config, train_config = run
    saved = os.path.join(tmp, "saved_model")
    assert export.main(["--model_dir", model_dir, "--out", saved, "--max_chunks", "6"]) == 0

    # The training run's own evaluation of the one-image split (eval.jsonl, step 20).
    with open(os.path.join(model_dir, run_dir.EVAL_FILE)) as f:
        results = json.loads(f.read().strip().splitlines()[-1])
    assert results["step"] == 20 and results["sequences"] == 1
    (raw,) = list(tf.data.TFRecordDataset(records.split_files(data_dir, "one")))
    seq = {k: v.numpy() for k, v in records.parse_example(raw).items() if k != "key"}
    seq_file = os.path.join(tmp, "seq.npz")
    np.savez(seq_file, **seq)

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", FRESH, saved, seq_file],
        capture_output=True,
        text=True,
        cwd=tmp,  # not the repository: dct_gen cannot be imported by accident
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not out["dct_gen_imported"]
    assert out["signatures"] == ["log_prob", "sample", "upsample"]
    r = model_config.dct.resolution
    assert out["sample_shapes"]["images"] == [2, r, r, 3]
    assert out["same_seed_same_images"]
    for name in ("", "channel_", "position_", "value_"):
        key = f"{name}bits_per_subpixel"
        np.testing.assert_allclose(out["log_prob"][key], results[key], rtol=1e-4)
    assert out["upsample"]["length"] >= out["upsample"]["context_length"] > 0
    errors = out["errors"]
    assert "num_samples: must be >= 1" in errors["num_samples_zero"]
    assert "num_samples: at most" in errors["num_samples_cap"]
    assert "label:" in errors["label"]
    assert "image:" in errors["image"]
    assert "positions:" in errors["positions"]

    # The sampling command line reads the SavedModel too.
    out_dir = os.path.join(tmp, "from_saved")
    argv = ["--saved_model", saved, "--num_samples", "2", "--out", out_dir, "--quiet"]
    assert sample.main(argv) == 0
    assert os.path.exists(os.path.join(out_dir, "sample_grid.png"))


def test_colorize_signature_keeps_the_luma(tmp_path, gray_photo):
    import dataclasses
    import sys as _sys

    _sys.path.insert(0, os.path.dirname(__file__))
    from test_model import build, small_config

    config = small_config()
    config = dataclasses.replace(config, dct=dataclasses.replace(config.dct, ordering="luma_first"))
    model = build(config)
    saved = str(tmp_path / "colorize")
    names = export.export(model, config, saved, target_part="chroma", max_chunks=3)
    assert names == ["colorize", "log_prob", "sample"]
    loaded = tf.saved_model.load(saved)
    cfg = config.dct
    # A grey image already at the model's size: the in-graph context is the numpy codec's (the
    # in-graph Lanczos resize differs from Pillow's, so larger inputs give other contexts).
    context, grey = sample.colorization_context(gray_photo, cfg)
    out = loaded.signatures["colorize"](
        image=tf.constant(grey[:, :, :1]), seed=tf.constant(0, tf.int64)
    )
    n = int(out["context_length"])
    length = int(out["lengths"][0])
    triples = [out[k][0, :length].numpy() for k in ("channels", "positions", "values")]
    assert n == len(context) and np.all(triples[0][n:] >= cfg.channels_per_plane)
    np.testing.assert_array_equal(triples[0][:n], context.channels)
    np.testing.assert_array_equal(triples[1][:n], context.positions)
    # Float summation order: a rare coefficient on a rounding edge moves by one step.
    assert np.abs(triples[2][:n] - context.values).max() <= 1
    assert (int(out["heights"][0]), int(out["widths"][0])) == (context.height, context.width)
    big = loaded.signatures["colorize"](
        image=tf.constant(gray_photo[:, :, None]), seed=tf.constant(0, tf.int64)
    )
    assert int(big["heights"][0]) == cfg.resolution  # resized by the codec's rule
    with pytest.raises(tf.errors.InvalidArgumentError, match="image:"):
        loaded.signatures["colorize"](
            image=tf.zeros([4, 4, 2], tf.uint8), seed=tf.constant(0, tf.int64)
        )
