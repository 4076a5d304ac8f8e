"""The run directory: its file names, config.json, the checkpoint list, restore and `load_run`.

A run directory (`--model_dir`) is written by `python -m dct_gen.train` and read by sampling,
evaluation, export and the demo, all through this module:

    MODEL_DIR/
      config.json            the model and train configs as plain JSON, and the learning-rate
                             schedule (`save_run_config`)
      operative_config.gin   the gin configuration the run was started with (for people)
      checkpoints/ckpt-N.*   model, optimizer, step, data iterator (`restore_latest`)
      metrics.jsonl          one line per logged training step
      eval.jsonl             one line per held-out evaluation
      train/ eval/           TensorBoard events
      LOCK                   while a trainer runs: its host and PID (`RunLock`)

JSON files are written atomically (`write_json`): a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import json
import os
import re
import shlex
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from dct_gen.errors import InputError

try:
    import fcntl
except ImportError:  # not a POSIX system: the lock falls back to the holder's PID
    fcntl = None

CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval.jsonl"
OPERATIVE_CONFIG_FILE = "operative_config.gin"
RUN_CONFIG_FILE = "config.json"

# ModelConfig fields that change no weight: a resumed run may change them (dropout from zero
# to non-zero adds seed-generator state, which the restore then reports).
FREE_MODEL_FIELDS = ("dropout", "structural_mask")


class RunDirectoryError(InputError, FileNotFoundError):
    """model_dir is not a trained run: missing, no config.json, or no checkpoint."""


class NoValidCheckpointError(InputError, RuntimeError):
    """Checkpoints exist in model_dir but none can be restored."""


# ----------------------------------------------------------------------------------------------
# JSON files.


def write_json(path: str, value: Any) -> None:
    """Writes `value` as indented JSON to path, atomically (a temporary file, then a rename)."""
    import tensorflow as tf

    parent = os.path.dirname(path)
    if parent:
        tf.io.gfile.makedirs(parent)
    partial = f"{path}.partial"
    with tf.io.gfile.GFile(partial, "w") as f:
        f.write(json.dumps(value, indent=2, sort_keys=True) + "\n")
    tf.io.gfile.rename(partial, path, overwrite=True)


def read_json(path: str, default: Any = None) -> Any:
    """The JSON value in path; `default` when the file does not exist.

    Raises:
      InputError: the file is not valid JSON (the message names the file).
    """
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        return default
    try:
        with tf.io.gfile.GFile(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from e


def truncate_jsonl(path: str, after_step: int) -> None:
    """Drops lines of a JSONL log beyond the resumed step (they are about to be redone)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    kept = [line for line in lines if json.loads(line).get("step", 0) <= after_step]
    if len(kept) != len(lines):
        with open(path, "w") as f:
            f.writelines(kept)


def last_eval_split(model_dir: str) -> str | None:
    """The split the run evaluated last during training (eval.jsonl), None if it never did."""
    import tensorflow as tf

    path = os.path.join(model_dir, EVAL_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    for line in reversed(lines):
        try:
            split = json.loads(line).get("split")
        except json.JSONDecodeError:
            continue
        if split:
            return split
    return None


# ----------------------------------------------------------------------------------------------
# Checkpoints.


def checkpoint_numbers(directory: str) -> list[int]:
    """Numbers of every checkpoint with any file in `directory`, newest first (index or data
    alone: a checkpoint whose index is missing still counts, so it is reported, not skipped)."""
    import tensorflow as tf

    numbers = set()
    for path in tf.io.gfile.glob(os.path.join(directory, "ckpt-*")):
        m = re.match(r"ckpt-(\d+)\.", os.path.basename(path))
        if m:
            numbers.add(int(m.group(1)))
    return sorted(numbers, reverse=True)


def checkpoint_steps(model_dir: str) -> list[int]:
    """Steps of the checkpoints in model_dir/checkpoints, newest first (any file counts)."""
    return checkpoint_numbers(os.path.join(model_dir, CHECKPOINT_DIR))


def restore_latest(
    checkpoint, directory: str, log: Callable[[str], None] = print, partial: bool = False
) -> int | None:
    """Restores the newest checkpoint that restores; returns its number, None when there is none.

    A checkpoint that fails (missing index, truncated or corrupt data) is reported and the next
    older one is tried.

    Args:
      checkpoint: a tf.train.Checkpoint to restore into.
      directory: the folder of ckpt-N files.
      log: where the warnings go.
      partial: `checkpoint` holds only part of what was saved (the model without the optimizer).

    Raises:
      NoValidCheckpointError: checkpoints exist but none restores.
    """
    import tensorflow as tf

    failures = []
    for number in checkpoint_numbers(directory):
        path = os.path.join(directory, f"ckpt-{number}")
        try:
            if not tf.io.gfile.exists(path + ".index"):
                raise FileNotFoundError(f"{path}.index is missing")
            status = checkpoint.restore(path).assert_existing_objects_matched()
            if partial:
                status.expect_partial()
        except Exception as e:  # a damaged file fails in many ways (OpError, IndexError, ...)
            message = str(e).strip().splitlines()[0][:300]
            failures.append(f"{path}: {message}")
            log(f"WARNING: checkpoint {path} is damaged ({message}); trying an older one")
            continue
        if failures:
            log(f"WARNING: resumed from {path}, an older checkpoint than the damaged newest")
        return number
    if failures:
        raise NoValidCheckpointError(
            f"{directory} holds checkpoints but none restores; refusing to start again from "
            "step 0 (move them away to start afresh): " + "; ".join(failures)
        )
    return None


def model_checkpoint(model):
    """A tf.train.Checkpoint that reads a model's variables, and nothing else, out of a
    training checkpoint.

    Training saves Checkpoint(model=, optimizer=, state=, tokens_seen=, data=). The Keras 3
    model's own trackable graph reaches only some of its variables (most weights of the custom
    layers are not tracked children), so Checkpoint(model=m) would restore only those. Every
    trainable variable is an element of the optimizer's `_trainable_variables` list (in
    `model.trainable_variables` order) and every other one an element of `state` (in
    `model.variables` order): this object mirrors exactly those two paths, without building
    the optimizer or its slots, so that `assert_existing_objects_matched` proves that every
    variable was read.
    """
    import tensorflow as tf

    trainable = list(model.trainable_variables)
    ids = {id(v) for v in trainable}
    state = [v for v in model.variables if id(v) not in ids]
    return tf.train.Checkpoint(
        optimizer=tf.train.Checkpoint(_trainable_variables=trainable), state=state
    )


# ----------------------------------------------------------------------------------------------
# config.json.


def save_run_config(
    model_dir: str,
    model_config,
    train_config,
    schedule: dict | None = None,
    label_names: Sequence[str] | None = None,
) -> None:
    """Writes model_dir/config.json: the model and train configs as plain JSON, so a run can be
    rebuilt without gin (`load_run`), and the run's learning-rate schedule.

    A resumed run rewrites it with its own configs, but may not change the architecture of a
    run that has checkpoints.

    Args:
      model_dir: the run directory.
      model_config, train_config: the run's ModelConfig and TrainConfig.
      schedule: the schedule as plain JSON (`dct_gen.training.Schedule.to_json`: its length,
        warmup, peak rate and extensions), fixed when the run starts; None keeps the one
        config.json holds, if any.
      label_names: a class-conditional model's class names (index = label), from its
        dataset's info.json; None: none (recorded as null).

    Raises:
      InputError: model_dir holds checkpoints of another architecture (the message names the
        changed fields).
    """
    path = os.path.join(model_dir, RUN_CONFIG_FILE)
    new = {
        "model_config": dataclasses.asdict(model_config),
        "train_config": dataclasses.asdict(train_config),
        "label_names": None if label_names is None else [str(n) for n in label_names],
    }
    new = json.loads(json.dumps(new))  # tuples as lists, as read back
    old = (read_json(path) or {}) if os.path.exists(path) else {}
    if old and checkpoint_steps(model_dir):
        old_model = old.get("model_config", {})
        changed = [
            k
            for k in sorted(set(old_model) | set(new["model_config"]))
            if k not in FREE_MODEL_FIELDS and old_model.get(k) != new["model_config"].get(k)
        ]
        if changed:
            details = ", ".join(
                f"{k}: {old_model.get(k)} -> {new['model_config'].get(k)}" for k in changed
            )
            raise InputError(
                f"{model_dir} holds checkpoints of another model ({path}: {details}); train it "
                "in a new --model_dir, or move the old run away"
            )
    if schedule is None:
        schedule = old.get("schedule")
    if schedule is not None:
        new["schedule"] = json.loads(json.dumps(schedule))
    write_json(path, new)


def read_run_config(model_dir: str):
    """(ModelConfig, TrainConfig) from model_dir/config.json.

    Raises:
      RunDirectoryError: model_dir or its config.json does not exist.
      InputError: config.json is not a valid run configuration (the message names the file).
    """
    from dct_gen import configs
    from dct_gen import model as model_lib
    from dct_gen.representation import DCTConfig

    path = os.path.join(model_dir, RUN_CONFIG_FILE)
    if not os.path.isdir(model_dir):
        raise RunDirectoryError(f"run directory {model_dir} does not exist")
    if not os.path.exists(path):
        raise RunDirectoryError(
            f"{path} does not exist: {model_dir} is not a run directory of "
            "`python -m dct_gen.train`"
        )
    raw = read_json(path)
    try:
        mc = dict(raw["model_config"])
        mc["dct"] = DCTConfig.from_dict(mc["dct"])
        return model_lib.ModelConfig(**mc), configs.TrainConfig(**raw["train_config"])
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: not a valid run configuration ({e})") from e


# ----------------------------------------------------------------------------------------------
# A trained run, for sampling, evaluation and export.


@dataclasses.dataclass
class LoadedRun:
    """A trained run: its model with a checkpoint restored, and its configs.

    Unpacks as (model, model_config, dct_config, train_config).

    Attributes:
      model: the Keras model (`dct_gen.model.build_model`), built in `strategy`'s scope.
      model_config, dct_config, train_config: from the run's config.json.
      model_dir: the run directory.
      checkpoint: the restored checkpoint's path prefix (model_dir/checkpoints/ckpt-N).
      step: its training step N.
      strategy: the tf.distribute strategy the model's variables live in.
    """

    model: Any
    model_config: Any
    dct_config: Any
    train_config: Any
    model_dir: str
    checkpoint: str
    step: int
    strategy: Any

    def __iter__(self):
        return iter((self.model, self.model_config, self.dct_config, self.train_config))


def load_run(
    model_dir: str,
    *,
    checkpoint: int | None = None,
    strategy=None,
    mixed_precision: bool | None = None,
    log: Callable[[str], None] = print,
) -> LoadedRun:
    """Rebuilds a trained run's model from its config.json and restores a checkpoint.

    Args:
      model_dir: a run directory written by `python -m dct_gen.train`.
      checkpoint: the step of the checkpoint to restore; None: the newest that restores (a
        damaged newest one is reported and an older one used, as training resumes).
      strategy: build the model in this strategy's scope; None: the default strategy.
      mixed_precision: build under mixed_bfloat16 (True) or float32 (False); None: as the run
        trained (train_config.mixed_precision), so evaluation repeats training's numerics.
      log: where notes go.

    Returns:
      A LoadedRun; `model, model_config, dct_config, train_config = load_run(d)` unpacks it.

    Raises:
      RunDirectoryError: no such directory, no config.json, no checkpoint (or not the one
        asked for), or none that restores into the model the config describes.
      InputError: config.json is not a valid run configuration.
    """
    import keras
    import tensorflow as tf

    from dct_gen import model as model_lib

    model_config, train_config = read_run_config(model_dir)
    directory = os.path.join(model_dir, CHECKPOINT_DIR)
    steps = checkpoint_steps(model_dir)
    if not steps:
        raise RunDirectoryError(
            f"no checkpoint in {directory}: the run has not saved one yet (training saves every "
            "--checkpoint_every steps and at its last step)"
        )
    if checkpoint is not None and checkpoint not in steps:
        raise RunDirectoryError(f"{directory} has no checkpoint {checkpoint}; it has {steps}")
    strategy = strategy or tf.distribute.get_strategy()
    mixed = train_config.mixed_precision if mixed_precision is None else mixed_precision
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16" if mixed else "float32")
    try:
        with strategy.scope():
            model = model_lib.build_model(model_config)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    target = model_checkpoint(model)
    if checkpoint is None:
        try:
            step = restore_latest(target, directory, log, partial=True)
        except NoValidCheckpointError as e:
            raise RunDirectoryError(
                f"no checkpoint in {directory} restores into the model that "
                f"{RUN_CONFIG_FILE} describes: {e}"
            ) from e
    else:
        path = os.path.join(directory, f"ckpt-{checkpoint}")
        try:
            target.restore(path).assert_existing_objects_matched().expect_partial()
        except Exception as e:  # a damaged or mismatched checkpoint fails in many ways
            message = str(e).strip().splitlines()[0][:300]
            raise RunDirectoryError(f"checkpoint {path} does not restore: {message}") from e
        step = checkpoint
    path = os.path.join(directory, f"ckpt-{step}")
    log(f"restored {path} ({model.count_params():,} parameters)")
    return LoadedRun(
        model=model,
        model_config=model_config,
        dct_config=model_config.dct,
        train_config=train_config,
        model_dir=model_dir,
        checkpoint=path,
        step=int(step),
        strategy=strategy,
    )


# ----------------------------------------------------------------------------------------------
# One trainer per run directory: MODEL_DIR/LOCK.
#
# A trainer creates LOCK (O_CREAT | O_EXCL), takes an exclusive flock on it, then writes who it
# is: {"host", "pid", "started", "command"}. The flock is what says the holder lives: the kernel
# drops it when the process ends, however it ends, so on a local disk a stale lock is told
# apart exactly (a reused PID, or a restarted container whose trainer got the same PID, cannot
# fool it). Where the file system has no flock, the holder's PID is checked on the same host.
# Remote file systems (gs://, through tf.io.gfile) have neither an exclusive create nor a
# flock: there the lock is created if absent and read back, best effort (two trainers starting
# in the same instant may both pass).

LOCK_FILE = "LOCK"

# How long a lock in an unclear state (being written, or being taken over by another process)
# is watched before it is judged: each of those takes microseconds.
_SETTLE_SECONDS = 2.0
_SETTLE_POLL = 0.02
# errno values with which a file system says it has no flock.
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS}

_held: dict[str, RunLock] = {}  # real path of a LOCK -> the RunLock this process holds there


class RunLockedError(InputError):
    """Another live trainer holds the run directory's lock; the message names its host and pid.

    Attributes:
      path: the LOCK file.
      holder: its record ({"host", "pid", "started", "command"}; {} when unreadable).
    """

    def __init__(self, message: str, path: str = "", holder: dict | None = None):
        super().__init__(message)
        self.path = path
        self.holder = dict(holder or {})


def is_chief(tf_config_json: str | None = None) -> bool:
    """Whether this process speaks for its training job (the one that holds the run lock).

    A process without TF_CONFIG, or whose TF_CONFIG names one task, is a job of its own. In a
    multi-worker job the chief is task "chief" (or "master"), else "worker" 0 when the cluster
    has no chief; every other task (the other workers, ps, evaluator) is not.

    Args:
      tf_config_json: the TF_CONFIG text; None: os.environ["TF_CONFIG"] (unset: no cluster).

    Raises:
      InputError: TF_CONFIG is not a JSON object, or names several tasks but not this one.
    """
    text = os.environ.get("TF_CONFIG", "") if tf_config_json is None else tf_config_json
    if not text.strip():
        return True
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"TF_CONFIG is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise InputError(f"TF_CONFIG must be a JSON object, not {text[:80]!r}")
    cluster = config.get("cluster") or {}
    if not isinstance(cluster, dict):
        raise InputError(f"TF_CONFIG: 'cluster' must map task types to tasks, not {cluster!r}")
    if sum(len(tasks) for tasks in cluster.values()) <= 1:
        return True
    task = config.get("task")
    kind = task.get("type") if isinstance(task, dict) else None
    if not kind:
        raise InputError(
            "TF_CONFIG names several tasks but not this process's: 'task' needs a 'type' and "
            "an 'index'"
        )
    try:
        index = int(task.get("index", 0))
    except (TypeError, ValueError):
        raise InputError(f"TF_CONFIG: task index {task.get('index')!r} is not an integer") from None
    if kind in ("chief", "master"):
        return True
    return kind == "worker" and index == 0 and not ({"chief", "master"} & set(cluster))


def _is_remote(path: str) -> bool:
    return "://" in path


def _key(path: str) -> str:
    """The name of a LOCK in this process's table of held locks."""
    return path if _is_remote(path) else os.path.realpath(path)


def _new_record() -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="milliseconds"),
        "command": shlex.join(getattr(sys, "orig_argv", sys.argv)),
    }


def _parse_record(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) and "pid" in value else None


def _pid_gone(pid) -> bool:
    """True when no process with this PID exists on this host."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: it exists and belongs to another user
        return False
    return False


def _flock(fd: int, exclusive: bool) -> bool | None:
    """Takes a flock without waiting: True taken, False another holds it, None no flock here."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in _NO_FLOCK:
            return None
        raise
    return True


def _same_file(path: str, fd: int) -> bool:
    """Whether path still names the file open as fd (not removed, not replaced)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    fst = os.fstat(fd)
    return (st.st_ino, st.st_dev) == (fst.st_ino, fst.st_dev)


def _describe(holder: dict) -> str:
    """The holder as error lines name it: host, pid, when and what."""
    if not holder:
        return "a process whose lock record cannot be read"
    text = f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}"
    if holder.get("started"):
        text += f", started {holder['started']}"
    command = " ".join(str(holder.get("command") or "").split())
    if command:
        text += f", command: {command if len(command) <= 120 else command[:117] + '...'}"
    return text


@dataclasses.dataclass
class _Seen:
    """What a look at an existing LOCK found.

    verdict: 'live' (a live process holds it, or one that cannot be checked), 'foreign' (written
    on another host: never taken over automatically), 'stale' (its process is gone), 'unclear'
    (being written or taken over: look again).
    fd: the open LOCK, flocked, kept by an exclusive look that found it stale (to take it over
    while nobody else can).
    """

    verdict: str
    holder: dict
    fd: int | None = None


def _judge(holder: dict | None, text: str, flocked: bool | None, final: bool) -> str:
    """The verdict on a lock, given whether its flock could be taken (None: no flock here).

    `final`: the lock has looked unclear for _SETTLE_SECONDS; decide.
    """
    if holder is None:
        if flocked is False:
            return "live" if final else "unclear"  # its creator is writing its record
        if flocked and text.strip():
            return "stale"  # the creator flocks before it writes: whoever wrote this is gone
        # Empty: its creator is between O_EXCL and its flock, or died there.
        return "stale" if final else "unclear"
    same_host = holder.get("host") == socket.gethostname()
    if flocked is False:
        # Flocked, by a process other than the one named: another one is taking it over.
        if same_host and _pid_gone(holder.get("pid")) and not final:
            return "unclear"
        return "live"
    if not same_host:
        return "foreign"
    if flocked:
        return "stale"
    # No flock: the PID decides. Our own PID in a lock this process does not hold was a
    # previous process's (a restarted container numbers its processes from 1 again).
    pid = holder.get("pid")
    return "stale" if _pid_gone(pid) or str(pid) == str(os.getpid()) else "live"


def _look_local(path: str, exclusive: bool, final: bool) -> _Seen | None:
    """Judges an existing local LOCK; None when there is none."""
    try:
        # Read-only either way: flock takes an exclusive lock on any open file, and a takeover
        # replaces the file rather than write into it.
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    keep = False
    try:
        flocked = _flock(fd, exclusive)
        if not _same_file(path, fd):
            return _Seen("live" if final else "unclear", {})  # replaced while we opened it
        text = os.pread(fd, 1 << 16, 0).decode("utf-8", "replace")
        holder = _parse_record(text)
        verdict = _judge(holder, text, flocked, final)
        keep = exclusive and verdict == "stale"
        return _Seen(verdict, holder or {}, fd if keep else None)
    finally:
        if not keep:
            os.close(fd)  # lets go of the flock a look took


def _look_remote(path: str, final: bool) -> _Seen | None:
    import tensorflow as tf

    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except tf.errors.NotFoundError:
        return None
    holder = _parse_record(text)
    return _Seen(_judge(holder, text, None, final), holder or {})


def _look(path: str, exclusive: bool) -> _Seen | None:
    """Judges an existing LOCK, watching an unclear one until it settles (None: no LOCK)."""
    deadline = time.monotonic() + _SETTLE_SECONDS
    while True:
        final = time.monotonic() > deadline
        if _is_remote(path):
            seen = _look_remote(path, final)
        else:
            seen = _look_local(path, exclusive, final)
        if seen is None or seen.verdict != "unclear":
            return seen
        time.sleep(_SETTLE_POLL)


class RunLock:
    """One trainer's exclusive lock on a run directory (MODEL_DIR/LOCK), a context manager:
    `with run_dir.RunLock(model_dir): ...` takes it before anything is written there and
    releases it (removes LOCK) on the way out, on an exception too.

    The lock belongs to a job: in a multi-worker job (TF_CONFIG) only the chief (`is_chief`)
    takes it, and the other workers leave it alone. A lock whose process is gone from this host
    is taken over with a warning; one written on another host never is (the error says to
    delete LOCK if that job is gone). While the lock is held, a SIGTERM that would kill the
    process outright (no handler installed) exits through Python instead (SystemExit, status
    143), so that the lock is still released.

    Args:
      model_dir: the run directory; created if missing.
      log: where the stale-lock warning goes.
      chief: whether this process takes the lock; None: `is_chief()` (from TF_CONFIG).

    Raises (on entry):
      RunLockedError: another live process holds the lock (the message names its host and pid).
      InputError: TF_CONFIG is malformed.
    """

    def __init__(
        self,
        model_dir: str,
        log: Callable[[str], None] = print,
        *,
        chief: bool | None = None,
    ):
        self.model_dir = model_dir
        self.path = os.path.join(model_dir, LOCK_FILE)
        self.log = log
        self.chief = chief
        self.held = False
        self.record: dict = {}  # what this lock wrote into LOCK
        self._fd: int | None = None
        self._previous_sigterm = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        """Takes the lock; does nothing when held already or on a worker that is not the chief.

        Raises:
          RunLockedError: another live process holds it.
        """
        if self.held or not (is_chief() if self.chief is None else self.chief):
            return
        key = _key(self.path)
        if key in _held:
            raise RunLockedError(
                f"{self.model_dir} is locked by this process already (pid {os.getpid()}): one "
                "trainer per run directory",
                self.path,
                _held[key].record,
            )
        if _is_remote(self.path):
            self._acquire_remote()
        else:
            self._acquire_local()
        self.held = True
        _held[key] = self
        self._catch_sigterm()

    def release(self) -> None:
        """Removes LOCK if it is still this lock's, and lets go of it."""
        if not self.held:
            return
        self.held = False
        _held.pop(_key(self.path), None)
        self._restore_sigterm()
        if _is_remote(self.path):
            import tensorflow as tf

            seen = _look_remote(self.path, final=True)
            if seen is not None and seen.holder == self.record:
                tf.io.gfile.remove(self.path)
            return
        fd, self._fd = self._fd, None
        try:
            # Our flock keeps a takeover from replacing LOCK between this check and the unlink.
            if _same_file(self.path, fd):
                os.unlink(self.path)
        finally:
            os.close(fd)

    # -- Local disks: O_EXCL create, flock, record.

    def _acquire_local(self) -> None:
        try:
            os.makedirs(self.model_dir, exist_ok=True)
        except OSError as e:
            raise InputError(
                f"{self.model_dir}: cannot create the run directory ({e.strerror or e})"
            ) from None
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
            except FileExistsError:
                fd = None
            except OSError as e:
                raise InputError(
                    f"{self.path}: cannot create the run directory's lock ({e.strerror or e})"
                ) from None
            if fd is not None:
                try:
                    self._write_local(fd)
                except BaseException:
                    # Half made (a full disk?): leave no lock that names nobody.
                    if _same_file(self.path, fd):
                        os.unlink(self.path)
                    os.close(fd)
                    raise
                if _same_file(self.path, fd):
                    self._fd = fd
                    return
                # Stalled before its flock long enough to be taken over: look again.
                os.close(fd)
                continue
            seen = _look(self.path, exclusive=True)
            if seen is None:
                continue  # released meanwhile: create it
            if seen.verdict != "stale":
                raise self._locked_error(seen)
            try:
                if seen.fd is None or _same_file(self.path, seen.fd):
                    self._take_over_local(seen.holder)
                    return
            finally:
                if seen.fd is not None:
                    os.close(seen.fd)

    def _write_local(self, fd: int) -> None:
        """Flocks a new lock file and writes this process's record into it."""
        if fcntl is not None:
            try:
                # Waits: a contender may hold it for the instant of a look, then lets go.
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as e:
                if e.errno not in _NO_FLOCK:
                    raise
        self.record = _new_record()
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(self.record, sort_keys=True) + "\n").encode(), 0)
        os.fsync(fd)

    def _take_over_local(self, holder: dict) -> None:
        """Replaces a stale LOCK, atomically, with a new one of this process."""
        partial = f"{self.path}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        fd = os.open(partial, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        try:
            self._write_local(fd)
            os.replace(partial, self.path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
            raise
        self._fd = fd
        self._warn_stale(holder)

    # -- Remote file systems (gs://): create if absent, then read back.

    def _acquire_remote(self) -> None:
        import tensorflow as tf

        tf.io.gfile.makedirs(self.model_dir)
        seen = _look(self.path, exclusive=True)
        if seen is not None and seen.verdict != "stale":
            raise self._locked_error(seen)
        self.record = _new_record()
        if seen is not None:
            # Some file systems (TensorFlow's ram://) write over a file without truncating it.
            with contextlib.suppress(tf.errors.NotFoundError):
                tf.io.gfile.remove(self.path)
        with tf.io.gfile.GFile(self.path, "w") as f:
            f.write(json.dumps(self.record, sort_keys=True) + "\n")
        check = _look_remote(self.path, final=True)
        if check is None or check.holder != self.record:
            # Another trainer wrote its record over ours in the same instant: it has the lock.
            raise self._locked_error(check or _Seen("live", {}))
        if seen is not None:
            self._warn_stale(seen.holder)

    # -- Messages and signals.

    def _warn_stale(self, holder: dict) -> None:
        self.log(
            f"WARNING: {self.path}: taking over a stale lock ({_describe(holder)}): that process "
            "is gone"
        )

    def _locked_error(self, seen: _Seen) -> RunLockedError:
        message = (
            f"{self.model_dir} is locked by another trainer ({_describe(seen.holder)}); one "
            "trainer per run directory: wait for it to end or stop it, or train elsewhere"
        )
        if seen.verdict == "foreign":
            message += f"; if that host's job is gone, delete {self.path}"
        return RunLockedError(message, self.path, seen.holder)

    def _catch_sigterm(self) -> None:
        """SIGTERM's default kills at once and leaves LOCK behind: exit through Python instead."""
        try:
            if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                self._previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        except ValueError:  # not the main thread: only the main thread may set handlers
            self._previous_sigterm = None

    def _restore_sigterm(self) -> None:
        if self._previous_sigterm is None:
            return
        with contextlib.suppress(ValueError):
            if signal.getsignal(signal.SIGTERM) is _exit_on_sigterm:
                signal.signal(signal.SIGTERM, self._previous_sigterm)
        self._previous_sigterm = None


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signal.SIGTERM)


def check_unlocked(model_dir: str, what: str) -> None:
    """Refuses to write into a run directory whose lock a live trainer of another process holds.

    One stat when there is no LOCK; otherwise a flock probe (exact on a local disk) or, where
    there is none, the holder's PID. A stale lock, or one this process holds, is no obstacle.

    Args:
      model_dir: the run directory.
      what: what would be written, for the message, e.g. "evaluation would write
        evaluation.json there".

    Raises:
      RunLockedError: a live trainer holds the lock (the message names its host, its pid and
        `what`).
    """
    path = os.path.join(model_dir, LOCK_FILE)
    if _key(path) in _held:
        return
    if not _is_remote(path) and not os.path.exists(path):
        return
    seen = _look(path, exclusive=False)
    if seen is None or seen.verdict == "stale":
        return
    message = f"{model_dir} is locked by a running trainer ({_describe(seen.holder)}): {what}"
    message += "; wait for the training to end"
    if seen.verdict == "foreign":
        message += f", or delete {path} if that host's job is gone"
    raise RunLockedError(message, path, seen.holder)
