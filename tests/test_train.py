"""The training run on records the Beam job makes from real photos (the test config): the loss
goes down and every log is written, a crashed run resumes to the same losses, a damaged newest
checkpoint falls back to an older one, SIGTERM saves a checkpoint, a NaN loss stops the run, and
bad flags and config keys are named."""

import dataclasses
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import gin
import numpy as np
import pytest
import tensorflow as tf

from beam_jobs.build_dataset import run_pipeline
from dct_gen import configs, photos, run_dir, train
from dct_gen.representation import DCTConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN = "experiments/test.gin"
PEAK = 1e11  # a fixed MFU denominator: tests skip the peak measurement


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Train and validation splits in the test config's representation, from photo crops."""
    tmp = str(tmp_path_factory.mktemp("train_data"))
    configs.parse([GIN])
    cfg = configs.dct_config()
    gin.clear_config()
    assert cfg == DCTConfig(block_size=4, quality=75, resolution=32, clip=200)
    out = os.path.join(tmp, "data")
    for split, count, seed in (("train", 16, 0), ("validation", 4, 1)):
        images = os.path.join(tmp, split)
        photos.write_crops(images, count, seed=seed)
        run_pipeline(
            output_dir=out, cfg=cfg, image_glob=f"{images}/*.png", split=split, num_shards=2
        )
    return out


def _configs(*params):
    configs.parse([GIN], list(params))
    try:
        return dict(
            dct_config=configs.dct_config(),
            model_config=configs.model_config(),
            train_config=configs.train_config(),
        )
    finally:
        gin.clear_config()


def _run(data_dir, model_dir, lines=None, **kwargs):
    args = dict(
        _configs(),
        data_dir=data_dir,
        model_dir=str(model_dir),
        log_every=1,
        peak_flops=PEAK,
        log=(lines.append if lines is not None else lambda _: None),
    )
    args.update(kwargs)
    return train.train(**args)


def _metrics(model_dir):
    with open(os.path.join(model_dir, run_dir.METRICS_FILE)) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """30 steps with checkpoints every 10, evaluations at 15 and 30, and TensorBoard samples at
    30."""
    model_dir = str(tmp_path_factory.mktemp("run"))
    lines = []
    result = _run(
        data_dir,
        model_dir,
        lines,
        max_steps=30,
        checkpoint_every=10,
        eval_split="validation",
        eval_every=15,
        sample_every=30,
        num_samples=2,
        sample_max_chunks=2,
    )
    return model_dir, result, lines


def test_loss_goes_down_and_logs_are_written(trained):
    model_dir, result, lines = trained
    assert (result.step, result.stopped, result.resumed_from) == (30, "done", None)
    metrics = _metrics(model_dir)
    assert [m["step"] for m in metrics] == list(range(1, 31))
    losses = [m["loss"] for m in metrics]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 1.0, losses
    for key in (
        "loss",
        "bits_per_subpixel",
        "channel_bits_per_subpixel",
        "position_bits_per_subpixel",
        "value_bits_per_subpixel",
        "learning_rate",
        "tokens_per_second",
        "grad_norm",
        "mfu",
    ):
        assert all(np.isfinite(m[key]) for m in metrics), key
    # Warmup (2 steps) to the peak, then cosine down to 0 at the last step.
    lrs = [m["learning_rate"] for m in metrics]
    assert lrs[1] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(0.0, abs=1e-9)
    assert sum("ETA" in line for line in lines) == 30

    with open(os.path.join(model_dir, run_dir.EVAL_FILE)) as f:
        evals = [json.loads(line) for line in f]
    assert [e["step"] for e in evals] == [15, 30]
    last = evals[-1]
    assert last["sequences"] == 4 and not last["partial"]
    parts = sum(last[f"{c}_bits_per_subpixel"] for c in train.COMPONENTS)
    assert last["bits_per_subpixel"] == pytest.approx(parts)
    assert "chunk_0/bits_per_subpixel" in last and "chunk_0/value_bits_per_subpixel" in last
    assert evals[1]["bits_per_subpixel"] < evals[0]["bits_per_subpixel"]

    tags = {}
    for part in ("train", "eval"):
        for path in glob.glob(os.path.join(model_dir, part, "events.out.tfevents.*")):
            for event in tf.compat.v1.train.summary_iterator(path):
                for value in event.summary.value:
                    tags.setdefault(part, set()).add(value.tag)
    assert {"loss", "value_bits_per_subpixel", "learning_rate", "grad_norm", "mfu"} <= tags["train"]
    assert {"samples", "heatmaps", "samples/mean_triples"} <= tags["train"]
    assert sum("samples at step 30: 2 logged" in line for line in lines) == 1
    with open(os.path.join(model_dir, run_dir.RUN_CONFIG_FILE)) as f:
        assert json.load(f)["model_config"]["dct"]["block_size"] == 4
    assert {"bits_per_subpixel", "chunk_0/position_bits_per_subpixel"} <= tags["eval"]
    assert sorted(os.listdir(os.path.join(model_dir, "checkpoints")))[-1] == "ckpt-30.index"


def test_another_architecture_in_a_run_directory_is_refused(trained, data_dir):
    model_dir, _, _ = trained
    copy = model_dir + "_wider"
    shutil.copytree(model_dir, copy)
    wider = _configs("model_config.hidden_size = 48")
    with pytest.raises(ValueError, match="hidden_size: 32 -> 48"):
        _run(data_dir, copy, max_steps=31, model_config=wider["model_config"])
    # The structural mask changes no weight: a resumed run may switch it.
    unmasked = _configs("model_config.structural_mask = False")
    result = _run(data_dir, copy, max_steps=31, model_config=unmasked["model_config"])
    assert (result.resumed_from, result.step) == (30, 31)
    with open(os.path.join(copy, run_dir.RUN_CONFIG_FILE)) as f:
        assert json.load(f)["model_config"]["structural_mask"] is False


def test_a_finished_run_does_not_train_again(trained, data_dir):
    model_dir, _, _ = trained
    copy = model_dir + "_done"
    shutil.copytree(model_dir, copy)
    result = _run(data_dir, copy, max_steps=30)
    assert (result.stopped, result.step) == ("already_done", 30)


class Crash(Exception):
    pass


def test_a_crashed_run_resumes_to_the_same_losses(data_dir, tmp_path):
    """Dropout on, so the dropout seed state must be restored too; op determinism on."""
    dropout = dataclasses.replace(_configs()["model_config"], dropout=0.1)
    common = dict(max_steps=8, model_config=dropout, deterministic=True)
    _run(data_dir, tmp_path / "whole", **common)
    want = [m["loss"] for m in _metrics(tmp_path / "whole")]

    def crash_at_5(step, values):
        if step == 5:
            raise Crash()

    with pytest.raises(Crash):
        _run(data_dir, tmp_path / "parts", checkpoint_every=3, step_callback=crash_at_5, **common)
    lines = []
    result = _run(data_dir, tmp_path / "parts", lines, checkpoint_every=3, **common)
    assert result.resumed_from == 3 and "resumed from checkpoint 3 at step 3" in lines
    got = _metrics(tmp_path / "parts")
    assert [m["step"] for m in got] == list(range(1, 9))
    np.testing.assert_allclose([m["loss"] for m in got], want, rtol=1e-6)
    # Not a coincidence: without the restored stream and state, step 4 differs from step 1.
    assert abs(want[3] - want[0]) > 1e-3


def _damage(model_dir, number, how):
    prefix = os.path.join(model_dir, "checkpoints", f"ckpt-{number}")
    if how == "no_index":
        os.remove(prefix + ".index")
    else:
        (data_file,) = glob.glob(prefix + ".data-*")
        with open(data_file, "r+b") as f:
            f.truncate(os.path.getsize(data_file) // 2)


@pytest.mark.parametrize("how", ["truncated_data", "no_index"])
def test_damaged_latest_checkpoint_falls_back(trained, data_dir, how):
    model_dir, _, _ = trained
    copy = f"{model_dir}_{how}"
    shutil.copytree(model_dir, copy)
    _damage(copy, 30, how)
    lines = []
    result = _run(data_dir, copy, lines, max_steps=31)
    assert result.resumed_from == 20 and result.step == 31
    assert any("ckpt-30 is damaged" in line for line in lines), lines
    assert any("resumed from" in line and "older checkpoint" in line for line in lines)


def test_no_restorable_checkpoint_never_restarts_from_zero(trained, data_dir):
    model_dir, _, _ = trained
    copy = model_dir + "_all_damaged"
    shutil.copytree(model_dir, copy)
    for number in (10, 20, 30):
        _damage(copy, number, "truncated_data")
    with pytest.raises(run_dir.NoValidCheckpointError, match="refusing to start again from step 0"):
        _run(data_dir, copy, max_steps=31)
    assert _metrics(copy)[-1]["step"] == 30  # nothing was logged or overwritten


def test_nan_loss_stops_the_run(data_dir, tmp_path):
    cfg = _configs("train_config.learning_rate = 1e30", "train_config.grad_clip_norm = 1e30")
    with pytest.raises(train.NonFiniteLossError, match="stopping without saving"):
        _run(data_dir, tmp_path, max_steps=50, checkpoint_every=1, **cfg)
    steps = [m["step"] for m in _metrics(tmp_path)]
    saved = run_dir.checkpoint_numbers(os.path.join(tmp_path, "checkpoints"))
    assert saved == sorted(steps, reverse=True)  # every finite step saved, the bad one not


def test_two_replicas_split_the_batch(data_dir, tmp_path):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    lines = []
    result = _run(
        data_dir,
        tmp_path,
        lines,
        max_steps=2,
        strategy=strategy,
        sample_every=2,
        num_samples=2,
        sample_max_chunks=1,
    )
    assert result.step == 2 and np.isfinite(result.last_metrics["loss"])
    assert any("samples at step 2" in line for line in lines)  # mirrored weights sample too
    # The distributed iterator is in the checkpoint and restores.
    again = _run(data_dir, tmp_path, max_steps=2, strategy=strategy)
    assert (again.resumed_from, again.stopped) == (2, "already_done")


def test_sigterm_saves_a_checkpoint(data_dir, tmp_path):
    """The command line end to end: runs until SIGTERM, saves, exits 143, resumes."""
    cmd = [
        sys.executable,
        "-m",
        "dct_gen.train",
        f"--gin_file={GIN}",
        "--gin_param=model_config.dropout = 0.1",
        f"--data_dir={data_dir}",
        f"--model_dir={tmp_path}",
        "--max_steps=100000",
        "--log_every=1",
        "--checkpoint_every=100000",
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    metrics = os.path.join(tmp_path, run_dir.METRICS_FILE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(metrics) and len(open(metrics).readlines()) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, out
    last = _metrics(tmp_path)[-1]["step"]
    assert f"SIGTERM: saved checkpoint {last}" in out
    assert os.path.exists(os.path.join(tmp_path, "checkpoints", f"ckpt-{last}.index"))
    with open(os.path.join(tmp_path, run_dir.OPERATIVE_CONFIG_FILE)) as f:
        operative = f.read()
    assert "train_config.batch_size = 4" in operative and "model_config.dropout = 0.1" in operative
    result = _run(data_dir, tmp_path, max_steps=last + 1)
    assert (result.resumed_from, result.step) == (last, last + 1)


@pytest.fixture
def flags_reset():
    yield train.FLAGS
    train.FLAGS.unparse_flags()
    gin.clear_config()


def _main(*args):
    train.FLAGS.unparse_flags()
    train.FLAGS(["train", *args])
    train.main(["train"])


def test_bad_flags_and_config_keys_are_named(data_dir, tmp_path, flags_reset):
    from absl import app, flags

    with pytest.raises(flags.UnrecognizedFlagError, match="bogus_flag"):
        train.FLAGS(["train", "--bogus_flag=1"])
    with pytest.raises(app.UsageError, match="--data_dir"):
        _main(f"--gin_file={GIN}", f"--model_dir={tmp_path}")
    with pytest.raises(app.UsageError, match="--gin_file"):
        _main(f"--data_dir={data_dir}", f"--model_dir={tmp_path}")
    with pytest.raises(ValueError, match="bogus"):
        _main(
            f"--gin_file={GIN}",
            "--gin_param=train_config.bogus = 1",
            f"--data_dir={data_dir}",
            f"--model_dir={tmp_path}",
        )
    with pytest.raises(ValueError, match="dct_config.quality"):
        _main(
            f"--gin_file={GIN}",
            "--gin_param=dct_config.quality = 50",
            f"--data_dir={data_dir}",
            f"--model_dir={tmp_path}",
        )
    run = [f"--gin_file={GIN}", f"--data_dir={data_dir}", f"--model_dir={tmp_path}"]
    with pytest.raises(app.UsageError, match="--max_steps"):
        _main(*run, "--max_steps=-1")
