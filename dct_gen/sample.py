"""Samples images from a trained DCTransformer, or from its exported SavedModel.

usage: python -m dct_gen.sample (--model_dir DIR | --saved_model DIR) [flags]
       python -m dct_gen.sample upsample IMAGE... (--model_dir DIR | --saved_model DIR) [flags]
       python -m dct_gen.sample colorize IMAGE... (--model_dir DIR | --saved_model DIR) [flags]

Without a task word: unconditional samples, or class-conditional ones with --label.
`upsample IMAGE...`: B x upsampling (8x at B = 8) of each image (interleaved models).
`colorize IMAGE...`: colour for each image's grey version (luma_first models).
--temperature, --top_p and --top_k apply to plain sampling only; --label (a class index or
name) and --guidance (classifier-free guidance of a class-conditional model) to every task.
A class-conditional model trained without label dropout has no "no label" embedding: it needs
--label.

For each sample it writes PREFIX_NNN.png, PREFIX_NNN.npz (the triples), PREFIX_NNN_heatmap.png
and PREFIX_NNN_progressive.png, then PREFIX_grid.png, PREFIX_heatmaps.png and PREFIX.json
(PREFIX: sample, upsample or colorize); a task also writes TASK_NNN_comparison.png per input
(the input, then its samples). The last stdout line is a JSON summary. The work is
`dct_gen.sampling`; see docs/sampling.md.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

from absl import flags

from dct_gen import cli
from dct_gen.errors import InputError, UsageError

GENERATE = "generate"  # no task word: plain sampling (the library's task name)
TASKS = ("upsample", "colorize")  # the task words
GENERATION_ONLY = ("temperature", "top_p", "top_k")
DEFAULT_NUM_SAMPLES = {GENERATE: 16, "upsample": 3, "colorize": 3}

FLAGS = cli.flag_values()
flags.DEFINE_string(
    "model_dir",
    None,
    "Run directory of dct_gen.train (its newest checkpoint that restores).",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "saved_model", None, "SavedModel directory of dct_gen.export.", flag_values=FLAGS
)
flags.DEFINE_string("out", os.path.join("runs", "samples"), "Output directory.", flag_values=FLAGS)
flags.DEFINE_integer(
    "seed", 0, "Random seed (the same seed gives the same images).", flag_values=FLAGS
)
flags.DEFINE_integer(
    "num_samples",
    None,
    "How many samples (default 16); upsample, colorize: per input image (default 3).",
    lower_bound=1,
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "label",
    None,
    "Class label of a class-conditional model: an index or one of the run's class names "
    "(default: none, -1, which needs a model trained with label dropout).",
    flag_values=FLAGS,
)
flags.DEFINE_float(
    "guidance",
    1.0,
    "Classifier-free guidance scale g >= 0 of a class-conditional model: logits "
    "null + g * (cond - null) (1: none, 0: unconditional).",
    flag_values=FLAGS,
)
flags.DEFINE_float("temperature", 1.0, "Softmax temperature (finite and > 0).", flag_values=FLAGS)
flags.DEFINE_float("top_p", 1.0, "Nucleus sampling, in (0, 1] (1: off).", flag_values=FLAGS)
flags.DEFINE_integer(
    "top_k", 0, "Top-k sampling (0: off; not in the SavedModel).", flag_values=FLAGS
)
flags.DEFINE_integer("batch_size", 16, "Samples drawn together.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer(
    "max_chunks",
    None,
    "Chunk limit per sample (default: enough for the longest possible sequence).",
    lower_bound=1,
    flag_values=FLAGS,
)
flags.DEFINE_bool("jit", False, "Compile each chunk with XLA.", flag_values=FLAGS)
flags.DEFINE_bool("quiet", False, "No progress lines (on stderr).", flag_values=FLAGS)


def _task(args: list[str]) -> tuple[str, list[str]]:
    """The task and its image paths from the positional arguments."""
    if args and args[0] in TASKS:
        task, paths = args[0], args[1:]
        if not paths:
            raise UsageError(f"{task} needs at least one IMAGE")
        return task, paths
    if args:
        raise UsageError(f"unexpected arguments: {' '.join(args)} (tasks: {', '.join(TASKS)})")
    return GENERATE, []


def _check_flags(task: str) -> None:
    if bool(FLAGS.model_dir) == bool(FLAGS.saved_model):
        raise UsageError("give one of --model_dir and --saved_model")
    if task != GENERATE:
        for name in GENERATION_ONLY:
            if FLAGS[name].present:
                raise UsageError(f"--{name} applies to plain sampling, not to {task}")
    if FLAGS.saved_model and FLAGS.top_k:
        raise UsageError("--top_k: the SavedModel's sample signature has no top_k")


def _read_inputs(paths: list[str]) -> list:
    from dct_gen import images as images_lib

    out = []
    for path in paths:
        if not os.path.isfile(path):
            raise InputError(f"{path}: no such image file")
        try:
            out.append(images_lib.read_image(path))
        except images_lib.ImageError as e:
            message = str(e)
            raise InputError(message if path in message else f"{path}: {message}") from None
    return out


def _progress(enabled: bool) -> Callable[[str], None] | None:
    if not enabled:
        return None
    tty = sys.stderr.isatty()

    def report(line: str) -> None:
        sys.stderr.write(("\r" + line.ljust(100)) if tty else line + "\n")
        sys.stderr.flush()

    return report


def _source(sampling):
    """The Sampler of --model_dir or the SavedModelSource of --saved_model, the flag, and the
    checkpoint step (None when an export does not say)."""
    from dct_gen import run_dir

    if FLAGS.saved_model:
        cli.existing_dir("saved_model", FLAGS.saved_model, "SavedModel directory")
        try:
            source = sampling.SavedModelSource(FLAGS.saved_model)
        except InputError as e:
            raise InputError(f"--saved_model: {e}") from None
        from dct_gen.saved_model import EXPORT_FILE

        try:
            step = run_dir.read_json(os.path.join(FLAGS.saved_model, EXPORT_FILE), {}).get("step")
        except (ValueError, AttributeError):  # an export marker we cannot read: no step shown
            step = None
        return source, "saved_model", step

    cli.existing_dir("model_dir", FLAGS.model_dir, "run directory")
    try:
        run = run_dir.load_run(FLAGS.model_dir, mixed_precision=False, log=lambda line: None)
        sampler = sampling.Sampler.from_run(run, jit_compile=FLAGS.jit)
    except InputError as e:
        raise InputError(f"--model_dir: {e}") from None
    return sampler, "model_dir", run.step


def _label(sampling, source) -> int:
    """--label as an index (a class name resolved with the model's names), checked against the
    model; the default (none) on a model that needs a class is a usage error saying so."""
    if isinstance(source, sampling.Sampler):
        num_classes, trained = source.config.num_classes, source.null_label_trained
    else:
        num_classes, trained = source.num_classes, source.null_label_trained
    names = source.label_names
    label = sampling.resolve_label(FLAGS.label, num_classes, names)
    if num_classes and label == -1 and not trained:
        given = "--label=-1" if FLAGS.label is not None else "--label is not given (no class)"
        raise UsageError(
            f"{given}: this class-conditional model was trained with train_config.label_dropout "
            "= 0, so it has no trained 'no label' embedding; pass a class with --label "
            f"({sampling.describe_classes(num_classes, names)})"
        )
    sampling.check_label(label, num_classes, trained, names)
    return label


def _main(args: list[str]) -> int:
    task, paths = _task(args)
    _check_flags(task)
    num_samples = FLAGS.num_samples or DEFAULT_NUM_SAMPLES[task]

    from dct_gen import sampling

    draws = dict(guidance=FLAGS.guidance)
    if task == GENERATE:
        draws.update(temperature=FLAGS.temperature, top_p=FLAGS.top_p, top_k=FLAGS.top_k)
    try:
        sampling.SampleOptions(**draws)
    except UsageError as e:
        raise UsageError(f"--{e}") from None  # the messages start with the option's name
    inputs = _read_inputs(paths)
    source, flag, step = _source(sampling)
    try:
        label = _label(sampling, source)
    except UsageError as e:
        message = str(e)
        raise UsageError(message if message.startswith("--") else f"--{message}") from None
    if isinstance(source, sampling.Sampler):
        max_chunks = FLAGS.max_chunks or sampling.default_max_chunks(source.config)
        draws["max_chunks"] = max_chunks
    progress = _progress(not FLAGS.quiet)
    try:
        samples = sampling.sample_task(
            source,
            task,
            num_samples=num_samples,
            images=inputs,
            label=label,
            options=sampling.SampleOptions(**draws),
            seed=FLAGS.seed,
            batch_size=FLAGS.batch_size,
            progress=progress,
        )
    except UsageError as e:
        raise UsageError(f"--{e}") from None
    except InputError as e:  # the model cannot do the task
        raise InputError(f"--{flag} {FLAGS[flag].value}: {e}") from None
    if progress and sys.stderr.isatty():
        sys.stderr.write("\n")
    options = sampling.SampleOptions(**draws)
    info = dict(
        seed=FLAGS.seed,
        temperature=options.temperature,
        top_p=options.top_p,
        top_k=options.top_k,
        guidance=None if options.guidance == 1 else options.guidance,
        checkpoint_step=step,
        label_names=source.label_names,
    )
    files = sampling.write_task(samples, FLAGS.out, task, inputs, info=info)
    summary = {
        "task": task,
        "out": FLAGS.out,
        "samples": len(samples.sequences),
        "stopped": int(samples.finished.sum()),
        "seconds": round(samples.seconds, 2),
        "grid": files["grid"][0],
    }
    print(json.dumps(summary), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, FLAGS, argv, prog="dct_gen.sample", doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
