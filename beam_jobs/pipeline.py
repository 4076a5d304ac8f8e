"""The dataset job as a library: `run_pipeline(...)` converts one split of an image dataset
into sharded TFRecords of sparse DCT triples, and `make_pipeline` sets up the runner.

`python -m beam_jobs.build_dataset` is the same job from the command line; tests, benchmarks
and notebooks call `run_pipeline` with plain keyword arguments. Locally (no runner, or
`DirectRunner`) the job runs on Beam's FnApiRunner (the DirectRunner's batch engine) in
multi-processing mode on every core. It is named directly because Beam's DirectRunner first
tries to download the Prism runner, which cannot work offline.

The layout of the output directory is described in docs/datasets.md. Bad arguments and inputs
raise `dct_gen.errors.UsageError` (a flag's value or a combination of flags) or `InputError`
(a missing input, an output directory that cannot take this split), each naming the flag.
Nothing here imports TensorFlow or Keras at module level.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    StandardOptions,
)
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from beam_jobs import outputs, transforms
from dct_gen import images, records
from dct_gen.errors import InputError, UsageError
from dct_gen.representation import DCTConfig

# The paper's LSUN row (Table 3): the job's default representation.
DEFAULT_REPRESENTATION = DCTConfig(
    block_size=8, quality=75, resolution=384, clip=1200, ordering="interleaved", interval=4
)

_LOCAL_RUNNERS = (None, "DirectRunner", "direct", "FnApiRunner")
_BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


# ----------------------------------------------------------------------------------------------
# The job as a function.


def run_pipeline(
    *,
    output_dir: str,
    cfg: DCTConfig = DEFAULT_REPRESENTATION,
    image_glob: str | None = None,
    labels_from_dirs: bool = False,
    tfds_name: str | None = None,
    tfds_data_dir: str | None = None,
    split: str = "train",
    output_split: str | None = None,
    image_key: str | None = None,
    label_key: str | None = None,
    num_shards: int = 16,
    max_failed_fraction: float = 0.01,
    max_pixels: int = images.DEFAULT_MAX_PIXELS,
    overwrite: bool = False,
    pipeline_args: Sequence[str] = (),
) -> dict:
    """Converts one split and waits for the job to finish.

    Args:
      output_dir: where the shards, info.json, failed-<split>.jsonl and COMPLETED go (local or
        gs://).
      cfg: the representation.
      image_glob: read image files matching this glob (Beam FileSystems syntax: `*` stays
        within a folder, `**` crosses folders). Exclusive with tfds_name.
      labels_from_dirs: with image_glob, the label is the index of the file's parent folder
        name among the sorted folder names (or among the label names that another split of
        output_dir already uses).
      tfds_name: read this prepared TFDS dataset (`name[/config][:version]`).
      tfds_data_dir: its data_dir (TFDS's default when None).
      split: the TFDS split to read (subsplits such as `train[:10%]` work); with image_glob,
        only the name of the output.
      output_split: the split's name in the output; default `split`, which must then be a
        plain name (letters, digits, '_', '-').
      image_key, label_key: the TFDS image and label features, when the automatic choice
        (`image`/`label`, or the only Image/ClassLabel feature) does not fit.
      num_shards: number of TFRecord shards.
      max_failed_fraction: the job fails, without writing COMPLETED, when more than this
        fraction of the inputs fail.
      max_pixels: inputs with more pixels fail (reason too_many_pixels), checked on the header.
      overwrite: replace this split's existing output in output_dir instead of refusing.
      pipeline_args: Beam pipeline options as command-line arguments.

    Returns:
      The split's entry of info.json (counts, lengths, source, labels).

    Raises:
      UsageError: bad arguments or pipeline options, each naming its flag.
      InputError: an input that does not exist (no file matches image_glob, no prepared TFDS
        data), an output_dir that cannot be used (its filesystem is unavailable, it holds
        another representation); each names the flag.
      outputs.OutputExistsError: output exists and overwrite is False (an InputError).
      outputs.FailedFractionError: too many inputs failed (an InputError).
    """
    out_split = check_arguments(
        image_glob=image_glob,
        labels_from_dirs=labels_from_dirs,
        tfds_name=tfds_name,
        tfds_data_dir=tfds_data_dir,
        split=split,
        output_split=output_split,
        image_key=image_key,
        label_key=label_key,
        num_shards=num_shards,
        max_failed_fraction=max_failed_fraction,
        max_pixels=max_pixels,
    )
    output_dir = output_dir.rstrip("/")
    _check_filesystem(output_dir, "output_dir")

    # Inputs, checked before anything is written.
    if image_glob is not None:
        _check_filesystem(image_glob, "image_glob")
        if not FileSystems.match([image_glob], limits=[1])[0].metadata_list:
            raise InputError(f"--image_glob={image_glob} matches no file")
        source = {"kind": "image_glob", "pattern": image_glob, "labels_from_dirs": labels_from_dirs}
        tfds_spec = None
    else:
        tfds_spec = transforms.tfds_features(tfds_name, split, tfds_data_dir, image_key, label_key)
        source = {
            "kind": "tfds",
            "name": tfds_name,
            "split": split,
            "data_dir": tfds_data_dir,
            "image_key": tfds_spec["image_key"],
            "label_key": tfds_spec["label_key"],
        }

    _check_output_dir(output_dir)
    info = outputs.prepare_output_dir(output_dir, out_split, cfg, overwrite=overwrite)
    other_label_names = outputs.label_names_of_other_splits(info, out_split)
    if tfds_spec is not None and other_label_names and tfds_spec["label_names"]:
        if tfds_spec["label_names"] != other_label_names:
            raise InputError(
                f"--output_dir={output_dir} holds splits whose label names differ from "
                f"{tfds_name}'s; use another --output_dir"
            )

    p = make_pipeline(pipeline_args)
    failures = []
    if image_glob is not None:
        paths = p | "ListFiles" >> transforms.ListFiles(image_glob)
        if not labels_from_dirs:
            label_names = p | "NoLabels" >> beam.Create([None])
        elif other_label_names:
            label_names = p | "LabelsOfOtherSplits" >> beam.Create([other_label_names])
        else:
            label_names = paths | "LabelNames" >> transforms.LabelNames()
        read_count = paths | "CountRead" >> beam.combiners.Count.Globally()
        read = (
            paths
            | "SpreadPaths" >> beam.Reshuffle()
            | "ReadFiles"
            >> beam.ParDo(
                transforms.ReadFiles(), beam.pvalue.AsSingleton(label_names)
            ).with_outputs(transforms.FAILED_TAG, main="items")
        )
        items = read.items
        failures.append(read[transforms.FAILED_TAG])
    else:
        examples = p | "ReadTFDS" >> transforms.ReadTFDS(
            tfds_name,
            split,
            image_key=tfds_spec["image_key"],
            label_key=tfds_spec["label_key"],
            image_encoded=tfds_spec["image_encoded"],
            data_dir=tfds_data_dir,
        )
        label_names = p | "TFDSLabels" >> beam.Create([tfds_spec["label_names"]])
        read_count = examples | "CountRead" >> beam.combiners.Count.Globally()
        items = examples | "SpreadExamples" >> beam.Reshuffle()

    encoded = items | "Encode" >> beam.ParDo(transforms.EncodeImages(cfg, max_pixels)).with_outputs(
        transforms.FAILED_TAG, main="records"
    )
    failures.append(encoded[transforms.FAILED_TAG])
    failed = tuple(failures) | "AllFailures" >> beam.Flatten()

    shard_names = [records.shard_name(out_split, i, num_shards) for i in range(num_shards)]
    shards = (
        encoded.records
        | "KeyRecords" >> beam.Map(lambda r: (r.key, r.record))
        | "WriteShards" >> transforms.WriteShards(output_dir, shard_names, "tfrecord")
    )
    failed_files = (
        failed
        | "KeyFailures" >> beam.Map(lambda f: (f.key, f.to_json().encode("utf-8")))
        | "WriteFailures"
        >> transforms.WriteShards(output_dir, [records.failed_name(out_split)], "lines")
    )
    stats = encoded.records | "Stats" >> beam.CombineGlobally(transforms.SplitStats())
    by_reason = failed | "CountFailures" >> beam.CombineGlobally(transforms.CountByReason())
    _ = (
        p
        | "Once" >> beam.Create([None])
        | "Finalize"
        >> beam.ParDo(
            transforms.FinalizeSplit(
                output_dir=output_dir,
                split=out_split,
                cfg=cfg,
                num_shards=num_shards,
                source=source,
                max_failed_fraction=max_failed_fraction,
            ),
            read=beam.pvalue.AsSingleton(read_count),
            stats=beam.pvalue.AsSingleton(stats),
            failed_by_reason=beam.pvalue.AsSingleton(by_reason),
            shards=beam.pvalue.AsList(shards),
            failed_files=beam.pvalue.AsList(failed_files),
            label_names=beam.pvalue.AsSingleton(label_names),
        )
    )

    p.run().wait_until_finish()
    info = outputs.read_info(output_dir)
    if info is None or out_split not in outputs.completed_splits(output_dir):
        entry = (info or {}).get("splits", {}).get(out_split)
        message = entry and outputs.failed_fraction_message(entry, output_dir, out_split)
        if message:
            raise outputs.FailedFractionError(message)
        raise RuntimeError(
            f"the pipeline finished but {output_dir} lacks COMPLETED for {out_split}"
        )
    return info["splits"][out_split]


def check_arguments(
    *,
    image_glob: str | None,
    labels_from_dirs: bool,
    tfds_name: str | None,
    tfds_data_dir: str | None,
    split: str,
    output_split: str | None,
    image_key: str | None,
    label_key: str | None,
    num_shards: int,
    max_failed_fraction: float,
    max_pixels: int,
) -> str:
    """Checks the arguments that need no file access; returns the output split's name.

    Raises:
      UsageError: naming the flag at fault.
    """
    if (image_glob is None) == (tfds_name is None):
        raise UsageError("give exactly one input: --image_glob or --tfds_name")
    if labels_from_dirs and image_glob is None:
        raise UsageError("--labels_from_dirs applies to --image_glob input only")
    if tfds_name is None and (image_key or label_key or tfds_data_dir):
        raise UsageError("--image_key, --label_key and --tfds_data_dir apply to --tfds_name only")
    if num_shards < 1:
        raise UsageError(f"--num_shards={num_shards}: must be >= 1")
    if not 0.0 <= max_failed_fraction <= 1.0:
        raise UsageError(f"--max_failed_fraction={max_failed_fraction}: must be in [0, 1]")
    if max_pixels < 1:
        raise UsageError(f"--max_pixels={max_pixels}: must be >= 1")
    out_split = output_split or split
    try:
        records.check_split_name(out_split)
    except ValueError as e:
        flag = "--output_split" if output_split else "--split (or give --output_split)"
        raise UsageError(f"{flag}: {e}") from None
    return out_split


def _check_filesystem(path: str, flag: str) -> None:
    try:
        FileSystems.get_filesystem(path)
    except ValueError as e:
        hint = ""
        if path.startswith("gs://"):
            hint = " (gs:// needs the GCP extra: pip install 'apache-beam[gcp]==2.77.0')"
        raise InputError(f"--{flag}={path}: {e}{hint}") from None


def _check_output_dir(output_dir: str) -> None:
    """A local output_dir must be (or become) a writable directory; checked before the pipeline
    starts, so that a typo fails in one line and not inside a worker. Remote filesystems are
    left to the job (listing a bucket needs credentials this check should not ask for)."""
    if "://" in output_dir:
        return
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise InputError(f"--output_dir={output_dir}: exists and is not a directory")
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as e:
        reason = e.strerror or e
        raise InputError(f"--output_dir={output_dir}: cannot create it ({reason})") from None
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise InputError(f"--output_dir={output_dir}: not writable")


# ----------------------------------------------------------------------------------------------
# Runner.


def _given(args: Sequence[str], name: str) -> bool:
    return any(a == f"--{name}" or a.startswith(f"--{name}=") for a in args)


def check_pipeline_args(args: Sequence[str], job_flags: Sequence[str] = ()) -> None:
    """Refuses arguments that are not Beam pipeline options (typos included).

    Args:
      args: the arguments meant for Beam.
      job_flags: the names of the calling command's own flags, so that a misspelt one is
        suggested too (the command line passes its flags; `run_pipeline` none).

    Raises:
      UsageError: naming every unknown option (with the closest known name) and every stray
        argument.
    """
    # Beam logs each argument it cannot parse; they are reported below, once, with a hint.
    log = logging.getLogger("apache_beam.options.pipeline_options")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        options = PipelineOptions(list(args))
        known = options.get_all_options(retain_unknown_options=False)
        every = options.get_all_options(retain_unknown_options=True)
    finally:
        log.setLevel(level)
    unknown = sorted(set(every) - set(known))
    stray = [
        a
        for prev, a in zip([""] + list(args), args)
        if not a.startswith("-") and (not prev.startswith("--") or "=" in prev)
    ]
    if unknown or stray:
        names = list(job_flags) + list(known)
        described = []
        for u in unknown:
            close = difflib.get_close_matches(u, names, n=1)
            described.append(f"--{u}" + (f" (did you mean --{close[0]}?)" if close else ""))
        raise UsageError(
            "neither flags of beam_jobs.build_dataset nor Beam pipeline options: "
            + ", ".join(described + [repr(s) for s in stray])
        )


def make_pipeline(pipeline_args: Sequence[str] = ()) -> beam.Pipeline:
    """A Pipeline for these options; locally, the FnApiRunner on every core by default."""
    args = list(pipeline_args)
    check_pipeline_args(args)
    options = PipelineOptions(args)
    if options.view_as(StandardOptions).runner in _LOCAL_RUNNERS:
        direct = options.view_as(DirectOptions)
        if not _given(args, "direct_running_mode"):
            direct.direct_running_mode = "multi_processing"
        if not _given(args, "direct_num_workers"):
            direct.direct_num_workers = os.cpu_count() or 1
        if direct.direct_running_mode == "multi_processing":
            # One BLAS thread per worker process: with one worker per core, numpy's default of
            # one thread per core in every worker oversubscribes the machine (measured: same
            # images/s, twice the CPU). Worker processes inherit this environment.
            for name in _BLAS_THREAD_VARIABLES:
                os.environ.setdefault(name, "1")
        return beam.Pipeline(runner=FnApiRunner(), options=options)
    return beam.Pipeline(options=options)
