"""The run directory: its file names, config.json, the checkpoint list, restore and `load_run`.

A run directory (`--model_dir`) is written by `python -m dct_gen.train` and read by sampling,
evaluation, export and the demo, all through this module:

    MODEL_DIR/
      config.json            the model and train configs as plain JSON (`save_run_config`)
      operative_config.gin   the gin configuration the run was started with (for people)
      checkpoints/ckpt-N.*   model, optimizer, step, data iterator (`restore_latest`)
      metrics.jsonl          one line per logged training step
      eval.jsonl             one line per held-out evaluation
      train/ eval/           TensorBoard events

JSON files are written atomically (`write_json`): a reader never sees half a file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable
from typing import Any

from dct_gen.errors import InputError

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


def save_run_config(model_dir: str, model_config, train_config) -> None:
    """Writes model_dir/config.json: the model and train configs as plain JSON, so a run can be
    rebuilt without gin (`load_run`).

    A resumed run rewrites it with its own configs, but may not change the architecture of a
    run that has checkpoints.

    Raises:
      InputError: model_dir holds checkpoints of another architecture (the message names the
        changed fields).
    """
    path = os.path.join(model_dir, RUN_CONFIG_FILE)
    new = {
        "model_config": dataclasses.asdict(model_config),
        "train_config": dataclasses.asdict(train_config),
    }
    new = json.loads(json.dumps(new))  # tuples as lists, as read back
    if os.path.exists(path) and checkpoint_steps(model_dir):
        old = (read_json(path) or {}).get("model_config", {})
        changed = [
            k
            for k in sorted(set(old) | set(new["model_config"]))
            if k not in FREE_MODEL_FIELDS and old.get(k) != new["model_config"].get(k)
        ]
        if changed:
            details = ", ".join(
                f"{k}: {old.get(k)} -> {new['model_config'].get(k)}" for k in changed
            )
            raise InputError(
                f"{model_dir} holds checkpoints of another model ({path}: {details}); train it "
                "in a new --model_dir, or move the old run away"
            )
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
