r"""Converts an image dataset into sharded TFRecords of sparse DCT triples (one split per run).

    python -m beam_jobs.build_dataset --image_glob '/data/photos/*/*.jpg' --labels_from_dirs \
        --output_dir /data/dct/photos_384 --num_shards 64
    python -m beam_jobs.build_dataset --tfds_name cifar10 --split train \
        --output_dir gs://bucket/dct/cifar10 --resolution 32 --block_size 4 \
        --runner DataflowRunner --project P --region R --temp_location gs://bucket/tmp \
        --setup_file ./setup.py

Flags that are not this job's pass through to Beam as pipeline options; an argument that is
neither is an error. Without `--runner` (or with `--runner DirectRunner`) the job runs locally on
Beam's FnApiRunner (the DirectRunner's batch engine) in multi-processing mode on every core.
It is named directly because Beam's DirectRunner first tries to download the Prism runner, which
cannot work offline.

`run_pipeline(...)` is the same job as a function with plain keyword arguments, for tests,
benchmarks and notebooks. The layout of the output directory is described in `docs/beam.md`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from absl import flags

from beam_jobs import outputs

# The paper's LSUN row (Table 3): the job's default representation.
from beam_jobs.pipeline import *  # noqa: F403 (being split)
from dct_gen import images
from dct_gen.representation import ORDERINGS, DCTConfig

# ----------------------------------------------------------------------------------------------
# Command line.


def define_flags() -> flags.FlagValues:
    """The job's flags, in their own FlagValues (the process-wide FLAGS stay untouched)."""
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    # Input.
    flags.DEFINE_string("tfds_name", None, "Prepared TFDS dataset: NAME[/CONFIG][:VERSION].", **d)
    flags.DEFINE_string(
        "split",
        "train",
        "TFDS split to read (e.g. train, validation, train[:10%]); with "
        "--image_glob, the name of the output split.",
        **d,
    )
    flags.DEFINE_string("tfds_data_dir", None, "TFDS data_dir (default: TFDS's).", **d)
    flags.DEFINE_string("image_key", None, "TFDS image feature (default: found by type).", **d)
    flags.DEFINE_string("label_key", None, "TFDS label feature (default: found by type).", **d)
    flags.DEFINE_string("image_glob", None, "Image files to read, e.g. '/data/*/*.jpg'.", **d)
    flags.DEFINE_bool(
        "labels_from_dirs",
        False,
        "With --image_glob: label = parent folder's name, mapped to integers in sorted order.",
        **d,
    )
    # Representation.
    flags.DEFINE_integer("block_size", 8, "DCT block size B (4, 8, 16, 32).", **d)
    flags.DEFINE_integer("quality", 75, "IJG quality of the quantization tables (1-100).", **d)
    flags.DEFINE_integer("resolution", 384, "Canvas side; long side of every image.", **d)
    flags.DEFINE_integer("clip", 1200, "Quantized values are clipped to [-clip, clip].", **d)
    flags.DEFINE_enum("ordering", "interleaved", list(ORDERINGS), "Channel ordering.", **d)
    flags.DEFINE_integer("interval", 4, "Luma channels between chroma pairs (interleaved).", **d)
    flags.DEFINE_multi_string(
        "gin_file",
        [],
        f"Gin file(s) binding {GIN_SELECTOR}.<field> for the representation "
        "fields; a flag given explicitly must agree with them.",
        **d,
    )
    # Output.
    flags.DEFINE_string("output_dir", None, "Output directory (local or gs://).", **d)
    flags.DEFINE_string("output_split", None, "Split name in the output (default --split).", **d)
    flags.DEFINE_integer("num_shards", 16, "Number of TFRecord shards.", **d)
    flags.DEFINE_bool("overwrite", False, "Replace this split's existing output.", **d)
    flags.DEFINE_float(
        "max_failed_fraction", 0.01, "Fail the job when a larger fraction of inputs fails.", **d
    )
    flags.DEFINE_integer(
        "max_pixels", images.DEFAULT_MAX_PIXELS, "Inputs with more pixels fail (header check).", **d
    )
    return fv


_REPRESENTATION_DEFAULTS = {f: getattr(DEFAULT_REPRESENTATION, f) for f in REPRESENTATION_FIELDS}


_gin_registered = False


def _register_gin() -> None:
    """Registers the `build_dataset` configurable (once per process) whose bindings we read."""
    global _gin_registered
    if _gin_registered:
        return
    import gin

    def bindings(**kwargs):
        return kwargs

    gin.external_configurable(bindings, name=GIN_SELECTOR, allowlist=list(REPRESENTATION_FIELDS))
    _gin_registered = True


_UNBOUND = object()


def gin_representation(gin_files: Sequence[str]) -> dict:
    """The representation fields that the gin files bind as `build_dataset.<field> = ...`.

    Bindings of other configurables are ignored, so a gin file can be shared with other
    programs.
    """
    import gin

    _register_gin()
    for path in gin_files:
        if not os.path.exists(path):
            raise ValueError(f"--gin_file={path}: no such file")
    with gin.unlock_config():
        # A marker value first, so that bindings from an earlier parse in this process do not
        # count as bound by these files.
        for field in REPRESENTATION_FIELDS:
            gin.bind_parameter(f"{GIN_SELECTOR}.{field}", _UNBOUND)
        gin.parse_config_files_and_bindings(
            list(gin_files), None, finalize_config=False, skip_unknown=True
        )
    bound = {}
    for field in REPRESENTATION_FIELDS:
        value = gin.query_parameter(f"{GIN_SELECTOR}.{field}")
        if value is not _UNBOUND:
            bound[field] = value
    return bound


def representation_from_flags(fv: flags.FlagValues) -> DCTConfig:
    """The representation: flags given explicitly, else gin bindings, else the defaults."""
    bound = gin_representation(fv.gin_file) if fv.gin_file else {}
    values = {}
    for field in REPRESENTATION_FIELDS:
        flag = fv[field]
        if flag.present and field in bound and bound[field] != flag.value:
            raise ValueError(
                f"--{field}={flag.value} contradicts {GIN_SELECTOR}.{field} = {bound[field]!r} in "
                f"--gin_file {', '.join(fv.gin_file)}"
            )
        values[field] = flag.value if flag.present else bound.get(field, flag.value)
    try:
        return DCTConfig(**values)
    except ValueError as e:
        raise ValueError(f"representation flags: {e}") from None


def parse_args(argv: Sequence[str]) -> tuple[dict, list[str]]:
    """Command line -> (run_pipeline keyword arguments, Beam pipeline arguments).

    Raises:
      ValueError: for a bad or unknown flag, naming it.
    """
    fv = define_flags()
    try:
        rest = fv(list(argv), known_only=True)
    except flags.Error as e:
        raise ValueError(str(e)) from None
    if not fv.output_dir:
        raise ValueError("--output_dir is required")
    pipeline_args = list(rest[1:])
    check_pipeline_args(pipeline_args)
    kwargs = dict(
        output_dir=fv.output_dir,
        cfg=representation_from_flags(fv),
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
        overwrite=fv.overwrite,
        pipeline_args=pipeline_args,
    )
    unchecked = ("output_dir", "cfg", "overwrite", "pipeline_args")
    check_arguments(**{k: v for k, v in kwargs.items() if k not in unchecked})
    return kwargs, pipeline_args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    if any(a in ("-h", "--help", "--helpshort", "--helpfull") for a in argv[1:]):
        print(__doc__)
        print(define_flags().get_help())
        print("\nAny other --flag is passed to Beam as a pipeline option.")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    try:
        kwargs, _ = parse_args(argv)
        entry = run_pipeline(**kwargs)
    except (ValueError, outputs.OutputExistsError, outputs.FailedFractionError) as e:
        print(f"build_dataset: error: {e}", file=sys.stderr)
        return 1
    counts, lengths = entry["counts"], entry["lengths"]
    print(
        f"build_dataset: wrote {counts['written']} records to {kwargs['output_dir']} "
        f"({entry['num_shards']} shards), failed {counts['failed_total']} {counts['failed']}; "
        f"{counts['bytes_per_triple']} bytes/triple; lengths p50 {lengths.get('p50')} "
        f"p99 {lengths.get('p99')} max {lengths.get('max')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
