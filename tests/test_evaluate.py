"""The evaluation command on a run of the test config trained for a few steps on records the Beam
job makes from real photos: bits per subpixel equal the training run's own evaluation of the
same checkpoint, their components sum to the total, JSON and TensorBoard outputs are written;
sample metrics run end to end (a stand-in feature network, the reference statistics cached and
recomputed); bad flags, directories and missing weights are named."""

import glob
import json
import os
import shutil

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from beam_jobs.build_dataset import run_pipeline
from dct_gen import configs, evaluate, metrics, photos, representation, run_dir, train

GIN = "experiments/test.gin"
COMPONENTS = ("channel", "position", "value")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Train (8 images) and validation (3) splits in the test config's representation."""
    tmp = str(tmp_path_factory.mktemp("evaluate_data"))
    configs.parse([GIN])
    cfg = configs.dct_config()
    gin.clear_config()
    out = os.path.join(tmp, "data")
    for split, count, seed in (("train", 8, 0), ("validation", 3, 1)):
        folder = os.path.join(tmp, split)
        photos.write_crops(folder, count, seed=seed)
        run_pipeline(
            output_dir=out, cfg=cfg, image_glob=f"{folder}/*.png", split=split, num_shards=2
        )
    return out


@pytest.fixture(scope="module")
def trained_dir(data_dir, tmp_path_factory):
    """The training command, 4 steps: a checkpoint at 2 and 4, evaluations of validation at
    2 and 4 (eval.jsonl), and operative_config.gin."""
    model_dir = str(tmp_path_factory.mktemp("evaluate_run"))
    train.FLAGS.unparse_flags()
    train.FLAGS(
        [
            "train",
            f"--gin_file={GIN}",
            f"--data_dir={data_dir}",
            f"--model_dir={model_dir}",
            "--max_steps=4",
            "--eval_split=validation",
            "--eval_every=2",
            "--checkpoint_every=2",
            "--log_every=2",
            "--peak_flops=1e11",
        ]
    )
    try:
        train.main(["train"])
    finally:
        train.FLAGS.unparse_flags()
        gin.clear_config()
    return model_dir


def small_extractor(name="test-convnet"):
    """A fixed random conv net standing in for Inception (16 x 16 images, 8 + 48 features)."""
    init = keras.initializers.GlorotUniform(seed=0)
    images = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, 4, "same", activation="relu", kernel_initializer=init)(images)
    pool = keras.layers.GlobalAveragePooling2D()(x)  # (b, 8)
    model = keras.Model(images, {"pool": pool, "spatial": x[..., :3]})  # (b, 4, 4, 3)
    return metrics.KerasFeatureExtractor(model, image_size=(16, 16), name=name)


def _eval_lines(model_dir):
    with open(os.path.join(model_dir, run_dir.EVAL_FILE)) as f:
        return [json.loads(line) for line in f]


def _tags(directory):
    tags = {}
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags[value.tag] = (event.step, float(tf.make_ndarray(value.tensor)))
    return tags


def test_bits_per_subpixel_equal_the_training_runs_evaluation(trained_dir, data_dir, capsys):
    assert evaluate.main(["--model_dir", trained_dir, "--data_dir", data_dir]) == 0
    with open(os.path.join(trained_dir, evaluate.DEFAULT_OUT)) as f:
        written = json.load(f)
    got = written["likelihood"]
    assert (got["step"], got["split"], got["partial"]) == (4, "validation", False)
    assert got["checkpoint"].endswith(os.path.join("checkpoints", "ckpt-4"))
    # The training loop evaluated the same weights at step 4 with the same evaluator.
    want = _eval_lines(trained_dir)[-1]
    assert want["step"] == 4
    names = [k for k in want if k not in ("step", "split", "partial")]
    assert "chunk_1/value_bits_per_subpixel" in names  # sequences longer than one chunk
    for name in names:
        assert got[name] == pytest.approx(want[name], rel=1e-5), name
    assert got["sequences"] == 3
    total = sum(got[f"{c}_bits_per_subpixel"] for c in COMPONENTS)
    assert got["bits_per_subpixel"] == pytest.approx(total, rel=1e-9)
    chunks = sorted(int(k.split("/")[0][6:]) for k in got if k.endswith("/bits_per_subpixel"))
    for k in chunks:
        parts = sum(got[f"chunk_{k}/{c}_bits_per_subpixel"] for c in COMPONENTS)
        assert got[f"chunk_{k}/bits_per_subpixel"] == pytest.approx(parts, rel=1e-9)

    tags = _tags(os.path.join(trained_dir, evaluate.SUMMARY_DIR, "validation"))
    for name in ("bits_per_subpixel", "position_bits_per_subpixel", "chunk_0/bits_per_subpixel"):
        step, value = tags[name]
        assert step == 4 and value == pytest.approx(got[name], rel=1e-6)
    assert "restored" in capsys.readouterr().out

    # The figures do not depend on the batch size; an older checkpoint gives the training
    # run's evaluation at its step.
    out = os.path.join(trained_dir, "batch3.json")
    args = ["--model_dir", trained_dir, "--data_dir", data_dir, "--out", out]
    assert evaluate.main([*args, "--batch_size", "3", "--checkpoint", "2"]) == 0
    with open(out) as f:
        older = json.load(f)["likelihood"]
    want = _eval_lines(trained_dir)[0]
    assert (older["step"], older["batch_size"], want["step"]) == (2, 3, 2)
    for name in names:
        assert older[name] == pytest.approx(want[name], rel=1e-5), name


def test_load_run_unpacks_and_names_what_is_missing(trained_dir, tmp_path):
    model, model_config, dct_config, train_config = run_dir.load_run(
        trained_dir, log=lambda _: None
    )
    assert dct_config == representation.DCTConfig(block_size=4, quality=75, resolution=32, clip=200)
    assert model_config.dct == dct_config and model_config.hidden_size == 32
    assert (train_config.batch_size, train_config.chunk_size, train_config.overlap) == (4, 16, 4)
    assert model.count_params() > 0
    # Every variable is read from the checkpoint: with the same initialisation, the weights
    # of steps 2 and 4 differ in every trainable variable (a restore that reached only some
    # variables would leave the others at their identical initial values).
    keras.utils.set_random_seed(0)
    older = run_dir.load_run(trained_dir, checkpoint=2, log=lambda _: None)
    keras.utils.set_random_seed(0)
    newest = run_dir.load_run(trained_dir, log=lambda _: None)
    assert (older.step, newest.step) == (2, 4) and older.checkpoint.endswith("ckpt-2")
    pairs = zip(older.model.trainable_weights, newest.model.trainable_weights)
    unchanged = [a.path for a, b in pairs if np.array_equal(a.numpy(), b.numpy())]
    assert not unchanged
    for a, b in zip(model.get_weights(), newest.model.get_weights()):
        np.testing.assert_array_equal(a, b)

    with pytest.raises(run_dir.RunDirectoryError, match="does not exist"):
        run_dir.load_run(str(tmp_path / "nowhere"))
    with pytest.raises(run_dir.RunDirectoryError, match="config.json does not exist"):
        run_dir.load_run(str(tmp_path))
    shutil.copy(os.path.join(trained_dir, run_dir.RUN_CONFIG_FILE), tmp_path)
    with pytest.raises(run_dir.RunDirectoryError, match="no checkpoint in .*checkpoints"):
        run_dir.load_run(str(tmp_path))
    with pytest.raises(run_dir.RunDirectoryError, match="no checkpoint 3"):
        run_dir.load_run(trained_dir, checkpoint=3)


def test_sample_metrics_end_to_end_with_a_stand_in_network(trained_dir, data_dir, tmp_path):
    samples = str(tmp_path / "samples")
    photos.write_crops(samples, 10, seed=5, sides=(24, 40))
    out = str(tmp_path / "evaluation.json")
    lines = []
    common = dict(
        model_dir=trained_dir,
        samples_dir=samples,
        num_samples=10,
        reference_data_dir=data_dir,
        num_reference=8,
        extractor=small_extractor(),
        out=out,
        log=lines.append,
    )
    result = evaluate.run_evaluation(**common)
    got = result["samples"]
    assert (got["num_samples"], got["num_reference"], got["k"], got["step"]) == (10, 8, 3, 4)
    assert got["fid"] > 0 and got["sfid"] > 0
    assert 0 <= got["precision"] <= 1 and 0 <= got["recall"] <= 1
    assert "likelihood" not in result and got["extractor"] == "test-convnet"
    with open(out) as f:
        assert json.load(f) == json.loads(json.dumps(result))
    cache = os.path.join(trained_dir, evaluate.SUMMARY_DIR, "reference_train_8.npz")
    assert got["reference_cache"] == cache and os.path.exists(cache)
    tags = _tags(os.path.join(trained_dir, evaluate.SUMMARY_DIR, "samples"))
    assert set(tags) == {"fid", "sfid", "precision", "recall"}
    assert tags["fid"] == (4, pytest.approx(got["fid"], rel=1e-6))

    # The reference statistics are the decoded training records' features.
    stored, reference = metrics.load_statistics(cache)
    assert stored["num_images"] == 8 and stored["split"] == "train"
    decoded = list(metrics.dataset_images(data_dir, "train"))
    assert len(decoded) == 8 and all(max(im.shape[:2]) == 32 for im in decoded)
    direct = metrics.extract_features(decoded, small_extractor(), log=None)
    np.testing.assert_allclose(reference.pool, direct.pool, rtol=1e-5, atol=1e-6)

    # A second call reuses them, with the same figures; another count recomputes them.
    again = evaluate.run_evaluation(**common)["samples"]
    assert any("reusing the statistics cached" in line for line in lines)
    assert again["fid"] == pytest.approx(got["fid"], rel=1e-9)
    lines.clear()
    fewer = evaluate.run_evaluation(**dict(common, num_reference=6, reference_cache=cache))
    assert fewer["samples"]["num_reference"] == 6
    assert any("num_images: 8 -> 6" in line and "recomputing" in line for line in lines)


def _main(capsys, *args):
    status = evaluate.main(list(args))
    return status, capsys.readouterr().err


def test_bad_input_is_named(trained_dir, data_dir, tmp_path, capsys):
    missing = str(tmp_path / "missing")
    status, err = _main(capsys, "--model_dir", missing, "--data_dir", data_dir)
    assert status == 1 and f"--model_dir {missing} does not exist" in err
    status, err = _main(capsys, "--model_dir", trained_dir)
    assert status == 2 and "nothing to evaluate" in err and "--data_dir" in err
    status, err = _main(capsys, "--data_dir", data_dir)
    assert status == 2 and "--model_dir" in err
    status, err = _main(capsys, "--model_dir", trained_dir, "--data_dir", missing)
    assert status == 1 and f"--data_dir {missing} is not a dataset directory" in err
    status, err = _main(
        capsys, "--model_dir", trained_dir, "--data_dir", data_dir, "--split", "test"
    )
    assert status == 1 and "'test'" in err
    status, err = _main(capsys, "--model_dir", str(tmp_path), "--data_dir", data_dir)
    assert status == 1 and "config.json does not exist" in err
    no_checkpoints = tmp_path / "untrained"
    no_checkpoints.mkdir()
    shutil.copy(os.path.join(trained_dir, run_dir.RUN_CONFIG_FILE), no_checkpoints)
    status, err = _main(capsys, "--model_dir", str(no_checkpoints), "--data_dir", data_dir)
    assert status == 1 and "no checkpoint in" in err and str(no_checkpoints) in err

    samples = str(tmp_path / "samples")
    photos.write_crops(samples, 4, seed=6)
    status, err = _main(capsys, "--model_dir", trained_dir, "--samples_dir", missing)
    assert status == 1 and f"--samples_dir {missing} is not a folder" in err
    status, err = _main(capsys, "--model_dir", trained_dir, "--samples_dir", samples)
    assert status == 2 and "--reference_data_dir" in err
    args = ["--model_dir", trained_dir, "--samples_dir", samples, "--reference_data_dir", data_dir]
    status, err = _main(capsys, *args)
    assert status == 1 and "holds 4 images, fewer than --num_samples 50000" in err
    status, err = _main(capsys, *args, "--num_samples", "4", "--num_reference", "9")
    assert status == 1 and "fewer than the 9 reference images" in err
    weights = str(tmp_path / metrics.INCEPTION_WEIGHTS_FILE)
    status, err = _main(capsys, *args, "--num_samples", "4", "--inception_weights", weights)
    assert status == 1 and f"--inception_weights {weights} does not exist" in err
    assert metrics.INCEPTION_WEIGHTS_URL in err


def test_generated_samples_feed_the_sample_metrics(trained_dir, data_dir, tmp_path):
    run = run_dir.load_run(trained_dir, log=lambda _: None)
    out = str(tmp_path / "generated")
    evaluate.generate_samples(run, num_samples=5, out_dir=out, max_chunks=3, log=None)
    files = sorted(os.listdir(out))
    assert files == [f"generated_{i:06d}.png" for i in range(5)]
    result = evaluate.run_evaluation(
        model_dir=trained_dir,
        samples_dir=out,
        num_samples=5,
        reference_data_dir=data_dir,
        num_reference=5,
        extractor=small_extractor(),
        out=str(tmp_path / "evaluation.json"),
        log=lambda _: None,
    )
    assert result["samples"]["num_samples"] == 5 and np.isfinite(result["samples"]["fid"])
