"""Trains a DCTransformer on a dataset of beam_jobs.build_dataset.

usage: python -m dct_gen.train --gin_file experiments/NAME.gin --data_dir DATA --model_dir RUN
       python -m dct_gen.train --gin_file experiments/NAME.gin --dry_run

The representation (block size, quality, resolution, clip, ordering) is the dataset's, read
from DATA/info.json; gin may restate it (the experiment files include gin/data/*.gin), and a
binding that contradicts the dataset stops the command with an error naming the field. The
run resumes from RUN by itself; SIGTERM saves a checkpoint and exits with status 143. The
learning-rate schedule (length, peak, warmup) is fixed in RUN/config.json when the run starts:
a resumed run whose --max_steps or train_config gives another is refused, and --extend_steps N
lengthens it explicitly (the rate then follows a cosine from its current value down to 0 at the
new end, so it never jumps; --extend_learning_rate R starts that cosine at R instead).
The classes come from the dataset too: a labelled dataset (info.json's label_names) trains a
class-conditional model unless gin sets model_config.num_classes = 0; a count in gin must
equal the dataset's, and every record's label is checked against it. RUN/config.json records
the class names (`label_names`), and train_config.label_dropout (0.1 for a conditional model
unless set) trains the null label that unconditional sampling and guidance use.
`--dry_run` builds the model without data (gin must then bind the representation) and prints
{"parameters", "flops_per_token"} as one JSON line. The loop is `dct_gen.training.train`.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys

from absl import flags

from dct_gen import cli
from dct_gen.errors import InputError, UsageError

FLAGS = cli.flag_values()
flags.DEFINE_multi_string(
    "gin_file", [], "Gin config files (paths, or relative to gin/).", flag_values=FLAGS
)
flags.DEFINE_multi_string(
    "gin_param", [], "Gin bindings, e.g. 'model_config.dropout = 0.0'.", flag_values=FLAGS
)
flags.DEFINE_bool(
    "dry_run", False, "Build the model, print parameters and FLOPs, exit.", flag_values=FLAGS
)
flags.DEFINE_string(
    "data_dir", None, "Dataset directory written by beam_jobs.build_dataset.", flag_values=FLAGS
)
flags.DEFINE_string(
    "model_dir", None, "Run directory: checkpoints, logs; resumed from.", flag_values=FLAGS
)
flags.DEFINE_integer(
    "max_steps",
    None,
    "Stop after this many steps (overrides the token budget).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "extend_steps",
    None,
    "Train a resumed run N steps beyond its planned length: from the step it resumes at, the "
    "learning rate follows a cosine from its current value down to 0 there (recorded in "
    "config.json; rerunning the same command adds nothing).",
    flag_values=FLAGS,
)
flags.DEFINE_float(
    "extend_learning_rate",
    None,
    "Start the new cosine of --extend_steps at this learning rate instead of the current one "
    "(needed to extend a finished run, whose rate is 0); without --extend_steps, a cosine from "
    "this rate to the schedule's end.",
    flag_values=FLAGS,
)
flags.DEFINE_string("train_split", "train", "Split to train on.", flag_values=FLAGS)
flags.DEFINE_string(
    "eval_split", None, "Held-out split to evaluate (none: no evaluation).", flag_values=FLAGS
)
flags.DEFINE_integer(
    "eval_every", 1000, "Evaluate every N steps (and at the end).", flag_values=FLAGS
)
flags.DEFINE_integer(
    "eval_batches",
    None,
    "Evaluate at most N batches (default: the whole split).",
    flag_values=FLAGS,
)
flags.DEFINE_integer("log_every", 50, "Log metrics every N steps.", flag_values=FLAGS)
flags.DEFINE_integer(
    "sample_every",
    0,
    "Log sample grids and heatmaps to TensorBoard every N steps (0: never).",
    flag_values=FLAGS,
)
flags.DEFINE_integer("num_tb_samples", 4, "Samples per TensorBoard grid.", flag_values=FLAGS)
flags.DEFINE_integer(
    "sample_max_chunks",
    None,
    "Chunk limit of the TensorBoard samples (default: none).",
    flag_values=FLAGS,
)
flags.DEFINE_float(
    "sample_guidance",
    1.0,
    "Classifier-free guidance scale of the TensorBoard samples of a class-conditional model "
    "(1: none; needs train_config.label_dropout > 0).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "checkpoint_every", 1000, "Save a checkpoint every N steps.", flag_values=FLAGS
)
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept on disk.", flag_values=FLAGS)
flags.DEFINE_integer(
    "seed", 0, "Seed of the initialisation, dropout and the input pipeline.", flag_values=FLAGS
)
flags.DEFINE_bool(
    "deterministic", False, "Enable TensorFlow op determinism (slower).", flag_values=FLAGS
)
flags.DEFINE_string(
    "tpu", None, "Cloud TPU name or address: train with TPUStrategy.", flag_values=FLAGS
)
flags.DEFINE_float(
    "peak_flops",
    None,
    "Device peak FLOP/s per replica for MFU (default: measured).",
    flag_values=FLAGS,
)

# Flags that must be at least 1 (None, where allowed, means "not given").
_POSITIVE = (
    "max_steps",
    "extend_steps",
    "eval_every",
    "eval_batches",
    "log_every",
    "num_tb_samples",
    "sample_max_chunks",
    "checkpoint_every",
    "keep_checkpoints",
)


def _check_flag_values() -> None:
    """Raises UsageError naming the first flag whose value is out of range."""
    for name in _POSITIVE:
        value = FLAGS[name].value
        if value is not None and value < 1:
            raise UsageError(f"--{name}={value}: must be positive")
    if FLAGS.sample_every < 0:
        raise UsageError(f"--sample_every={FLAGS.sample_every}: must be >= 0 (0: never)")
    for name in ("peak_flops", "extend_learning_rate"):
        value = FLAGS[name].value
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UsageError(f"--{name}={value}: must be positive")


def _check_data_dir(path: str) -> None:
    """Raises InputError naming --data_dir when the dataset directory does not exist."""
    if "://" not in path:
        cli.existing_dir("data_dir", path, "dataset directory")
        return
    import tensorflow as tf  # gs:// and other remote file systems

    if not tf.io.gfile.isdir(path):
        raise InputError(f"--data_dir={path}: no such dataset directory")


def _dry_run() -> int:
    from dct_gen import configs

    cli.parse_gin(FLAGS.gin_file, FLAGS.gin_param)
    with _binding_errors():
        result = configs.dry_run()
    print(json.dumps(result), flush=True)
    return 0


@contextlib.contextmanager
def _binding_errors():
    """Gin appends "In call to configurable ..." to an error raised inside a configurable, on a
    line of its own; the message itself (the first line) names the binding, and is all the
    error line shows."""
    try:
        yield
    except InputError as e:
        raise InputError(str(e).strip().splitlines()[0]) from None


def _check_sample_guidance(model_config, train_config) -> None:
    """Raises UsageError naming --sample_guidance unless the model can be sampled with it."""
    from dct_gen import sampling

    value = FLAGS.sample_guidance
    if value == 1.0:
        return
    try:
        with _binding_errors():
            trained = bool(train_config.with_label_dropout(model_config.num_classes).label_dropout)
        sampling.check_guidance(value, model_config.num_classes, trained)
    except UsageError as e:
        reason = str(e).split(": ", 1)[-1]
        raise UsageError(f"--sample_guidance={value}: {reason}") from None


def _main(args: list[str]) -> int:
    cli.no_positional(args)
    cli.require(FLAGS, "gin_file")
    _check_flag_values()
    if FLAGS.dry_run:
        return _dry_run()
    cli.require(FLAGS, "data_dir", "model_dir", unless="dry_run")
    _check_data_dir(FLAGS.data_dir)

    import gin

    from dct_gen import configs, data, records, training

    cli.parse_gin(FLAGS.gin_file, FLAGS.gin_param)
    info_path = records.join(FLAGS.data_dir, records.INFO_FILENAME)
    # The dataset states the representation (gin's dct_config bindings, if any, must agree) and
    # the classes (model_config.num_classes unset takes them; a number must agree).
    info = training.read_dataset_info(FLAGS.data_dir)
    with _binding_errors():
        model_config, train_config = configs.configs_for_dataset(info, FLAGS.train_split, info_path)
    _check_sample_guidance(model_config, train_config)
    try:
        result = training.train(
            model_config=model_config,
            train_config=train_config,
            data_dir=FLAGS.data_dir,
            model_dir=FLAGS.model_dir,
            max_steps=FLAGS.max_steps,
            extend_steps=FLAGS.extend_steps,
            extend_learning_rate=FLAGS.extend_learning_rate,
            train_split=FLAGS.train_split,
            eval_split=FLAGS.eval_split,
            eval_every=FLAGS.eval_every,
            sample_every=FLAGS.sample_every,
            num_samples=FLAGS.num_tb_samples,
            sample_max_chunks=FLAGS.sample_max_chunks,
            sample_guidance=FLAGS.sample_guidance,
            eval_batches=FLAGS.eval_batches,
            log_every=FLAGS.log_every,
            checkpoint_every=FLAGS.checkpoint_every,
            keep_checkpoints=FLAGS.keep_checkpoints,
            seed=FLAGS.seed,
            deterministic=FLAGS.deterministic,
            tpu=FLAGS.tpu,
            peak_flops=FLAGS.peak_flops,
            operative_config=gin.operative_config_str(),
        )
    except data.ShardReadError as e:  # a damaged shard of the dataset: the message names it
        if isinstance(e, InputError):
            raise
        raise InputError(str(e)) from e
    if result.stopped == "sigterm":
        return 128 + signal.SIGTERM
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs the command with argv (without the program name; None: sys.argv[1:])."""
    return cli.run(_main, FLAGS, argv, prog="dct_gen.train", doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
