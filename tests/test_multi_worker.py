"""Multi-worker training: two real `python -m dct_gen.train` processes on 127.0.0.1, one job
(MultiWorkerMirroredStrategy on CPU, TF_CONFIG), one --model_dir.

Only the chief writes the run directory (metrics.jsonl and eval.jsonl once per step, one event
file per TensorBoard folder, its config.json and operative_config.gin, its lock), the other
worker's checkpoint copies leave nothing behind, both end together without a coordination
error, a resumed job restores the same step and weights on both workers, a SIGTERM to one
worker stops both at the same step, and a chief that refuses to start stops the other worker
too. Each test starts TensorFlow in two processes: they are slow (`make test-slow`).
"""

import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from dct_gen import run_dir, training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN = "experiments/test.gin"
PEAK = 1e11  # a fixed MFU denominator: the workers skip the peak measurement
# The other worker's own train_config.tokens: harmless with --max_steps (which sets the
# length), and visible in config.json and operative_config.gin had that worker written them.
OTHER_TOKENS = 20000
# What TensorFlow prints when a worker of the job ends before, or long after, the others.
COORDINATION_ERRORS = (
    "Failed to send RPC",
    "coordination service",
    "CoordinationServiceError",
    "unhealthy",
    "heartbeat",
    "StartAbort",
    "Traceback",
)
TEMP_PREFIX = "dct_gen-worker-checkpoint-"

pytestmark = pytest.mark.slow


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Job:
    """Two workers of one job: worker 0 (the chief) and worker 1, each with its own $TMPDIR
    and its output in a file (a pipe that nobody reads could fill and stall a worker)."""

    def __init__(self, tmp_path, data_dir: str, model_dir: str, name: str, *args: str):
        ports = _free_ports(2)
        cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
        self.logs, self.procs, self.tmpdirs = [], [], []
        for index in range(2):
            tmpdir = tmp_path / f"tmp{index}"
            tmpdir.mkdir(exist_ok=True)
            log = tmp_path / f"{name}-worker{index}.log"
            task = {"type": "worker", "index": index}
            env = dict(
                os.environ,
                TF_CONFIG=json.dumps({"cluster": cluster, "task": task}),
                TMPDIR=str(tmpdir),
                TF_CPP_MIN_LOG_LEVEL="1",  # TensorFlow's errors and warnings show
            )
            cmd = [
                sys.executable,
                "-m",
                "dct_gen.train",
                f"--gin_file={GIN}",
                f"--data_dir={data_dir}",
                f"--model_dir={model_dir}",
                "--log_every=1",
                f"--peak_flops={PEAK}",
                *args,
            ]
            if index == 1:
                cmd.append(f"--gin_param=train_config.tokens = {OTHER_TOKENS}")
            with open(log, "w") as out:
                proc = subprocess.Popen(
                    cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True
                )
            self.logs.append(log)
            self.procs.append(proc)
            self.tmpdirs.append(tmpdir)

    def wait(self, timeout: float = 600) -> list[int]:
        deadline = time.time() + timeout
        try:
            return [p.wait(timeout=max(deadline - time.time(), 1)) for p in self.procs]
        finally:
            self.kill()

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    def outputs(self) -> list[str]:
        return [log.read_text() for log in self.logs]


def _metric_steps(model_dir) -> list[int]:
    path = os.path.join(model_dir, run_dir.METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line)["step"] for line in f if line.strip()]


def _jsonl(model_dir, name) -> list[dict]:
    with open(os.path.join(model_dir, name)) as f:
        return [json.loads(line) for line in f if line.strip()]


def _check_clean_ends(outputs: list[str]) -> None:
    for index, out in enumerate(outputs):
        for marker in COORDINATION_ERRORS:
            assert marker not in out, f"worker {index}: {marker!r} in its output:\n{out}"


def _check_written_once(model_dir: str, job: Job, evaluated: bool) -> None:
    """The run directory is the chief's alone, and the other worker left nothing anywhere."""
    chief, other = (p.pid for p in job.procs)
    for folder in ("train", "eval"):
        # events.out.tfevents.<time>.<host>.<pid>.<n>.v2: each run of the job adds one file.
        events = glob.glob(os.path.join(model_dir, folder, "events.out.tfevents.*"))
        pids = [int(re.search(r"\.(\d+)\.\d+\.v2$", e).group(1)) for e in events]
        assert pids.count(chief) == 1 and other not in pids, (events, chief, other)
    with open(os.path.join(model_dir, run_dir.RUN_CONFIG_FILE)) as f:
        config = json.load(f)
    assert config["train_config"]["tokens"] == 10000  # the chief's test.gin value
    assert config["schedule"]["tokens"] == 10000
    with open(os.path.join(model_dir, run_dir.OPERATIVE_CONFIG_FILE)) as f:
        operative = f.read()
    assert "train_config.tokens = 10000" in operative and str(OTHER_TOKENS) not in operative
    assert not os.path.exists(os.path.join(model_dir, run_dir.LOCK_FILE))
    expected = {
        run_dir.CHECKPOINT_DIR,
        run_dir.RUN_CONFIG_FILE,
        run_dir.OPERATIVE_CONFIG_FILE,
        run_dir.METRICS_FILE,
        "train",
        "eval",
    }
    if evaluated:
        expected.add(run_dir.EVAL_FILE)
    assert set(os.listdir(model_dir)) == expected
    checkpoint_files = os.listdir(os.path.join(model_dir, run_dir.CHECKPOINT_DIR))
    assert all(n == "checkpoint" or n.startswith("ckpt-") for n in checkpoint_files)
    for tmpdir in job.tmpdirs:
        assert not [n for n in os.listdir(tmpdir) if n.startswith(TEMP_PREFIX)]


def test_two_workers_write_once_end_together_and_resume(test_data_dir, tmp_path):
    model_dir = str(tmp_path / "run")

    # ---- A new job: 2 steps, a checkpoint at each (each a save on both workers).
    job = Job(tmp_path, test_data_dir, model_dir, "first", "--max_steps=2", "--checkpoint_every=1")
    statuses = job.wait()
    chief_out, other_out = job.outputs()
    assert statuses == [0, 0], f"{chief_out}\n=====\n{other_out}"
    _check_clean_ends([chief_out, other_out])
    assert "worker 1 of a multi-worker job: the chief writes" in other_out
    assert "stopped at step 2 (done)" in chief_out and "stopped at step 2 (done)" in other_out
    assert _metric_steps(model_dir) == [1, 2]
    assert run_dir.checkpoint_steps(model_dir) == [2, 1]
    _check_written_once(model_dir, job, evaluated=False)
    for folder in ("train", "eval"):
        assert len(os.listdir(os.path.join(model_dir, folder))) == 1

    # ---- Resumed and extended, evaluating every step, until a SIGTERM to the other worker.
    job = Job(
        tmp_path,
        test_data_dir,
        model_dir,
        "resumed",
        "--max_steps=2",
        "--extend_steps=100000",
        "--extend_learning_rate=1e-3",
        "--checkpoint_every=100000",
        "--eval_split=validation",
        "--eval_every=1",
        "--eval_batches=2",
    )
    try:
        deadline = time.time() + 480
        while time.time() < deadline and all(p.poll() is None for p in job.procs):
            if _metric_steps(model_dir)[-1] >= 4:
                break
            time.sleep(0.2)
        job.procs[1].send_signal(signal.SIGTERM)
    finally:
        statuses = job.wait()
    chief_out, other_out = job.outputs()
    assert statuses == [143, 143], f"{chief_out}\n=====\n{other_out}"
    _check_clean_ends([chief_out, other_out])
    for out in (chief_out, other_out):
        assert "resumed from checkpoint 2 at step 2" in out, out
    assert "this worker's input starts a new stream" in other_out
    stopped = _metric_steps(model_dir)[-1]
    assert stopped >= 4
    assert f"SIGTERM to another worker: saved checkpoint {stopped} in" in chief_out
    assert f"SIGTERM: saved checkpoint {stopped} in" in other_out
    for out in (chief_out, other_out):
        assert f"stopped at step {stopped} (sigterm)" in out
    assert _metric_steps(model_dir) == list(range(1, stopped + 1))
    evals = _jsonl(model_dir, run_dir.EVAL_FILE)
    assert [e["step"] for e in evals] == list(range(3, stopped + 1))
    assert run_dir.checkpoint_steps(model_dir) == [stopped, 2, 1]
    with open(os.path.join(model_dir, run_dir.RUN_CONFIG_FILE)) as f:
        extensions = json.load(f)["schedule"]["extensions"]
    assert [(e["at_step"], e["total_steps"]) for e in extensions] == [(2, 100002)]
    _check_written_once(model_dir, job, evaluated=True)

    # ---- Both workers held the chief's weights: their evaluation at the last step (each
    # worker scores its half of each batch with its own copy) equals one process's evaluation
    # of the checkpoint the chief saved there.
    import tensorflow as tf

    loaded = run_dir.load_run(model_dir, checkpoint=stopped, log=lambda _: None)
    strategy = tf.distribute.get_strategy()
    eval_step = training.make_eval_step(strategy, loaded.model, loaded.model_config.dct)
    tc = loaded.train_config
    expected = dict(
        training.evaluate(
            strategy,
            eval_step,
            data_dir=test_data_dir,
            split="validation",
            batch_size=tc.batch_size,
            chunk_size=tc.chunk_size,
            overlap=tc.overlap,
            target_part=tc.target_part,
            max_batches=2,
        )
    )
    last = evals[-1]
    assert last["chunks"] == expected["chunks"] == 2 * tc.batch_size
    for name in ("bits_per_subpixel", "channel_bits_per_subpixel", "value_bits_per_subpixel"):
        assert last[name] == pytest.approx(expected[name], rel=1e-5), name


def test_a_chief_that_refuses_to_start_stops_the_other_worker(test_data_dir, tmp_path):
    model_dir = str(tmp_path / "run")
    with run_dir.RunLock(model_dir) as lock:  # this process is a live trainer of model_dir
        job = Job(tmp_path, test_data_dir, model_dir, "refused", "--max_steps=2")
        statuses = job.wait()
        assert lock.held
    outputs = job.outputs()
    assert statuses == [1, 1], "\n=====\n".join(outputs)
    _check_clean_ends(outputs)
    errors = [_error_line(out) for out in outputs]
    holder = f"is locked by another trainer (host {socket.gethostname()}, pid {os.getpid()},"
    assert holder in errors[0], errors[0]
    assert errors[1] == (
        "dct_gen.train: error: the chief of this multi-worker job refused to start training in "
        f"{model_dir} (its output says why); this worker stops with it"
    )
    assert os.listdir(model_dir) == []  # neither worker wrote; the LOCK went with the `with`


def _error_line(out: str) -> str:
    """A worker's one error line: its last line, and the only one of its kind."""
    lines = [line for line in out.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("dct_gen.train: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], out
    return errors[0]
