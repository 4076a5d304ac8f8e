"""Evaluating a trained run: exact bits per subpixel of a held-out split, and sample metrics.

The library behind `python -m dct_gen.evaluate`. Two kinds of figures, each computed when its
inputs are given:

- Exact bits per subpixel of a held-out split (`likelihood`): the run's model is rebuilt from its
  config.json and a checkpoint restored (`dct_gen.run_dir.load_run`), and
  `dct_gen.training.evaluate`, the training loop's own evaluator, scores every chunk of every
  sequence. For the same checkpoint and split the figures equal the run's eval.jsonl line.
- Sample metrics of a folder of generated images (`sample_metrics`): FID, sFID, precision and
  recall against the training set, on Inception-v3 features (`dct_gen.metrics`). The reference
  statistics are cached and recomputed when what they describe changes. `generate_samples`
  draws the images from the run's model first (`dct_gen.sampling`).

`run_evaluation` does both and writes the outputs:

- JSON (default MODEL_DIR/evaluation.json): {"model_dir", "likelihood": {...}, "samples":
  {...}}; each section names the checkpoint step it describes. A section this call does not
  compute is kept from an existing file of the same run.
- TensorBoard scalars under MODEL_DIR/evaluate/: `evaluate/<split>` holds bits per subpixel
  (total, per component, per chunk index; the tags of the training run's eval/ events, so
  TensorBoard overlays the two), `evaluate/samples` holds fid, sfid, precision and recall.

Bad input (a missing run, dataset, split or weights file, too few images, a damaged shard or
image) raises `dct_gen.errors.InputError` naming the file; contradictory arguments raise
`UsageError`. Importing this module loads neither TensorFlow nor numpy.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from dct_gen import run_dir
from dct_gen.errors import InputError, UsageError

DEFAULT_OUT = "evaluation.json"
SUMMARY_DIR = "evaluate"
DEFAULT_SPLIT = "validation"
DEFAULT_REFERENCE_SPLIT = "train"
DEFAULT_NUM_SAMPLES = 50_000  # the paper's sample count
DEFAULT_FEATURE_BATCH_SIZE = 50
# metrics.NEAREST_K (a test checks they agree), here so that the command's --help does not
# import numpy.
DEFAULT_K = 3
GENERATED_DIR = "generated"  # MODEL_DIR/evaluate/generated: where --generate writes by default


@contextlib.contextmanager
def _input_errors() -> Iterator[None]:
    """Bad data met deep inside (a missing file, a damaged shard, an image that does not
    decode) as InputError, with the message that names it."""
    from dct_gen import data, images

    try:
        yield
    except InputError:
        raise
    except (FileNotFoundError, data.ShardReadError, images.ImageError) as e:
        raise InputError(str(e)) from e


# ----------------------------------------------------------------------------------------------
# The two evaluations.


def default_split(model_dir: str) -> str:
    """The split the run evaluated during training (eval.jsonl's last line), else 'validation'."""
    return run_dir.last_eval_split(model_dir) or DEFAULT_SPLIT


def likelihood(
    run: run_dir.LoadedRun,
    *,
    data_dir: str,
    split: str,
    batch_size: int | None = None,
    max_batches: int | None = None,
) -> dict[str, float]:
    """Exact bits per subpixel of a split under the run's model: `dct_gen.training.evaluate`'s
    (name, value) pairs as a dict (total, per component, per chunk index, counts).

    Args:
      run: from `dct_gen.run_dir.load_run`.
      data_dir: a beam_jobs dataset in the run's representation (checked against info.json).
      split: the held-out split.
      batch_size: chunks per step (default: the run's batch size; the figures do not depend
        on it); must split over the strategy's replicas.
      max_batches: score only a prefix of the split (the result is then partial).

    Raises:
      InputError: no dataset or split there, a representation other than the run's, a
        damaged shard.
      UsageError: batch_size does not split over the replicas.
    """
    from dct_gen import configs, records, training

    info = records.join(data_dir, records.INFO_FILENAME)
    try:
        from_info = records.representation_from_info(records.read_info(data_dir))
    except (FileNotFoundError, ValueError) as e:
        raise InputError(str(e) if info in str(e) else f"{info}: {e}") from e
    configs.check_dct_config(
        run.dct_config,
        from_info,
        where=info,
        source=f" in {os.path.join(run.model_dir, run_dir.RUN_CONFIG_FILE)}",
    )
    batch_size = batch_size or run.train_config.batch_size
    replicas = run.strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise UsageError(f"batch size {batch_size} does not split over {replicas} replicas")
    eval_step = training.make_eval_step(run.strategy, run.model, run.model_config.dct)
    with _input_errors():
        return dict(
            training.evaluate(
                run.strategy,
                eval_step,
                data_dir=data_dir,
                split=split,
                batch_size=batch_size,
                chunk_size=run.train_config.chunk_size,
                overlap=run.train_config.overlap,
                target_part=run.train_config.target_part,
                max_batches=max_batches,
            )
        )


def generate_samples(
    run: run_dir.LoadedRun,
    *,
    num_samples: int,
    out_dir: str,
    seed: int = 0,
    batch_size: int = 16,
    max_chunks: int | None = None,
    log: Callable[[str], None] | None = print,
) -> str:
    """Samples num_samples images from the run's model (`dct_gen.sampling`, unconditional; a
    class-conditional model cycles through its labels) and writes them into out_dir as
    generated_NNNNNN.png; returns out_dir, for `sample_metrics(samples_dir=out_dir)`."""
    import numpy as np
    from PIL import Image

    from dct_gen import sampling

    config = run.model_config
    sampler = sampling.Sampler(run.model, config)
    options = sampling.SampleOptions(max_chunks=max_chunks or sampling.default_max_chunks(config))
    labels = np.arange(num_samples) % config.num_classes if config.num_classes else None
    samples = sampling.sample_batches(
        sampler,
        num_samples,
        labels=labels,
        options=options,
        seed=seed,
        batch_size=batch_size,
        progress=log,
    )
    os.makedirs(out_dir, exist_ok=True)
    for i, image in enumerate(samples.images()):
        Image.fromarray(image).save(os.path.join(out_dir, f"generated_{i:06d}.png"))
    if log:
        log(
            f"wrote {num_samples} samples to {out_dir} ({samples.seconds:.1f} s, "
            f"{int(samples.finished.sum())} reached their stop token)"
        )
    return out_dir


def default_reference_cache(model_dir: str, split: str, num_images: int) -> str:
    return os.path.join(model_dir, SUMMARY_DIR, f"reference_{split}_{num_images}.npz")


def sample_metrics(
    *,
    samples_dir: str,
    reference_data_dir: str,
    reference_split: str,
    extractor,
    num_samples: int,
    num_reference: int | None = None,
    reference_cache: str | None = None,
    k: int = DEFAULT_K,
    batch_size: int = DEFAULT_FEATURE_BATCH_SIZE,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """FID, sFID, precision and recall of the first num_samples images of samples_dir (sorted
    by name) against the first num_reference images (default num_samples) of a dataset split.

    Raises:
      InputError: no such folder, dataset or split; fewer images than asked for, in either
        set; a damaged shard or an image that does not decode.
    """
    from dct_gen import metrics

    num_reference = num_reference or num_samples
    with _input_errors():
        files = metrics.image_files(samples_dir)
        if len(files) < num_samples:
            raise InputError(f"{samples_dir} holds {len(files)} images, fewer than {num_samples}")
        start = time.perf_counter()
        reference = metrics.reference_statistics(
            extractor,
            data_dir=reference_data_dir,
            split=reference_split,
            num_images=num_reference,
            cache_path=reference_cache,
            batch_size=batch_size,
            log=log,
        )
        samples = metrics.image_statistics(
            metrics.read_images(files[:num_samples]),
            extractor,
            num_images=num_samples,
            batch_size=batch_size,
            log=log,
        )
    result = metrics.compute_metrics(samples, reference, k=k)
    result.update(
        samples_dir=samples_dir,
        reference_data_dir=reference_data_dir,
        reference_split=reference_split,
        reference_cache=reference_cache,
        extractor=getattr(extractor, "name", None),
        seconds=time.perf_counter() - start,
    )
    return result


# ----------------------------------------------------------------------------------------------
# Outputs.


def write_summaries(directory: str, step: int, values: dict[str, Any]) -> None:
    """Numeric values as TensorBoard scalars at `step` in `directory`."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(directory)
    with writer.as_default(step=step):
        for name, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                tf.summary.scalar(name, value)
    writer.close()


def _previous(out: str, model_dir: str) -> dict[str, Any]:
    """The sections of an earlier evaluation of the same run in `out` (else nothing)."""
    try:
        result = run_dir.read_json(out, {})
    except ValueError:  # not JSON: rewritten whole
        return {}
    if not isinstance(result, dict) or result.get("model_dir") != model_dir:
        return {}
    return result


# ----------------------------------------------------------------------------------------------
# The whole evaluation.


def run_evaluation(
    *,
    model_dir: str,
    data_dir: str | None = None,
    split: str | None = None,
    batch_size: int | None = None,
    max_batches: int | None = None,
    checkpoint: int | None = None,
    samples_dir: str | None = None,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    reference_data_dir: str | None = None,
    reference_split: str = DEFAULT_REFERENCE_SPLIT,
    num_reference: int | None = None,
    reference_cache: str | None = None,
    inception_weights: str | None = None,
    extractor=None,
    feature_batch_size: int = DEFAULT_FEATURE_BATCH_SIZE,
    k: int = DEFAULT_K,
    out: str | None = None,
    strategy=None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Evaluates a run; writes the JSON and TensorBoard outputs; returns the JSON's content.

    Args:
      model_dir: the run directory.
      data_dir: a held-out dataset: bits per subpixel are computed when given.
      split: its split (None: `default_split(model_dir)`).
      batch_size, max_batches, checkpoint: see `likelihood` and `run_dir.load_run`.
      samples_dir: a folder of generated images: sample metrics are computed when given.
      num_samples: images of samples_dir used (the paper: 50k).
      reference_data_dir, reference_split, num_reference: the training set the samples are
        compared with (reference_data_dir defaults to data_dir; num_reference to num_samples).
      reference_cache: the .npz of the reference statistics (default
        MODEL_DIR/evaluate/reference_<split>_<num_reference>.npz).
      inception_weights: the Inception-v3 weights file (None: Keras' download).
      extractor: a feature extractor replacing Inception-v3 (see `dct_gen.metrics`).
      feature_batch_size: images per feature-extractor call.
      k: the neighbour of precision and recall.
      out: the JSON path (default MODEL_DIR/evaluation.json).
      strategy: the tf.distribute strategy of the likelihood evaluation (None: the default).
      log: where progress lines go.

    Raises:
      UsageError: nothing to evaluate, or sample metrics without a reference dataset.
      InputError: a missing run, dataset, split, folder or weights file, too few images, or
        data that does not read (see `run_dir.load_run`, `likelihood`, `sample_metrics`).
    """
    import tensorflow as tf

    if not tf.io.gfile.isdir(model_dir):
        raise InputError(f"run directory {model_dir} does not exist")
    if data_dir is None and samples_dir is None:
        raise UsageError(
            "nothing to evaluate: give a held-out dataset (bits per subpixel) and/or a folder "
            "of samples (FID, sFID, precision, recall)"
        )
    out = out or os.path.join(model_dir, DEFAULT_OUT)
    reference_data_dir = reference_data_dir or data_dir
    num_reference = num_reference or num_samples
    if samples_dir is not None:
        from dct_gen import metrics

        if reference_data_dir is None:
            raise UsageError("sample metrics need a reference dataset (the training set)")
        # Everything that can fail cheaply fails before the long parts start.
        with _input_errors():
            files = metrics.image_files(samples_dir)
            available = metrics.dataset_size(reference_data_dir, reference_split)
        if len(files) < num_samples:
            raise InputError(
                f"{samples_dir} holds {len(files)} images, fewer than the {num_samples} samples "
                "asked for"
            )
        if available is not None and available < num_reference:
            raise InputError(
                f"split {reference_split!r} of {reference_data_dir} holds {available} images, "
                f"fewer than the {num_reference} reference images asked for"
            )
        reference_cache = reference_cache or default_reference_cache(
            model_dir, reference_split, num_reference
        )
        extractor = extractor or metrics.inception_v3(inception_weights)

    result = _previous(out, model_dir)
    result["model_dir"] = model_dir
    step = None
    if data_dir is not None:
        split = split or default_split(model_dir)
        run = run_dir.load_run(model_dir, checkpoint=checkpoint, strategy=strategy, log=log)
        step = run.step
        start = time.perf_counter()
        values = likelihood(
            run, data_dir=data_dir, split=split, batch_size=batch_size, max_batches=max_batches
        )
        log(
            f"step {run.step}: {split} {values['bits_per_subpixel']:.4f} bits per subpixel over "
            f"{int(values['sequences'])} sequences ({time.perf_counter() - start:.1f} s)"
        )
        result["likelihood"] = {
            "step": run.step,
            "checkpoint": run.checkpoint,
            "data_dir": data_dir,
            "split": split,
            "partial": max_batches is not None,
            "batch_size": batch_size or run.train_config.batch_size,
            **values,
        }
        write_summaries(os.path.join(model_dir, SUMMARY_DIR, split), run.step, values)
    if samples_dir is not None:
        if step is None:
            steps = run_dir.checkpoint_steps(model_dir)
            step = checkpoint if checkpoint is not None else (steps[0] if steps else 0)
        values = sample_metrics(
            samples_dir=samples_dir,
            reference_data_dir=reference_data_dir,
            reference_split=reference_split,
            extractor=extractor,
            num_samples=num_samples,
            num_reference=num_reference,
            reference_cache=reference_cache,
            k=k,
            batch_size=feature_batch_size,
            log=log,
        )
        log(
            f"{values['num_samples']} samples against {values['num_reference']} reference "
            f"images: FID {values['fid']:.3f}  sFID {values['sfid']:.3f}  precision "
            f"{values['precision']:.3f}  recall {values['recall']:.3f}"
        )
        result["samples"] = {"step": step, **values}
        write_summaries(
            os.path.join(model_dir, SUMMARY_DIR, "samples"),
            step,
            {name: values[name] for name in ("fid", "sfid", "precision", "recall")},
        )
    run_dir.write_json(out, result)
    log(f"wrote {out}")
    return result
