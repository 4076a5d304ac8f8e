"""The training library: trains a DCTransformer on a dataset into a run directory.

`train(...)` is the loop, plain Python with keyword arguments (no flags, no gin; the command
line is `dct_gen.train`). It reads in sections: setup (configs against the data, strategy,
precision, seeds), input, model and optimizer, restore, loop, evaluate, save.

- Representation: the dataset's info.json states it (`read_representation`); the model's must
  equal it, and a contradiction is an `InputError` naming the field and both values.
- Strategy (`make_strategy`): TPUStrategy with a TPU name, MultiWorkerMirroredStrategy when
  TF_CONFIG names more than one task, MirroredStrategy over the local GPUs, else the default
  strategy. The global batch (train_config.batch_size) is split across replicas.
- Several workers: only the chief writes the run directory and holds its lock
  (`writes_run_dir`); the others save their checkpoint copies to a temporary folder, removed
  at once (`save_worker_copy`), restore the chief's checkpoint but its iterators, and start a
  new input stream on resume (`worker_stream_seed`). The workers agree on stopping (a SIGTERM
  to any, a chief that refuses to start: `make_worker_agreement`) and leave `train` together
  (`_workers_end_together`).
- Optimisation: Adam; learning rate linear from 0 over warmup_steps, then cosine to 0 at the
  last step (`make_learning_rate`); gradients clipped to a global norm. The run's length is
  train_config.tokens target elements (elements that carry loss), converted to steps as
  ceil(tokens / (batch_size * chunk_size)) (`steps_for_tokens`); max_steps overrides it.
- Checkpoints (model_dir/checkpoints): model, optimizer, step, tokens seen, the dropout seed
  state and the input iterator (the data stream resumes exactly), every checkpoint_every
  steps, at the end and at SIGTERM. A run resumes from its model_dir by itself; a checkpoint
  that fails to restore is reported and the next older one is tried; when checkpoints exist
  and none restores the run stops (`run_dir.NoValidCheckpointError`) rather than start again
  from step 0.
- Logs: model_dir/metrics.jsonl (one JSON line per log step), TensorBoard events under
  model_dir/train and model_dir/eval (the configs as text and the hparams at the start, the
  grouped held-out scalars and the bits-per-chunk picture at each evaluation, captioned
  sample grids: `write_eval_summaries`, `write_config_text`, `write_hparams`),
  model_dir/eval.jsonl (one line per held-out evaluation, `evaluate`), a console line per log
  step with an ETA. Every run-directory name
  comes from `dct_gen.run_dir`.
- Learning-rate schedule (`Schedule`): fixed in config.json when the run starts (length, peak,
  warmup). A resumed run whose settings give another is refused (`check_same_plan`); the one
  way to change it is an explicit extension (`extend_schedule`: a cosine from the current rate
  down to 0 at the new end, so the rate never jumps), recorded in config.json.
- Healthy checkpoints: a NaN or infinite loss or gradient norm stops the run
  (`NonFiniteLossError`). That loss was computed on the previous step's weights, so their
  checkpoint, if there is one, is deleted; weights that are not finite are never saved. A
  checkpoint left after the error is healthy: every element of its weights is finite and the
  loss the next step computed on them (when one ran) was finite.

Errors a user causes (a config that contradicts the data, another architecture in the run
directory, a missing dataset or split, checkpoints none of which restores, a non-finite loss)
are `dct_gen.errors.InputError`s whose message names the field or file.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import functools
import gc
import json
import math
import os
import signal
import time
import traceback
from collections.abc import Callable, Iterator

from dct_gen import run_dir
from dct_gen.errors import InputError

COMPONENTS = ("channel", "position", "value")


class NonFiniteLossError(InputError, FloatingPointError):
    """The loss or gradient norm became NaN or infinite (or the weights did at a save); the run
    stops, and the checkpoint of the weights that gave it is deleted (the learning rate or the
    data is at fault, so the command line reports it as one line and exits 1)."""


# ----------------------------------------------------------------------------------------------
# The dataset.


def read_dataset_info(data_dir: str) -> dict:
    """A dataset's info.json, read once, checked to state a representation.

    Raises:
      InputError: info.json is missing or not a dataset description (the message names it).
    """
    from dct_gen import records

    path = records.join(data_dir, records.INFO_FILENAME)
    try:
        info = records.read_info(data_dir)
        records.representation_from_info(info)
        return info
    except FileNotFoundError as e:
        raise InputError(
            f"{path} does not exist: {data_dir} is not a dataset directory of "
            "beam_jobs.build_dataset"
        ) from e
    except ValueError as e:  # a bad format version, a missing field, not JSON
        message = str(e)
        raise InputError(message if path in message else f"{path}: {message}") from e


def read_representation(data_dir: str):
    """The representation (a DCTConfig) of a dataset, from its info.json.

    Raises:
      InputError: info.json is missing or not a dataset description (the message names it).
    """
    from dct_gen import records

    return records.representation_from_info(read_dataset_info(data_dir))


def check_split(data_dir: str, split: str) -> list[str]:
    """The shard paths of a split, checked before any training starts.

    Raises:
      InputError: the split does not exist or did not finish (the message names the file).
    """
    from dct_gen import records

    try:
        return records.split_files(data_dir, split)
    except (FileNotFoundError, ValueError) as e:
        raise InputError(f"split {split!r} of {data_dir}: {e}") from e


# ----------------------------------------------------------------------------------------------
# Pieces of the loop (each replaceable: a TPU-specific step or loop can swap in for these).


@functools.cache
def make_strategy(tpu: str | None = None):
    """TPUStrategy (tpu given), MultiWorkerMirrored (TF_CONFIG with several tasks), Mirrored
    (local GPUs), else the default strategy.

    Made once per process and argument: a second MirroredStrategy in the same process hands out
    the collective keys the first one used, and its all-reduce fails ("Shape mismatch in the
    collective instance"); a TPU system is initialized once."""
    import tensorflow as tf

    if tpu:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    run_dir.is_chief()  # a malformed TF_CONFIG is an InputError naming it, not a traceback
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    tasks = sum(len(v) for v in (tf_config.get("cluster") or {}).values())
    if tasks > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if tf.config.list_physical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


# ----------------------------------------------------------------------------------------------
# Multi-worker jobs: one writer of the run directory, and workers that stop together.


def is_multi_worker(strategy) -> bool:
    """Whether `strategy` spans several processes (MultiWorkerMirroredStrategy over a cluster
    of more than one worker)."""
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
        strategy.num_replicas_in_sync > len(strategy.extended.worker_devices)
    )


def writes_run_dir(strategy) -> bool:
    """Whether this process writes the run directory (config.json, operative_config.gin, the
    checkpoints, metrics.jsonl, eval.jsonl, TensorBoard events) and holds its lock.

    True everywhere but on the workers of a multi-worker job other than its chief (task
    "chief", else "worker" 0: the strategy's `should_checkpoint`, which agrees with
    `run_dir.is_chief` on TF_CONFIG's tasks)."""
    return bool(strategy.extended.should_checkpoint)


def make_worker_agreement(strategy) -> Callable[[bool], bool]:
    """A function any_worker(flag) -> whether any worker of the job passed True.

    In a multi-worker job it is a collective (an all-reduce over every replica): every worker
    calls it at the same point of its loop, and none returns before all have arrived, so it is
    also a barrier. In a job of one process it returns the flag.
    """
    import tensorflow as tf

    if not is_multi_worker(strategy):
        return bool

    @tf.function
    def count(flag):
        # In replica context: strategy.reduce of a value that is not per-replica (one replica
        # per worker) would return it unreduced, with no collective at all. The identity places
        # the value on the replica's device, where the all-reduce takes it from.
        def replica_fn():
            return tf.distribute.get_replica_context().all_reduce("SUM", tf.identity(flag))

        return strategy.experimental_local_results(strategy.run(replica_fn))[0]

    def any_worker(flag: bool) -> bool:
        return int(count(tf.constant(int(bool(flag)), tf.int32))) > 0

    return any_worker


def save_worker_copy(checkpoint, step: int) -> None:
    """A checkpoint save on a worker that is not the chief: to a temporary folder of its own,
    removed at once.

    Every worker must save when the chief saves (a save may read variables through
    collectives), but only the chief's copy is kept, in the run directory: two workers writing
    the same ckpt-N files would overwrite each other's. The folder is local to the worker
    (tempfile: $TMPDIR), so nothing of it reaches the run directory even when a crash leaves
    it behind.
    """
    import shutil
    import tempfile

    import tensorflow as tf

    folder = tempfile.mkdtemp(prefix="dct_gen-worker-checkpoint-")
    try:
        tf.train.CheckpointManager(checkpoint, folder, max_to_keep=1).save(checkpoint_number=step)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def worker_stream_seed(seed: int, step: int) -> int:
    """The input seed of a worker that is not the chief, resumed at `step`.

    Its iterators are not in the checkpoint (only the chief's copy is kept), so its stream
    starts again; from a seed of its own for each resumed step, so that a job resumed often
    does not replay the start of the same stream each time."""
    return (int(seed) * 1_000_003 + int(step)) % (2**31 - 1)


def steps_for_tokens(tokens: int, batch_size: int, chunk_size: int) -> int:
    """Training steps for a token budget: every step sees batch_size chunks of up to C targets.

    Last chunks of sequences are shorter than C, so the run sees somewhat fewer target tokens
    than the budget; metrics.jsonl reports the count actually seen.
    """
    return max(1, math.ceil(tokens / (batch_size * chunk_size)))


def make_learning_rate(peak: float, warmup_steps: int, total_steps: int, extensions=()):
    """Linear warmup from 0 to `peak` over warmup_steps, then cosine decay to 0 at total_steps;
    each of `extensions` (`Extension`s, in order) replaces the rest of it from its at_step on.

    Returns:
      A Keras LearningRateSchedule: rate(step), where step is the number of steps already
      taken (the optimizer's iteration count).
    """
    import keras

    warmup = min(warmup_steps, max(total_steps - 1, 0))
    base = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(total_steps - warmup, 1),
        alpha=0.0,
        warmup_target=peak,
        warmup_steps=warmup,
    )
    if not extensions:
        return base
    return _extended_schedule_class()(base, tuple(extensions))


@functools.cache
def _extended_schedule_class():
    """The Keras schedule class of an extended run (made on first use: Keras loads lazily)."""
    import keras
    from keras import ops

    class ExtendedSchedule(keras.optimizers.schedules.LearningRateSchedule):
        """A base schedule whose rest, from each extension's at_step on, is that extension's
        cosine from its learning_rate down to 0 at its total_steps (0 after it)."""

        def __init__(self, base, extensions):
            self.base = base
            self.extensions = extensions

        def __call__(self, step):
            step = ops.cast(step, "float32")
            rate = self.base(step)
            for e in self.extensions:
                length = float(max(e.total_steps - e.at_step, 1))
                progress = ops.clip((step - float(e.at_step)) / length, 0.0, 1.0)
                tail = e.learning_rate * 0.5 * (1.0 + ops.cos(math.pi * progress))
                rate = ops.where(step >= float(e.at_step), ops.cast(tail, rate.dtype), rate)
            return rate

        def get_config(self):
            return {
                "base": self.base.get_config(),
                "extensions": [dataclasses.asdict(e) for e in self.extensions],
            }

    return ExtendedSchedule


# ----------------------------------------------------------------------------------------------
# The schedule: fixed in config.json when a run starts, changed only by an explicit extension.


@dataclasses.dataclass(frozen=True)
class Extension:
    """A new tail of a run's schedule: from at_step on, a cosine from learning_rate down to 0 at
    total_steps.

    Attributes:
      at_step: the step the run was at when the extension was asked for.
      learning_rate: the rate at at_step: the schedule's own rate there (so it never jumps), or
        the rate asked for (extend_learning_rate).
      total_steps: where the new tail reaches 0: the run's planned steps + extend_steps.
      extend_steps, extend_learning_rate: what was asked for (None: not given). A run asking for
        the same again follows this extension and adds none.
    """

    at_step: int
    learning_rate: float
    total_steps: int
    extend_steps: int | None = None
    extend_learning_rate: float | None = None


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A run's learning-rate schedule, as config.json records it under "schedule".

    Attributes:
      learning_rate: the peak rate (train_config.learning_rate when the run started).
      warmup_steps: the linear warmup (train_config.warmup_steps when the run started).
      planned_steps: the length the run started with: max_steps, or the steps of the token
        budget (`steps_for_tokens`); the base cosine reaches 0 there.
      tokens: train_config.tokens when the run started.
      max_steps: the max_steps the run started with (None: its length came from tokens).
      extensions: tails added since, in order (`Extension`).
    """

    learning_rate: float
    warmup_steps: int
    planned_steps: int
    tokens: int
    max_steps: int | None = None
    extensions: tuple[Extension, ...] = ()

    @property
    def total_steps(self) -> int:
        """Where the schedule ends: the last extension's end, else planned_steps."""
        return self.extensions[-1].total_steps if self.extensions else self.planned_steps

    def learning_rate_schedule(self):
        """The Keras schedule (`make_learning_rate`) the optimizer follows."""
        return make_learning_rate(
            self.learning_rate, self.warmup_steps, self.planned_steps, self.extensions
        )

    def rate_at(self, step: int) -> float:
        """The learning rate of the update after `step` steps (what metrics.jsonl logs at
        `step`)."""
        return float(self.learning_rate_schedule()(step))

    def to_json(self) -> dict:
        value = dataclasses.asdict(self)
        value["extensions"] = [dataclasses.asdict(e) for e in self.extensions]
        value["total_steps"] = self.total_steps
        return value

    @classmethod
    def from_json(cls, value, where: str) -> Schedule:
        """The schedule config.json records.

        Raises:
          InputError: it is not a schedule (the message names `where`).
        """
        try:
            fields = {f.name for f in dataclasses.fields(cls)} - {"extensions"}
            extensions = tuple(Extension(**e) for e in value.get("extensions", ()))
            return cls(**{k: value[k] for k in fields if k in value}, extensions=extensions)
        except (AttributeError, TypeError, ValueError) as e:
            raise InputError(f'{where}: "schedule" is not a learning-rate schedule ({e})') from e


def stored_schedule(model_dir: str) -> Schedule | None:
    """The schedule model_dir/config.json records; None when there is none (no config.json, or
    one written before schedules were recorded)."""
    path = os.path.join(model_dir, run_dir.RUN_CONFIG_FILE)
    value = (run_dir.read_json(path) or {}).get("schedule")
    return None if value is None else Schedule.from_json(value, path)


def _length_source(schedule: Schedule) -> str:
    if schedule.max_steps is not None:
        return f"max_steps {schedule.max_steps}"
    return f"train_config.tokens = {schedule.tokens:g}"


def check_same_plan(stored: Schedule, planned: Schedule, where: str) -> None:
    """Refuses a resumed run whose settings would change the schedule it started with.

    Args:
      stored: the schedule config.json recorded when the run started.
      planned: the schedule this run's settings give (max_steps or tokens, peak, warmup).
      where: the config.json path, for the message.

    Raises:
      InputError: a different length, peak rate or warmup; the message names both values and
        the way to extend the run (extend_steps, extend_learning_rate).
    """
    if planned.planned_steps != stored.planned_steps:
        more = planned.planned_steps - stored.planned_steps
        way = (
            f"keep {_length_source(stored)} and add --extend_steps {more} (extend_steps={more}) "
            f"to train {more} steps more than planned"
            if more > 0
            else f"keep {_length_source(stored)}: a schedule is never shortened (stop the run "
            "instead)"
        )
        raise InputError(
            f"{_length_source(planned)} makes the schedule {planned.planned_steps} steps long, "
            f"but {where} fixed it at {stored.planned_steps} steps ({_length_source(stored)}) "
            f"when the run started, and a new length would make the learning rate jump: {way}"
        )
    if planned.learning_rate != stored.learning_rate:
        raise InputError(
            f"train_config.learning_rate = {planned.learning_rate:g}, but {where} fixed the "
            f"schedule's peak at {stored.learning_rate:g} when the run started: keep "
            f"{stored.learning_rate:g}, and add --extend_learning_rate {planned.learning_rate:g} "
            f"(extend_learning_rate={planned.learning_rate:g}) to go on from the current step "
            "with a cosine from that rate down to 0"
        )
    if planned.warmup_steps != stored.warmup_steps:
        raise InputError(
            f"train_config.warmup_steps = {planned.warmup_steps}, but {where} fixed it at "
            f"{stored.warmup_steps} when the run started: keep {stored.warmup_steps}"
        )


def extend_schedule(
    schedule: Schedule,
    step: int,
    extend_steps: int | None,
    extend_learning_rate: float | None,
    where: str,
) -> Schedule:
    """The schedule with the extension asked for, starting at `step`; `schedule` itself when
    none is asked for, or when its last extension is the same request (a rerun of the command
    that asked for it).

    The rule: from `step` on, the rate follows a cosine from its current value (or from
    extend_learning_rate) down to 0 at planned_steps + extend_steps (or at the schedule's
    current end, when only extend_learning_rate is given). Without extend_learning_rate the
    rate never jumps.

    Raises:
      InputError: the extension would shorten the schedule, leaves nothing to train, or would
        train at rate 0 (a finished schedule without extend_learning_rate).
    """
    if extend_steps is None and extend_learning_rate is None:
        return schedule
    last = schedule.extensions[-1] if schedule.extensions else None
    if last is not None and (last.extend_steps, last.extend_learning_rate) == (
        extend_steps,
        extend_learning_rate,
    ):
        return schedule
    end = schedule.total_steps
    if extend_steps is not None:
        end = schedule.planned_steps + extend_steps
        if end < schedule.total_steps:
            raise InputError(
                f"--extend_steps {extend_steps} would end the schedule at step {end}, but {where} "
                f"already has it end at step {schedule.total_steps} (--extend_steps "
                f"{schedule.total_steps - schedule.planned_steps}): extend_steps counts from the "
                f"run's planned {schedule.planned_steps} steps, so give more, or none to go on "
                "as recorded"
            )
    if end <= step:
        raise InputError(
            f"the run is at step {step} and its schedule ends at step {end}: nothing is left to "
            "train; --extend_steps N trains to step planned + N "
            f"({schedule.planned_steps} + N)"
        )
    if extend_learning_rate is None:
        if step >= schedule.total_steps:
            raise InputError(
                f"the run finished its schedule at step {schedule.total_steps}, where the "
                f"learning rate is 0: --extend_steps {extend_steps} alone would train at rate "
                "0; add --extend_learning_rate R to train with a cosine from R down to 0 over "
                f"steps {step} to {end}"
            )
        rate = schedule.rate_at(step)
    else:
        rate = float(extend_learning_rate)
    kept = tuple(e for e in schedule.extensions if e.at_step < step)
    extension = Extension(step, rate, end, extend_steps, extend_learning_rate)
    return dataclasses.replace(schedule, extensions=kept + (extension,))


def _describe(extension: Extension) -> str:
    return (
        f"from step {extension.at_step}, a cosine from {extension.learning_rate:.3g} down to 0 "
        f"at step {extension.total_steps}"
    )


def measure_peak_flops(dtype: str = "float32", size: int | None = None, seconds: float = 0.5):
    """FLOP/s of a square matmul on the first replica's device: the MFU denominator.

    A measured peak (not a datasheet figure): on CPUs it is what the math library reaches, on
    accelerators it is below the datasheet, so MFU is measured against what is reachable.
    """
    import tensorflow as tf

    gpu_or_tpu = bool(
        tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU")
    )
    n = size or (8192 if gpu_or_tpu else 1024)
    a = tf.random.stateless_normal([n, n], seed=[1, 2], dtype=dtype)
    b = tf.random.stateless_normal([n, n], seed=[3, 4], dtype=dtype)

    @tf.function
    def loop(a, b, count):
        # Feed each product into the next so that no matmul can be skipped.
        def body(i, x):
            return i + 1, tf.matmul(x, b) * tf.cast(1.0 / n, dtype)

        return tf.while_loop(lambda i, _: i < count, body, (0, a))[1]

    float(tf.reduce_sum(tf.cast(loop(a, b, tf.constant(1)), "float32")))  # trace, warm up
    count, elapsed = 1, 0.0
    while elapsed < seconds:
        count *= 2
        start = time.perf_counter()
        float(tf.reduce_sum(tf.cast(loop(a, b, tf.constant(count)), "float32")))
        elapsed = time.perf_counter() - start
    return 2.0 * n**3 * count / elapsed


def make_train_step(
    strategy, model, optimizer, dct, clip_norm: float | None, jit_compile: bool | None = None
):
    """One optimisation step over the next global batch; returns replica-reduced metrics.

    clip_norm: gradients are clipped to this global norm; None: not clipped.
    jit_compile: passed to tf.function; True compiles the whole step with XLA, as TPUs do (the
      tests compile it on the CPU to keep the step free of ops that XLA lacks).

    The loss is total nats over the global batch's target elements: each replica divides its
    sum by the all-reduced token count, so summed replica gradients are the global gradient.
    Gradients are summed here to clip them by their true global norm; the Keras optimizer sums
    replicas again, hence the division by the replica count (a no-op on one replica).
    """
    import tensorflow as tf

    from dct_gen import model as model_lib

    replicas = strategy.num_replicas_in_sync
    variables = model.trainable_variables

    def step_fn(batch):
        ctx = tf.distribute.get_replica_context()
        with tf.GradientTape() as tape:
            outputs = model_lib.forward(model, batch, training=True)
            losses = model_lib.compute_losses(outputs, batch, dct)
            tokens = ctx.all_reduce("sum", losses["tokens"])
            loss = tf.reduce_sum(losses["nats"]) / tf.maximum(tokens, 1.0)
        grads = tape.gradient(loss, variables)
        # Embedding gradients arrive as IndexedSlices; dense ones all-reduce and scale simply.
        grads = [tf.convert_to_tensor(g) for g in grads]
        grads = ctx.all_reduce("sum", grads)
        if clip_norm is None:  # clipping off: the norm is still logged
            grad_norm = tf.linalg.global_norm(grads)
        else:
            grads, grad_norm = tf.clip_by_global_norm(grads, clip_norm)
        if replicas > 1:
            grads = [g / replicas for g in grads]
        optimizer.apply(grads, variables)
        metrics = {"loss": loss * 1.0, "tokens": losses["tokens"], "grad_norm": grad_norm}
        # Means over examples, weighted by replica: the per-replica values are averaged.
        for name in ("bits_per_subpixel",) + tuple(f"{c}_bits_per_subpixel" for c in COMPONENTS):
            metrics[name] = losses[name] / replicas
        for c in COMPONENTS:
            metrics[f"{c}_loss"] = tf.reduce_sum(losses[f"{c}_nats"]) / tf.maximum(tokens, 1.0)
        return metrics

    @tf.function(jit_compile=jit_compile)
    def train_step(batch):
        per_replica = strategy.run(step_fn, args=(batch,))
        out = {}
        for k, v in per_replica.items():
            # grad_norm is already identical on every replica (computed after the all-reduce).
            reduce = "mean" if k == "grad_norm" else "sum"
            out[k] = strategy.reduce(reduce, v, axis=None)
        return out

    return train_step


def make_eval_step(strategy, model, dct):
    """Per-example nats by component (gathered from every replica) for one padded batch."""
    import tensorflow as tf

    from dct_gen import model as model_lib

    def step_fn(batch):
        losses = model_lib.compute_losses(
            model_lib.forward(model, batch, training=False), batch, dct
        )
        out = {f"{c}_nats": losses[f"{c}_nats"] for c in COMPONENTS}
        for k in ("sequence_index", "chunk_index", "height", "width"):
            out[k] = batch[k]
        # As int32: a gather across workers (a collective) takes no booleans.
        out["valid"] = tf.cast(batch["valid"], tf.int32)
        return out

    @tf.function
    def eval_step(batch):
        per_replica = strategy.run(step_fn, args=(batch,))
        return {k: strategy.gather(v, axis=0) for k, v in per_replica.items()}

    return eval_step


def _pad_batch(batch: dict, batch_size: int) -> dict:
    """Pads a (possibly short, last) eval batch to batch_size; `valid` marks real examples."""
    import tensorflow as tf

    n = tf.shape(batch["channels"])[0]
    out = {}
    for k, v in batch.items():
        pad = [[0, batch_size - n]] + [[0, 0]] * (len(v.shape) - 1)
        out[k] = tf.ensure_shape(tf.pad(v, pad), [batch_size] + v.shape[1:])
    out["valid"] = tf.ensure_shape(tf.range(batch_size) < n, [batch_size])
    return out


def evaluate(
    strategy,
    eval_step,
    *,
    data_dir: str,
    split: str,
    batch_size: int,
    chunk_size: int,
    overlap: int,
    target_part: str,
    max_batches: int | None = None,
    progress: Callable[[str], None] | None = None,
    num_classes: int | None = None,
) -> Iterator[tuple[str, float]]:
    """Exact bits per subpixel of a held-out split: yields (name, value) pairs.

    num_classes, for a class-conditional model, checks every record's label against it (each
    sequence is scored given its own label).

    progress, when given, is called at most once a second with a line: chunks scored, sequences
    begun of the split's total (info.json), the rate and an ETA from that fraction.

    Every chunk of every sequence is scored once (data.make_dataset(mode='eval')); a sequence's
    bits are the sum over its chunks' target elements, stop token included, divided by
    3 * height * width (docs/representation.md). Names: bits_per_subpixel and {channel, position,
    value}_bits_per_subpixel (means over sequences), chunk_{k}/bits_per_subpixel and
    chunk_{k}/{component}_bits_per_subpixel (the mean over sequences that have a chunk k of
    that chunk's share: paper Figure 9), sequences and chunks counted. With max_batches only a
    prefix of the split is scored (partial sequences count what was scored).
    """
    import numpy as np
    import tensorflow as tf

    from dct_gen import data

    paths = check_split(data_dir, split)
    ds = data.make_dataset(
        data_dir,
        split,
        batch_size=batch_size,
        chunk_size=chunk_size,
        overlap=overlap,
        seed=0,
        mode="eval",
        target_part=target_part,
        num_classes=num_classes,
    )
    ds = ds.map(lambda b: _pad_batch(b, batch_size))
    if max_batches is not None:
        ds = ds.take(max_batches)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = strategy.experimental_distribute_dataset(ds.with_options(options))
    sequences = collections.defaultdict(lambda: np.zeros(len(COMPONENTS)))
    chunks = collections.defaultdict(list)  # chunk index -> [(3,) bits per subpixel]
    total = None
    if progress is not None:
        from dct_gen import records

        try:
            total = int(records.read_info(data_dir)["splits"][split]["counts"]["written"])
        except (KeyError, TypeError, ValueError):  # a count info.json does not give: no ETA
            total = None
    start, shown, scored = time.perf_counter(), 0.0, 0
    for batch in data.iterate(ds, paths):
        out = {k: v.numpy() for k, v in eval_step(batch).items()}
        scored += int(out["valid"].sum())
        now = time.perf_counter()
        if progress is not None and now - shown >= 1.0:
            shown, seconds = now, now - start
            line = f"{split}: {scored} chunks scored, {len(sequences)} sequences"
            if total:
                done = min(1.0, len(sequences) / total)
                eta = _format_seconds(seconds * (1 - done) / done) if done else "?"
                line += f" of {total}, {scored / max(seconds, 1e-9):.1f} chunks/s, ETA {eta}"
            progress(line)
        subpixels = 3.0 * out["height"].astype(np.float64) * out["width"]
        nats = np.stack([out[f"{c}_nats"] for c in COMPONENTS], axis=1).astype(np.float64)
        for i in np.flatnonzero(out["valid"]):
            bits = nats[i] / math.log(2.0) / subpixels[i]
            sequences[int(out["sequence_index"][i])] += bits
            chunks[int(out["chunk_index"][i])].append(bits)
    if not sequences:
        raise InputError(f"split {split!r} of {data_dir} has no sequences to evaluate")
    per_sequence = np.stack(list(sequences.values()))  # (sequences, 3)
    yield "sequences", float(len(sequences))
    yield "chunks", float(sum(len(v) for v in chunks.values()))
    yield "bits_per_subpixel", float(per_sequence.sum(1).mean())
    for j, c in enumerate(COMPONENTS):
        yield f"{c}_bits_per_subpixel", float(per_sequence[:, j].mean())
    for k in sorted(chunks):
        per_chunk = np.stack(chunks[k])
        yield f"chunk_{k}/bits_per_subpixel", float(per_chunk.sum(1).mean())
        for j, c in enumerate(COMPONENTS):
            yield f"chunk_{k}/{c}_bits_per_subpixel", float(per_chunk[:, j].mean())


# ----------------------------------------------------------------------------------------------
# TensorBoard: what an evaluation, the run's start and the samples write (each function writes
# to the default summary writer, so the caller picks the run: train/, eval/, the run directory).

EVAL_FIGURE_TAG = "bits_per_chunk"  # eval/: the paper's Figure 9 (right), one per evaluation
SAMPLE_CAPTIONS_TAG = "samples/captions"  # train/: the caption of every sample, as text
OPERATIVE_CONFIG_TAG = "config/operative_config.gin"  # train/: the gin configuration
RUN_CONFIG_TAG = "config/config.json"  # train/: the model and train configs, the schedule

_FIGURE_DESCRIPTION = (
    "Held-out bits per subpixel of each chunk index, stacked as channel, position and value "
    "(the paper's Figure 9, right): the mean, over the held-out images that have a chunk k, of "
    "that chunk's share of the image's bits. One picture per evaluation; eval.jsonl holds the "
    "figures (`chunk_k/...`)."
)
_SAMPLES_DESCRIPTION = (
    "Samples drawn with the weights of the step, each captioned with its label (class-"
    "conditional runs), seed and index (sample i of the draws made with that seed), "
    "temperature and top-p, the step, and its number of triples (', cut': the chunk limit "
    "stopped it). Cells keep each sample's own size; grey fills a cell around a smaller one."
)


def bits_by_chunk(values: dict) -> dict[int, dict[str, float]]:
    """The per-chunk figures of an evaluation (`evaluate`'s names, as eval.jsonl holds them):
    chunk index -> {"channel", "position", "value"} bits per subpixel, in chunk order."""
    out: dict[int, dict[str, float]] = {}
    for name, value in values.items():
        head, _, tail = name.partition("/")
        part = tail.removesuffix("_bits_per_subpixel")
        if head.startswith("chunk_") and head[6:].isdigit() and part in COMPONENTS:
            out.setdefault(int(head[6:]), {})[part] = float(value)
    return dict(sorted(out.items()))


def eval_scalars(values: dict) -> dict[str, float]:
    """The scalars an evaluation logs, grouped under `bits_per_subpixel` (TensorBoard groups
    tags by their first part): the total, `bits_per_subpixel/{channel,position,value}`, and
    `bits_per_subpixel/first_chunk` and `/last_chunk` (chunk 0 and the highest chunk index any
    held-out image reaches: `evaluate`'s chunk_k/bits_per_subpixel)."""
    out = {"bits_per_subpixel": float(values["bits_per_subpixel"])}
    for c in COMPONENTS:
        out[f"bits_per_subpixel/{c}"] = float(values[f"{c}_bits_per_subpixel"])
    chunks = bits_by_chunk(values)
    if chunks:
        for name, k in (("first_chunk", min(chunks)), ("last_chunk", max(chunks))):
            out[f"bits_per_subpixel/{name}"] = float(
                values.get(f"chunk_{k}/bits_per_subpixel", sum(chunks[k].values()))
            )
    return out


def write_eval_summaries(values: dict, step: int, split: str | None = None) -> None:
    """One evaluation in TensorBoard, to the default writer: `eval_scalars` and the picture of
    bits per chunk (EVAL_FIGURE_TAG, `plots.chunk_bits_plot`).

    Args:
      values: `evaluate`'s (name, value) pairs as a dict.
      step: the step of the weights evaluated.
      split: the split scored, for the picture's title.
    """
    import tensorflow as tf

    from dct_gen import plots

    for tag, value in eval_scalars(values).items():
        tf.summary.scalar(tag, value, step=step)
    chunks = bits_by_chunk(values)
    # Drawn only where it is written (a worker that is not the chief writes to a no-op writer).
    if chunks and bool(tf.summary.should_record_summaries()):
        where = f"{split}, " if split else ""
        title = f"held-out bits per subpixel by chunk ({where}step {step})"
        image = plots.chunk_bits_plot(chunks, title=title)
        tf.summary.image(EVAL_FIGURE_TAG, image[None], step=step, description=_FIGURE_DESCRIPTION)


def run_hparams(model_config, train_config, total_steps: int, seed: int) -> dict:
    """The run's hyperparameters as TensorBoard's hparams dashboard lists them: model size,
    representation, chunking, batch, learning rate and length (plain bool, int, float, str)."""
    from dct_gen import model as model_lib

    dct = model_config.dct
    stacks = (
        model_config.encoder_spec,
        model_config.channel_spec,
        model_config.position_spec,
        model_config.value_spec,
    )
    return {
        "parameters": int(model_lib.count_parameters(model_config)),
        "hidden_size": int(model_config.hidden_size),
        "layers": "/".join(str(len(spec)) for spec in stacks),
        "num_classes": int(model_config.num_classes or 0),
        "block_size": int(dct.block_size),
        "quality": int(dct.quality),
        "resolution": int(dct.resolution),
        "ordering": str(dct.ordering),
        "chunk_size": int(train_config.chunk_size),
        "overlap": int(train_config.overlap),
        "target_part": str(train_config.target_part),
        "batch_size": int(train_config.batch_size),
        "learning_rate": float(train_config.learning_rate),
        "warmup_steps": int(train_config.warmup_steps),
        "total_steps": int(total_steps),
        "mixed_precision": bool(train_config.mixed_precision),
        "seed": int(seed),
    }


def write_hparams(hparams: dict) -> None:
    """This run's hyperparameters (`run_hparams`) for TensorBoard's hparams dashboard, to the
    default writer: the eval/ writer, so that the dashboard shows the held-out scalars beside
    them (it reads a session's metrics from the run holding its hparams and the runs below,
    never from a sibling: hparams at the run directory would find nothing in eval/ when
    --logdir is the run directory itself).

    No experiment summary (`hparams_config`) is written: the dashboard then infers each
    hyperparameter's type from the values of all runs, and takes the metrics from the scalars
    of eval/, so runs of other versions with other hyperparameters still line up.
    """
    from tensorboard.plugins.hparams import api as hp

    hp.hparams(hparams)


def write_config_text(step: int, config_json: str | None, operative_config: str | None) -> None:
    """config.json and the operative gin configuration as text (markdown code blocks) at
    `step`, to the default writer; a missing one is left out."""
    import tensorflow as tf

    for tag, text in ((OPERATIVE_CONFIG_TAG, operative_config), (RUN_CONFIG_TAG, config_json)):
        if text:
            tf.summary.text(tag, _code_block(text), step=step)


def _code_block(text: str) -> str:
    # Indented, not fenced: a config may hold backticks, never a change of indentation rule.
    return "\n".join("    " + line for line in text.rstrip().splitlines())


def caption_table(captions: list[list[str]]) -> str:
    """The captions of a grid as markdown, one list item per cell (SAMPLE_CAPTIONS_TAG)."""
    return "\n".join(f"- {i}: " + " | ".join(lines) for i, lines in enumerate(captions))


def _names(label_names) -> str:
    """Class names for a message: the first few, and how many."""
    if not label_names:
        return "none (unlabelled)"
    shown = ", ".join(repr(n) for n in list(label_names)[:4])
    more = f", ... ({len(label_names)} in all)" if len(label_names) > 4 else ""
    return f"[{shown}{more}]"


@contextlib.contextmanager
def _sigterm_flag():
    """Yields a dict whose 'received' turns True on SIGTERM (only the main thread can listen)."""
    state = {"received": False}

    def handler(signum, frame):
        state["received"] = True

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield state
        return
    try:
        yield state
    finally:
        signal.signal(signal.SIGTERM, previous)


def _format_seconds(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def _all_finite(variables) -> bool:
    """Whether every element of every variable is finite (checked before each save)."""
    import tensorflow as tf

    return all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in variables)


def _drop_unhealthy_checkpoint(
    checkpoint_dir: str, number: int | None, log, delete: bool = True
) -> str:
    """Deletes checkpoint `number` (if there is one), whose weights gave a non-finite loss,
    and returns the end of the NonFiniteLossError message: what was deleted and which
    checkpoint is left.

    TensorFlow's own index of checkpoints (checkpoints/checkpoint) may still name the deleted
    one until the next save; dct-gen lists the checkpoint files themselves
    (`run_dir.checkpoint_numbers`), so nothing restores it.

    delete: False on a worker of a multi-worker job that is not the chief: the chief deletes
    it, and this worker's message says so rather than race it for the listing.
    """
    import tensorflow as tf

    advice = (
        ". Lower the learning rate (train_config.learning_rate in a new run, or "
        "--extend_learning_rate to resume this one at a lower rate) or check the data."
    )
    if not delete and number is not None:
        return (
            f"the chief of the job deletes checkpoint {number}, whose weights gave it, and "
            "names the newest checkpoint left" + advice
        )
    paths = []
    if number is not None:
        paths = tf.io.gfile.glob(os.path.join(checkpoint_dir, f"ckpt-{number}.*"))
    for path in paths:
        try:
            tf.io.gfile.remove(path)
        except tf.errors.NotFoundError:  # another worker of the job removed it first
            pass
    if paths:
        log(f"deleted checkpoint {number}: its weights gave a non-finite loss")
    left = run_dir.checkpoint_numbers(checkpoint_dir)
    parts = []
    if paths:
        parts.append(f"deleted checkpoint {number}, whose weights gave it")
    if left:
        parts.append(f"the newest checkpoint left, {left[0]}, is the last healthy one")
    else:
        parts.append(f"no checkpoint is left in {checkpoint_dir}")
    return "; ".join(parts) + advice


# ----------------------------------------------------------------------------------------------
# The loop.


@dataclasses.dataclass
class TrainResult:
    """What `train` returns: where it stopped and why, and the last logged values."""

    step: int
    total_steps: int
    stopped: str  # "done", "sigterm", or "already_done"
    resumed_from: int | None
    last_metrics: dict
    last_eval: dict


def _workers_end_together(train_fn):
    """Makes the workers of a multi-worker job leave `train` together, once what it made is
    gone (`train` decorated).

    The chief runs TensorFlow's coordination service: a worker that outlives it ends with
    "Failed to send RPC to coordination service", and one that the chief outlives by the
    heartbeat timeout is reported as crashed. So every worker first frees the model, the
    optimizer and the input pipelines (an input iterator's teardown has been seen to take tens
    of seconds on a loaded machine, while the other worker had already exited), then all pass a
    barrier, and their processes end within moments of each other. It happens when training
    returns, and after a NonFiniteLossError, which every worker raises at the same step.
    """

    @functools.wraps(train_fn)
    def train_and_end_together(*args, **kwargs):
        try:
            result = train_fn(*args, **kwargs)
        except NonFiniteLossError as e:
            _leave_together(kwargs.get("strategy"), kwargs.get("tpu"), e)
            raise
        _leave_together(kwargs.get("strategy"), kwargs.get("tpu"))
        return result

    return train_and_end_together


def _leave_together(strategy, tpu: str | None, error: BaseException | None = None) -> None:
    """The barrier of `_workers_end_together` in a multi-worker job (nothing otherwise), after
    a garbage collection: a Keras model's objects refer to each other, so returning alone does
    not free them. After an error, the locals of the traceback's frames are cleared first (the
    trace itself is kept): they hold what train built."""
    strategy = strategy or make_strategy(tpu)
    if not is_multi_worker(strategy):
        return
    if error is not None:
        traceback.clear_frames(error.__traceback__)
    gc.collect()
    make_worker_agreement(strategy)(False)


@_workers_end_together
def train(
    *,
    model_config,
    dct_config=None,
    train_config,
    data_dir: str,
    model_dir: str,
    max_steps: int | None = None,
    extend_steps: int | None = None,
    extend_learning_rate: float | None = None,
    train_split: str = "train",
    eval_split: str | None = None,
    eval_every: int = 1000,
    eval_batches: int | None = None,
    log_every: int = 50,
    checkpoint_every: int = 1000,
    keep_checkpoints: int = 3,
    seed: int = 0,
    deterministic: bool = False,
    strategy=None,
    tpu: str | None = None,
    peak_flops: float | None = None,
    step_callback: Callable[[int, dict], None] | None = None,
    sample_every: int = 0,
    num_samples: int = 4,
    sample_max_chunks: int | None = None,
    sample_guidance: float = 1.0,
    operative_config: str | None = None,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Trains a DCTransformer on data_dir, resuming from model_dir when it holds checkpoints.

    Args:
      model_config: a `dct_gen.model.ModelConfig`; its dct must be data_dir's representation.
      dct_config: the representation, if stated apart from model_config (it must then equal
        model_config.dct); None: model_config.dct. Checked against data_dir's info.json.
      train_config: a `dct_gen.configs.TrainConfig` (batch, learning rate, tokens, chunking).
      data_dir: a directory written by beam_jobs.build_dataset.
      model_dir: the run directory (checkpoints, metrics.jsonl, eval.jsonl, TensorBoard).
      max_steps: the run's length in steps, overriding train_config.tokens (the schedule's
        cosine ends there too). The length, the peak rate and the warmup are fixed in
        config.json when the run starts: a resumed run whose settings give others is refused.
      extend_steps: lengthen a resumed run's schedule to its planned length + extend_steps:
        from the step it resumes at, the rate follows a cosine from its current value down to
        0 there (`extend_schedule`). Recorded in config.json; a rerun with the same value (or
        without one) follows the recorded schedule and adds nothing.
      extend_learning_rate: start that new tail at this rate instead of the current one (needed
        to extend a finished run, whose rate is 0; alone, it keeps the schedule's end).
      train_split, eval_split: the splits to train on and to evaluate (None: no evaluation).
      eval_every, log_every, checkpoint_every: intervals in steps.
      eval_batches: score at most this many eval batches (None: the whole split, exact).
      keep_checkpoints: how many checkpoints stay on disk.
      seed: initialisation, dropout and input pipeline seed.
      deterministic: enable TensorFlow op determinism (process-wide).
      strategy: a tf.distribute strategy; None: `make_strategy(tpu)`. Under a
        MultiWorkerMirroredStrategy every worker calls `train` with the same arguments; only
        the chief writes model_dir (`writes_run_dir`), and all return together.
      peak_flops: peak FLOP/s per replica for MFU; None: `measure_peak_flops` once.
      step_callback: called as step_callback(step, metrics) after every step (host values).
      sample_every: every N steps (and at the end), sample num_samples images and log their
        grid and heatmaps to TensorBoard (train/samples, train/heatmaps, each cell captioned
        with its label, seed, temperature, top-p and step; train/samples/captions as text);
        0: never. Runs with target_part 'chroma' (colorization) do not sample
        unconditionally and log none.
      sample_max_chunks: the chunk limit of those samples (None: none).
      sample_guidance: the classifier-free guidance scale of those samples (1: none; other
        values need a class-conditional model with label_dropout > 0), in their captions.
      operative_config: text written to model_dir/operative_config.gin (the gin configuration
        the run was started with, for people) once the run directory has accepted the configs;
        None: nothing is written.
      log: where console lines go.

    Returns:
      A TrainResult.

    Raises:
      InputError: a config contradicts the dataset, another config or the replicas; data_dir
        is not a dataset or lacks a split; model_dir holds checkpoints of another model; the
        settings would change the schedule config.json fixed (`check_same_plan`), or the
        extension asked for is refused (`extend_schedule`). Raised before anything is written.
      NonFiniteLossError: (an InputError) the loss or gradient norm became NaN or infinite, or
        the weights did at a save. The checkpoint holding the weights that gave it is deleted:
        the newest one left is the last healthy one.
      run_dir.NoValidCheckpointError: (an InputError) checkpoints exist in model_dir but none
        restores.
      run_dir.RunLockedError: (an InputError) another live trainer holds model_dir's lock
        (run_dir.RunLock); nothing has been written. On the other workers of a multi-worker
        job whose chief is refused at start (the lock, another model in model_dir): an
        InputError saying so.
      ValueError: an argument out of range (log_every < 1, ...).
    """
    # ---- Setup: configs against the data, strategy, precision, seeds.
    import keras
    import numpy as np
    import tensorflow as tf

    from dct_gen import configs, data, records
    from dct_gen import model as model_lib

    info_path = records.join(data_dir, records.INFO_FILENAME)
    info = read_dataset_info(data_dir)
    from_info = records.representation_from_info(info)
    # The model's classes against the dataset's (a count that differs, a conditional model on
    # unlabelled data), and the label dropout that goes with them.
    classes = configs.DatasetClasses.from_info(info, train_split, info_path)
    configs.check_num_classes(model_config.num_classes, classes)
    if model_config.num_classes and eval_split is not None:
        held_out = configs.DatasetClasses.from_info(info, eval_split, info_path)
        if held_out.label_names != classes.label_names:
            raise InputError(
                f"{info_path}: split {eval_split!r} has label_names "
                f"{_names(held_out.label_names)}, but the model trains on split "
                f"{train_split!r}'s {_names(classes.label_names)}"
            )
    train_config = train_config.with_label_dropout(model_config.num_classes)
    names = list(classes.label_names) if model_config.num_classes else None
    if sample_guidance != 1.0:
        from dct_gen import sampling

        sampling.check_guidance(
            sample_guidance, model_config.num_classes, bool(train_config.label_dropout)
        )
    if dct_config is not None and model_config.dct != dct_config:
        raise InputError(f"model_config.dct {model_config.dct} != dct_config {dct_config}")
    configs.check_dct_config(model_config.dct, from_info, where=info_path, source="")
    for name in ("chunk_size", "overlap"):
        if getattr(model_config, name) != getattr(train_config, name):
            raise InputError(
                f"model_config.{name}={getattr(model_config, name)} != train_config.{name}="
                f"{getattr(train_config, name)}: bind both (the gin macros CHUNK_SIZE, OVERLAP)"
            )
    for name, value in (
        ("log_every", log_every),
        ("checkpoint_every", checkpoint_every),
        ("max_steps", 1 if max_steps is None else max_steps),
        ("extend_steps", 1 if extend_steps is None else extend_steps),
    ):
        if value < 1:
            raise ValueError(f"{name}={value}: must be positive")
    if extend_learning_rate is not None and not (
        math.isfinite(extend_learning_rate) and extend_learning_rate > 0
    ):
        raise ValueError(f"extend_learning_rate={extend_learning_rate}: must be > 0 and finite")
    if eval_split is not None and eval_every < 1:
        raise ValueError(f"eval_every={eval_every}: must be positive")
    if sample_every < 0 or num_samples < 1:
        raise ValueError(
            f"sample_every={sample_every}, num_samples={num_samples}: sample_every must be >= 0 "
            "(0: never) and num_samples >= 1"
        )
    train_paths = check_split(data_dir, train_split)
    if eval_split is not None:
        check_split(data_dir, eval_split)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)
    strategy = strategy or make_strategy(tpu)
    replicas = strategy.num_replicas_in_sync
    batch_size = train_config.batch_size
    if batch_size % replicas:
        raise InputError(
            f"train_config.batch_size={batch_size} does not split over {replicas} replicas"
        )
    # ---- The schedule: this run's settings give `planned`; a run with checkpoints keeps the
    # one config.json recorded when it started. Checked here, before anything is written.
    planned = Schedule(
        learning_rate=train_config.learning_rate,
        warmup_steps=train_config.warmup_steps,
        planned_steps=(
            int(max_steps)
            if max_steps is not None
            else steps_for_tokens(train_config.tokens, batch_size, train_config.chunk_size)
        ),
        tokens=train_config.tokens,
        max_steps=None if max_steps is None else int(max_steps),
    )
    config_path = os.path.join(model_dir, run_dir.RUN_CONFIG_FILE)
    saved_steps = run_dir.checkpoint_steps(model_dir)
    schedule = planned
    if not saved_steps:
        if extend_steps is not None or extend_learning_rate is not None:
            raise InputError(
                f"--extend_steps/--extend_learning_rate extend a run that has checkpoints, and "
                f"{model_dir} has none: give a new run its length with --max_steps or "
                "train_config.tokens"
            )
    else:
        stored = stored_schedule(model_dir)
        if stored is None:
            log(f"{config_path} records no schedule (an older run): recording this run's")
        else:
            check_same_plan(stored, planned, config_path)
            schedule = stored
        # The extension starts where the run resumes: the newest checkpoint, unless it fails to
        # restore (then it is worked out again below, at the step restored).
        extend_schedule(schedule, saved_steps[0], extend_steps, extend_learning_rate, config_path)
    total_steps = schedule.total_steps
    # In a multi-worker job only the chief writes the run directory; the other workers train,
    # save their checkpoint copies elsewhere, and stop with it (`make_worker_agreement`).
    chief = writes_run_dir(strategy)
    any_worker = make_worker_agreement(strategy)
    if not chief:
        resolver = getattr(strategy, "cluster_resolver", None)
        who = f"{resolver.task_type} {resolver.task_id}" if resolver is not None else "a worker"
        log(
            f"{who} of a multi-worker job: the chief writes {model_dir}; this worker's "
            "checkpoint copies go to a temporary folder and are removed"
        )
    # One trainer per run directory: the lock (the chief's, in a multi-worker job) comes before
    # anything is written there, and goes in the `finally` below.
    lock = run_dir.RunLock(model_dir, log=log, chief=chief)
    refused = None
    try:
        lock.acquire()
        if chief:
            os.makedirs(model_dir, exist_ok=True)
            run_dir.save_run_config(
                model_dir, model_config, train_config, schedule.to_json(), label_names=names
            )
            if operative_config is not None:
                with open(os.path.join(model_dir, run_dir.OPERATIVE_CONFIG_FILE), "w") as f:
                    f.write(operative_config)
    except InputError as e:  # the lock is another trainer's, or the directory holds another model
        refused = e
    except BaseException:
        lock.release()
        raise
    # A chief that refuses to start takes the other workers with it, rather than leave them
    # waiting for its first step.
    if any_worker(refused is not None):
        lock.release()
        if refused is not None:
            raise refused
        raise InputError(
            f"the chief of this multi-worker job refused to start training in {model_dir} (its "
            "output says why); this worker stops with it"
        )
    previous_policy = keras.config.dtype_policy()
    try:
        checkpoint_dir = os.path.join(model_dir, run_dir.CHECKPOINT_DIR)
        compute_dtype = "bfloat16" if train_config.mixed_precision else "float32"
        keras.config.set_dtype_policy(
            "mixed_bfloat16" if train_config.mixed_precision else "float32"
        )

        # ---- Input: one pipeline and iterator per local replica, each with its share of the
        # global batch. Plain tf.data iterators go into the checkpoint, so the stream resumes
        # exactly (a tf.distribute iterator is not checkpointable). In a multi-worker job only
        # the chief's checkpoint is kept: another worker's stream starts again on resume.
        def dataset_fn(ctx: tf.distribute.InputContext, stream_seed: int = seed):
            return data.make_dataset(
                data_dir,
                train_split,
                batch_size=ctx.get_per_replica_batch_size(batch_size),
                chunk_size=train_config.chunk_size,
                overlap=train_config.overlap,
                seed=stream_seed,
                mode="train",
                target_part=train_config.target_part,
                input_context=ctx,
                num_classes=model_config.num_classes,
                label_dropout=train_config.label_dropout,
            )

        local_replicas = [
            int(r)
            for r in strategy.experimental_local_results(
                strategy.experimental_distribute_values_from_function(
                    lambda ctx: ctx.replica_id_in_sync_group
                )
            )
        ]

        def make_iterators(stream_seed: int) -> list:
            return [
                iter(dataset_fn(tf.distribute.InputContext(replicas, r, replicas), stream_seed))
                for r in local_replicas
            ]

        # Another worker's iterators are made once the restore has said where it resumes.
        iterators = make_iterators(seed) if chief else []

        def next_batch():
            batches = dict(zip(local_replicas, (next(it) for it in iterators)))
            return strategy.experimental_distribute_values_from_function(
                lambda ctx: batches[ctx.replica_id_in_sync_group]
            )

        # ---- Model and optimizer (Keras 3.15: build the optimizer inside the scope).
        with strategy.scope():
            model = model_lib.build_model(model_config)
            optimizer = keras.optimizers.Adam(learning_rate=schedule.learning_rate_schedule())
            optimizer.build(model.trainable_variables)
            tokens_seen = tf.Variable(0, dtype=tf.int64, trainable=False, name="tokens_seen")
        # Dropout seed state lives in Keras SeedGenerators, outside the model's weights; a
        # list (not names, which Keras numbers per process) keeps the keys stable.
        trainable = {id(v) for v in model.trainable_variables}
        state = [v for v in model.variables if id(v) not in trainable]
        weights = dict(model=model, optimizer=optimizer, state=state, tokens_seen=tokens_seen)
        train_step = make_train_step(
            strategy, model, optimizer, model_config.dct, train_config.grad_clip_norm
        )
        flops_per_token = model_lib.flops_per_token(model_config)

        # ---- Restore: the newest checkpoint that restores; never a silent restart.
        if chief:
            checkpoint = tf.train.Checkpoint(**weights, data=iterators)
            manager = tf.train.CheckpointManager(
                checkpoint, checkpoint_dir, max_to_keep=keep_checkpoints
            )
            resumed_from = run_dir.restore_latest(checkpoint, checkpoint_dir, log)
        else:
            # The chief's checkpoint, all but its input iterators (its own, not this worker's):
            # the same step and the same weights as the chief.
            resumed_from = run_dir.restore_latest(
                tf.train.Checkpoint(**weights), checkpoint_dir, log, partial=True
            )
            stream_seed = seed
            if resumed_from is not None:
                stream_seed = worker_stream_seed(seed, int(optimizer.iterations.numpy()))
                log(f"this worker's input starts a new stream (seed {stream_seed})")
            iterators = make_iterators(stream_seed)
            checkpoint = tf.train.Checkpoint(**weights, data=iterators)
            manager = None
        step = int(optimizer.iterations.numpy())
        if resumed_from is None:
            log(f"no checkpoint in {checkpoint_dir}: starting at step 0")
        else:
            log(f"resumed from checkpoint {resumed_from} at step {step}")
            extended = extend_schedule(
                schedule, step, extend_steps, extend_learning_rate, config_path
            )
            if extended != schedule:
                schedule = extended
                if chief:
                    run_dir.save_run_config(
                        model_dir,
                        model_config,
                        train_config,
                        schedule.to_json(),
                        label_names=names,
                    )
                # Set before the step function is first traced, which reads the rate.
                optimizer.learning_rate = schedule.learning_rate_schedule()
                log(f"schedule extended: {_describe(schedule.extensions[-1])} ({config_path})")
            elif schedule.extensions:
                log(f"schedule as {config_path} records it: {_describe(schedule.extensions[-1])}")
            total_steps = schedule.total_steps
        metrics_path = os.path.join(model_dir, run_dir.METRICS_FILE)
        eval_path = os.path.join(model_dir, run_dir.EVAL_FILE)
        if chief:
            run_dir.truncate_jsonl(metrics_path, step)
            run_dir.truncate_jsonl(eval_path, step)
        if step >= total_steps:
            log(f"step {step} >= {total_steps}: the run is already done")
            return TrainResult(step, total_steps, "already_done", resumed_from, {}, {})

        if peak_flops is None:
            peak_flops = measure_peak_flops(compute_dtype)
        log(
            f"{model_lib.count_parameters(model_config):,} parameters, {replicas} replica(s), "
            f"steps {step} -> {total_steps}, global batch {batch_size}, {compute_dtype}, "
            f"peak {peak_flops / 1e9:.1f} GFLOP/s per replica"
        )
        # Only the chief writes events: another worker's would be a second file of each step.
        train_writer, eval_writer = (
            tf.summary.create_file_writer(os.path.join(model_dir, name))
            if chief
            else tf.summary.create_noop_writer()
            for name in ("train", "eval")
        )
        # What the run is, at the step it starts from: its configs as text (train/), and its
        # hyperparameters in eval/, where the hparams dashboard finds the held-out bits beside
        # them (its metrics are read from the run holding the hparams or from one below it).
        start_texts = []
        operative_path = os.path.join(model_dir, run_dir.OPERATIVE_CONFIG_FILE)
        for path, given in ((config_path, None), (operative_path, operative_config)):
            if given is None and tf.io.gfile.exists(path):
                with tf.io.gfile.GFile(path) as f:
                    given = f.read()
            start_texts.append(given)
        with train_writer.as_default(step=step):
            write_config_text(step, *start_texts)
        train_writer.flush()
        with eval_writer.as_default(step=step):
            write_hparams(run_hparams(model_config, train_config, total_steps, seed))
        eval_writer.flush()
        eval_step = make_eval_step(strategy, model, model_config.dct)

        def run_eval(at_step: int) -> dict:
            start = time.perf_counter()
            result = dict(
                evaluate(
                    strategy,
                    eval_step,
                    data_dir=data_dir,
                    split=eval_split,
                    batch_size=batch_size,
                    chunk_size=train_config.chunk_size,
                    overlap=train_config.overlap,
                    target_part=train_config.target_part,
                    max_batches=eval_batches,
                    num_classes=model_config.num_classes,
                )
            )
            with eval_writer.as_default(step=at_step):
                write_eval_summaries(result, at_step, eval_split)
            eval_writer.flush()
            record = {"step": at_step, "split": eval_split, "partial": eval_batches is not None}
            record.update(result)
            if chief:  # every worker evaluates (a collective), the chief records it
                with open(eval_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
            log(
                f"eval step {at_step}: {eval_split} {result['bits_per_subpixel']:.4f} bits per "
                f"subpixel over {int(result['sequences'])} sequences "
                f"({time.perf_counter() - start:.1f} s)"
            )
            return record

        samplers = []

        def log_samples(at_step: int) -> None:
            """Samples to TensorBoard: the grid and the heatmaps, each cell captioned
            (`pictures.sample_caption`), and the captions as text."""
            from dct_gen import pictures, sampling

            start = time.perf_counter()
            if not samplers:
                samplers.append(
                    sampling.Sampler(
                        model,
                        model_config,
                        null_label_trained=bool(train_config.label_dropout),
                        label_names=names,
                    )
                )
            max_chunks = sample_max_chunks or sampling.default_max_chunks(model_config)
            labels = None
            if model_config.num_classes:
                labels = np.arange(num_samples) % model_config.num_classes
            options = sampling.SampleOptions(max_chunks=max_chunks, guidance=sample_guidance)
            samples = sampling.sample_batches(
                samplers[0],
                num_samples,
                labels=labels,
                options=options,
                seed=seed + at_step,
            )
            images = [pictures.enlarge(im, 128) for im in samples.images()]
            maps = [
                pictures.enlarge(pictures.heatmap(s, model_config.dct), 128)
                for s in samples.sequences
            ]
            captions = [
                pictures.sample_caption(
                    index=i,
                    seed=seed + at_step,
                    label=int(samples.labels[i]),
                    label_names=names,
                    temperature=options.temperature,
                    top_p=options.top_p,
                    top_k=options.top_k,
                    guidance=None if sample_guidance == 1.0 else sample_guidance,
                    step=at_step,
                    triples=len(sequence),
                    finished=bool(samples.finished[i]),
                )
                for i, sequence in enumerate(samples.sequences)
            ]
            with train_writer.as_default(step=at_step):
                for tag, pictured in (("samples", images), ("heatmaps", maps)):
                    tf.summary.image(
                        tag,
                        pictures.grid(pictured, captions=captions)[None],
                        step=at_step,
                        description=_SAMPLES_DESCRIPTION,
                    )
                tf.summary.text(SAMPLE_CAPTIONS_TAG, caption_table(captions), step=at_step)
                tf.summary.scalar(
                    "samples/mean_triples",
                    float(np.mean([len(q) for q in samples.sequences])),
                    step=at_step,
                )
            train_writer.flush()
            log(
                f"samples at step {at_step}: {num_samples} logged to TensorBoard, "
                f"{int(samples.finished.sum())} reached their stop token "
                f"({time.perf_counter() - start:.1f} s)"
            )

        if sample_every and train_config.target_part != "all":
            log("sample_every: a colorization run (target_part 'chroma') logs no samples")
            sample_every = 0
        if not chief:
            sample_every = 0  # the chief samples for TensorBoard, alone: no collective in it

        # ---- Loop.
        last_metrics, last_eval = {}, {}
        sums = collections.defaultdict(float)
        window_steps, window_start = 0, time.perf_counter()
        timed_steps, timed_seconds = 0, 0.0  # for the ETA (first step's compile left out)
        stopped, first_step = "done", step

        def save(at_step: int) -> None:
            if chief:
                manager.save(checkpoint_number=at_step)
            else:
                save_worker_copy(checkpoint, at_step)

        with _sigterm_flag() as sigterm:
            while step < total_steps:
                step_start = time.perf_counter()
                try:  # reading apart from the step, so a model error keeps its traceback
                    batch = next_batch()
                except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
                    user_error = data.input_error(e, train_paths)
                    if user_error is None:
                        raise
                    raise user_error from e
                out = train_step(batch)
                values = {k: float(v) for k, v in out.items()}
                step += 1
                if not (math.isfinite(values["loss"]) and math.isfinite(values["grad_norm"])):
                    # This loss was computed on the weights of step - 1: their checkpoint, if
                    # one was saved (or resumed from), is not healthy and goes.
                    raise NonFiniteLossError(
                        f"loss {values['loss']} (gradient norm {values['grad_norm']}) at step "
                        f"{step}, learning rate {float(optimizer.learning_rate):.3g}: stopping; "
                        + _drop_unhealthy_checkpoint(checkpoint_dir, step - 1, log, delete=chief)
                    )
                tokens_seen.assign_add(int(values["tokens"]))
                seconds = time.perf_counter() - step_start
                if step > first_step + 1:
                    timed_steps, timed_seconds = timed_steps + 1, timed_seconds + seconds
                window_steps += 1
                for k, v in values.items():
                    sums[k] += v
                if step_callback is not None:
                    step_callback(step, values)

                if step % log_every == 0 or step == total_steps:
                    elapsed = time.perf_counter() - window_start
                    m = {k: v / window_steps for k, v in sums.items() if k != "tokens"}
                    tokens_per_second = sums["tokens"] / max(elapsed, 1e-9)
                    m.update(
                        step=step,
                        learning_rate=float(optimizer.learning_rate),
                        tokens_per_second=tokens_per_second,
                        tokens_seen=int(tokens_seen.numpy()),
                        mfu=flops_per_token * tokens_per_second / (peak_flops * replicas),
                    )
                    last_metrics = {"step": step}
                    last_metrics.update({k: m[k] for k in sorted(m) if k != "step"})
                    if chief:
                        with open(metrics_path, "a") as f:
                            f.write(json.dumps(last_metrics) + "\n")
                    with train_writer.as_default(step=step):
                        for k, v in last_metrics.items():
                            if k != "step":
                                tf.summary.scalar(k, v)
                    train_writer.flush()
                    rate = timed_seconds / timed_steps if timed_steps else seconds
                    eta = _format_seconds(rate * (total_steps - step))
                    log(
                        f"step {step}/{total_steps}  loss {m['loss']:.4f}  "
                        f"bits/subpixel {m['bits_per_subpixel']:.4f}  "
                        f"lr {m['learning_rate']:.3g}  {tokens_per_second:,.0f} tokens/s  "
                        f"MFU {100 * m['mfu']:.2f}%  ETA {eta}"
                    )
                    sums.clear()
                    window_steps, window_start = 0, time.perf_counter()

                # ---- Evaluate.
                if eval_split is not None and (step % eval_every == 0 or step == total_steps):
                    last_eval = run_eval(step)
                if sample_every and (step % sample_every == 0 or step == total_steps):
                    log_samples(step)
                    window_start = time.perf_counter()

                # ---- Save (only finite weights; the next step's loss then vouches for them).
                # A SIGTERM to any worker of a multi-worker job stops every worker at this step.
                stop = any_worker(sigterm["received"])
                if step % checkpoint_every == 0 or step == total_steps or stop:
                    if not _all_finite(model.trainable_variables):
                        raise NonFiniteLossError(
                            f"the weights became NaN or infinite at step {step} (loss "
                            f"{values['loss']}): stopping without saving them; "
                            + _drop_unhealthy_checkpoint(checkpoint_dir, None, log, delete=chief)
                        )
                    save(step)
                if stop:
                    signal_name = "SIGTERM" if sigterm["received"] else "SIGTERM to another worker"
                    log(
                        f"{signal_name}: saved checkpoint {step} in {checkpoint_dir}; run the same "
                        "command again to resume"
                    )
                    stopped = "sigterm"
                    break
        log(f"stopped at step {step} ({stopped}); {int(tokens_seen.numpy()):,} target tokens seen")
        train_writer.close()
        eval_writer.close()
        return TrainResult(step, total_steps, stopped, resumed_from, last_metrics, last_eval)
    finally:
        keras.config.set_dtype_policy(previous_policy)
        lock.release()
