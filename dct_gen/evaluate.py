"""Evaluate a trained run: exact bits per subpixel of a held-out split or of any image files
(beside JPEG and JPEG XL on the same coefficients), and FID, sFID, precision and recall of a
folder of samples.

Usage:
  python -m dct_gen.evaluate --model_dir=RUN --data_dir=DATA [--split=SPLIT]
  python -m dct_gen.evaluate --model_dir=RUN --images='PHOTOS/*.jpg' [--out=FILE.json]
  python -m dct_gen.evaluate --model_dir=RUN --samples_dir=FOLDER --reference_data_dir=DATA \\
      --num_samples=N [--inception_graph=classify_image_graph_def.pb]
  python -m dct_gen.evaluate --model_dir=RUN --data_dir=DATA --generate --num_samples=N

At least one of --data_dir (bits per subpixel: the run's model scores every chunk of every
sequence with the training loop's own evaluator, so a checkpoint's figures equal the run's
eval.jsonl), --images (any image files, a quoted glob or a directory: each encoded as the
dataset job does and scored the same way, per image and in total, beside JPEG's optimized
Huffman coding of the same coefficients and JPEG XL's recompression of that JPEG; files that
are not images are skipped and listed) and --samples_dir or --generate (sample metrics on
Inception-v3 features against the training set) is needed. Sample metrics comparable with
published FIDs need --inception_graph (the 2015 frozen Inception graph); without it Keras'
Inception-v3 is used and every report labels the figures not comparable.

Outputs: MODEL_DIR/evaluation.json (--out; a section this call does not compute is kept from an
earlier evaluation of the same run), TensorBoard scalars under MODEL_DIR/evaluate/ (--data_dir,
--samples_dir), and for --images a table on stdout. Progress lines go to stderr (--quiet: none).
An evaluation that would write into MODEL_DIR while a training run holds it stops first.

Exit status: 0 done; 1 bad input (a missing run, dataset, split, checkpoint, folder or weights
file, too few images, no image among --images, a run a training holds, an --inception_graph
that is not the graph: the message names the flag or the file); 2 bad flags.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from absl import flags

from dct_gen import cli, evaluation
from dct_gen.errors import InputError, UsageError

FLAGS = cli.flag_values()

flags.DEFINE_string(
    "model_dir", None, "The run directory (python -m dct_gen.train); required.", flag_values=FLAGS
)
flags.DEFINE_string(
    "out", None, f"The JSON output (default MODEL_DIR/{evaluation.DEFAULT_OUT}).", flag_values=FLAGS
)
flags.DEFINE_string("tpu", None, "A Cloud TPU name or address (TPUStrategy).", flag_values=FLAGS)
# Bits per subpixel.
flags.DEFINE_string(
    "data_dir",
    None,
    "A held-out dataset (python -m beam_jobs.build_dataset): bits per subpixel are computed "
    "when given.",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "split",
    None,
    "The split to score (default: the split the run evaluated, from eval.jsonl, else "
    f"{evaluation.DEFAULT_SPLIT}).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "checkpoint", None, "The checkpoint's step (default: newest).", lower_bound=1, flag_values=FLAGS
)
flags.DEFINE_integer(
    "batch_size",
    None,
    "Chunks per step, of --data_dir and --images (default: the run's; the figures do not "
    "depend on it).",
    lower_bound=1,
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "max_batches",
    None,
    "Score a prefix of the split only (marked partial).",
    lower_bound=1,
    flag_values=FLAGS,
)
# Image files.
flags.DEFINE_string(
    "images",
    None,
    "Image files to score, a quoted glob ('PHOTOS/*.jpg') or a directory (its files): each "
    "image's bits per subpixel beside JPEG's and JPEG XL's; files that are not images are "
    "skipped and listed.",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "label",
    None,
    "With --images, for a class-conditional model: score every image given this class (an "
    "index or one of the run's class names; default: none, the null label, which needs a model "
    "trained with label dropout).",
    flag_values=FLAGS,
)
flags.DEFINE_bool("quiet", False, "No progress lines (on stderr).", flag_values=FLAGS)
# Sample metrics.
flags.DEFINE_string(
    "samples_dir",
    None,
    "A folder of generated images (PNG, JPEG, WebP, BMP): sample metrics are computed when given.",
    flag_values=FLAGS,
)
flags.DEFINE_bool(
    "generate",
    False,
    "First sample --num_samples images from the run's model into --samples_dir (default "
    f"MODEL_DIR/{evaluation.SUMMARY_DIR}/{evaluation.GENERATED_DIR}), then score them.",
    flag_values=FLAGS,
)
flags.DEFINE_integer("seed", 0, "The seed of --generate.", flag_values=FLAGS)
flags.DEFINE_integer(
    "max_chunks",
    None,
    "The chunk limit of --generate's samples (default: none).",
    lower_bound=1,
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "num_samples",
    evaluation.DEFAULT_NUM_SAMPLES,
    "Samples used, the first in name order (fewer in the folder is an error).",
    lower_bound=1,
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "reference_data_dir",
    None,
    "The training set's dataset directory (default: --data_dir).",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "reference_split", evaluation.DEFAULT_REFERENCE_SPLIT, "Its split.", flag_values=FLAGS
)
flags.DEFINE_integer(
    "num_reference",
    None,
    "Reference images, the first in record order (default: --num_samples).",
    lower_bound=1,
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "reference_cache",
    None,
    "The reference statistics' .npz (default "
    f"MODEL_DIR/{evaluation.SUMMARY_DIR}/reference_SPLIT_NUM.npz).",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "inception_graph",
    None,
    "The 2015 frozen Inception graph, classify_image_graph_def.pb from inception-2015-12-05.tgz "
    "(local or gs://): FID and sFID on the features published figures use. Without it, Keras' "
    "Inception-v3, labelled not comparable with published FIDs.",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "inception_weights",
    None,
    "Keras' Inception-v3 weights when there is no --inception_graph: Keras' notop or full .h5, "
    "or a .weights.h5 (default: Keras' download, which needs network).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "feature_batch_size",
    evaluation.DEFAULT_FEATURE_BATCH_SIZE,
    "Images per Inception call.",
    lower_bound=1,
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "k",
    evaluation.DEFAULT_K,
    "The nearest neighbour of precision and recall.",
    lower_bound=1,
    flag_values=FLAGS,
)


def _dataset_dir(flag: str, path: str) -> None:
    import tensorflow as tf

    from dct_gen import records

    if not tf.io.gfile.isdir(path):
        raise InputError(f"--{flag}={path}: no such directory")
    if not tf.io.gfile.exists(records.join(path, records.INFO_FILENAME)):
        raise InputError(
            f"--{flag}={path}: not a dataset directory (no {records.INFO_FILENAME}; write one "
            "with python -m beam_jobs.build_dataset)"
        )


def _check_flags(samples_dir: str | None) -> None:
    """Cheap checks whose errors name the flag, before anything loads."""
    import tensorflow as tf

    from dct_gen import metrics, records

    if not tf.io.gfile.isdir(FLAGS.model_dir):
        raise InputError(f"--model_dir={FLAGS.model_dir}: no such directory")
    if FLAGS.data_dir is None and samples_dir is None and FLAGS.images is None:
        raise UsageError(
            "nothing to evaluate: give --data_dir (bits per subpixel), --images (image files "
            "beside JPEG) and/or --samples_dir or --generate (FID, sFID, precision, recall)"
        )
    if FLAGS.images is not None:
        try:
            evaluation.image_files(FLAGS.images)
        except InputError as e:
            raise InputError(f"--images={e}") from None
    for flag in ("data_dir", "reference_data_dir"):
        if FLAGS[flag].value is not None:
            _dataset_dir(flag, FLAGS[flag].value)
    if FLAGS.data_dir is not None:
        split = FLAGS.split or evaluation.default_split(FLAGS.model_dir)
        try:
            records.split_files(FLAGS.data_dir, split)
        except (FileNotFoundError, ValueError) as e:
            raise InputError(f"--split={split}: {e}") from e
    if samples_dir is None:
        return
    if (FLAGS.reference_data_dir or FLAGS.data_dir) is None:
        raise UsageError("--samples_dir needs --reference_data_dir (or --data_dir)")
    if FLAGS.inception_graph is not None:
        if FLAGS.inception_weights is not None:
            raise UsageError(
                "give --inception_graph (the 2015 graph) or --inception_weights (Keras' "
                "Inception-v3), not both"
            )
        # Read and checked now: a wrong file should not cost the sampling or the likelihood.
        try:
            metrics.read_inception_graph(FLAGS.inception_graph)
        except InputError as e:
            raise InputError(f"--inception_graph={e}") from None
    if FLAGS.generate:
        return
    if not os.path.isdir(samples_dir):
        raise InputError(f"--samples_dir={samples_dir}: no such directory")
    found = len(metrics.image_files(samples_dir))
    if found < FLAGS.num_samples:
        raise InputError(
            f"--samples_dir={samples_dir} holds {found} images, fewer than "
            f"--num_samples={FLAGS.num_samples}"
        )


def _console(quiet: bool) -> tuple[Callable[[str], None], Callable[[str], None] | None]:
    """(log, progress): results on stdout; progress lines on stderr (none when quiet),
    rewritten in place on a terminal, where the next result line first ends them."""
    tty = sys.stderr.isatty()
    pending = [False]  # a progress line without its newline is on the terminal

    def log(line: str) -> None:
        if pending[0]:
            sys.stderr.write("\n")
            sys.stderr.flush()
            pending[0] = False
        print(line, flush=True)

    def progress(line: str) -> None:
        sys.stderr.write(("\r" + line.ljust(100)) if tty else line + "\n")
        sys.stderr.flush()
        pending[0] = tty

    return log, None if quiet else progress


def _image_label() -> int:
    """--label for --images as an index, checked against the run's config.json before the model
    is loaded: a class the model has; none (-1) only when its null label was trained."""
    from dct_gen import sampling

    if FLAGS.images is None:
        return -1
    raw = sampling.read_run_json(FLAGS.model_dir)
    num_classes = (raw.get("model_config") or {}).get("num_classes")
    names = sampling.run_label_names(raw)
    trained = sampling.null_label_trained(raw)
    try:
        label = sampling.resolve_label(FLAGS.label, num_classes, names)
        sampling.check_label(label, num_classes, trained, names)
    except UsageError as e:
        given = f"--label={FLAGS.label}" if FLAGS.label is not None else "--label is not given"
        raise UsageError(f"{given}: {str(e).split(': ', 1)[-1]}") from None
    return label


def _main(argv: list[str]) -> int:
    cli.no_positional(argv)
    cli.require(FLAGS, "model_dir")
    if FLAGS.label is not None and FLAGS.images is None:
        raise UsageError("--label applies to --images only")
    samples_dir = FLAGS.samples_dir
    if FLAGS.generate and samples_dir is None:
        samples_dir = os.path.join(
            FLAGS.model_dir, evaluation.SUMMARY_DIR, evaluation.GENERATED_DIR
        )
    _check_flags(samples_dir)
    label = _image_label()

    from dct_gen import metrics, run_dir, training

    # A training run that holds the directory is named before anything is loaded or sampled.
    evaluation.check_unlocked(
        FLAGS.model_dir,
        out=FLAGS.out,
        summaries=FLAGS.data_dir is not None or samples_dir is not None,
        paths=[samples_dir] if FLAGS.generate else [],
    )
    needs_model = FLAGS.data_dir is not None or FLAGS.images is not None
    strategy = training.make_strategy(FLAGS.tpu) if needs_model else None
    log, progress = _console(FLAGS.quiet)
    if FLAGS.generate:
        # The weights first: a missing file should not cost the sampling time (the graph was
        # checked with the flags).
        if FLAGS.inception_graph is None:
            metrics.inception_weights_path(FLAGS.inception_weights)
        evaluation.generate_samples(
            run_dir.load_run(FLAGS.model_dir, checkpoint=FLAGS.checkpoint),
            num_samples=FLAGS.num_samples,
            out_dir=samples_dir,
            seed=FLAGS.seed,
            max_chunks=FLAGS.max_chunks,
        )
    evaluation.run_evaluation(
        model_dir=FLAGS.model_dir,
        data_dir=FLAGS.data_dir,
        split=FLAGS.split,
        batch_size=FLAGS.batch_size,
        max_batches=FLAGS.max_batches,
        checkpoint=FLAGS.checkpoint,
        images=FLAGS.images,
        label=label,
        samples_dir=samples_dir,
        num_samples=FLAGS.num_samples,
        reference_data_dir=FLAGS.reference_data_dir,
        reference_split=FLAGS.reference_split,
        num_reference=FLAGS.num_reference,
        reference_cache=FLAGS.reference_cache,
        inception_weights=FLAGS.inception_weights,
        inception_graph=FLAGS.inception_graph,
        feature_batch_size=FLAGS.feature_batch_size,
        k=FLAGS.k,
        out=FLAGS.out,
        strategy=strategy,
        log=log,
        progress=progress,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0 done, 1 bad input, 2 bad flags)."""
    return cli.run(_main, FLAGS, argv, prog="dct_gen.evaluate", doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
