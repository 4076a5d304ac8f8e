"""The evaluation command on the shared trained run (the test config, 30 steps on records the Beam
job makes from real photos): bits per subpixel equal the training run's own evaluation of the
same checkpoint, their components sum to the total, JSON and TensorBoard outputs are written;
sample metrics run end to end (a stand-in feature network, the reference statistics cached and
recomputed); bad flags and bad input are one line each that names the flag or the file."""

import glob
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from dct_gen import evaluate, evaluation, metrics, photos, run_dir
from dct_gen.errors import InputError

COMPONENTS = ("channel", "position", "value")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A copy of the shared trained run, which these tests may write into."""
    model_dir = str(tmp_path / "run")
    shutil.copytree(trained_run.model_dir, model_dir)
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
        return [json.loads(line) for line in f if line.strip()]


def _tags(directory):
    tags = {}
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags[value.tag] = (event.step, float(tf.make_ndarray(value.tensor)))
    return tags


def _main(capsys, *args):
    """evaluate.main's status and its stderr, which must be one error line or nothing."""
    status = evaluate.main(list(args))
    err = capsys.readouterr().err.strip()
    if status:
        assert err.startswith("dct_gen.evaluate: error: ") and "\n" not in err, err
    return status, err


def test_bits_per_subpixel_equal_the_training_runs_evaluation(run_copy, test_data_dir, capsys):
    assert evaluate.main([f"--model_dir={run_copy}", f"--data_dir={test_data_dir}"]) == 0
    with open(os.path.join(run_copy, evaluation.DEFAULT_OUT)) as f:
        written = json.load(f)
    got = written["likelihood"]
    # The split defaults to the one the run evaluated (eval.jsonl).
    assert (got["step"], got["split"], got["partial"]) == (30, "validation", False)
    assert got["checkpoint"].endswith(os.path.join("checkpoints", "ckpt-30"))
    # The training loop evaluated the same weights at step 30 with the same evaluator.
    want = _eval_lines(run_copy)[-1]
    assert (want["step"], want["split"]) == (30, "validation")
    names = [k for k in want if k not in ("step", "split", "partial", "seconds")]
    assert "chunk_1/value_bits_per_subpixel" in names  # sequences longer than one chunk
    for name in names:
        assert got[name] == pytest.approx(want[name], rel=1e-5), name
    assert got["sequences"] == 4
    total = sum(got[f"{c}_bits_per_subpixel"] for c in COMPONENTS)
    assert got["bits_per_subpixel"] == pytest.approx(total, rel=1e-9)
    chunks = sorted(int(k.split("/")[0][6:]) for k in got if k.endswith("/bits_per_subpixel"))
    for k in chunks:
        parts = sum(got[f"chunk_{k}/{c}_bits_per_subpixel"] for c in COMPONENTS)
        assert got[f"chunk_{k}/bits_per_subpixel"] == pytest.approx(parts, rel=1e-9)

    tags = _tags(os.path.join(run_copy, evaluation.SUMMARY_DIR, "validation"))
    for name in ("bits_per_subpixel", "position_bits_per_subpixel", "chunk_0/bits_per_subpixel"):
        step, value = tags[name]
        assert step == 30 and value == pytest.approx(got[name], rel=1e-6)
    assert "restored" in capsys.readouterr().out

    # An older checkpoint (no evaluation in eval.jsonl at step 20): other figures, which do not
    # depend on the batch size.
    older = {}
    for batch_size in (3, 4):
        out = os.path.join(run_copy, f"batch{batch_size}.json")
        args = [f"--model_dir={run_copy}", f"--data_dir={test_data_dir}", f"--out={out}"]
        args += ["--split", "validation", "--checkpoint", "20", f"--batch_size={batch_size}"]
        assert evaluate.main(args) == 0
        with open(out) as f:
            older[batch_size] = json.load(f)["likelihood"]
        assert older[batch_size]["batch_size"] == batch_size
    assert older[3]["step"] == older[4]["step"] == 20
    for name in names:
        assert older[3][name] == pytest.approx(older[4][name], rel=1e-5), name
    assert older[3]["bits_per_subpixel"] != pytest.approx(got["bits_per_subpixel"], rel=1e-6)


def test_load_names_what_is_missing(trained_run, test_configs, tmp_path):
    configs = test_configs()
    run = run_dir.load_run(trained_run.model_dir, log=lambda _: None)
    model, model_config, dct_config, train_config = run
    assert (dct_config, model_config, train_config) == (
        configs["dct_config"],
        configs["model_config"],
        configs["train_config"],
    )
    assert run.step == 30 and model.count_params() > 0
    older = run_dir.load_run(trained_run.model_dir, checkpoint=20, log=lambda _: None)
    assert older.step == 20 and older.checkpoint.endswith("ckpt-20")

    with pytest.raises(InputError, match="does not exist"):
        run_dir.load_run(str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="config.json does not exist"):
        run_dir.load_run(str(tmp_path))
    shutil.copy(os.path.join(trained_run.model_dir, run_dir.RUN_CONFIG_FILE), tmp_path)
    with pytest.raises(InputError, match="no checkpoint in .*checkpoints"):
        run_dir.load_run(str(tmp_path))
    with pytest.raises(InputError, match="no checkpoint 15"):
        run_dir.load_run(trained_run.model_dir, checkpoint=15)


def test_sample_metrics_end_to_end_with_a_stand_in_network(run_copy, test_data_dir, tmp_path):
    samples = str(tmp_path / "samples")
    photos.write_crops(samples, 10, seed=5, sides=(24, 40))
    out = str(tmp_path / "evaluation.json")
    lines = []
    common = dict(
        model_dir=run_copy,
        samples_dir=samples,
        num_samples=10,
        reference_data_dir=test_data_dir,
        num_reference=8,
        extractor=small_extractor(),
        out=out,
        log=lines.append,
    )
    result = evaluation.run_evaluation(**common)
    got = result["samples"]
    assert (got["num_samples"], got["num_reference"], got["k"], got["step"]) == (10, 8, 3, 30)
    assert got["fid"] > 0 and got["sfid"] > 0
    assert 0 <= got["precision"] <= 1 and 0 <= got["recall"] <= 1
    assert "likelihood" not in result and got["extractor"] == "test-convnet"
    with open(out) as f:
        assert json.load(f) == json.loads(json.dumps(result))
    cache = os.path.join(run_copy, evaluation.SUMMARY_DIR, "reference_train_8.npz")
    assert got["reference_cache"] == cache and os.path.exists(cache)
    tags = _tags(os.path.join(run_copy, evaluation.SUMMARY_DIR, "samples"))
    assert set(tags) == {"fid", "sfid", "precision", "recall"}
    assert tags["fid"] == (30, pytest.approx(got["fid"], rel=1e-6))

    # The reference statistics are the decoded training records' features (the first 8).
    stored, reference = metrics.load_statistics(cache)
    assert stored["num_images"] == 8 and stored["split"] == "train"
    decoded = list(metrics.dataset_images(test_data_dir, "train"))
    assert len(decoded) == 16 and all(max(im.shape[:2]) == 32 for im in decoded)
    direct = metrics.extract_features(decoded[:8], small_extractor(), log=None)
    np.testing.assert_allclose(reference.pool, direct.pool, rtol=1e-5, atol=1e-6)

    # A second call reuses them, with the same figures; another count recomputes them.
    again = evaluation.run_evaluation(**common)["samples"]
    assert any("reusing the statistics cached" in line for line in lines)
    assert again["fid"] == pytest.approx(got["fid"], rel=1e-9)
    lines.clear()
    fewer = evaluation.run_evaluation(**dict(common, num_reference=6, reference_cache=cache))
    assert fewer["samples"]["num_reference"] == 6
    assert any("num_images: 8 -> 6" in line and "recomputing" in line for line in lines)


def test_bad_flags_and_bad_input_are_one_line_each(run_copy, test_data_dir, tmp_path, capsys):
    missing = str(tmp_path / "missing")
    data = f"--data_dir={test_data_dir}"
    # Bad command lines: status 2.
    status, err = _main(capsys, data)
    assert status == 2 and "--model_dir is required" in err
    status, err = _main(capsys, f"--model_dir={run_copy}")
    assert status == 2 and "nothing to evaluate" in err and "--data_dir" in err
    status, err = _main(capsys, f"--model_dir={run_copy}", data, "--num_samples=0")
    assert status == 2 and "--num_samples" in err
    status, err = _main(capsys, f"--model_dir={run_copy}", data, "--spilt=test")
    assert status == 2 and "spilt" in err
    status, err = _main(capsys, f"--model_dir={run_copy}", data, "validation")
    assert status == 2 and "unexpected arguments: validation" in err

    # Bad input: status 1.
    status, err = _main(capsys, f"--model_dir={missing}", data)
    assert status == 1 and f"--model_dir={missing}: no such directory" in err
    status, err = _main(capsys, f"--model_dir={run_copy}", f"--data_dir={missing}")
    assert status == 1 and f"--data_dir={missing}: no such directory" in err
    status, err = _main(capsys, f"--model_dir={run_copy}", f"--data_dir={tmp_path}")
    assert status == 1 and f"--data_dir={tmp_path}: not a dataset directory" in err
    status, err = _main(capsys, f"--model_dir={run_copy}", data, "--split", "test")
    assert status == 1 and "--split=test" in err and "'test'" in err
    not_a_run = tmp_path / "not_a_run"
    not_a_run.mkdir()
    status, err = _main(capsys, f"--model_dir={not_a_run}", data)
    assert status == 1 and "config.json does not exist" in err
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    shutil.copy(os.path.join(run_copy, run_dir.RUN_CONFIG_FILE), untrained)
    status, err = _main(capsys, f"--model_dir={untrained}", data)
    assert status == 1 and "no checkpoint in" in err and str(untrained) in err
    status, err = _main(capsys, f"--model_dir={run_copy}", data, "--checkpoint=15")
    assert status == 1 and "no checkpoint 15" in err

    samples = str(tmp_path / "samples")
    photos.write_crops(samples, 4, seed=6)
    status, err = _main(capsys, f"--model_dir={run_copy}", f"--samples_dir={missing}", data)
    assert status == 1 and f"--samples_dir={missing}: no such directory" in err
    status, err = _main(capsys, f"--model_dir={run_copy}", f"--samples_dir={samples}")
    assert status == 2 and "--reference_data_dir" in err
    args = [f"--model_dir={run_copy}", f"--samples_dir={samples}"]
    args.append(f"--reference_data_dir={test_data_dir}")
    status, err = _main(capsys, *args)
    assert status == 1 and "holds 4 images, fewer than --num_samples=50000" in err
    status, err = _main(capsys, *args, "--num_samples=4", "--num_reference=17")
    assert status == 1 and "fewer than the 17 reference images" in err
    status, err = _main(capsys, *args, "--num_samples=4", "--reference_split=test")
    assert status == 1 and "'test'" in err
    weights = str(tmp_path / metrics.INCEPTION_WEIGHTS_FILE)
    status, err = _main(capsys, *args, "--num_samples=4", f"--inception_weights={weights}")
    assert status == 1 and f"--inception_weights {weights} does not exist" in err
    assert metrics.INCEPTION_WEIGHTS_URL in err
    status, err = _main(capsys, *args, "--generate", f"--inception_weights={weights}")
    assert status == 1 and f"--inception_weights {weights} does not exist" in err
    assert not os.path.exists(os.path.join(run_copy, evaluation.SUMMARY_DIR, "generated"))


def test_generated_samples_feed_the_sample_metrics(run_copy, test_data_dir, tmp_path):
    run = run_dir.load_run(run_copy, log=lambda _: None)
    out = str(tmp_path / "generated")
    evaluation.generate_samples(run, num_samples=5, out_dir=out, max_chunks=3, log=None)
    files = sorted(os.listdir(out))
    assert files == [f"generated_{i:06d}.png" for i in range(5)]
    result = evaluation.run_evaluation(
        model_dir=run_copy,
        samples_dir=out,
        num_samples=5,
        reference_data_dir=test_data_dir,
        num_reference=5,
        extractor=small_extractor(),
        out=str(tmp_path / "evaluation.json"),
        log=lambda _: None,
    )
    assert result["samples"]["num_samples"] == 5 and np.isfinite(result["samples"]["fid"])
