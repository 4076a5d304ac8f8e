"""One trainer per run directory: MODEL_DIR/LOCK names its holder (host, pid), a second trainer
or a writer that checks is refused with one line naming it, a lock whose process is gone is
taken over with a warning, one from another host never is, SIGTERM and exceptions release it,
and in a multi-worker job only the chief takes it. Real processes hold and race for the lock;
the slow test runs two real trainers."""

import datetime
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

import gin
import pytest

from dct_gen import run_dir, train
from dct_gen.errors import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN = "experiments/test.gin"
HOST = socket.gethostname()

# Holds the lock of argv[1] until its stdin closes (or a signal ends it).
HOLDER = r"""
import sys
from dct_gen import run_dir
with run_dir.RunLock(sys.argv[1]):
    print("holding", flush=True)
    sys.stdin.readline()
"""

# Waits for the file argv[2], then tries the lock of argv[1] once; the winner holds it until
# its stdin closes.
RACER = r"""
import os, sys, time
from dct_gen import run_dir
print("ready", flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.001)
lock = run_dir.RunLock(sys.argv[1], log=lambda line: print(line, file=sys.stderr))
try:
    lock.acquire()
except run_dir.RunLockedError:
    print("locked", flush=True)
    sys.exit(0)
print("got", flush=True)
sys.stdin.readline()
lock.release()
"""


def _python(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _line(proc: subprocess.Popen, timeout: float = 60) -> str:
    """The next stdout line of proc, failing the test after `timeout` seconds."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no output from pid {proc.pid} in {timeout} s"
    return proc.stdout.readline().strip()


@pytest.fixture
def holder(tmp_path):
    """holder(model_dir) -> a running process that holds model_dir's lock (ended afterwards)."""
    procs = []

    def start(model_dir):
        proc = _python(HOLDER, str(model_dir))
        procs.append(proc)
        assert _line(proc) == "holding", proc.stderr.read()
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()


def _dead_pid() -> int:
    """The PID of a process that has ended (and been reaped)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(proc.stdout)


def _write_lock(model_dir, **record) -> str:
    """A LOCK file as a trainer would leave it, without anyone holding its flock."""
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, run_dir.LOCK_FILE)
    full = {"host": HOST, "pid": 1, "started": "2024-01-01T00:00:00.000+00:00", "command": "x"}
    full.update(record)
    with open(path, "w") as f:
        json.dump(full, f)
    return path


def _read_lock(model_dir) -> dict:
    with open(os.path.join(model_dir, run_dir.LOCK_FILE)) as f:
        return json.load(f)


# ----------------------------------------------------------------------------------------------
# The lock in one process.


def test_the_lock_names_its_holder_and_goes_on_exit(tmp_path):
    model_dir = tmp_path / "run"  # created by the lock
    lock_path = model_dir / run_dir.LOCK_FILE
    with run_dir.RunLock(str(model_dir)) as lock:
        assert lock.held
        record = _read_lock(model_dir)
        assert set(record) == {"host", "pid", "started", "command"}
        assert (record["host"], record["pid"]) == (HOST, os.getpid())
        started = datetime.datetime.fromisoformat(record["started"])
        assert abs(datetime.datetime.now().astimezone() - started).total_seconds() < 60
        assert "pytest" in record["command"] or sys.argv[0] in record["command"]
    assert not lock.held and not lock_path.exists()
    assert os.listdir(model_dir) == []


def test_an_exception_releases_the_lock(tmp_path):
    with pytest.raises(KeyError):
        with run_dir.RunLock(str(tmp_path)):
            raise KeyError("boom")
    assert not (tmp_path / run_dir.LOCK_FILE).exists()
    with run_dir.RunLock(str(tmp_path)):  # and it can be taken again
        pass


def test_a_second_lock_in_the_same_process_is_refused_but_check_unlocked_passes(tmp_path):
    with run_dir.RunLock(str(tmp_path)):
        with pytest.raises(
            run_dir.RunLockedError, match=f"this process already .pid {os.getpid()}"
        ):
            run_dir.RunLock(str(tmp_path)).acquire()
        run_dir.check_unlocked(str(tmp_path), "evaluation would write evaluation.json there")
        assert _read_lock(tmp_path)["pid"] == os.getpid()


def test_check_unlocked_without_a_lock_is_silent(tmp_path):
    run_dir.check_unlocked(str(tmp_path), "x")
    run_dir.check_unlocked(str(tmp_path / "missing"), "x")
    assert not (tmp_path / "missing").exists()


def test_release_leaves_a_lock_that_replaced_its_own_alone(tmp_path):
    with run_dir.RunLock(str(tmp_path)):
        os.remove(tmp_path / run_dir.LOCK_FILE)  # someone removed ours and another took it
        _write_lock(tmp_path, host="elsewhere.example", pid=4242)
    assert _read_lock(tmp_path)["pid"] == 4242


# ----------------------------------------------------------------------------------------------
# Another process holds it.


def test_a_live_holder_in_another_process_is_named(tmp_path, holder):
    proc = holder(tmp_path)
    with pytest.raises(run_dir.RunLockedError) as e:
        run_dir.RunLock(str(tmp_path)).acquire()
    assert f"locked by another trainer (host {HOST}, pid {proc.pid}, started " in str(e.value)
    assert isinstance(e.value, InputError) and "\n" not in str(e.value)
    assert e.value.holder["pid"] == proc.pid
    with pytest.raises(run_dir.RunLockedError) as e:
        run_dir.check_unlocked(str(tmp_path), "evaluation would write evaluation.json there")
    assert f"(host {HOST}, pid {proc.pid}," in str(e.value)
    assert "evaluation would write evaluation.json there" in str(e.value)
    assert _read_lock(tmp_path)["pid"] == proc.pid  # untouched
    proc.stdin.close()  # the holder ends normally and removes LOCK
    assert proc.wait(timeout=30) == 0
    assert not (tmp_path / run_dir.LOCK_FILE).exists()
    run_dir.check_unlocked(str(tmp_path), "x")
    with run_dir.RunLock(str(tmp_path)):
        pass


def test_sigterm_releases_the_lock(tmp_path, holder):
    proc = holder(tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert not (tmp_path / run_dir.LOCK_FILE).exists()


def test_a_killed_holders_lock_is_taken_over_with_a_warning(tmp_path, holder):
    proc = holder(tmp_path)
    proc.kill()  # kill -9: nothing of it runs, LOCK stays
    proc.wait(timeout=30)
    assert _read_lock(tmp_path)["pid"] == proc.pid
    run_dir.check_unlocked(str(tmp_path), "x")  # a stale lock stops no one
    lines = []
    with run_dir.RunLock(str(tmp_path), log=lines.append):
        assert _read_lock(tmp_path)["pid"] == os.getpid()
    assert len(lines) == 1, lines
    assert lines[0].startswith("WARNING: ") and "stale lock" in lines[0]
    assert f"(host {HOST}, pid {proc.pid}," in lines[0]
    assert not (tmp_path / run_dir.LOCK_FILE).exists()


@pytest.mark.parametrize("stale", [False, True])
def test_one_of_several_racing_processes_gets_the_lock(tmp_path, stale):
    model_dir, go = tmp_path / "run", tmp_path / "go"
    if stale:
        _write_lock(model_dir, pid=_dead_pid())
    racers = [_python(RACER, str(model_dir), str(go)) for _ in range(3)]
    try:
        assert [_line(p) for p in racers] == ["ready"] * 3
        go.touch()
        outcomes = [_line(p) for p in racers]
        assert sorted(outcomes) == ["got", "locked", "locked"], outcomes
        winner = racers[outcomes.index("got")]
        assert _read_lock(model_dir)["pid"] == winner.pid
    finally:
        for p in racers:
            p.stdin.close()
            assert p.wait(timeout=30) == 0, p.stderr.read()
    assert not (model_dir / run_dir.LOCK_FILE).exists()
    assert sorted(os.listdir(model_dir)) == []  # no partial lock file left behind


# ----------------------------------------------------------------------------------------------
# Stale, foreign and unreadable locks.


def test_flock_decides_over_a_pid_that_lives_on(tmp_path):
    """A LOCK whose flock nobody holds is stale even if its PID now names a live process
    (a reused PID), on this host."""
    _write_lock(tmp_path, pid=os.getppid())
    lines = []
    with run_dir.RunLock(str(tmp_path), log=lines.append):
        assert _read_lock(tmp_path)["pid"] == os.getpid()
    assert len(lines) == 1 and f"pid {os.getppid()}," in lines[0]


def test_without_flock_the_pid_decides(tmp_path, monkeypatch):
    monkeypatch.setattr(run_dir, "fcntl", None)  # a file system without flock
    _write_lock(tmp_path, pid=os.getppid())  # alive, not us: held
    with pytest.raises(run_dir.RunLockedError, match=f"pid {os.getppid()},"):
        run_dir.RunLock(str(tmp_path)).acquire()
    with pytest.raises(run_dir.RunLockedError, match="would write"):
        run_dir.check_unlocked(str(tmp_path), "export would write there")
    dead = _dead_pid()
    _write_lock(tmp_path, pid=dead)  # gone: taken over
    run_dir.check_unlocked(str(tmp_path), "x")
    lines = []
    with run_dir.RunLock(str(tmp_path), log=lines.append):
        assert _read_lock(tmp_path)["pid"] == os.getpid()
    assert len(lines) == 1 and f"pid {dead}," in lines[0]
    # Our own PID in a LOCK this process does not hold: a previous process that had it (a
    # restarted container's trainer gets the same PID).
    _write_lock(tmp_path, pid=os.getpid())
    lines.clear()
    with run_dir.RunLock(str(tmp_path), log=lines.append):
        pass
    assert len(lines) == 1 and "stale lock" in lines[0]


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
    path = _write_lock(tmp_path, host="elsewhere.example", pid=_dead_pid())
    before = open(path).read()
    with pytest.raises(run_dir.RunLockedError) as e:
        run_dir.RunLock(str(tmp_path)).acquire()
    message = str(e.value)
    assert "host elsewhere.example, pid " in message
    assert message.endswith(f"if that host's job is gone, delete {path}")
    with pytest.raises(run_dir.RunLockedError, match=f"delete {path} if that host's job is gone"):
        run_dir.check_unlocked(str(tmp_path), "evaluation would write evaluation.json there")
    assert open(path).read() == before


def test_an_empty_lock_left_by_a_crash_is_taken_over(tmp_path, monkeypatch):
    monkeypatch.setattr(run_dir, "_SETTLE_SECONDS", 0.1)  # how long an empty lock is watched
    (tmp_path / run_dir.LOCK_FILE).write_text("")
    lines = []
    with run_dir.RunLock(str(tmp_path), log=lines.append):
        assert _read_lock(tmp_path)["pid"] == os.getpid()
    assert len(lines) == 1 and "cannot be read" in lines[0]


def test_a_run_directory_that_cannot_be_made_is_named(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(InputError, match=f"{tmp_path / 'file'}: cannot create the run directory"):
        run_dir.RunLock(str(tmp_path / "file")).acquire()


def test_a_remote_run_directory_is_locked_through_gfile(tmp_path):
    """Paths with a scheme (gs://) go through tf.io.gfile; TensorFlow's in-memory file system
    stands in for a bucket."""
    import tensorflow as tf

    model_dir = f"ram://{tmp_path.name}/run"
    path = f"{model_dir}/{run_dir.LOCK_FILE}"

    def write(**record):
        if tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)  # ram:// writes over a file without truncating it
        with tf.io.gfile.GFile(path, "w") as f:
            f.write(json.dumps(dict({"host": HOST, "started": "s", "command": "c"}, **record)))

    def read():
        with tf.io.gfile.GFile(path) as f:
            return json.loads(f.read())

    with run_dir.RunLock(model_dir) as lock:
        assert lock.held and (read()["host"], read()["pid"]) == (HOST, os.getpid())
    assert not tf.io.gfile.exists(path)
    write(host="elsewhere.example", pid=7)  # another host's: never taken over
    with pytest.raises(run_dir.RunLockedError, match=f"pid 7, .*delete {path}$"):
        run_dir.RunLock(model_dir).acquire()
    with pytest.raises(run_dir.RunLockedError, match="evaluation would write"):
        run_dir.check_unlocked(model_dir, "evaluation would write evaluation.json there")
    write(pid=os.getppid())  # this host, alive: held (no flock: the PID decides)
    with pytest.raises(run_dir.RunLockedError, match=f"host {HOST}, pid {os.getppid()},"):
        run_dir.RunLock(model_dir).acquire()
    dead = _dead_pid()
    write(pid=dead)  # this host, gone: taken over with a warning
    run_dir.check_unlocked(model_dir, "x")
    lines = []
    with run_dir.RunLock(model_dir, log=lines.append):
        assert read()["pid"] == os.getpid()
    assert len(lines) == 1 and f"stale lock (host {HOST}, pid {dead}," in lines[0]
    assert not tf.io.gfile.exists(path)


# ----------------------------------------------------------------------------------------------
# Multi-worker jobs: the chief holds the lock.


def _tf_config(cluster: dict, kind: str, index: int) -> str:
    return json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})


WORKERS = {"worker": ["a:1", "b:1", "c:1"]}
WITH_CHIEF = {"chief": ["a:1"], "worker": ["b:1", "c:1"], "ps": ["d:1"]}


@pytest.mark.parametrize(
    "tf_config, chief",
    [
        (None, True),  # no TF_CONFIG in the environment (the test deletes it)
        ("", True),
        ("{}", True),
        (_tf_config({"worker": ["a:1"]}, "worker", 0), True),  # one task: a job of its own
        (_tf_config(WORKERS, "worker", 0), True),
        (_tf_config(WORKERS, "worker", 1), False),
        (_tf_config(WORKERS, "worker", 2), False),
        (_tf_config(WITH_CHIEF, "chief", 0), True),
        (_tf_config(WITH_CHIEF, "worker", 0), False),
        (_tf_config(WITH_CHIEF, "ps", 0), False),
        (_tf_config(WORKERS, "evaluator", 0), False),
        (_tf_config({"master": ["a:1"], "worker": ["b:1"]}, "master", 0), True),
    ],
)
def test_is_chief(tf_config, chief, monkeypatch):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
        assert run_dir.is_chief() is chief
        return
    assert run_dir.is_chief(tf_config) is chief
    monkeypatch.setenv("TF_CONFIG", tf_config)  # the default reads the environment
    assert run_dir.is_chief() is chief


@pytest.mark.parametrize(
    "tf_config, named",
    [
        ("{not json", "TF_CONFIG is not valid JSON"),
        ("[1, 2]", "TF_CONFIG must be a JSON object"),
        (json.dumps({"cluster": WORKERS}), "'task' needs a 'type'"),
        (_tf_config(WORKERS, "worker", "x"), "task index 'x' is not an integer"),
    ],
)
def test_a_malformed_tf_config_is_named(tf_config, named):
    with pytest.raises(InputError, match=named):
        run_dir.is_chief(tf_config)


def test_a_worker_that_is_not_the_chief_leaves_the_lock_alone(tmp_path, holder, monkeypatch):
    proc = holder(tmp_path)  # the chief
    monkeypatch.setenv("TF_CONFIG", _tf_config(WORKERS, "worker", 1))
    with run_dir.RunLock(str(tmp_path)) as lock:
        assert not lock.held
    assert _read_lock(tmp_path)["pid"] == proc.pid
    with run_dir.RunLock(str(tmp_path / "new")):
        pass
    assert not (tmp_path / "new").exists()
    monkeypatch.setenv("TF_CONFIG", _tf_config(WORKERS, "worker", 0))  # the chief's own view
    with pytest.raises(run_dir.RunLockedError, match=f"pid {proc.pid},"):
        run_dir.RunLock(str(tmp_path)).acquire()


# ----------------------------------------------------------------------------------------------
# The command line: a second trainer.


@pytest.fixture
def train_cli(capsys):
    """train_cli(*args) -> (status, stdout, stderr) of `python -m dct_gen.train ARGS`,
    in-process (this test process is the second trainer)."""

    def call(*args):
        status = train.main(list(args))
        out, err = capsys.readouterr()
        return status, out, err

    yield call
    gin.clear_config()


def _snapshot(model_dir) -> dict:
    """name -> (bytes, mtime_ns) of every file under model_dir."""
    out = {}
    for dirpath, _, files in os.walk(model_dir):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, model_dir)] = (f.read(), os.stat(path).st_mtime_ns)
    return out


def test_a_second_trainer_exits_1_naming_the_holder_and_writes_nothing(
    tmp_path, holder, test_data_dir, train_cli
):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    # What a running trainer has written so far (any bytes do: nothing may rewrite them).
    (model_dir / run_dir.RUN_CONFIG_FILE).write_text('{"sentinel": 1}\n')
    (model_dir / run_dir.METRICS_FILE).write_text('{"step": 1}\n')
    proc = holder(model_dir)
    before = _snapshot(model_dir)
    status, _, err = train_cli(
        f"--gin_file={GIN}",
        f"--data_dir={test_data_dir}",
        f"--model_dir={model_dir}",
        "--max_steps=1",
        "--peak_flops=1e11",
    )
    assert status == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(
        f"dct_gen.train: error: {model_dir} is locked by another trainer "
        f"(host {HOST}, pid {proc.pid}, started "
    ), err
    assert _snapshot(model_dir) == before


@pytest.mark.slow  # two real trainers and a third after a kill -9 (about a minute)
def test_two_real_trainers(tmp_path, test_data_dir):
    """A training process holds the run; a second `python -m dct_gen.train` on the same
    directory exits 1 with one line naming it and writes nothing; after a kill -9 of the first,
    the next one takes the stale lock over with a warning and trains."""
    model_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "dct_gen.train",
        f"--gin_file={GIN}",
        f"--data_dir={test_data_dir}",
        f"--model_dir={model_dir}",
        "--log_every=1",
        "--checkpoint_every=100000",
        "--peak_flops=1e11",
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    first = subprocess.Popen(
        [*cmd, "--max_steps=100000"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        metrics = model_dir / run_dir.METRICS_FILE
        deadline = time.time() + 180
        while time.time() < deadline and first.poll() is None:
            if metrics.exists() and metrics.read_text().count("\n") >= 1:
                break
            time.sleep(0.2)
        assert first.poll() is None and metrics.exists(), "the first trainer did not start"
        assert _read_lock(model_dir)["pid"] == first.pid
        written = {
            name: os.stat(model_dir / name).st_mtime_ns
            for name in (run_dir.RUN_CONFIG_FILE, run_dir.OPERATIVE_CONFIG_FILE)
        }
        second = subprocess.run(
            [*cmd, "--max_steps=2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert second.returncode == 1, second.stderr
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, second.stderr
        assert lines[0].startswith(
            f"dct_gen.train: error: {model_dir} is locked by another trainer "
            f"(host {HOST}, pid {first.pid}, started "
        ), second.stderr
        assert {name: os.stat(model_dir / name).st_mtime_ns for name in written} == written
        assert first.poll() is None  # the first one trains on
    finally:
        first.kill()
        first.wait(timeout=60)
    assert _read_lock(model_dir)["pid"] == first.pid  # kill -9 leaves its lock
    third = subprocess.run(
        [*cmd, "--max_steps=1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert third.returncode == 0, third.stderr
    assert f"taking over a stale lock (host {HOST}, pid {first.pid}," in third.stdout
    assert "stopped at step 1 (done)" in third.stdout
    assert not (model_dir / run_dir.LOCK_FILE).exists()


def test_an_export_into_a_locked_run_is_refused_and_one_beside_it_is_not(tmp_path, holder):
    from dct_gen import saved_model

    run = tmp_path / "run"
    proc = holder(run)
    with pytest.raises(run_dir.RunLockedError) as e:
        saved_model.check_out(str(run / "saved_model"), str(run), name="--out")
    assert f"pid {proc.pid}" in str(e.value) and "--out=" in str(e.value)
    saved_model.check_out(str(tmp_path / "saved_model"), str(run), name="--out")  # outside: fine
    assert not (run / "saved_model").exists()
