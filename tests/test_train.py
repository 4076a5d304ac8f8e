"""The training run on records the Beam job makes from real photos (the test config): the loss
goes down and every log is written, a crashed run resumes to the same losses, a damaged newest
checkpoint falls back to an older one, SIGTERM saves a checkpoint, a NaN loss stops the run and
leaves only healthy checkpoints, the schedule is fixed in config.json and changes only by an
explicit extension, the representation comes from the dataset's info.json, and the command line
names bad flags, bad settings, missing directories and gin bindings that contradict the data in
one line."""

import dataclasses
import glob
import json
import math
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
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util
from testing_helpers import LABELLED_PHOTOS

from dct_gen import run_dir, train, training
from dct_gen.errors import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN = "experiments/test.gin"
PEAK = 1e11  # a fixed MFU denominator: tests skip the peak measurement


@pytest.fixture
def run(test_configs, test_data_dir):
    """run(model_dir, lines=None, **train_kwargs) -> TrainResult: the test config trained on
    test_data_dir, logging every step."""

    def run_(model_dir, lines=None, **kwargs):
        args = dict(
            test_configs(),
            data_dir=test_data_dir,
            model_dir=str(model_dir),
            log_every=1,
            peak_flops=PEAK,
            log=(lines.append if lines is not None else lambda _: None),
        )
        args.update(kwargs)
        return training.train(**args)

    return run_


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A copy of the shared trained run, to write into."""
    copy = str(tmp_path / "run")
    shutil.copytree(trained_run.model_dir, copy)
    return copy


def _metrics(model_dir):
    with open(os.path.join(model_dir, run_dir.METRICS_FILE)) as f:
        return [json.loads(line) for line in f]


def _config_json(model_dir):
    with open(os.path.join(model_dir, run_dir.RUN_CONFIG_FILE)) as f:
        return json.load(f)


def _cosine(start_rate, start_step, end_step, step):
    """The extension rule, written out: a cosine from start_rate at start_step to 0."""
    progress = min(max((step - start_step) / (end_step - start_step), 0.0), 1.0)
    return start_rate * 0.5 * (1.0 + math.cos(math.pi * progress))


def test_loss_goes_down_and_logs_are_written(trained_run):
    model_dir, result, lines = trained_run.model_dir, trained_run.result, trained_run.lines
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
    parts = sum(last[f"{c}_bits_per_subpixel"] for c in training.COMPONENTS)
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
    assert {"bits_per_subpixel", "bits_per_subpixel/position", "bits_per_chunk"} <= tags["eval"]
    assert not any(t.startswith("chunk_") for t in tags["eval"])
    assert sorted(os.listdir(os.path.join(model_dir, "checkpoints")))[-1] == "ckpt-30.index"


def test_another_architecture_in_a_run_directory_is_refused(run, run_copy, test_configs):
    wider = test_configs("model_config.hidden_size = 48")
    with pytest.raises(InputError, match="hidden_size: 32 -> 48"):
        run(run_copy, max_steps=30, model_config=wider["model_config"])
    # The structural mask changes no weight: a resumed (here extended) run may switch it.
    unmasked = test_configs("model_config.structural_mask = False")
    result = run(
        run_copy,
        max_steps=30,
        extend_steps=1,
        extend_learning_rate=1e-4,
        model_config=unmasked["model_config"],
    )
    assert (result.resumed_from, result.step) == (30, 31)
    with open(os.path.join(run_copy, run_dir.RUN_CONFIG_FILE)) as f:
        assert json.load(f)["model_config"]["structural_mask"] is False


def test_a_finished_run_does_not_train_again(run, run_copy):
    result = run(run_copy, max_steps=30)
    assert (result.stopped, result.step) == ("already_done", 30)


# ----------------------------------------------------------------------------------------------
# The schedule: fixed in config.json, changed only by an explicit extension.


def test_the_schedule_is_recorded_when_the_run_starts(trained_run):
    schedule = _config_json(trained_run.model_dir)["schedule"]
    assert schedule == {
        "learning_rate": 1e-3,
        "warmup_steps": 2,
        "planned_steps": 30,
        "tokens": 10000,
        "max_steps": 30,
        "extensions": [],
        "total_steps": 30,
    }


@pytest.mark.parametrize(
    "max_steps, binding, named",
    [
        (40, None, "max_steps 40 makes the schedule 40 steps long, but "),
        # No max_steps: the token budget gives ceil(1e4 / (4 x 16)) = 157 steps.
        (None, None, "train_config.tokens = 10000 makes the schedule 157 steps long, but "),
        (20, None, "keep max_steps 30: a schedule is never shortened"),
        (30, "train_config.learning_rate = 5e-4", "add --extend_learning_rate 0.0005"),
        (30, "train_config.warmup_steps = 5", "train_config.warmup_steps = 5, but "),
    ],
)
def test_a_resumed_run_that_would_change_the_schedule_is_refused(
    run, run_copy, test_configs, max_steps, binding, named
):
    """Nothing is written: config.json and the logs stay as they were."""
    cfg = test_configs(*([binding] if binding else []))
    config_before, metrics_before = _config_json(run_copy), _metrics(run_copy)
    with pytest.raises(InputError) as e:
        run(run_copy, max_steps=max_steps, **cfg)
    message = str(e.value)
    assert named in message and "\n" not in message, message
    if "makes the schedule" in message:
        assert "fixed it at 30 steps (max_steps 30)" in message
    if max_steps == 40:
        assert "add --extend_steps 10 (extend_steps=10)" in message
    assert _config_json(run_copy) == config_before and _metrics(run_copy) == metrics_before


def test_a_run_without_checkpoints_has_nothing_to_extend(run, tmp_path):
    with pytest.raises(InputError, match="has none: give a new run its length with --max_steps"):
        run(tmp_path / "run", max_steps=3, extend_steps=2)
    assert not os.path.exists(tmp_path / "run")


def test_extending_a_finished_run_needs_a_rate_and_a_rerun_adds_nothing(run, run_copy):
    """A finished run's rate is 0, so --extend_steps alone is refused (naming the way); with
    --extend_learning_rate it trains on with a cosine from that rate, recorded in config.json,
    and rerunning the command follows the record instead of extending again."""
    before = open(os.path.join(run_copy, "config.json")).read()
    with pytest.raises(InputError, match="add --extend_learning_rate R") as e:
        run(run_copy, max_steps=30, extend_steps=2)
    assert "learning rate is 0" in str(e.value)
    assert open(os.path.join(run_copy, "config.json")).read() == before

    result = run(run_copy, max_steps=30, extend_steps=2, extend_learning_rate=1e-4)
    assert (result.resumed_from, result.step, result.total_steps) == (30, 32, 32)
    logged = {m["step"]: m["learning_rate"] for m in _metrics(run_copy)}
    # Logged at step k: the rate of the update after k steps.
    assert logged[31] == pytest.approx(_cosine(1e-4, 30, 32, 31), rel=1e-5)
    assert logged[31] == pytest.approx(5e-5, rel=1e-5) and logged[32] == pytest.approx(0.0)
    schedule = _config_json(run_copy)["schedule"]
    assert (schedule["planned_steps"], schedule["total_steps"]) == (30, 32)
    assert schedule["extensions"] == [
        {
            "at_step": 30,
            "learning_rate": 1e-4,
            "total_steps": 32,
            "extend_steps": 2,
            "extend_learning_rate": 1e-4,
        }
    ]
    # (A rerun without the flags follows the record too: the slow test below.)
    result = run(run_copy, max_steps=30, extend_steps=2, extend_learning_rate=1e-4)
    assert (result.stopped, result.step, result.total_steps) == ("already_done", 32, 32)
    with pytest.raises(InputError, match="already has it end at step 32"):
        run(run_copy, max_steps=30, extend_steps=1)
    assert len(_config_json(run_copy)["schedule"]["extensions"]) == 1


@pytest.mark.slow  # trains 14 steps in two runs: `make test-slow`
def test_an_extension_never_jumps_and_a_resume_follows_it(run, run_copy):
    """The run resumes at step 20 (its newest checkpoint gone), mid-cosine, and is extended by 4
    steps: from step 20 the rate follows a cosine from its value there down to 0 at step 34,
    so it never rises. A crash at step 27 and a plain rerun (no extension flags) reproduce the
    recorded schedule step by step."""
    for path in glob.glob(os.path.join(run_copy, "checkpoints", "ckpt-30.*")):
        os.remove(path)
    at_20 = {m["step"]: m["learning_rate"] for m in _metrics(run_copy)}[20]
    common = dict(max_steps=30, checkpoint_every=2)
    with pytest.raises(Crash):
        run(run_copy, extend_steps=4, step_callback=_crash_at(27), **common)
    lines = []
    result = run(run_copy, lines, **common)
    assert (result.resumed_from, result.step, result.total_steps) == (26, 34, 34)
    assert any("schedule as" in line and "at step 34" in line for line in lines), lines
    metrics = _metrics(run_copy)
    assert [m["step"] for m in metrics] == list(range(1, 35))
    rates = [m["learning_rate"] for m in metrics]
    assert all(b <= a for a, b in zip(rates[19:], rates[20:])), rates[19:]
    for m in metrics[20:]:
        assert m["learning_rate"] == pytest.approx(
            _cosine(at_20, 20, 34, m["step"]), rel=1e-5, abs=1e-12
        )
    (extension,) = _config_json(run_copy)["schedule"]["extensions"]
    assert (extension["at_step"], extension["total_steps"]) == (20, 34)
    assert extension["learning_rate"] == pytest.approx(at_20, rel=1e-6)


def test_a_config_that_contradicts_the_data_is_refused_before_anything_is_written(
    run, test_configs, tmp_path
):
    other = test_configs("dct_config.quality = 50")
    with pytest.raises(InputError, match=r"dct_config.quality = 50, but .*info.json says 75"):
        run(tmp_path / "run", **other)
    with pytest.raises(InputError, match="split 'nope'"):
        run(tmp_path / "run", eval_split="nope")
    assert not os.path.exists(tmp_path / "run")


class Crash(Exception):
    pass


def _crash_at(at_step):
    def callback(step, values):
        if step == at_step:
            raise Crash()

    return callback


@pytest.mark.slow  # a training run of its own (about a minute): `make test-slow`
def test_a_crashed_run_resumes_to_the_same_losses(run, test_configs, tmp_path):
    """Dropout on, so the dropout seed state must be restored too; op determinism on."""
    dropout = dataclasses.replace(test_configs()["model_config"], dropout=0.1)
    common = dict(max_steps=8, model_config=dropout, deterministic=True)
    run(tmp_path / "whole", **common)
    want = [m["loss"] for m in _metrics(tmp_path / "whole")]

    def crash_at_5(step, values):
        if step == 5:
            raise Crash()

    with pytest.raises(Crash):
        run(tmp_path / "parts", checkpoint_every=3, step_callback=crash_at_5, **common)
    lines = []
    result = run(tmp_path / "parts", lines, checkpoint_every=3, **common)
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
def test_damaged_latest_checkpoint_falls_back(run, run_copy, how):
    _damage(run_copy, 30, how)
    lines = []
    with pytest.raises(Crash):  # one step is enough to show where it resumed
        run(run_copy, lines, max_steps=30, step_callback=_crash_at(21))
    assert "resumed from checkpoint 20 at step 20" in lines
    assert any("ckpt-30 is damaged" in line for line in lines), lines
    assert any("resumed from" in line and "older checkpoint" in line for line in lines)


def test_no_restorable_checkpoint_never_restarts_from_zero(run, run_copy):
    for number in (10, 20, 30):
        _damage(run_copy, number, "truncated_data")
    with pytest.raises(run_dir.NoValidCheckpointError, match="refusing to start again") as e:
        run(run_copy, max_steps=30)
    assert isinstance(e.value, InputError)  # the command line prints it as one line
    assert _metrics(run_copy)[-1]["step"] == 30  # nothing was logged or overwritten


def test_nan_loss_stops_the_run_and_leaves_only_healthy_checkpoints(
    run, test_configs, test_data_dir, tmp_path
):
    """Healthy: the weights are finite and so is the loss computed on them. The loss of step k
    is computed on the weights saved at step k - 1, so when it is NaN that checkpoint goes; the
    newest one left restores weights whose loss on real training batches is finite. Clipping
    off (grad_clip_norm None) and learning rate 1e30: the run diverges within a few steps."""
    from dct_gen import data
    from dct_gen import model as model_lib

    cfg = test_configs("train_config.learning_rate = 1e30", "train_config.grad_clip_norm = None")
    assert cfg["train_config"].grad_clip_norm is None
    with pytest.raises(training.NonFiniteLossError, match="stopping") as e:
        run(tmp_path, max_steps=50, checkpoint_every=1, **cfg)
    assert isinstance(e.value, InputError)
    steps = [m["step"] for m in _metrics(tmp_path)]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 2, steps
    bad = steps[-1] + 1  # the step whose loss was not finite, computed on ckpt steps[-1]
    assert f"deleted checkpoint {bad - 1}" in str(e.value)
    saved = run_dir.checkpoint_numbers(os.path.join(tmp_path, "checkpoints"))
    assert saved == [bad - 2, bad - 3][: len(saved)] and saved, saved
    assert f"the newest checkpoint left, {bad - 2}, is the last healthy one" in str(e.value)

    loaded = run_dir.load_run(str(tmp_path), log=lambda _: None)
    assert loaded.step == bad - 2
    assert all(np.isfinite(v.numpy()).all() for v in loaded.model.trainable_variables)
    batches = data.make_dataset(
        test_data_dir, "train", batch_size=4, chunk_size=16, overlap=4, seed=0, mode="train"
    ).take(3)
    for batch in batches:
        outputs = model_lib.forward(loaded.model, batch, training=False)
        losses = model_lib.compute_losses(outputs, batch, loaded.dct_config)
        assert np.isfinite(float(tf.reduce_sum(losses["nats"]))), losses["nats"]


@pytest.mark.slow  # a training run of its own (about a minute): `make test-slow`
def test_two_replicas_split_the_batch(run, two_cpu_strategy, tmp_path):
    strategy = two_cpu_strategy
    lines = []
    result = run(
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
    again = run(tmp_path, max_steps=2, strategy=strategy)
    assert (again.resumed_from, again.stopped) == (2, "already_done")


@pytest.mark.slow  # a training run of its own (about a minute): `make test-slow`
def test_sigterm_saves_a_checkpoint(run, test_data_dir, tmp_path):
    """The command line end to end: runs until SIGTERM, saves, exits 143, resumes."""
    cmd = [
        sys.executable,
        "-m",
        "dct_gen.train",
        f"--gin_file={GIN}",
        "--gin_param=model_config.dropout = 0.1",
        f"--data_dir={test_data_dir}",
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
    # The same length resumes (another would be refused: the schedule is fixed). In a process
    # of its own: this one may have op determinism on (another test's), and a deterministic
    # process cannot restore an input iterator a non-deterministic one saved.
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=dict(env, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen, want = [], f"resumed from checkpoint {last} at step {last}"
    deadline = time.time() + 180
    try:
        for line in proc.stdout:  # a line per step (--log_every=1), so the deadline is checked
            seen.append(line.rstrip("\n"))
            if want in line or "error" in line or time.time() > deadline:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert want in seen, seen


# ----------------------------------------------------------------------------------------------
# The command line, in-process: one error line, exit statuses.


@pytest.fixture
def cli(capsys):
    """cli(*args) -> (status, stdout, stderr) of `python -m dct_gen.train ARGS`, in-process."""

    def call(*args):
        status = train.main(list(args))
        out, err = capsys.readouterr()
        return status, out, err

    yield call
    gin.clear_config()


def _error(err: str) -> str:
    """The one error line of stderr (and proof there is nothing else)."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("dct_gen.train: error: "), err
    return lines[0]


def test_missing_data_dir_is_one_line_and_status_2(cli, tmp_path):
    status, _, err = cli(f"--gin_file={GIN}", f"--model_dir={tmp_path}")
    assert status == 2
    assert _error(err) == "dct_gen.train: error: --data_dir is required (unless --dry_run)"


def test_a_data_dir_that_does_not_exist_names_the_flag_and_path(cli, tmp_path):
    missing = str(tmp_path / "nonexistent")
    status, _, err = cli(f"--gin_file={GIN}", f"--data_dir={missing}", f"--model_dir={tmp_path}")
    assert status == 1
    line = _error(err)
    assert "--data_dir" in line and missing in line
    assert not os.listdir(tmp_path)  # nothing was written


@pytest.mark.parametrize(
    "flag, named",
    [
        ("--max_steps=-1", "--max_steps=-1"),
        ("--max_steps=three", "max_steps"),
        ("--bogus_flag=1", "bogus_flag"),
        ("--max_step=3", "max_step"),  # abbreviations are refused
        ("--log_every=0", "--log_every=0"),
    ],
)
def test_bad_flags_are_named_with_status_2(cli, test_data_dir, tmp_path, flag, named):
    args = [f"--gin_file={GIN}", f"--data_dir={test_data_dir}", f"--model_dir={tmp_path}"]
    status, _, err = cli(*args, flag)
    assert status == 2 and named in _error(err)
    assert not os.listdir(tmp_path)


def test_a_gin_binding_that_contradicts_the_data_names_the_field_and_both_values(
    cli, test_data_dir, tmp_path
):
    status, _, err = cli(
        f"--gin_file={GIN}",
        "--gin_param=dct_config.resolution = 64",
        f"--data_dir={test_data_dir}",
        f"--model_dir={tmp_path}",
    )
    assert status == 1
    info = os.path.join(test_data_dir, "info.json")
    assert _error(err) == (
        f"dct_gen.train: error: dct_config.resolution = 64 in gin, but {info} says 32"
    )
    assert not os.listdir(tmp_path)


def test_an_unknown_gin_key_is_named(cli, test_data_dir, tmp_path):
    status, _, err = cli(
        f"--gin_file={GIN}",
        "--gin_param=model_config.bogus = 1",
        f"--data_dir={test_data_dir}",
        f"--model_dir={tmp_path}",
    )
    assert status == 1 and "bogus" in _error(err)


@pytest.mark.parametrize(
    "binding, message",
    [
        ("train_config.learning_rate = -1", "train_config.learning_rate = -1: must be > 0"),
        ("train_config.grad_clip_norm = 0", "train_config.grad_clip_norm = 0: must be > 0"),
        ("model_config.hidden_size = 'abc'", "model_config.hidden_size = 'abc': must be an"),
        ("train_config.batch_size = 0", "train_config.batch_size = 0: must be >= 1"),
        ("train_config.warmup_steps = -1", "train_config.warmup_steps = -1: must be >= 0"),
        ("OVERLAP = 16", "train_config.overlap = 16: must be < train_config.chunk_size = 16"),
        ("model_config.num_heads = 0", "model_config.num_heads = 0: must be >= 1"),
        ("model_config.dropout = 1.5", "model_config.dropout = 1.5: must be in [0, 1)"),
    ],
)
def test_bad_settings_are_named_before_anything_is_written(
    cli, test_data_dir, tmp_path, binding, message
):
    model_dir = tmp_path / "run"
    status, _, err = cli(
        f"--gin_file={GIN}",
        f"--gin_param={binding}",
        f"--data_dir={test_data_dir}",
        f"--model_dir={model_dir}",
    )
    line = _error(err)
    assert status == 1 and line.startswith(f"dct_gen.train: error: {message}"), line
    assert "In call to configurable" not in line
    assert not os.path.exists(model_dir)


# ----------------------------------------------------------------------------------------------
# Classes: a labelled dataset trains a conditional model by name; contradictions are one line.


def test_a_labelled_dataset_trains_a_conditional_model_named_by_its_classes(conditional_run):
    config = _config_json(conditional_run.model_dir)
    assert config["model_config"]["num_classes"] == len(LABELLED_PHOTOS)
    assert config["label_names"] == list(LABELLED_PHOTOS)
    assert config["train_config"]["label_dropout"] == 0.1  # the default, recorded
    events = event_accumulator.EventAccumulator(
        os.path.join(conditional_run.model_dir, "train"),
        size_guidance={event_accumulator.TENSORS: 0},
    )
    events.Reload()
    (caption,) = events.Tensors(training.SAMPLE_CAPTIONS_TAG)
    text = tensor_util.make_ndarray(caption.tensor_proto).item().decode()
    for label, name in enumerate(LABELLED_PHOTOS):  # samples cycle through the classes
        assert f"label {label}: {name}" in text, text
    assert text.count("guidance 2") == 3  # the fixture's --sample_guidance


@pytest.mark.parametrize(
    "labelled, bindings, flag, message",
    [
        (False, [], "--sample_guidance=2", "--sample_guidance=2.0: this model is unconditional"),
        (
            True,
            ["train_config.label_dropout = 0"],
            "--sample_guidance=2",
            "--sample_guidance=2.0: guidance needs the null label",
        ),
        (True, [], "--sample_guidance=-1", "--sample_guidance=-1.0: must be finite and >= 0"),
    ],
)
def test_a_sample_guidance_the_model_cannot_take_is_a_flag_error(
    cli, labelled_data_dir, test_data_dir, tmp_path, labelled, bindings, flag, message
):
    model_dir = tmp_path / "run"
    status, _, err = cli(
        f"--gin_file={GIN}",
        *[f"--gin_param={b}" for b in bindings],
        f"--data_dir={labelled_data_dir if labelled else test_data_dir}",
        f"--model_dir={model_dir}",
        flag,
    )
    line = _error(err)
    assert status == 2 and line.startswith(f"dct_gen.train: error: {message}"), line
    assert not os.path.exists(model_dir)


def test_an_unlabelled_dataset_trains_an_unconditional_model(trained_run):
    config = _config_json(trained_run.model_dir)
    assert config["model_config"]["num_classes"] is None and config["label_names"] is None
    assert config["train_config"]["label_dropout"] == 0.0


@pytest.mark.parametrize(
    "labelled, bindings, message",
    [
        (
            True,
            ["model_config.num_classes = 2"],
            "model_config.num_classes = 2 in gin, but {info} lists 3 label_names for split 'train'",
        ),
        (
            False,
            ["model_config.num_classes = 3"],
            "model_config.num_classes = 3 in gin (a class-conditional model), but {info} lists "
            "no label_names for split 'train': the dataset is unlabelled",
        ),
        (
            True,
            ["model_config.num_classes = 0", "train_config.label_dropout = 0.2"],
            "train_config.label_dropout = 0.2, but the model is unconditional",
        ),
    ],
)
def test_classes_that_contradict_the_data_are_one_line_before_anything_is_written(
    cli, labelled_data_dir, test_data_dir, tmp_path, labelled, bindings, message
):
    data_dir = labelled_data_dir if labelled else test_data_dir
    model_dir = tmp_path / "run"
    status, _, err = cli(
        f"--gin_file={GIN}",
        *[f"--gin_param={b}" for b in bindings],
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
    )
    line = _error(err)
    info = os.path.join(data_dir, "info.json")
    assert status == 1 and line.startswith(f"dct_gen.train: error: {message.format(info=info)}")
    assert not os.path.exists(model_dir)


def test_a_held_out_split_with_other_classes_is_refused(
    run, test_configs, labelled_data_dir, tmp_path
):
    """The Python path checks too: a conditional model whose held-out split names other
    classes than its training split."""
    broken = str(tmp_path / "data")
    shutil.copytree(labelled_data_dir, broken)
    info_path = os.path.join(broken, "info.json")
    with open(info_path) as f:
        info = json.load(f)
    info["splits"]["validation"]["label_names"] = ["a", "b", "c"]
    with open(info_path, "w") as f:
        json.dump(info, f)
    with pytest.raises(InputError, match="split 'validation' has label_names \\['a', 'b', 'c'\\]"):
        run(
            tmp_path / "run",
            data_dir=broken,
            eval_split="validation",
            model_config=dataclasses.replace(test_configs()["model_config"], num_classes=3),
        )
    assert not os.path.exists(tmp_path / "run")


def test_a_changed_length_is_one_line_naming_both_and_the_way(cli, run_copy, trained_run):
    status, _, err = cli(
        f"--gin_file={GIN}",
        f"--data_dir={trained_run.data_dir}",
        f"--model_dir={run_copy}",
        "--max_steps=40",
    )
    line = _error(err)
    assert status == 1
    assert "max_steps 40 makes the schedule 40 steps long" in line
    assert "fixed it at 30 steps" in line and "--extend_steps 10" in line


@pytest.mark.parametrize("flag", ["--extend_steps=0", "--extend_learning_rate=-1"])
def test_bad_extension_flags_are_named_with_status_2(cli, test_data_dir, tmp_path, flag):
    status, _, err = cli(
        f"--gin_file={GIN}", f"--data_dir={test_data_dir}", f"--model_dir={tmp_path}", flag
    )
    assert status == 2 and flag in _error(err)
    assert not os.listdir(tmp_path)


def test_the_representation_comes_from_info_json_when_gin_binds_none(cli, run_copy, trained_run):
    """Gin without gin/data/test.gin binds no dct_config: the command takes info.json's, which
    is the trained run's architecture (a finished run: nothing is retrained)."""
    status, out, err = cli(
        "--gin_file=models/test.gin",
        "--gin_param=model_config.dropout = 0.0",
        "--gin_param=train_config.batch_size = 4",
        "--gin_param=train_config.learning_rate = 1e-3",
        "--gin_param=train_config.tokens = 1e4",
        "--gin_param=train_config.warmup_steps = 2",
        "--gin_param=train_config.mixed_precision = False",
        f"--data_dir={trained_run.data_dir}",
        f"--model_dir={run_copy}",
        "--max_steps=30",
        "--peak_flops=1e11",
    )
    assert status == 0, err
    assert "already done" in out
    with open(os.path.join(run_copy, run_dir.OPERATIVE_CONFIG_FILE)) as f:
        operative = f.read()
    assert "dct_config." not in operative and "train_config.batch_size = 4" in operative
