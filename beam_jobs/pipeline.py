"""The dataset job as a library: `run_pipeline(...)` converts one split of an image dataset
into sharded TFRecords of sparse DCT triples, and `make_pipeline` sets up the runner.

`python -m beam_jobs.build_dataset` is the same job from the command line; tests, benchmarks
and notebooks call `run_pipeline` with plain keyword arguments. Locally (no runner, or
`DirectRunner`) the job runs on Beam's FnApiRunner (the DirectRunner's batch engine) in
multi-processing mode on every core. It is named directly because Beam's DirectRunner first
tries to download the Prism runner, which cannot work offline. Its worker processes run
`run_worker`: Beam's SDK harness, logging at the job's level, and ending when the driver ends,
even when the driver is killed.

The layout of the output directory is described in docs/datasets.md. Bad arguments and inputs
raise `dct_gen.errors.UsageError` (a flag's value or a combination of flags) or `InputError`
(a missing input, an output directory that cannot take this split), each naming the flag.
Nothing here imports TensorFlow or Keras at module level.
"""

from __future__ import annotations

import datetime
import difflib
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    StandardOptions,
    WorkerOptions,
)
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.transforms.environments import SubprocessSDKEnvironment

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
    log_level: int = logging.ERROR,
    progress: Callable[[str], None] | None = None,
    progress_every: float = 10.0,
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
      log_level: the level of the messages that local worker processes (Beam's harness, and
        TensorFlow in them) print: logging.ERROR by default, logging.INFO to see what they do.
        This process's own logging is the caller's.
      progress: called every `progress_every` seconds of a local run with one line: inputs
        done (of how many, when the listing or the TFDS split tells), written, failed, the rate
        and the time left. None: no progress lines (nor the files they are counted in).
      progress_every: seconds between progress lines.

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
    check_pipeline_args(pipeline_args)
    output_dir = output_dir.rstrip("/")
    _check_filesystem(output_dir, "output_dir")

    # Inputs, checked before anything is written.
    local = is_local_runner(pipeline_args)
    if image_glob is not None:
        _check_filesystem(image_glob, "image_glob")
        # A local run counts its inputs, for the progress line; a remote one only looks for one.
        total = count_inputs(image_glob, count_all=local and progress is not None)
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
        total = tfds_spec["num_examples"]

    _check_output_dir(output_dir)
    info = outputs.prepare_output_dir(output_dir, out_split, cfg, overwrite=overwrite)
    other_label_names = outputs.label_names_of_other_splits(info, out_split)
    if tfds_spec is not None and other_label_names and tfds_spec["label_names"]:
        if tfds_spec["label_names"] != other_label_names:
            raise InputError(
                f"--output_dir={output_dir} holds splits whose label names differ from "
                f"{tfds_name}'s; use another --output_dir"
            )

    p = make_pipeline(pipeline_args, log_level=log_level)
    progress_dir = None
    if progress is not None and local:
        progress_dir = tempfile.mkdtemp(prefix="dct_gen-progress-")
    failures = []
    if image_glob is not None:
        listing = p | "ListFiles" >> transforms.ListFiles(image_glob)
        paths = listing.paths
        passed_over = listing[transforms.SKIPPED_TAG] | "SummarizeSkipped" >> beam.CombineGlobally(
            transforms.SkippedSummary()
        )
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
                transforms.ReadFiles(progress_dir), beam.pvalue.AsSingleton(label_names)
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
        passed_over = p | "NothingSkipped" >> beam.Create([None])
        read_count = examples | "CountRead" >> beam.combiners.Count.Globally()
        items = examples | "SpreadExamples" >> beam.Reshuffle()

    encoded = items | "Encode" >> beam.ParDo(
        transforms.EncodeImages(cfg, max_pixels, progress_dir)
    ).with_outputs(transforms.FAILED_TAG, main="records")
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
            skipped=beam.pvalue.AsSingleton(passed_over),
        )
    )

    reporter = None
    if progress_dir is not None:
        reporter = _ProgressReporter(progress, progress_dir, total, progress_every)
    try:
        p.run().wait_until_finish()
    finally:
        if reporter is not None:
            reporter.stop()
        if progress_dir is not None:
            shutil.rmtree(progress_dir, ignore_errors=True)
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


def count_inputs(image_glob: str, *, count_all: bool = True) -> int:
    """The number of inputs the glob names (`transforms.list_inputs`); with count_all False, 0
    or 1 (only whether there is one: listing a bucket to the end can take long).

    Raises:
      InputError: the glob names no input; the message says what it passed over, if anything.
    """
    if not count_all and not transforms.is_local(image_glob):
        found = FileSystems.match([image_glob], limits=[1])[0].metadata_list
        if not found:
            raise InputError(f"--image_glob={image_glob} matches no file")
        return 1
    count, skipped = 0, {}
    for item in transforms.list_inputs(image_glob):
        if isinstance(item, transforms.Skipped):
            skipped[item.reason] = skipped.get(item.reason, 0) + 1
            continue
        count += 1
        if not count_all:
            break
    if count == 0:
        passed = f" (it passed over {outputs.skipped_text(skipped)})" if skipped else ""
        raise InputError(f"--image_glob={image_glob} matches no file{passed}")
    return count


def _format_seconds(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def progress_line(counts: dict, total: int | None, elapsed: float) -> str:
    """'340 of 1000 inputs (34%) in 0:00:16: 330 written, 10 failed; 21.3 inputs/s, ETA
    0:00:31'; without a total, no percentage and no ETA."""
    written, failed = int(counts.get("written", 0)), int(counts.get("failed", 0))
    done = written + failed
    if total is not None:
        done = min(done, total)  # a retried bundle counts twice
    rate = done / elapsed if elapsed > 0 else 0.0
    of = f" of {total} inputs ({done / total:.0%})" if total else " inputs"
    line = f"{done}{of} in {_format_seconds(elapsed)}: {written} written, {failed} failed"
    if done:
        line += f"; {rate:.1f} inputs/s"
        if total:
            line += f", ETA {_format_seconds((total - done) / rate)}"
    return line


def summary_line(entry: dict, output_dir: str, seconds: float) -> str:
    """The line the command prints at the end, from the split's info.json entry: what the job
    read, wrote, failed and passed over, its rate, and the records' size and lengths."""
    counts, lengths = entry["counts"], entry["lengths"]
    rate = counts["read"] / seconds if seconds > 0 else 0.0
    skipped = counts.get("skipped") or {}
    passed = f"; skipped {outputs.skipped_text(skipped)}" if skipped else ""
    return (
        f"read {counts['read']} inputs in {seconds:.1f} s ({rate:.1f} inputs/s); wrote "
        f"{counts['written']} records to {output_dir} ({entry['num_shards']} shards), failed "
        f"{counts['failed_total']} {counts['failed']}{passed}; {counts['bytes_per_triple']} "
        f"bytes/triple; lengths p50 {lengths.get('p50')} p99 {lengths.get('p99')} "
        f"max {lengths.get('max')}"
    )


class _ProgressReporter:
    """A thread that sums the workers' progress files every `every` seconds and reports a line
    (the local runner gives the driver no metrics until the pipeline ends)."""

    def __init__(self, report: Callable[[str], None], folder: str, total, every: float):
        self._report, self._folder, self._total, self._every = report, folder, total, every
        self._start = time.monotonic()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self._every):
            counts = transforms.read_progress(self._folder)
            self._report(progress_line(counts, self._total, time.monotonic() - self._start))

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


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


def is_local_runner(pipeline_args: Sequence[str] = ()) -> bool:
    """Whether these pipeline options run the job on this machine (no runner, DirectRunner)."""
    log = logging.getLogger("apache_beam.options.pipeline_options")
    level = log.level
    log.setLevel(logging.ERROR)  # unknown options are check_pipeline_args' to report
    try:
        runner = PipelineOptions(list(pipeline_args)).view_as(StandardOptions).runner
    finally:
        log.setLevel(level)
    return runner in _LOCAL_RUNNERS


def make_pipeline(
    pipeline_args: Sequence[str] = (), log_level: int = logging.ERROR
) -> beam.Pipeline:
    """A Pipeline for these options; locally, the FnApiRunner on every core by default.

    Args:
      pipeline_args: Beam pipeline options as command-line arguments.
      log_level: locally, the level of what the workers' SDK harness logs (Beam's
        --default_sdk_harness_log_level, unless given) and prints. A remote runner's workers
        keep its own level (their logs go to the runner's log store, not this terminal).
    """
    args = list(pipeline_args)
    check_pipeline_args(args)
    options = PipelineOptions(args)
    if options.view_as(StandardOptions).runner not in _LOCAL_RUNNERS:
        return beam.Pipeline(options=options)  # its workers log where the runner keeps logs
    if not _given(args, "default_sdk_harness_log_level"):
        options.view_as(WorkerOptions).default_sdk_harness_log_level = logging.getLevelName(
            log_level
        )
    direct = options.view_as(DirectOptions)
    if not _given(args, "direct_running_mode"):
        direct.direct_running_mode = "multi_processing"
    if not _given(args, "direct_num_workers"):
        direct.direct_num_workers = os.cpu_count() or 1
    if direct.direct_running_mode != "multi_processing":
        return beam.Pipeline(runner=FnApiRunner(), options=options)
    # One BLAS thread per worker process: with one worker per core, numpy's default of one
    # thread per core in every worker oversubscribes the machine (measured: same images/s,
    # twice the CPU). Worker processes inherit this environment.
    for name in _BLAS_THREAD_VARIABLES:
        os.environ.setdefault(name, "1")
    if os.name != "posix":
        return beam.Pipeline(runner=FnApiRunner(), options=options)
    # The worker processes run our program (run_worker) instead of Beam's own command. The
    # FnApiRunner puts Beam's command in place of any other when the mode reads
    # multi_processing; with the mode cleared it keeps ours, which is the same thing: one
    # subprocess per worker (direct_num_workers of them) running the SDK harness.
    environment = SubprocessSDKEnvironment.from_command_string(worker_command(log_level))
    direct.direct_running_mode = None
    return beam.Pipeline(runner=FnApiRunner(default_environment=environment), options=options)


# ----------------------------------------------------------------------------------------------
# The local worker processes.


def worker_command(log_level: int = logging.ERROR) -> str:
    """The shell command of a local worker process: this Python running `run_worker`.

    Beam runs it with a shell; `exec` makes the worker the driver's own child (not the shell's).
    A short prelude runs before Beam is imported, which takes seconds (more on a busy machine),
    so that a driver killed meanwhile still takes its workers with it:

    1. on Linux, the kernel is asked to kill this process when its parent dies (prctl
       PR_SET_PDEATHSIG = 1 with SIGKILL = 9; the parent is the driver's thread that started the
       worker, which waits for it to the end);
    2. the process exits if its parent is no longer the driver (it died before 1 took effect);
    3. the root logger gets a handler, because importing Beam logs warnings (about Google Cloud
       clients) that would otherwise set up logging to stderr at Beam's level.
    """
    driver = os.getpid()
    program = "; ".join(
        [
            "import ctypes, logging, os, sys",
            "sys.platform.startswith('linux') and ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)",
            f"os.getppid() == {driver} or sys.exit(1)",
            "logging.getLogger().addHandler(logging.NullHandler())",
            "from beam_jobs import pipeline",
            f"pipeline.run_worker({driver}, {int(log_level)})",
        ]
    )
    return f"exec {shlex.quote(sys.executable)} -c {shlex.quote(program)}"


def run_worker(driver_pid: int, log_level: int = logging.ERROR) -> None:
    """The program of a local worker process (after `worker_command`'s prelude): Beam's SDK
    harness, which logs to stderr at `log_level` and ends when the driver (`driver_pid`) does.
    """
    _watch_driver(driver_pid)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(log_level)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    # TensorFlow (the TFDS source imports it in the workers) prints from C++: 0 everything,
    # 1 warnings and errors, 2 errors only.
    tf_level = 0 if log_level <= logging.INFO else 1 if log_level <= logging.WARNING else 2
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = str(tf_level)
    if log_level > logging.WARNING:
        import warnings

        warnings.simplefilter("ignore")
    # The harness sets its log level (and so what it sends on to the driver, which logs it
    # again) from the pipeline options in its environment; the FnApiRunner passes none.
    options = json.loads(os.environ.get("PIPELINE_OPTIONS") or "{}")
    given = options["options"] if isinstance(options.get("options"), dict) else options
    if not any("default_sdk_harness_log_level" in key for key in given):
        given["default_sdk_harness_log_level"] = logging.getLevelName(log_level)
    os.environ["PIPELINE_OPTIONS"] = json.dumps(options)
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(sys.argv)


def _watch_driver(driver_pid: int) -> None:
    """Ends this process within a second of the driver's end: a thread checks that the parent
    is still the driver (the prelude's prctl covers Linux at once; this, other systems)."""
    if os.getppid() != driver_pid:
        sys.exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != driver_pid:
                # The whole process, at once: the harness's threads would keep it alive.
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="watch-driver", daemon=True).start()
