"""Evaluating a trained run: exact bits per subpixel of a held-out split or of any image files
(beside JPEG and JPEG XL), and sample metrics.

The library behind `python -m dct_gen.evaluate` and the demo's evaluation step. Three kinds of
figures, each computed when its inputs are given:

- Exact bits per subpixel of a held-out split (`likelihood`): the run's model is rebuilt from its
  config.json and a checkpoint restored (`dct_gen.run_dir.load_run`), and
  `dct_gen.training.evaluate`, the training loop's own evaluator, scores every chunk of every
  sequence. For the same checkpoint and split the figures equal the run's eval.jsonl line.
- Exact bits per subpixel of image files, anyone's photos (`score_images`): each file is
  encoded as the dataset job encodes it and scored with the same evaluation step, per image
  and in total, channel, position and value apart; beside the bits JPEG's optimized Huffman
  coding spends on the same coefficients (`dct_gen.jpeg_baseline`, block size 8) and the size
  of JPEG XL's lossless recompression of that JPEG (`imagecodecs`, when installed).
- Sample metrics of a folder of generated images (`sample_metrics`): FID, sFID, precision and
  recall against the training set, on Inception-v3 features (`dct_gen.metrics`): the 2015
  frozen Inception graph of published FIDs when a GraphDef file is given (`inception_graph`),
  else Keras' Inception-v3, whose figures are labelled not comparable with published FIDs.
  Every report says which (`feature_network`). The reference statistics are cached and
  recomputed when what they describe changes. `generate_samples` draws the images from the
  run's model first (`dct_gen.sampling`).

`run_evaluation` does any of them and writes the outputs:

- JSON (default MODEL_DIR/evaluation.json): {"model_dir", "likelihood": {...}, "images":
  {...}, "samples": {...}}; each section names the checkpoint step it describes. A section
  this call does not compute is kept from an existing file of the same run. docs/evaluation.md
  lists every field.
- TensorBoard scalars under MODEL_DIR/evaluate/: `evaluate/<split>` holds bits per subpixel
  (total, per component, per chunk index; the tags of the training run's eval/ events, so
  TensorBoard overlays the two), `evaluate/samples` holds fid, sfid, precision and recall, and
  the text `feature_network`.
  Image files write none.

Before writing into MODEL_DIR it checks the run's lock (`check_unlocked`): an evaluation never
writes into a directory a live training run holds.

Bad input (a missing run, dataset, split or weights file, too few images, a damaged shard or
image) raises `dct_gen.errors.InputError` naming the file; among image files, those that are
not images are skipped and listed, and only a call with none left fails. Contradictory
arguments raise `UsageError`. Importing this module loads neither TensorFlow nor numpy.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

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
COMPONENTS = ("channel", "position", "value")  # training.COMPONENTS, without importing it


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
    progress: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Exact bits per subpixel of a split under the run's model: `dct_gen.training.evaluate`'s
    (name, value) pairs as a dict (total, per component, per chunk index, counts). progress:
    called with a line (chunks, sequences, rate, ETA) at most once a second.

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
                progress=progress,
                num_classes=run.model_config.num_classes,
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
    The result names the feature network (`dct_gen.metrics.feature_network`).

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
        # Which network the figures come from: only the 2015 graph's compare with published FIDs.
        **metrics.feature_network(extractor),
        seconds=time.perf_counter() - start,
    )
    return result


# ----------------------------------------------------------------------------------------------
# Any images: the model's exact bits beside JPEG's and JPEG XL's for the same coefficients.

JXL_EXTRA = "pip install 'dct-gen[jxl]'"  # installs jpeglib and imagecodecs
PROGRESS_SECONDS = 1.0  # at most one progress line a second (and always the last)


def image_files(pattern: str) -> list[str]:
    """The files an `--images` argument names, sorted: a glob's matches, or a directory's files
    (what the glob DIR/* matches). Folders among the matches are left out.

    Raises:
      InputError: nothing to score (the message names the pattern).
    """
    import glob

    if os.path.isdir(pattern):
        matches = glob.glob(os.path.join(glob.escape(pattern), "*"))
        empty = "the directory holds no files"
    else:
        matches = glob.glob(os.path.expanduser(pattern))
        empty = "matches no files"
    files = sorted(p for p in matches if os.path.isfile(p))
    if not files:
        raise InputError(f"{pattern}: {empty}")
    return files


class EncodedImages(NamedTuple):
    """Image files in a run's representation (`encode_images`).

    encoded: {"file", "sequence" (a `representation.DCTSequence`), "source_height",
      "source_width"} per image, in file order.
    skipped: {"file", "reason" (a key of `images.REASONS`), "message" (names the file)} per
      file that is not an image the codec takes.
    pattern: the glob or directory the files came from (None: a list of paths).
    """

    encoded: list[dict[str, Any]]
    skipped: list[dict[str, str]]
    pattern: str | None = None


def encode_images(
    images: str | Sequence[str], cfg, *, log: Callable[[str], None] | None = None
) -> EncodedImages:
    """Image files -> sequences in the representation `cfg`, as the dataset job encodes them
    (`images.read_image`, `representation.encode`, `representation.check_triples`): resized to
    its resolution, quantized at its quality, clipped to its clip.

    Args:
      images: a glob or a directory (`image_files`), or a list of file paths.
      cfg: the run's `representation.DCTConfig`.
      log: where each skipped file is reported as it is met (None: silent).

    Raises:
      InputError: no file, or no file that is an image (the message names the first and why).
    """
    from dct_gen import images as images_lib
    from dct_gen import representation as rep

    pattern = images if isinstance(images, str) else None
    paths = image_files(images) if isinstance(images, str) else list(images)
    if not paths:
        raise InputError("no image files to score")
    encoded, skipped = [], []
    for path in paths:
        try:
            image = images_lib.read_image(path)
        except images_lib.ImageError as e:
            skipped.append({"file": path, "reason": e.reason, "message": str(e)})
        else:
            try:
                seq = rep.encode(image, cfg)
                rep.check_triples(seq.channels, seq.positions, seq.values, cfg)
            except ValueError as e:
                message = f"{path}: the codec refused the image: {e}"
                skipped.append({"file": path, "reason": "encode_error", "message": message})
            else:
                height, width = image.shape[:2]
                encoded.append(
                    {"file": path, "sequence": seq, "source_height": height, "source_width": width}
                )
                continue
        if log:
            log(f"skipping {skipped[-1]['message']} ({skipped[-1]['reason']})")
    if not encoded:
        more = f" (and {len(skipped) - 1} other files)" if len(skipped) > 1 else ""
        raise InputError(f"no image to score: {skipped[0]['message']}{more}")
    return EncodedImages(encoded, skipped, pattern)


def _format_seconds(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def score_sequences(
    run: run_dir.LoadedRun,
    sequences: Sequence,
    *,
    batch_size: int | None = None,
    progress: Callable[[str], None] | None = None,
    labels=None,
) -> list[dict[str, float]]:
    """The exact negative log-likelihood of each sequence under the run's model, in nats.

    Every chunk of every sequence, stop token included, is scored once, as the held-out
    evaluation scores a split: the windows are `data.chunk_example`'s (after all luma for a
    run trained on chroma targets), the step is `training.make_eval_step`'s.

    Args:
      run: from `dct_gen.run_dir.load_run`.
      sequences: `representation.DCTSequence`s in the run's representation.
      batch_size: chunks per step (default: the run's batch size); must split over the
        strategy's replicas. The figures do not depend on it.
      progress: called with a line (chunks and images done, rate, ETA) at most once a second
        after the first step (which traces the model), and after the last.
      labels: the class each sequence is scored given: an int for all, or one per sequence;
        None or -1: no class (the null label). A class-conditional model whose null label was
        not trained (train_config.label_dropout 0) needs a class.

    Returns:
      One {"channel_nats", "position_nats", "value_nats", "nats", "chunks"} per sequence.

    Raises:
      UsageError: batch_size does not split over the replicas; a label the model does not take
        (`sampling.check_label`).
      InputError: a sequence the codec cannot write (`representation.check_sequence`: a zero
        value, channels out of order, ...), named with its index and the rule it breaks.
    """
    import numpy as np
    import tensorflow as tf

    from dct_gen import data, sampling, training
    from dct_gen import representation as rep

    cfg = run.model_config.dct
    for k, s in enumerate(sequences):
        try:
            rep.check_sequence(s.channels, s.positions, s.values, cfg, s.height, s.width)
        except ValueError as e:
            raise InputError(f"sequence {k}: {e}") from None
    labels = np.asarray(-1 if labels is None else labels, np.int64)
    if labels.ndim > 1 or (labels.ndim == 1 and len(labels) != len(sequences)):
        raise UsageError(f"labels: {labels.shape} for {len(sequences)} sequences")
    labels = np.broadcast_to(labels, len(sequences))
    null_trained = sampling.null_label_trained(
        {"train_config": {"label_dropout": run.train_config.label_dropout}}
    )
    for label in np.unique(labels):
        sampling.check_label(int(label), run.model_config.num_classes, null_trained)
    chunk, overlap = run.train_config.chunk_size, run.train_config.overlap
    batch_size = batch_size or run.train_config.batch_size
    replicas = run.strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise UsageError(f"batch size {batch_size} does not split over {replicas} replicas")
    chroma = run.train_config.target_part == "chroma"
    bases = [int(np.sum(s.channels < cfg.channels_per_plane)) if chroma else 0 for s in sequences]
    counts = [-(-(len(s) + 1 - b) // chunk) for s, b in zip(sequences, bases)]  # stop included

    def items():
        for i, (s, base, n) in enumerate(zip(sequences, bases, counts)):
            yield {
                "channels": np.append(s.channels, cfg.stop_token).astype(np.int32),
                "positions": np.append(s.positions, 0).astype(np.int32),
                "values": np.append(s.values, 0).astype(np.int32),
                "height": np.int32(s.height),
                "width": np.int32(s.width),
                "label": np.int32(labels[i]),
                "sequence_index": np.int32(i),
                "base": np.int32(base),
                "num_chunks": np.int32(n),
            }

    vector = tf.TensorSpec([None], tf.int32)
    scalar = tf.TensorSpec([], tf.int32)
    signature = {k: vector for k in ("channels", "positions", "values")}
    signature.update(
        {k: scalar for k in ("height", "width", "label", "sequence_index", "base", "num_chunks")}
    )
    window = chunk + overlap
    shapes = {k: [window] for k in ("channels", "positions", "values", "indices")}
    shapes.update(loss_mask=[window], mask=[window])
    shapes["dct_image"] = [cfg.grid, cfg.grid, 3 * cfg.channels_per_plane]

    def chunks_of(seq):
        def one(k):
            k = tf.cast(k, tf.int32)
            example = data.chunk_example(
                seq, seq["base"] + k * chunk, k, seq["num_chunks"], cfg, chunk, overlap
            )
            return {name: tf.ensure_shape(t, shapes.get(name, [])) for name, t in example.items()}

        return tf.data.Dataset.range(tf.cast(seq["num_chunks"], tf.int64)).map(one)

    def pad(batch):
        # A short last batch is padded to the full size (one traced step); `valid` marks it.
        n = tf.shape(batch["channels"])[0]
        out = {}
        for name, t in batch.items():
            padding = [[0, batch_size - n]] + [[0, 0]] * (len(t.shape) - 1)
            out[name] = tf.ensure_shape(tf.pad(t, padding), [batch_size] + t.shape[1:])
        out["valid"] = tf.ensure_shape(tf.range(batch_size) < n, [batch_size])
        return out

    ds = tf.data.Dataset.from_generator(items, output_signature=signature)
    ds = ds.flat_map(chunks_of).batch(batch_size).map(pad).prefetch(2)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = run.strategy.experimental_distribute_dataset(ds.with_options(options))
    eval_step = training.make_eval_step(run.strategy, run.model, cfg)

    nats = np.zeros((len(sequences), len(training.COMPONENTS)))
    scored = np.zeros(len(sequences), np.int64)
    total, done = sum(counts), 0
    start = time.perf_counter()
    first_done = first_time = None  # after the first step (its tracing is left out of the rate)
    last_report = 0.0
    for batch in ds:
        out = {k: v.numpy() for k, v in eval_step(batch).items()}
        valid = np.flatnonzero(out["valid"])
        index = out["sequence_index"][valid]
        for j, c in enumerate(training.COMPONENTS):
            np.add.at(nats[:, j], index, out[f"{c}_nats"][valid].astype(np.float64))
        np.add.at(scored, index, 1)
        done += len(valid)
        now = time.perf_counter()
        if first_time is None:
            # The first step traces the model: the rate and ETA are measured after it.
            first_done, first_time = done, now
            last_report = now
        if progress is not None and (
            (done > first_done and now - last_report >= PROGRESS_SECONDS) or done == total
        ):
            last_report = now
            if done > first_done:
                rate = (done - first_done) / max(now - first_time, 1e-9)
            else:
                rate = done / max(now - start, 1e-9)
            finished = int(np.sum(scored == np.asarray(counts)))
            progress(
                f"scored {done}/{total} chunks ({finished}/{len(sequences)} images), "
                f"{rate:.1f} chunks/s, ETA {_format_seconds((total - done) / rate)}"
            )
    return [
        {
            **{f"{c}_nats": float(nats[i, j]) for j, c in enumerate(training.COMPONENTS)},
            "nats": float(nats[i].sum()),
            "chunks": int(scored[i]),
        }
        for i in range(len(sequences))
    ]


def baselines(cfg, target_part: str = "all") -> dict[str, dict[str, Any]]:
    """Whether the JPEG and JPEG XL columns can be computed for a run, and why not.

    Returns:
      {"jpeg": {"available", "reason"}, "jxl": {"available", "reason"}}; reason is None when
      available. JPEG needs block size 8, a run that scores whole images (target_part 'all')
      and the `jpeglib` package; JPEG XL needs the JPEG file and `imagecodecs` built with
      JPEG XL.
    """
    import importlib.util

    from dct_gen import jpeg_baseline

    jpeg = None
    if target_part != "all":
        jpeg = (
            f"the run scores the chroma given the luma (target_part={target_part!r}); JPEG "
            "codes the whole image"
        )
    elif cfg.block_size != jpeg_baseline.JPEG_BLOCK_SIZE:
        jpeg = (
            f"the run's block size is {cfg.block_size}; JPEG's DCT block is "
            f"{jpeg_baseline.JPEG_BLOCK_SIZE}"
        )
    elif importlib.util.find_spec("jpeglib") is None:
        jpeg = f"the jpeglib package is not installed ({JXL_EXTRA})"
    jxl = None
    if jpeg is not None:
        jxl = "it recompresses the JPEG file, and " + jpeg
    else:
        try:
            import imagecodecs
        except ImportError:
            jxl = f"the imagecodecs package is not installed ({JXL_EXTRA})"
        else:
            codec = getattr(imagecodecs, "JPEGXL", None)
            if not getattr(codec, "available", False):
                jxl = f"imagecodecs {imagecodecs.__version__} was built without JPEG XL"
    return {
        "jpeg": {"available": jpeg is None, "reason": jpeg},
        "jxl": {"available": jxl is None, "reason": jxl},
    }


def baseline_bits(seq, cfg, *, jxl: bool) -> dict[str, Any]:
    """JPEG's and JPEG XL's bits for one sequence's coefficients.

    jpeg_bits: the entropy-coded scan of a baseline JPEG with optimized Huffman tables holding
    exactly these coefficients (`jpeg_baseline.jpeg_bits`, the demo's "bits against JPEG");
    jpeg_file_bits: that whole file; jxl_bits (when `jxl`): the whole file
    `imagecodecs.jpegxl_encode_jpeg` makes of it (JPEG XL's lossless recompression).

    Raises:
      ValueError: coefficients baseline JPEG cannot hold (see `jpeg_baseline`).
    """
    from dct_gen import jpeg_baseline

    jpeg = jpeg_baseline.jpeg_bits(seq, cfg, return_bytes=True)
    out = {
        "jpeg_bits": int(jpeg["entropy_bits"]),
        "jpeg_file_bits": int(jpeg["file_bits"]),
        "jxl_bits": None,
        "libjpeg": jpeg["libjpeg"],
    }
    if jxl:
        import imagecodecs

        out["jxl_bits"] = 8 * len(imagecodecs.jpegxl_encode_jpeg(jpeg["jpeg"]))
    return out


BASELINE_COLUMNS = ("jpeg", "jpeg_file", "jxl")


def score_images(
    run: run_dir.LoadedRun,
    images: str | Sequence[str] | EncodedImages,
    *,
    batch_size: int | None = None,
    log: Callable[[str], None] | None = print,
    progress: Callable[[str], None] | None = None,
    label: int = -1,
) -> dict[str, Any]:
    """Exact bits per subpixel of any image files under the run's model, per image and in
    total, with channel, position and value, beside JPEG and JPEG XL on the same coefficients.

    Each file is read and encoded as the dataset job does (`encode_images`: resized to the
    run's resolution, quantized at its quality); files that are not images the codec takes
    are skipped and listed with their reason. The model's bits are its log-likelihood of the
    whole sequence, stop token included (`score_sequences`, the held-out evaluation's own
    step), over 3 x height x width of the resized image.

    Args:
      run: from `dct_gen.run_dir.load_run`.
      images: a glob or a directory (`image_files`), a list of file paths, or what
        `encode_images` made of them for this run's representation.
      batch_size: chunks per step (default: the run's).
      log: where the skipped files are reported (None: silent).
      progress: progress lines (see `score_sequences`).
      label: a class-conditional model scores every image given this class; -1: none (the
        null label, which the model must have trained).

    Returns:
      The "images" section of evaluation.json (docs/evaluation.md lists its fields).

    Raises:
      InputError: no file, or no file that is an image (the message names the first and why).
      UsageError: batch_size does not split over the replicas; a label the model does not take.
    """
    import numpy as np

    from dct_gen import representation as rep

    cfg = run.model_config.dct
    start = time.perf_counter()
    if not isinstance(images, EncodedImages):
        images = encode_images(images, cfg, log=log)
    encoded, skipped, pattern = images
    scores = score_sequences(
        run,
        [e["sequence"] for e in encoded],
        batch_size=batch_size,
        progress=progress,
        labels=label,
    )
    available = baselines(cfg, run.train_config.target_part)
    libjpeg = None
    per_image = []
    for item, score in zip(encoded, scores):
        seq = item["sequence"]
        subpixels = rep.num_subpixels(seq.height, seq.width)
        row: dict[str, Any] = {
            "file": item["file"],
            "height": int(seq.height),
            "width": int(seq.width),
            "source_height": int(item["source_height"]),
            "source_width": int(item["source_width"]),
            "subpixels": int(subpixels),
            "triples": len(seq),
            "clipped": int(seq.num_clipped),
            "chunks": score["chunks"],
            "bits": score["nats"] / math.log(2.0),
        }
        row["bits_per_subpixel"] = row["bits"] / subpixels
        for c in COMPONENTS:
            row[f"{c}_bits"] = score[f"{c}_nats"] / math.log(2.0)
            row[f"{c}_bits_per_subpixel"] = row[f"{c}_bits"] / subpixels
        bits = {f"{name}_bits": None for name in BASELINE_COLUMNS}
        row["baseline_error"] = None
        if available["jpeg"]["available"]:
            try:
                bits = baseline_bits(seq, cfg, jxl=available["jxl"]["available"])
                libjpeg = bits.pop("libjpeg")
            except ValueError as e:  # coefficients baseline JPEG cannot code
                row["baseline_error"] = str(e)
        for name in BASELINE_COLUMNS:
            value = bits[f"{name}_bits"]
            row[f"{name}_bits"] = value
            row[f"{name}_bits_per_subpixel"] = None if value is None else value / subpixels
        per_image.append(row)

    def mean(key: str) -> float | None:
        values = [r[key] for r in per_image]
        return None if any(v is None for v in values) else float(np.mean(values))

    def pooled(key: str) -> float | None:
        values = [r[key] for r in per_image]
        if any(v is None for v in values):
            return None
        return float(sum(values)) / sum(r["subpixels"] for r in per_image)

    section: dict[str, Any] = {
        "pattern": pattern,
        "num_images": len(per_image),
        "num_skipped": len(skipped),
        "target_part": run.train_config.target_part,
        "label": int(label),
        "subpixels": sum(r["subpixels"] for r in per_image),
        "bits_per_subpixel": mean("bits_per_subpixel"),
        **{f"{c}_bits_per_subpixel": mean(f"{c}_bits_per_subpixel") for c in COMPONENTS},
        "bits_per_subpixel_pooled": pooled("bits"),
    }
    for c in COMPONENTS:
        section[f"{c}_bits_per_subpixel_pooled"] = pooled(f"{c}_bits")
    for name in BASELINE_COLUMNS:
        section[f"{name}_bits_per_subpixel"] = mean(f"{name}_bits_per_subpixel")
        section[f"{name}_bits_per_subpixel_pooled"] = pooled(f"{name}_bits")
    for name in ("jpeg", "jxl"):
        other = section[f"{name}_bits_per_subpixel"]
        section[f"saving_vs_{name}"] = (
            None if other is None else 1.0 - section["bits_per_subpixel"] / other
        )
    notes = {name: dict(value) for name, value in available.items()}
    failed = [r for r in per_image if r["baseline_error"]]
    if failed:
        for name in notes:
            notes[name].update(
                available=False,
                reason=f"baseline JPEG cannot code {len(failed)} of the images "
                f"({failed[0]['file']}: {failed[0]['baseline_error']})",
            )
    notes["jpeg"]["libjpeg"] = libjpeg
    if notes["jxl"]["available"]:
        import imagecodecs

        notes["jxl"]["imagecodecs"] = imagecodecs.__version__
    section["baselines"] = notes
    section["per_image"] = per_image
    section["skipped"] = skipped
    section["seconds"] = time.perf_counter() - start
    return section


def images_table(section: dict[str, Any]) -> str:
    """The "images" section as a table for people: a row per image, the mean over images, the
    pooled figure (summed bits over summed subpixels), why a column is missing, and the skipped
    files."""
    files = [r["file"] for r in section["per_image"]]
    common = os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files])
    names = [os.path.relpath(os.path.abspath(f), common) for f in files]
    head = ("image", "size", "bits", "channel", "position", "value")
    head += ("JPEG scan", "JPEG file", "JXL file", "saved")
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    pct = lambda v: "-" if v is None else f"{100 * v:+.1f}%"  # noqa: E731

    def cells(name, size, r, saving):
        return (
            name,
            size,
            fmt(r["bits_per_subpixel"]),
            *(fmt(r[f"{c}_bits_per_subpixel"]) for c in COMPONENTS),
            fmt(r["jpeg_bits_per_subpixel"]),
            fmt(r["jpeg_file_bits_per_subpixel"]),
            fmt(r["jxl_bits_per_subpixel"]),
            pct(saving),
        )

    rows = []
    for name, r in zip(names, section["per_image"]):
        jpeg = r["jpeg_bits_per_subpixel"]
        saving = None if jpeg is None else 1.0 - r["bits_per_subpixel"] / jpeg
        rows.append(cells(name, f"{r['height']}x{r['width']}", r, saving))
    rows.append(cells(f"mean of {section['num_images']}", "", section, section["saving_vs_jpeg"]))
    pooled = {key: section[f"{key}_pooled"] for key in section if f"{key}_pooled" in section}
    jpeg = pooled["jpeg_bits_per_subpixel"]
    saving = None if jpeg is None else 1.0 - pooled["bits_per_subpixel"] / jpeg
    rows.append(cells("pooled", "", pooled, saving))
    widths = [max(len(str(row[i])) for row in [head, *rows]) for i in range(len(head))]
    line = lambda row: "  ".join(  # noqa: E731
        str(cell).ljust(w) if i == 0 else str(cell).rjust(w)
        for i, (cell, w) in enumerate(zip(row, widths))
    )
    out = [
        "bits per subpixel; JPEG: the same coefficients (scan, whole file); JXL: that JPEG "
        "recompressed; saved: 1 - bits / JPEG scan"
    ]
    out += [line(head), *(line(row) for row in rows)]
    for name in ("jpeg", "jxl"):
        note = section["baselines"][name]
        if not note["available"]:
            out.append(f"{'JPEG' if name == 'jpeg' else 'JPEG XL'}: - because {note['reason']}")
    for item in section["skipped"]:
        out.append(f"skipped {item['message']} ({item['reason']})")
    return "\n".join(out)


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


def feature_network_line(values: dict[str, Any]) -> str:
    """The feature network of sample metrics in words: its label, and the graph file's md5."""
    label = str(values.get("feature_network"))
    md5 = values.get("inception_graph_md5")
    return f"{label}, md5 {md5}" if md5 else label


def write_text_summary(directory: str, step: int, tag: str, text: str) -> None:
    """One TensorBoard text summary at `step` in `directory`."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(directory)
    with writer.as_default(step=step):
        tf.summary.text(tag, text)
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


def _inside(path: str, directory: str) -> bool:
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([path, directory]) == directory


def check_unlocked(
    model_dir: str, *, out: str | None = None, summaries: bool = False, paths: Sequence[str] = ()
) -> None:
    """Refuses to write into a run directory that another live process (a training run) holds.

    Args:
      model_dir: the run directory.
      out: the JSON output (None: MODEL_DIR/evaluation.json).
      summaries: whether TensorBoard scalars (and caches) go under MODEL_DIR/evaluate/.
      paths: other paths the evaluation writes (the --generate folder).

    Raises:
      run_dir.RunLockedError: the evaluation would write into model_dir and another live
        process holds its lock (the message names the holder and what would be written).
    """
    out = out or os.path.join(model_dir, DEFAULT_OUT)
    writes = [os.path.relpath(p, model_dir) for p in (out, *paths) if _inside(p, model_dir)]
    if summaries:
        writes.append(f"TensorBoard scalars under {SUMMARY_DIR}/")
    if writes:
        run_dir.check_unlocked(model_dir, f"evaluation would write {' and '.join(writes)} there")


def run_evaluation(
    *,
    model_dir: str,
    data_dir: str | None = None,
    split: str | None = None,
    batch_size: int | None = None,
    max_batches: int | None = None,
    checkpoint: int | None = None,
    images: str | Sequence[str] | None = None,
    label: int = -1,
    samples_dir: str | None = None,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    reference_data_dir: str | None = None,
    reference_split: str = DEFAULT_REFERENCE_SPLIT,
    num_reference: int | None = None,
    reference_cache: str | None = None,
    inception_weights: str | None = None,
    inception_graph: str | None = None,
    extractor=None,
    feature_batch_size: int = DEFAULT_FEATURE_BATCH_SIZE,
    k: int = DEFAULT_K,
    out: str | None = None,
    strategy=None,
    log: Callable[[str], None] = print,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluates a run; writes the JSON and TensorBoard outputs; returns the JSON's content.

    Args:
      model_dir: the run directory.
      data_dir: a held-out dataset: bits per subpixel are computed when given.
      split: its split (None: `default_split(model_dir)`).
      batch_size, max_batches, checkpoint: see `likelihood` and `run_dir.load_run`
        (batch_size also sets the chunks per step of `images`).
      images: image files (a glob, a directory or a list of paths): their bits per subpixel
        beside JPEG's and JPEG XL's (`score_images`), the "images" section, are computed when
        given; the table (`images_table`) goes to `log`.
      samples_dir: a folder of generated images: sample metrics are computed when given.
      num_samples: images of samples_dir used (the paper: 50k).
      reference_data_dir, reference_split, num_reference: the training set the samples are
        compared with (reference_data_dir defaults to data_dir; num_reference to num_samples).
      reference_cache: the .npz of the reference statistics (default
        MODEL_DIR/evaluate/reference_<split>_<num_reference>.npz).
      inception_weights: Keras' Inception-v3 weights file (None: Keras' download); used when
        there is no inception_graph, and labelled not comparable with published FIDs.
      inception_graph: the 2015 frozen Inception graph (classify_image_graph_def.pb, local or
        gs://), the features of published FIDs; used instead of Keras' Inception-v3.
      extractor: a feature extractor replacing both (see `dct_gen.metrics`).
      feature_batch_size: images per feature-extractor call.
      k: the neighbour of precision and recall.
      out: the JSON path (default MODEL_DIR/evaluation.json).
      strategy: the tf.distribute strategy of the model (None: the default).
      log: where notes, results and the images table go.
      progress: where progress lines go (the split's and the images'; None: nowhere).

    Raises:
      UsageError: nothing to evaluate, or sample metrics without a reference dataset.
      InputError: a missing run, dataset, split, folder or weights file, too few images, no
        image among `images`, or data that does not read (see `run_dir.load_run`,
        `likelihood`, `sample_metrics`, `score_images`).
      run_dir.RunLockedError: the evaluation would write into model_dir (the default `out`,
        TensorBoard scalars) while another live process, a training run, holds it.
    """
    import tensorflow as tf

    from dct_gen import training

    if not tf.io.gfile.isdir(model_dir):
        raise InputError(f"run directory {model_dir} does not exist")
    if data_dir is None and samples_dir is None and images is None:
        raise UsageError(
            "nothing to evaluate: give a held-out dataset (bits per subpixel), image files "
            "(their bits beside JPEG's) and/or a folder of samples (FID, sFID, precision, recall)"
        )
    out = out or os.path.join(model_dir, DEFAULT_OUT)
    # Before anything long: a live training run in model_dir keeps it to itself.
    check_unlocked(model_dir, out=out, summaries=data_dir is not None or samples_dir is not None)
    reference_data_dir = reference_data_dir or data_dir
    num_reference = num_reference or num_samples
    encoded = None
    if images is not None:
        # Read and encoded before the model loads: a folder without images fails at once.
        cfg = run_dir.read_run_config(model_dir)[0].dct
        encoded = encode_images(images, cfg, log=log)
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
        if extractor is None:
            extractor = (
                metrics.inception_graph(inception_graph)
                if inception_graph
                else metrics.inception_v3(inception_weights)
            )

    result = _previous(out, model_dir)
    result["model_dir"] = model_dir
    step = None
    run = None
    if data_dir is not None or encoded is not None:
        run = run_dir.load_run(model_dir, checkpoint=checkpoint, strategy=strategy, log=log)
        step = run.step
    if data_dir is not None:
        split = split or default_split(model_dir)
        start = time.perf_counter()
        values = likelihood(
            run,
            data_dir=data_dir,
            split=split,
            batch_size=batch_size,
            max_batches=max_batches,
            progress=progress,
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
        # The run's own eval/ tags (grouped scalars and the bits-per-chunk picture), so the two
        # overlay in TensorBoard.
        writer = tf.summary.create_file_writer(os.path.join(model_dir, SUMMARY_DIR, split))
        with writer.as_default(step=run.step):
            training.write_eval_summaries(values, run.step, split)
        writer.close()
    if encoded is not None:
        section = score_images(
            run, encoded, batch_size=batch_size, log=log, progress=progress, label=label
        )
        result["images"] = {
            "step": run.step,
            "checkpoint": run.checkpoint,
            "batch_size": batch_size or run.train_config.batch_size,
            **section,
        }
        log(images_table(section))
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
            f"{values['precision']:.3f}  recall {values['recall']:.3f}  "
            f"[features: {feature_network_line(values)}]"
        )
        result["samples"] = {"step": step, **values}
        summaries = os.path.join(model_dir, SUMMARY_DIR, "samples")
        write_summaries(
            summaries,
            step,
            {name: values[name] for name in ("fid", "sfid", "precision", "recall")},
        )
        write_text_summary(summaries, step, "feature_network", feature_network_line(values))
    run_dir.write_json(out, result)
    log(f"wrote {out}")
    return result
