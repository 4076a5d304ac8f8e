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
from collections.abc import Sequence

from dct_gen import metrics, train
from dct_gen.evaluation import *  # noqa: F403 (being split)
from dct_gen.run_dir import LoadedRun, RunDirectoryError, load_run  # noqa: F401

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
