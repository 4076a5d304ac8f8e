"""Evaluating a trained run: `python -m dct_gen.evaluate --model_dir M --data_dir D`.

Two kinds of figures, each computed when its inputs are given:

- Exact bits per subpixel of a held-out split (--data_dir, --split): the run's model is rebuilt
  from its config.json (else operative_config.gin), its newest checkpoint restored
  (`load_run`), and
  `dct_gen.train.evaluate`, the training loop's own evaluator, scores every chunk of every
  sequence. For the same checkpoint and split the figures equal the run's eval.jsonl line.
- Sample metrics (--samples_dir, a folder of generated images): FID, sFID, precision and recall
  (k = 3) against the training set (--reference_data_dir, --reference_split), on Inception-v3
  features (`dct_gen.metrics`, weights from --inception_weights). The reference statistics are
  cached (--reference_cache) and recomputed when what they describe changes. Generating samples
  come from a folder, or from the run's model first (--generate: `generate_samples`, with
  `dct_gen.sample`).

Outputs:

- JSON (--out, default MODEL_DIR/evaluation.json): {"model_dir", "likelihood": {...},
  "samples": {...}}; each section names the checkpoint step it describes. A section this call
  does not compute is kept from an existing file of the same run.
- TensorBoard scalars under MODEL_DIR/evaluate/: `evaluate/<split>` holds bits per subpixel
  (total, per component, per chunk index; the tags of the training run's eval/ events, so
  TensorBoard overlays the two), `evaluate/samples` holds fid, sfid, precision and recall.

`load_run(model_dir)` is the reusable piece (the sampler and the exporter load runs with it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from dct_gen import metrics, run_dir, train
from dct_gen.run_dir import LoadedRun, RunDirectoryError, load_run  # noqa: F401

DEFAULT_OUT = "evaluation.json"
SUMMARY_DIR = "evaluate"
DEFAULT_SPLIT = "validation"
DEFAULT_REFERENCE_SPLIT = "train"
DEFAULT_NUM_SAMPLES = 50_000  # the paper's sample count


class UsageError(ValueError):
    """Bad or contradictory flags; the message names them."""


# ----------------------------------------------------------------------------------------------
# The two evaluations.


def default_split(model_dir: str) -> str:
    """The split the run evaluated during training (eval.jsonl's last line), else 'validation'."""
    return run_dir.last_eval_split(model_dir) or DEFAULT_SPLIT


def likelihood(
    run: LoadedRun,
    *,
    data_dir: str,
    split: str,
    batch_size: int | None = None,
    max_batches: int | None = None,
) -> dict[str, float]:
    """Exact bits per subpixel of a split under the run's model: `dct_gen.train.evaluate`'s
    (name, value) pairs as a dict (total, per component, per chunk index, counts).

    Args:
      run: from `load_run`.
      data_dir: a beam_jobs dataset in the run's representation (checked against info.json).
      split: the held-out split.
      batch_size: chunks per step (default: the run's batch size; the figures do not depend
        on it); must split over the strategy's replicas.
      max_batches: score only a prefix of the split (the result is then partial).
    """
    from dct_gen import configs, records

    configs.check_dct_config(
        run.dct_config, records.representation_from_info(records.read_info(data_dir))
    )
    batch_size = batch_size or run.train_config.batch_size
    replicas = run.strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(f"batch size {batch_size} does not split over {replicas} replicas")
    eval_step = train.make_eval_step(run.strategy, run.model, run.model_config.dct)
    return dict(
        train.evaluate(
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
    run: LoadedRun,
    *,
    num_samples: int,
    out_dir: str,
    seed: int = 0,
    batch_size: int = 16,
    max_chunks: int | None = None,
    log: Callable[[str], None] | None = print,
) -> str:
    """Samples num_samples images from the run's model (`dct_gen.sample`, unconditional; a
    class-conditional model cycles through its labels) and writes them into out_dir as
    generated_NNNNNN.png; returns out_dir, for `sample_metrics(samples_dir=out_dir)`."""
    import numpy as np
    from PIL import Image

    from dct_gen import sample

    config = run.model_config
    sampler = sample.Sampler(run.model, config)
    options = sample.SampleOptions(max_chunks=max_chunks or sample.default_max_chunks(config))
    labels = np.arange(num_samples) % config.num_classes if config.num_classes else None
    samples = sample.sample_batches(
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
    k: int = metrics.NEAREST_K,
    batch_size: int = 50,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """FID, sFID, precision and recall of the first num_samples images of samples_dir (sorted
    by name) against the first num_reference images (default num_samples) of a dataset split.

    Raises:
      ValueError: fewer images than asked for, in either set.
      FileNotFoundError: no such folder, dataset or split.
    """
    num_reference = num_reference or num_samples
    files = metrics.image_files(samples_dir)
    if len(files) < num_samples:
        raise ValueError(f"{samples_dir} holds {len(files)} images, fewer than {num_samples}")
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
    feature_batch_size: int = 50,
    k: int = metrics.NEAREST_K,
    out: str | None = None,
    strategy=None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Evaluates a run; writes the JSON and TensorBoard outputs; returns the JSON's content.

    Args:
      model_dir: the run directory.
      data_dir: a held-out dataset: bits per subpixel are computed when given.
      split: its split (None: `default_split(model_dir)`).
      batch_size, max_batches, checkpoint: see `likelihood` and `load_run`.
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
      RunDirectoryError, FileNotFoundError, ValueError, metrics.InceptionWeightsError.
    """
    import tensorflow as tf

    if not tf.io.gfile.isdir(model_dir):
        raise RunDirectoryError(f"run directory {model_dir} does not exist")
    if data_dir is None and samples_dir is None:
        raise UsageError(
            "nothing to evaluate: give a held-out dataset (bits per subpixel) and/or a folder "
            "of samples (FID, sFID, precision, recall)"
        )
    out = out or os.path.join(model_dir, DEFAULT_OUT)
    reference_data_dir = reference_data_dir or data_dir
    num_reference = num_reference or num_samples
    if samples_dir is not None:
        if reference_data_dir is None:
            raise UsageError("sample metrics need a reference dataset (the training set)")
        # Everything that can fail cheaply fails before the long parts start.
        files = metrics.image_files(samples_dir)
        if len(files) < num_samples:
            raise ValueError(
                f"{samples_dir} holds {len(files)} images, fewer than the {num_samples} samples "
                "asked for"
            )
        available = metrics.dataset_size(reference_data_dir, reference_split)
        if available is not None and available < num_reference:
            raise ValueError(
                f"split {reference_split!r} of {reference_data_dir} holds {available} images, "
                f"fewer than the {num_reference} reference images asked for"
            )
        reference_cache = reference_cache or default_reference_cache(
            model_dir, reference_split, num_reference
        )
        extractor = extractor or metrics.inception_v3(inception_weights)

    try:
        result = run_dir.read_json(out, {})
    except ValueError:
        result = {}
    result = result if isinstance(result, dict) else {}
    if result.get("model_dir") != model_dir:
        result = {}
    result["model_dir"] = model_dir
    step = None
    if data_dir is not None:
        split = split or default_split(model_dir)
        run = load_run(model_dir, checkpoint=checkpoint, strategy=strategy, log=log)
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


# ----------------------------------------------------------------------------------------------
# Command line.


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # raise instead of exiting, so main() can be called in-process
        raise UsageError(f"{message}\n{self.format_usage()}".rstrip())


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} must be positive")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m dct_gen.evaluate",
        description="Evaluate a trained run: exact bits per subpixel of a held-out split, and "
        "FID, sFID, precision and recall of a folder of samples.",
    )
    p.add_argument("--model_dir", required=True, help="the run directory (python -m dct_gen.train)")
    p.add_argument("--out", default=None, help=f"the JSON output (default MODEL_DIR/{DEFAULT_OUT})")
    p.add_argument("--tpu", default=None, help="a Cloud TPU name or address (TPUStrategy)")
    g = p.add_argument_group("bits per subpixel")
    g.add_argument("--data_dir", default=None, help="a held-out dataset (beam_jobs.build_dataset)")
    g.add_argument(
        "--split",
        default=None,
        help="the split to score (default: the split the run evaluated, from eval.jsonl, "
        f"else {DEFAULT_SPLIT})",
    )
    g.add_argument("--checkpoint", type=_positive, default=None, help="step (default: newest)")
    g.add_argument(
        "--batch_size", type=_positive, default=None, help="chunks per step (default: the run's)"
    )
    g.add_argument(
        "--max_batches", type=_positive, default=None, help="score a prefix only (partial)"
    )
    g = p.add_argument_group("sample metrics")
    g.add_argument("--samples_dir", default=None, help="a folder of generated images (PNG, JPEG)")
    g.add_argument(
        "--generate",
        action="store_true",
        help="first sample --num_samples images from the run's model into --samples_dir "
        "(default MODEL_DIR/evaluate/generated)",
    )
    g.add_argument("--seed", type=int, default=0, help="the seed of --generate (default 0)")
    g.add_argument(
        "--max_chunks",
        type=_positive,
        default=None,
        help="chunk limit of --generate's samples (default: none)",
    )
    g.add_argument(
        "--num_samples",
        type=_positive,
        default=DEFAULT_NUM_SAMPLES,
        help="samples used, the first in name order (default %(default)s)",
    )
    g.add_argument(
        "--reference_data_dir",
        default=None,
        help="the training set's dataset directory (default: --data_dir)",
    )
    g.add_argument(
        "--reference_split",
        default=DEFAULT_REFERENCE_SPLIT,
        help="its split (default %(default)s)",
    )
    g.add_argument(
        "--num_reference",
        type=_positive,
        default=None,
        help="reference images, the first in record order (default: --num_samples)",
    )
    g.add_argument(
        "--reference_cache",
        default=None,
        help="the reference statistics' .npz (default MODEL_DIR/evaluate/reference_SPLIT_NUM.npz)",
    )
    g.add_argument(
        "--inception_weights",
        default=None,
        help=f"Inception-v3 weights (.h5), e.g. {metrics.INCEPTION_WEIGHTS_FILE} (default: "
        "Keras' download, which needs network)",
    )
    g.add_argument(
        "--feature_batch_size",
        type=_positive,
        default=50,
        help="images per Inception call (default %(default)s)",
    )
    g.add_argument(
        "--k",
        type=_positive,
        default=metrics.NEAREST_K,
        help="the nearest neighbour of precision and recall (default %(default)s)",
    )
    return p


def _check_flags(args: argparse.Namespace) -> None:
    """Cheap checks whose errors name the flag, before anything loads."""
    import tensorflow as tf

    from dct_gen import records

    if not tf.io.gfile.isdir(args.model_dir):
        raise RunDirectoryError(f"--model_dir {args.model_dir} does not exist")
    if args.generate and args.samples_dir is None:
        args.samples_dir = os.path.join(args.model_dir, SUMMARY_DIR, "generated")
    if args.data_dir is None and args.samples_dir is None:
        raise UsageError(
            "nothing to evaluate: give --data_dir (bits per subpixel) and/or --samples_dir "
            "(FID, sFID, precision, recall)"
        )
    for flag in ("data_dir", "reference_data_dir"):
        path = getattr(args, flag)
        if path is not None and not tf.io.gfile.exists(records.join(path, records.INFO_FILENAME)):
            raise FileNotFoundError(
                f"--{flag} {path} is not a dataset directory (no {records.INFO_FILENAME}; "
                "write one with python -m beam_jobs.build_dataset)"
            )
    if args.samples_dir is not None:
        if not args.generate and not os.path.isdir(args.samples_dir):
            raise FileNotFoundError(f"--samples_dir {args.samples_dir} is not a folder")
        if (args.reference_data_dir or args.data_dir) is None:
            raise UsageError("--samples_dir needs --reference_data_dir (or --data_dir)")
        if args.generate:
            return
        found = len(metrics.image_files(args.samples_dir))
        if found < args.num_samples:
            raise ValueError(
                f"--samples_dir {args.samples_dir} holds {found} images, fewer than "
                f"--num_samples {args.num_samples}"
            )


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0 ok, 1 bad input, 2 bad flags)."""
    from dct_gen import data, images

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv)
        _check_flags(args)
        strategy = train.make_strategy(args.tpu) if args.data_dir else None
        if args.generate:
            # The weights first: a missing file should not cost the sampling time.
            metrics.inception_weights_path(args.inception_weights)
            generate_samples(
                load_run(args.model_dir, checkpoint=args.checkpoint),
                num_samples=args.num_samples,
                out_dir=args.samples_dir,
                seed=args.seed,
                max_chunks=args.max_chunks,
            )
        run_evaluation(
            model_dir=args.model_dir,
            data_dir=args.data_dir,
            split=args.split,
            batch_size=args.batch_size,
            max_batches=args.max_batches,
            checkpoint=args.checkpoint,
            samples_dir=args.samples_dir,
            num_samples=args.num_samples,
            reference_data_dir=args.reference_data_dir,
            reference_split=args.reference_split,
            num_reference=args.num_reference,
            reference_cache=args.reference_cache,
            inception_weights=args.inception_weights,
            feature_batch_size=args.feature_batch_size,
            k=args.k,
            out=args.out,
            strategy=strategy,
        )
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, images.ImageError, data.ShardReadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
