"""Beam transforms of the dataset job: sources, image encoding, shard writing, statistics, info.

Elements flow as SourceItem (key, bytes or array, label) -> EncodedRecord (key, serialized
record, sizes) or Failure (key, reason, message). Failures go to the dead-letter file and are
counted, both as data (for info.json, exact) and as Beam metrics in namespace `dct_gen`
(`read`, `written`, `failed`, `failed_<reason>`, `clipped_coefficients`, distribution
`sequence_length`).

Shards are assigned by a hash of the key and each shard is written sorted by key, through a
temporary name: a retried bundle rewrites the same bytes, and the output is the same whatever
the runner, the number of workers or the order of arrival.

Nothing here imports TensorFlow or Keras; the TFDS source imports tensorflow_datasets (and so
TensorFlow) when it is built and in the workers that read it.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from PIL import Image

from beam_jobs import outputs
from dct_gen import images, records
from dct_gen.errors import InputError
from dct_gen.representation import DCTConfig, check_triples, encode

NAMESPACE = "dct_gen"
FAILED_TAG = "failed"


class SourceItem(NamedTuple):
    """One input image: its key, its encoded bytes (or a decoded array), its label (-1: none)."""

    key: str
    data: Any
    label: int


class Failure(NamedTuple):
    """An input that produced no record, and why (reason: a key of images.REASONS)."""

    key: str
    reason: str
    message: str

    def to_json(self) -> str:
        return json.dumps(
            {"key": self.key, "reason": self.reason, "message": self.message}, sort_keys=True
        )


class EncodedRecord(NamedTuple):
    key: str
    record: bytes
    num_triples: int
    num_clipped: int


def _fail(key: str, reason: str, message: str) -> beam.pvalue.TaggedOutput:
    Metrics.counter(NAMESPACE, "failed").inc()
    Metrics.counter(NAMESPACE, f"failed_{reason}").inc()
    return beam.pvalue.TaggedOutput(FAILED_TAG, Failure(key, reason, message))


def shard_of(key: str, num_shards: int) -> int:
    """The shard of a record: a stable hash of its key (not Python's salted hash())."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


# ----------------------------------------------------------------------------------------------
# Sources.


class ListFiles(beam.PTransform):
    """A glob -> the paths of the matching files (Beam's FileSystems: local or gs://)."""

    def __init__(self, pattern: str):
        super().__init__()
        self._pattern = pattern

    def expand(self, pbegin):
        return (
            pbegin
            | "Match" >> fileio.MatchFiles(self._pattern)
            | "Path" >> beam.Map(lambda metadata: metadata.path)
        )


def parent_name(path: str) -> str:
    """The name of the folder a file sits in: its label with --labels_from_dirs."""
    return posixpath.basename(posixpath.dirname(path))


class LabelNames(beam.PTransform):
    """Paths -> one element: the sorted distinct names of their parent folders."""

    def expand(self, paths):
        return (
            paths
            | "Parent" >> beam.Map(parent_name)
            | "Distinct" >> beam.Distinct()
            | "Sorted" >> beam.combiners.ToList()
            | "Sort" >> beam.Map(sorted)
        )


class ReadFiles(beam.DoFn):
    """Path -> SourceItem with the file's bytes, or a Failure (read_error, unknown_label).

    With a label-names side input (a list), the label is the index of the file's parent folder
    in it; with None there is no label (-1).
    """

    def process(self, path: str, label_names: Sequence[str] | None):
        Metrics.counter(NAMESPACE, "read").inc()
        label = -1
        if label_names is not None:
            folder = parent_name(path)
            try:
                label = label_names.index(folder)
            except ValueError:
                yield _fail(
                    path,
                    "unknown_label",
                    f"folder {folder!r} is not among the {len(label_names)} label names",
                )
                return
        try:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                data = f.read()
        except Exception as e:  # noqa: BLE001 - every unreadable file is counted, not fatal
            yield _fail(path, "read_error", f"{type(e).__name__}: {e}")
            return
        yield SourceItem(path, data, label)


def tfds_features(
    name: str,
    split: str,
    data_dir: str | None = None,
    image_key: str | None = None,
    label_key: str | None = None,
) -> dict:
    """Finds a prepared TFDS dataset's image and label features.

    The image is the Image feature named `image`, else the only Image feature; the label the
    ClassLabel named `label`, else the only ClassLabel (none: unlabelled). `image_key` and
    `label_key` override the search.

    Returns:
      {"image_key", "image_encoded" (an Image feature: read its bytes undecoded), "label_key"
      (or None), "label_names" (or None), "num_examples"}.

    Raises:
      InputError: naming the dataset and the flag to fix when something is missing or
        ambiguous, when TFDS knows no such dataset, or when the dataset is not prepared in
        data_dir.
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except ValueError as e:  # TFDS's DatasetNotFoundError lists every dataset: keep line one
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(f"--tfds_name={name}: {first}") from None
    if not builder.info.splits.total_num_examples:
        raise InputError(
            f"--tfds_name={name}: no prepared data in {builder.data_dir}; prepare it first "
            f"(e.g. `tfds build {name.split(':')[0]} --data_dir DIR`) and pass --tfds_data_dir"
        )
    try:
        num_examples = builder.info.splits[split].num_examples
    except (KeyError, ValueError) as e:
        raise InputError(
            f"--split={split}: not a split of {name} (splits: {sorted(builder.info.splits)}): {e}"
        ) from None
    features = dict(builder.info.features.items())

    def pick(kind, key, preferred, flag, required):
        if key is not None:
            if key not in features:
                raise InputError(f"--{flag}={key}: {name} has features {sorted(features)}")
            return key
        found = sorted(k for k, f in features.items() if isinstance(f, kind))
        if preferred in found:
            return preferred
        if len(found) == 1:
            return found[0]
        if found or required:
            raise InputError(
                f"{name}: cannot tell which {kind.__name__} feature to use among {found or None}"
                f" (features: {sorted(features)}); pass --{flag}"
            )
        return None

    image_key = pick(tfds.features.Image, image_key, "image", "image_key", True)
    label_key = pick(tfds.features.ClassLabel, label_key, "label", "label_key", False)
    label_feature = features.get(label_key) if label_key else None
    label_names = (
        list(label_feature.names) if isinstance(label_feature, tfds.features.ClassLabel) else None
    )
    return {
        "image_key": image_key,
        "image_encoded": isinstance(features[image_key], tfds.features.Image),
        "label_key": label_key,
        "label_names": label_names,
        "num_examples": int(num_examples),
    }


def tfds_item(example: dict, image_key: str, label_key: str | None) -> SourceItem:
    """A TFDS example (dict of eager tensors) -> SourceItem keyed by its tfds_id."""
    Metrics.counter(NAMESPACE, "read").inc()
    key = example["tfds_id"].numpy().decode("utf-8")
    data = example[image_key].numpy()  # bytes for an undecoded Image feature, else an array
    label = int(example[label_key].numpy()) if label_key else -1
    return SourceItem(key, data, label)


class ReadTFDS(beam.PTransform):
    """A prepared TFDS split -> SourceItems, through tfds.beam.ReadFromTFDS.

    Image features are read undecoded (SkipDecoding), so that EncodeImages decodes them like
    files: same conversions, same failures, named by the example's tfds_id.
    """

    def __init__(
        self,
        name: str,
        split: str,
        *,
        image_key: str,
        label_key: str | None,
        image_encoded: bool,
        data_dir: str | None = None,
    ):
        super().__init__()
        self._name, self._split, self._data_dir = name, split, data_dir
        self._image_key, self._label_key = image_key, label_key
        self._image_encoded = image_encoded

    def expand(self, pbegin):
        import tensorflow_datasets as tfds

        builder = tfds.builder(self._name, data_dir=self._data_dir)
        if not type(builder).__module__.startswith("tensorflow_datasets."):
            # A builder class from outside TFDS would be pickled for the workers, which may not
            # have its code; a read-only builder made from the prepared files needs none.
            builder = tfds.builder_from_directory(builder.data_dir)
        decoders = {self._image_key: tfds.decode.SkipDecoding()} if self._image_encoded else None
        return (
            pbegin
            | "ReadFromTFDS"
            >> tfds.beam.ReadFromTFDS(
                builder,
                split=self._split,
                decoders=decoders,
                read_config=tfds.ReadConfig(add_tfds_id=True),
            )
            | "ToSourceItem" >> beam.Map(tfds_item, self._image_key, self._label_key)
        )


# ----------------------------------------------------------------------------------------------
# Encoding.


class EncodeImages(beam.DoFn):
    """SourceItem -> EncodedRecord, or a Failure on the `failed` output (never raises)."""

    def __init__(self, cfg: DCTConfig, max_pixels: int = images.DEFAULT_MAX_PIXELS):
        super().__init__()
        self._cfg = cfg
        self._max_pixels = int(max_pixels)

    def setup(self):
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and 2 * limit < self._max_pixels:
            # Pillow refuses images above twice its own limit before our cap is consulted; a
            # larger cap asked for by --max_pixels raises that limit in this worker process.
            Image.MAX_IMAGE_PIXELS = self._max_pixels
        self._written = Metrics.counter(NAMESPACE, "written")
        self._clipped = Metrics.counter(NAMESPACE, "clipped_coefficients")
        self._lengths = Metrics.distribution(NAMESPACE, "sequence_length")

    def process(self, item: SourceItem):
        try:
            if isinstance(item.data, (bytes, bytearray, memoryview)):
                image = images.decode_image(item.data, max_pixels=self._max_pixels)
            else:
                image = images.image_from_array(item.data, max_pixels=self._max_pixels)
        except images.ImageError as e:
            yield _fail(item.key, e.reason, str(e))
            return
        except Exception as e:  # noqa: BLE001 - "anything else that raises" is counted too
            yield _fail(item.key, "error", f"{type(e).__name__}: {e}")
            return
        try:
            seq = encode(image, self._cfg)
            check_triples(seq.channels, seq.positions, seq.values, self._cfg)
            record = records.serialize_example(
                channels=seq.channels,
                positions=seq.positions,
                values=seq.values,
                height=seq.height,
                width=seq.width,
                label=item.label,
                key=item.key,
            )
        except Exception as e:  # noqa: BLE001
            yield _fail(item.key, "encode_error", f"{type(e).__name__}: {e}")
            return
        self._written.inc()
        self._clipped.inc(seq.num_clipped)
        self._lengths.update(len(seq) + 1)
        yield EncodedRecord(item.key, record, len(seq), int(seq.num_clipped))


# ----------------------------------------------------------------------------------------------
# Writing.


class WriteShards(beam.PTransform):
    """(key, payload bytes) -> files `output_dir/file_names[i]`, one per shard, all of them.

    Each element goes to shard `shard_of(key, len(file_names))`; every shard is written, empty
    or not, sorted by key, through a temporary file renamed into place. `framing` is "tfrecord"
    (TFRecord framing) or "lines" (payload + newline). Emits (path, number of elements) per
    shard. Raises on a key seen twice: two sources with one key would make records ambiguous.
    """

    def __init__(self, output_dir: str, file_names: Sequence[str], framing: str):
        super().__init__()
        if framing not in ("tfrecord", "lines"):
            raise ValueError(f"framing={framing!r}: expected 'tfrecord' or 'lines'")
        self._output_dir = output_dir
        self._file_names = list(file_names)
        self._framing = framing

    def expand(self, pcoll):
        n = len(self._file_names)
        keyed = pcoll | "AssignShard" >> beam.Map(lambda kv: (shard_of(kv[0], n), kv))
        every_shard = (
            pcoll.pipeline
            | "ShardIds" >> beam.Create(list(range(n)))
            | "KeyShardIds" >> beam.Map(lambda i: (i, None))
        )
        return (
            {"items": keyed, "ids": every_shard}
            | "GroupByShard" >> beam.CoGroupByKey()
            | "Write"
            >> beam.ParDo(_WriteShardFn(self._output_dir, self._file_names, self._framing))
        )


class _WriteShardFn(beam.DoFn):
    def __init__(self, output_dir: str, file_names: Sequence[str], framing: str):
        super().__init__()
        self._output_dir = output_dir
        self._file_names = list(file_names)
        self._framing = framing

    def process(self, element):
        index, grouped = element
        items = sorted(grouped["items"], key=lambda kv: kv[0])
        for (a, _), (b, _) in zip(items, items[1:]):
            if a == b:
                raise ValueError(f"two inputs share the key {a!r}; keys must name one source each")
        name = self._file_names[index]
        final = records.join(self._output_dir, name)
        tmp = records.join(self._output_dir, f".{name}.tmp-{uuid.uuid4().hex}")
        frame = records.tfrecord_frame if self._framing == "tfrecord" else (lambda b: b + b"\n")
        with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            for _, payload in items:
                f.write(frame(payload))
        FileSystems.rename([tmp], [final])
        yield final, len(items)


# ----------------------------------------------------------------------------------------------
# Statistics.


class SplitStats(beam.CombineFn):
    """EncodedRecords -> {written, clipped, images_with_clipping, triples, record_bytes,
    lengths: {sequence length (triples + 1): count}}."""

    def create_accumulator(self):
        return {
            "written": 0,
            "clipped": 0,
            "images_with_clipping": 0,
            "triples": 0,
            "record_bytes": 0,
            "lengths": Counter(),
        }

    def add_input(self, acc, rec: EncodedRecord):
        acc["written"] += 1
        acc["clipped"] += rec.num_clipped
        acc["images_with_clipping"] += int(rec.num_clipped > 0)
        acc["triples"] += rec.num_triples
        # What the record costs on disk: the proto plus 16 bytes of TFRecord framing.
        acc["record_bytes"] += len(rec.record) + 16
        acc["lengths"][rec.num_triples + 1] += 1
        return acc

    def merge_accumulators(self, accumulators: Iterable[dict]):
        accumulators = iter(accumulators)
        out = next(accumulators)
        for acc in accumulators:
            for k in ("written", "clipped", "images_with_clipping", "triples", "record_bytes"):
                out[k] += acc[k]
            out["lengths"].update(acc["lengths"])
        return out

    def extract_output(self, acc):
        return dict(acc, lengths=dict(acc["lengths"]))


class CountByReason(beam.CombineFn):
    """Failures -> {reason: count}."""

    def create_accumulator(self):
        return Counter()

    def add_input(self, acc, failure: Failure):
        acc[failure.reason] += 1
        return acc

    def merge_accumulators(self, accumulators):
        out = Counter()
        for acc in accumulators:
            out.update(acc)
        return out

    def extract_output(self, acc):
        return dict(acc)


# ----------------------------------------------------------------------------------------------
# The end of the job.


class FinalizeSplit(beam.DoFn):
    """Runs once, after every shard and the dead-letter file are written (its side inputs).

    Writes the split's info.json entry, removes leftover temporary files, then, unless more
    than max_failed_fraction of the inputs failed, adds the split to COMPLETED, last.
    """

    def __init__(
        self,
        *,
        output_dir: str,
        split: str,
        cfg: DCTConfig,
        num_shards: int,
        source: dict,
        max_failed_fraction: float,
    ):
        super().__init__()
        self._output_dir, self._split, self._cfg = output_dir, split, cfg
        self._num_shards, self._source = num_shards, dict(source)
        self._max_failed_fraction = float(max_failed_fraction)

    def process(
        self, unused_element, read, stats, failed_by_reason, shards, failed_files, label_names
    ):
        del failed_files  # a side input only so that this step waits for the dead-letter file
        in_shards = sum(count for _, count in shards)
        if len(shards) != self._num_shards or in_shards != stats["written"]:
            raise RuntimeError(
                f"{len(shards)} shards holding {in_shards} records were written, expected "
                f"{self._num_shards} shards holding {stats['written']}"
            )
        failed_total = sum(failed_by_reason.values())
        if read != stats["written"] + failed_total:
            raise RuntimeError(
                f"read {read} inputs but wrote {stats['written']} and failed {failed_total}"
            )
        entry = outputs.split_entry(
            source=self._source,
            num_shards=self._num_shards,
            split=self._split,
            read=read,
            stats=stats,
            failed_by_reason=failed_by_reason,
            label_names=label_names,
            max_failed_fraction=self._max_failed_fraction,
        )
        outputs.write_split_info(self._output_dir, self._cfg, self._split, entry)
        outputs.remove_temp_files(self._output_dir, self._split)
        # Too many failures leave the split without COMPLETED; the driver reads info.json and
        # raises FailedFractionError itself (raised here, every runner would log a traceback).
        if not outputs.failed_fraction_message(entry, self._output_dir, self._split):
            outputs.mark_completed(self._output_dir, self._split)
        yield entry
