r"""Converts an image dataset into sharded TFRecords of sparse DCT triples (one split per run).

    python -m beam_jobs.build_dataset --image_glob '/data/photos/train/*.jpg' --split train \
        --gin_file data/tiny.gin --output_dir /data/dct/photos_64 --num_shards 16
    python -m beam_jobs.build_dataset --image_glob '/data/photos/*/*.jpg' --labels_from_dirs \
        --output_dir /data/dct/photos_384 --num_shards 64
    python -m beam_jobs.build_dataset --tfds_name cifar10 --split train \
        --output_dir gs://bucket/dct/cifar10 --resolution 32 --block_size 4 \
        --runner DataflowRunner --project P --region R --temp_location gs://bucket/tmp \
        --setup_file ./setup.py

The representation comes from the representation flags (default: the paper's LSUN row) or,
with --gin_file/--gin_param, from the dct_config.* bindings that training reads (the
gin/data/*.gin files, or an experiment that includes one). With gin, a field it leaves unbound
takes its flag when one is given, and a flag given explicitly that contradicts a binding is an
error.

Any other --flag passes through to Beam as a pipeline option; an argument that is neither is an
error. Without --runner (or with --runner DirectRunner) the job runs locally on every core,
printing a progress line every --progress_every seconds and a summary at the end; Beam's and
TensorFlow's own messages show with --verbosity 1. The output directory's layout is described
in docs/datasets.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from absl import flags

from dct_gen import cli
from dct_gen.errors import InputError, UsageError

if TYPE_CHECKING:
    from dct_gen.representation import DCTConfig

PROG = "beam_jobs.build_dataset"

# Written out rather than imported, so that --help loads neither numpy nor Beam (tests check
# them against dct_gen.representation, dct_gen.images and beam_jobs.pipeline).
REPRESENTATION_FIELDS = ("block_size", "quality", "resolution", "clip", "ordering", "interval")
ORDERINGS = ("interleaved", "luma_first")
DEFAULT_MAX_PIXELS = 100_000_000


class _JobFlags(flags.FlagValues):
    """The job's flags. Parsing keeps every argument that is not one of them, in order, for Beam
    (absl's known_only mode) instead of refusing it; `check_pipeline_args` then refuses what
    Beam does not know either."""

    def __call__(self, argv, known_only=True):
        return super().__call__(argv, known_only=True)


FLAGS = _JobFlags()
_d = dict(flag_values=FLAGS)

# Input.
flags.DEFINE_string("tfds_name", None, "Prepared TFDS dataset: NAME[/CONFIG][:VERSION].", **_d)
flags.DEFINE_string(
    "split",
    "train",
    "TFDS split to read (e.g. train, validation, train[:10%]); with --image_glob, the name of "
    "the output split.",
    **_d,
)
flags.DEFINE_string("tfds_data_dir", None, "TFDS data_dir (default: TFDS's).", **_d)
flags.DEFINE_string("image_key", None, "TFDS image feature (default: found by type).", **_d)
flags.DEFINE_string("label_key", None, "TFDS label feature (default: found by type).", **_d)
flags.DEFINE_string("image_glob", None, "Image files to read, e.g. '/data/*/*.jpg'.", **_d)
flags.DEFINE_bool(
    "labels_from_dirs",
    False,
    "With --image_glob: label = parent folder's name, mapped to integers in sorted order.",
    **_d,
)
# Representation: the defaults are the paper's LSUN row (Table 3), beam_jobs.pipeline's
# DEFAULT_REPRESENTATION.
flags.DEFINE_integer("block_size", 8, "DCT block size B (4, 8, 16, 32).", **_d)
flags.DEFINE_integer("quality", 75, "IJG quality of the quantization tables (1-100).", **_d)
flags.DEFINE_integer("resolution", 384, "Canvas side; long side of every image.", **_d)
flags.DEFINE_integer("clip", 1200, "Quantized values are clipped to [-clip, clip].", **_d)
flags.DEFINE_enum("ordering", "interleaved", list(ORDERINGS), "Channel ordering.", **_d)
flags.DEFINE_integer("interval", 4, "Luma channels between chroma pairs (interleaved).", **_d)
flags.DEFINE_multi_string(
    "gin_file",
    [],
    "Gin file(s) whose dct_config.* bindings give the representation, as in training: a path, "
    "or relative to gin/ (data/tiny.gin, experiments/tiny.gin). Representation flags then "
    "only fill fields the gin leaves unbound; one that contradicts a binding is an error.",
    **_d,
)
flags.DEFINE_multi_string(
    "gin_param", [], "Gin bindings, e.g. 'dct_config.quality = 90' (after --gin_file).", **_d
)
# Output.
flags.DEFINE_string("output_dir", None, "Output directory (local or gs://); required.", **_d)
flags.DEFINE_string("output_split", None, "Split name in the output (default --split).", **_d)
flags.DEFINE_integer("num_shards", 16, "Number of TFRecord shards.", **_d)
flags.DEFINE_bool("overwrite", False, "Replace this split's existing output.", **_d)
flags.DEFINE_float(
    "max_failed_fraction", 0.01, "Fail the job when a larger fraction of inputs fails.", **_d
)
flags.DEFINE_integer(
    "max_pixels", DEFAULT_MAX_PIXELS, "Inputs with more pixels fail (header check).", **_d
)
# What it prints.
flags.DEFINE_integer(
    "verbosity",
    0,
    "0: the job's progress and summary only (and errors); 1: also Beam's and TensorFlow's "
    "INFO lines and warnings, from the driver and the workers; 2: debug lines too.",
    lower_bound=0,
    **_d,
)
flags.DEFINE_float(
    "progress_every",
    10.0,
    "Seconds between progress lines of a local run (on stderr); 0: none.",
    lower_bound=0.0,
    **_d,
)
del _d


def __getattr__(name: str):
    # Scripts written before the split import these from here; they live in beam_jobs.pipeline
    # and are loaded on first use, so that importing this module (and --help) stays light.
    if name in ("run_pipeline", "DEFAULT_REPRESENTATION"):
        from beam_jobs import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------------------
# The representation: flags, or gin's dct_config.


def _gin_source(fv: flags.FlagValues) -> str:
    parts = []
    if fv.gin_file:
        parts.append("--gin_file " + ", ".join(fv.gin_file))
    if fv.gin_param:
        parts.append("--gin_param " + "; ".join(fv.gin_param))
    return " and ".join(parts)


def representation(fv: flags.FlagValues = FLAGS) -> DCTConfig:
    """The representation the job writes, from parsed flags.

    Without gin, the representation flags (their defaults included). With --gin_file or
    --gin_param, `dct_gen.configs.dct_config()` of the parsed gin, as training reads it: gin
    must bind some dct_config field; a field it leaves unbound takes its flag if given
    explicitly, else dct_config's own default or requirement.

    Raises:
      UsageError: a representation flag contradicts a gin binding (both are named), or the
        flags make no valid representation.
      InputError: a gin file is missing or gin refuses it, the gin binds no dct_config field
        (the files are named), a required field is neither bound nor given, or the bound values
        make no valid representation.
    """
    from dct_gen.representation import DCTConfig

    explicit = {f: fv[f].value for f in REPRESENTATION_FIELDS if fv[f].present}
    if not fv.gin_file and not fv.gin_param:
        try:
            return DCTConfig(**{f: fv[f].value for f in REPRESENTATION_FIELDS})
        except (TypeError, ValueError) as e:
            raise UsageError(f"representation flags: {e}") from None

    import gin

    from dct_gen import configs

    source = _gin_source(fv)
    try:
        try:
            cli.parse_gin(fv.gin_file, fv.gin_param)
        except InputError as e:
            if "'build_dataset'" in str(e):
                raise InputError(
                    f"{source}: build_dataset.<field> bindings are no longer read; bind "
                    "dct_config.<field> instead, as gin/data/*.gin do"
                ) from None
            raise
        bound = configs.bound_dct_fields()
        if not bound:
            raise InputError(
                f"{source}: binds no dct_config.* (the representation this job writes); give "
                "a gin/data/*.gin file, or an experiment that includes one, or leave out gin and "
                "use the representation flags"
            )
        missing = [f for f in configs.REQUIRED_DCT_FIELDS if f not in bound and f not in explicit]
        if missing:
            raise InputError(
                f"{source}: binds {', '.join(f'dct_config.{f}' for f in sorted(bound))} but not "
                f"dct_config.{missing[0]}; bind it, or give --{missing[0]}"
            )
        fill = {f: v for f, v in explicit.items() if f not in bound}
        try:
            cfg = configs.dct_config(**fill)
        except (TypeError, ValueError) as e:
            # gin appends the call site on further lines; the first says what is wrong.
            raise InputError(f"{source}: {str(e).splitlines()[0]}") from None
    finally:
        gin.clear_config()
    for field, value in explicit.items():
        if field in bound and getattr(cfg, field) != value:
            raise UsageError(
                f"--{field}={value} contradicts dct_config.{field} = {getattr(cfg, field)!r} "
                f"in {source}"
            )
    return cfg


# ----------------------------------------------------------------------------------------------
# The command line.


def _pipeline():
    """beam_jobs.pipeline, imported with the root logger quiet: importing Beam logs a warning
    about Google Cloud client libraries that this job needs only for gs:// paths (and then
    says so itself, naming the flag). A handler that drops it keeps that warning from setting
    up logging to stderr (logging.warning does, on a root logger without handlers)."""
    root = logging.getLogger()
    level = root.level
    drop = logging.NullHandler()
    root.setLevel(logging.ERROR)
    root.addHandler(drop)
    try:
        from beam_jobs import pipeline
    finally:
        root.removeHandler(drop)
        root.setLevel(level)
    return pipeline


def job_arguments(beam_args: Sequence[str], fv: flags.FlagValues = FLAGS) -> dict:
    """run_pipeline's keyword arguments from parsed flags and the arguments left for Beam.

    Raises:
      UsageError: a missing or bad flag, or an argument that is neither the job's flag nor a
        Beam pipeline option (with the closest name).
      InputError: bad gin files (see `representation`).
    """
    pipeline = _pipeline()
    beam_args = list(beam_args)
    # An unknown flag first: a typo may be why a required flag looks missing.
    pipeline.check_pipeline_args(beam_args, job_flags=list(fv))
    cli.require(fv, "output_dir")
    kwargs = dict(
        image_glob=fv.image_glob,
        labels_from_dirs=fv.labels_from_dirs,
        tfds_name=fv.tfds_name,
        tfds_data_dir=fv.tfds_data_dir,
        split=fv.split,
        output_split=fv.output_split,
        image_key=fv.image_key,
        label_key=fv.label_key,
        num_shards=fv.num_shards,
        max_failed_fraction=fv.max_failed_fraction,
        max_pixels=fv.max_pixels,
    )
    pipeline.check_arguments(**kwargs)
    return dict(
        output_dir=fv.output_dir,
        cfg=representation(fv),
        overwrite=fv.overwrite,
        pipeline_args=beam_args,
        **kwargs,
    )


def parse_args(argv: Sequence[str]) -> tuple[dict, list[str]]:
    """Command line (argv[0] the program's name) -> (run_pipeline keyword arguments, Beam
    pipeline arguments); checks it as the job would, without running anything.

    Raises:
      UsageError, InputError (both ValueErrors): as `job_arguments`, naming the flag or file.
    """
    beam_args = cli.parse(FLAGS, list(argv[1:]), PROG)
    kwargs = job_arguments(beam_args)
    return kwargs, kwargs["pipeline_args"]


def log_level(verbosity: int) -> int:
    """The level of library messages (Beam, TensorFlow) shown at this --verbosity."""
    return logging.ERROR if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG


@contextlib.contextmanager
def _library_output(level: int) -> Iterator[None]:
    """For the job's duration (restored after: tests call main in one process), the libraries'
    messages at `level`: Python logging to stderr through one handler of ours, Python warnings
    only when warnings show, and TensorFlow's C++ messages (TFDS imports it) to match, in this
    process and the workers it starts.

    The root logger's handlers are set aside meanwhile: absl logs through the root logger when
    the flags are parsed, which gives it Python's default stderr handler, and every line would
    then print twice.
    """
    import warnings

    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    # The local runner repeats each line its worker processes log, which they print themselves.
    handler.addFilter(
        lambda record: (
            not (record.name.endswith("local_job_service") and record.msg == "Worker: %s")
        )
    )
    saved_level, saved_handlers = root.level, list(root.handlers)
    saved_tf = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    for h in saved_handlers:
        root.removeHandler(h)
    root.setLevel(level)
    root.addHandler(handler)
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2" if level > logging.WARNING else "0"
    try:
        with warnings.catch_warnings():
            if level > logging.WARNING:
                warnings.simplefilter("ignore")
            yield
    finally:
        root.removeHandler(handler)
        for h in saved_handlers:
            root.addHandler(h)
        root.setLevel(saved_level)
        if saved_tf is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        else:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = saved_tf


class _ProgressPrinter:
    """Progress lines on stderr: rewritten in place on a terminal, one per line otherwise."""

    def __init__(self):
        self._tty = sys.stderr.isatty()
        self._open = False  # a line rewritten in place still waits for its newline

    def __call__(self, line: str) -> None:
        text = f"{PROG}: {line}"
        sys.stderr.write(f"\r{text.ljust(110)}" if self._tty else text + "\n")
        sys.stderr.flush()
        self._open = self._tty

    def close(self) -> None:
        if self._open:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _main(beam_args: list[str]) -> int:
    level = log_level(FLAGS.verbosity)
    report = _ProgressPrinter() if FLAGS.progress_every > 0 else None
    start = time.monotonic()
    with _library_output(level):
        kwargs = job_arguments(beam_args)
        try:
            entry = _pipeline().run_pipeline(
                **kwargs, log_level=level, progress=report, progress_every=FLAGS.progress_every
            )
        finally:
            if report is not None:
                report.close()
    summary = _pipeline().summary_line(entry, kwargs["output_dir"], time.monotonic() - start)
    print(f"{PROG}: {summary}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the job; argv without the program name (None: sys.argv[1:])."""
    return cli.run(_main, FLAGS, argv, prog=PROG, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
