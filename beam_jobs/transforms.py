"""Beam transforms of the dataset job: sources, image encoding, shard writing, statistics, info.

Elements flow as SourceItem (key, bytes or array, label) -> EncodedRecord (key, serialized
record, sizes) or Failure (key, reason, message). Failures go to the dead-letter file and are
counted, both as data (for info.json, exact) and as Beam metrics in namespace `dct_gen`
(`read`, `written`, `failed`, `failed_<reason>`, `clipped_coefficients`, distribution
`sequence_length`). A folder listing names everything it passes over: hidden files and special
files (FIFOs, sockets, devices) are Skipped (key, reason, message), never opened, and counted
apart from the inputs; a broken symbolic link is an input that fails (`broken_link`).

On a local run the DoFns can also report their counts to the driver as they go (`Progress`):
each instance rewrites a small JSON file in a folder the driver polls, since the local runner
gives the driver no metrics before the pipeline ends.

Shards are assigned by a hash of the key and each shard is written sorted by key, through a
temporary name: a retried bundle rewrites the same bytes, and the output is the same whatever
the runner, the number of workers or the order of arrival.

Nothing here imports TensorFlow or Keras; the TFDS source imports tensorflow_datasets (and so
TensorFlow) when it is built and in the workers that read it.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import json
import os
import posixpath
import re
import stat
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes, FileSystem
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.localfilesystem import LocalFileSystem
from apache_beam.metrics import Metrics
from PIL import Image

from beam_jobs import outputs
from dct_gen import images, records
from dct_gen.errors import InputError
from dct_gen.representation import DCTConfig, check_triples, encode

NAMESPACE = "dct_gen"
FAILED_TAG = "failed"
SKIPPED_TAG = "skipped"

# Failure reasons of the folder listing, beside those of decoding (images.REASONS).
SOURCE_REASONS = {
    "broken_link": "a symbolic link whose target does not exist (or a loop of links)",
}
# Why a listing passes over a path that the glob matches: not an input, not a failure.
SKIP_REASONS = {
    "hidden": "a file whose name begins with a dot, or one inside such a folder, matched by a "
    "wildcard (as shell globs, the job skips them unless the pattern spells the dot)",
    "special_file": "a FIFO, socket or device: not a regular file, never opened",
}


class SourceItem(NamedTuple):
    """One input image: its key, its encoded bytes (or a decoded array), its label (-1: none)."""

    key: str
    data: Any
    label: int


class Failure(NamedTuple):
    """An input that produced no record, and why (reason: a key of images.REASONS or of
    SOURCE_REASONS)."""

    key: str
    reason: str
    message: str

    def to_json(self) -> str:
        return json.dumps(
            {"key": self.key, "reason": self.reason, "message": self.message}, sort_keys=True
        )


class Skipped(NamedTuple):
    """A path the glob matches that is not an input (reason: a key of SKIP_REASONS)."""

    key: str
    reason: str
    message: str


class WrittenShard(NamedTuple):
    """One file WriteShards wrote: its index, name (relative to the output folder), number of
    records and size in bytes."""

    index: int
    file: str
    records: int
    bytes: int


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


def is_local(path: str) -> bool:
    """Whether Beam's FileSystems reads this path from the local disk (no scheme://)."""
    return isinstance(FileSystems.get_filesystem(path), LocalFileSystem)


REGULAR, MISSING, BROKEN_LINK = "regular", "missing", "broken_link"
DIRECTORY = "a directory"
_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)
SPECIAL_KINDS = frozenset(name for _, name in _SPECIAL_KINDS) | {"a special file"}


def local_kind(path: str) -> str:
    """What a local path is, found with stat() alone (nothing is opened): REGULAR (a file or a
    link to one), MISSING (gone), BROKEN_LINK (a link to nothing, or a loop of links),
    DIRECTORY, or one of SPECIAL_KINDS ('a FIFO', 'a socket', ...)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return BROKEN_LINK if os.path.islink(path) else MISSING
    except OSError:
        # A loop of links (ELOOP) is a broken link; anything else (a folder we may not search)
        # is left to the reader, whose error names it.
        return BROKEN_LINK if os.path.islink(path) else REGULAR
    if stat.S_ISREG(mode):
        return REGULAR
    if stat.S_ISDIR(mode):
        return DIRECTORY
    for test, name in _SPECIAL_KINDS:
        if test(mode):
            return name
    return "a special file"


def _hidden_test(pattern: str):
    """name -> whether a path component is hidden for this pattern: it begins with a dot and no
    component of the pattern that begins with a dot (`.cache`, `.*`) matches it."""
    spelt = [c for c in re.split(r"[/\\]", pattern) if c.startswith(".") and c not in (".", "..")]
    return lambda name: (
        name.startswith(".") and not any(fnmatch.fnmatchcase(name, c) for c in spelt)
    )


def _hidden(key: str) -> Skipped:
    return Skipped(key, "hidden", "a hidden file (its name, or a folder's, begins with a dot)")


def list_inputs(pattern: str) -> Iterator[str | Skipped]:
    """Everything a glob matches, in sorted order: each input as its path, each path passed
    over as a Skipped.

    The syntax is Beam's (FileSystems.match): `*` stays within a folder, `**` crosses folders.
    Inputs are regular files, links to them, and broken links (Beam's own listing drops those
    silently; here they are inputs, which fail when read). Passed over: hidden files, whose
    name or a folder's begins with a dot, unless a component of the pattern that begins with a
    dot matches it (as shell globs do; hidden folders are not entered), and, on local disks,
    FIFOs, sockets and devices, which are never opened (opening a FIFO waits for a writer).
    """
    if pattern.endswith("/"):
        pattern += "*"
    hidden = _hidden_test(pattern)
    prefix = re.match(r"[^[*?]*", pattern).group(0)
    if not is_local(pattern):
        # Object stores hold no links or special files; the folder part of the prefix is
        # literal, the rest was matched by wildcards.
        root = prefix.rsplit("/", 1)[0]
        for path in sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list):
            below = path[len(root) :].split("/")
            yield _hidden(path) if any(hidden(c) for c in below if c) else path
        return
    if prefix == pattern:  # no wildcard: the one path it names, dot or not
        paths: Iterable[str | Skipped] = [pattern]
    else:
        paths = _walk(pattern, os.path.dirname(prefix), hidden)
    for path in paths:
        if isinstance(path, Skipped):
            yield path
            continue
        kind = local_kind(path)
        if kind in SPECIAL_KINDS:
            yield Skipped(path, "special_file", f"{kind}, not a regular file; not opened")
        elif kind != MISSING:  # gone since it was listed: as Beam's listing, not an input
            yield path


def _walk(pattern: str, root: str, hidden) -> Iterator[str | Skipped]:
    # The folder walked is the one Beam's local listing walks (the folder of the pattern's
    # literal prefix), so that the same paths, spelt the same way, match.
    matches = re.compile(FileSystem.translate_pattern(pattern)).match
    for folder, subfolders, names in os.walk(root or os.curdir):
        subfolders[:] = sorted(d for d in subfolders if not hidden(d))
        for name in sorted(names):
            path = os.path.join(folder, name)
            if not root:
                path = os.path.normpath(path)  # a pattern without a folder: './a.jpg' -> 'a.jpg'
            if matches(path):
                yield _hidden(path) if hidden(name) else path


class ListFiles(beam.PTransform):
    """A glob -> its inputs' paths (main output `paths`) and the paths passed over (output
    SKIPPED_TAG, Skipped), as `list_inputs` lists them."""

    def __init__(self, pattern: str):
        super().__init__()
        self._pattern = pattern

    def expand(self, pbegin):
        return (
            pbegin
            | "Pattern" >> beam.Create([self._pattern])
            | "List" >> beam.ParDo(_ListFn()).with_outputs(SKIPPED_TAG, main="paths")
        )


class _ListFn(beam.DoFn):
    def process(self, pattern: str):
        for item in list_inputs(pattern):
            if isinstance(item, Skipped):
                Metrics.counter(NAMESPACE, f"skipped_{item.reason}").inc()
                yield beam.pvalue.TaggedOutput(SKIPPED_TAG, item)
            else:
                yield item


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
    """Path -> SourceItem with the file's bytes, or a Failure (read_error, unknown_label,
    broken_link).

    With a label-names side input (a list), the label is the index of the file's parent folder
    in it; with None there is no label (-1). A local path is checked with stat() before it is
    opened: a broken link fails as `broken_link`, anything but a regular file as `read_error`,
    unopened.
    """

    def __init__(self, progress_dir: str | None = None):
        super().__init__()
        self._progress_dir = progress_dir

    def setup(self):
        self._progress = Progress(self._progress_dir)

    def finish_bundle(self):
        self._progress.flush()

    def teardown(self):
        self._progress.flush()

    def process(self, path: str, label_names: Sequence[str] | None):
        Metrics.counter(NAMESPACE, "read").inc()
        result = _read_file(path, label_names)
        if isinstance(result, Failure):
            self._progress.add("failed")
            yield _fail(*result)
        else:
            yield result


def _read_file(path: str, label_names: Sequence[str] | None) -> SourceItem | Failure:
    label = -1
    if label_names is not None:
        folder = parent_name(path)
        try:
            label = label_names.index(folder)
        except ValueError:
            return Failure(
                path,
                "unknown_label",
                f"folder {folder!r} is not among the {len(label_names)} label names",
            )
    if is_local(path):
        kind = local_kind(path)
        if kind == BROKEN_LINK:
            try:
                target = repr(os.readlink(path))
            except OSError:
                target = "a path"
            return Failure(
                path, "broken_link", f"a symbolic link to {target}, which does not resolve"
            )
        if kind in SPECIAL_KINDS or kind == DIRECTORY:
            return Failure(path, "read_error", f"{kind}, not a regular file; not opened")
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            data = f.read()
    except Exception as e:  # noqa: BLE001 - every unreadable file is counted, not fatal
        return Failure(path, "read_error", f"{type(e).__name__}: {e}")
    return SourceItem(path, data, label)


# ----------------------------------------------------------------------------------------------
# Progress of a local run.


class Progress:
    """The running counts of one DoFn instance, for the driver's progress line.

    Each instance owns one file, `<folder>/<pid>-<random>.json`, holding its counts: written
    at the first count, then rewritten (through a temporary name and a rename) at most every
    `every` seconds and at the end of each bundle; `read_progress` sums the files. A retried
    bundle is counted again: the progress line is an estimate, info.json's counts are exact.
    With folder None (a remote run, or no progress asked for), nothing is written.
    """

    def __init__(self, folder: str | None, every: float = 1.0):
        self._folder = folder
        self._every = every
        self._counts: Counter = Counter()
        self._written_at = -float("inf")  # the first count is written at once
        self._dirty = False
        self._path = folder and os.path.join(folder, f"{os.getpid()}-{uuid.uuid4().hex}.json")

    def add(self, name: str, n: int = 1) -> None:
        if self._folder is None:
            return
        self._counts[name] += n
        self._dirty = True
        if time.monotonic() - self._written_at >= self._every:
            self.flush()

    def flush(self) -> None:
        if self._folder is None or not self._dirty:
            return
        tmp = f"{self._path}.tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(dict(self._counts), f)
            os.replace(tmp, self._path)
        except OSError:
            return  # the driver finished and removed the folder: nobody is reading
        self._dirty = False
        self._written_at = time.monotonic()


def read_progress(folder: str) -> Counter:
    """The sum of the counts every Progress wrote into folder."""
    total: Counter = Counter()
    try:
        names = os.listdir(folder)
    except OSError:
        return total
    for name in names:
        if name.endswith(".json"):
            try:
                with open(os.path.join(folder, name)) as f:
                    total.update(json.load(f))
            except (OSError, ValueError):
                continue  # replaced or removed meanwhile
    return total


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
    except tfds.core.DatasetNotFoundError:
        # TFDS's own message lists every dataset it knows, several hundred; name a few close
        # ones instead (from the registered builders: no network).
        raise InputError(unknown_tfds_name_message(name)) from None
    except ValueError as e:  # a bad config or version: its first line says which
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


def unknown_tfds_name_message(name: str) -> str:
    """One line for a --tfds_name that TFDS does not know, with the closest registered names."""
    import tensorflow_datasets as tfds

    base = re.split(r"[/:]", name, maxsplit=1)[0]
    known = tfds.list_builders(with_community_datasets=False)
    close = difflib.get_close_matches(base, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return (
        f"--tfds_name={name}: TFDS has no dataset {base!r} ({len(known)} are registered: "
        f"tfds.list_builders()){hint}"
    )


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

    def __init__(
        self,
        cfg: DCTConfig,
        max_pixels: int = images.DEFAULT_MAX_PIXELS,
        progress_dir: str | None = None,
    ):
        super().__init__()
        self._cfg = cfg
        self._max_pixels = int(max_pixels)
        self._progress_dir = progress_dir

    def setup(self):
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and 2 * limit < self._max_pixels:
            # Pillow refuses images above twice its own limit before our cap is consulted; a
            # larger cap asked for by --max_pixels raises that limit in this worker process.
            Image.MAX_IMAGE_PIXELS = self._max_pixels
        self._written = Metrics.counter(NAMESPACE, "written")
        self._clipped = Metrics.counter(NAMESPACE, "clipped_coefficients")
        self._lengths = Metrics.distribution(NAMESPACE, "sequence_length")
        self._progress = Progress(self._progress_dir)

    def finish_bundle(self):
        self._progress.flush()

    def teardown(self):
        self._progress.flush()

    def process(self, item: SourceItem):
        out = self._encode(item)
        self._progress.add("failed" if isinstance(out, beam.pvalue.TaggedOutput) else "written")
        yield out

    def _encode(self, item: SourceItem) -> EncodedRecord | beam.pvalue.TaggedOutput:
        try:
            if isinstance(item.data, (bytes, bytearray, memoryview)):
                image = images.decode_image(item.data, max_pixels=self._max_pixels)
            else:
                image = images.image_from_array(item.data, max_pixels=self._max_pixels)
        except images.ImageError as e:
            return _fail(item.key, e.reason, str(e))
        except Exception as e:  # noqa: BLE001 - "anything else that raises" is counted too
            return _fail(item.key, "error", f"{type(e).__name__}: {e}")
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
            return _fail(item.key, "encode_error", f"{type(e).__name__}: {e}")
        self._written.inc()
        self._clipped.inc(seq.num_clipped)
        self._lengths.update(len(seq) + 1)
        return EncodedRecord(item.key, record, len(seq), int(seq.num_clipped))


# ----------------------------------------------------------------------------------------------
# Writing.


class WriteShards(beam.PTransform):
    """(key, payload bytes) -> files `output_dir/file_names[i]`, one per shard, all of them.

    Each element goes to shard `shard_of(key, len(file_names))`; every shard is written, empty
    or not, sorted by key, through a temporary file renamed into place. `framing` is "tfrecord"
    (TFRecord framing) or "lines" (payload + newline). Emits a WrittenShard per file (its size
    as the filesystem reports it once the file is in place). Raises on a key seen twice: two
    sources with one key would make records ambiguous.
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
        size = FileSystems.get_filesystem(final).metadata(final).size_in_bytes
        yield WrittenShard(index, name, len(items), int(size))


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


class SkippedSummary(beam.CombineFn):
    """Skipped -> {"counts": {reason: n}, "examples": the first EXAMPLES paths in sorted order,
    as [{"key", "reason", "message"}]}."""

    EXAMPLES = 20

    def create_accumulator(self):
        return Counter(), []

    def add_input(self, acc, skipped: Skipped):
        counts, examples = acc
        counts[skipped.reason] += 1
        examples.append(skipped)
        if len(examples) > 2 * self.EXAMPLES:
            examples[:] = sorted(examples)[: self.EXAMPLES]
        return acc

    def merge_accumulators(self, accumulators):
        counts, examples = Counter(), []
        for c, e in accumulators:
            counts.update(c)
            examples.extend(e)
        return counts, sorted(examples)[: self.EXAMPLES]

    def extract_output(self, acc):
        counts, examples = acc
        return {
            "counts": dict(sorted(counts.items())),
            "examples": [s._asdict() for s in sorted(examples)[: self.EXAMPLES]],
        }


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
        self,
        unused_element,
        read,
        stats,
        failed_by_reason,
        shards,
        failed_files,
        label_names,
        skipped=None,
    ):
        del failed_files  # a side input only so that this step waits for the dead-letter file
        shards = sorted(shards)
        in_shards = sum(shard.records for shard in shards)
        if [s.index for s in shards] != list(range(self._num_shards)) or (
            in_shards != stats["written"]
        ):
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
            shards=[{"file": s.file, "records": s.records, "bytes": s.bytes} for s in shards],
            skipped=skipped,
        )
        outputs.write_split_info(self._output_dir, self._cfg, self._split, entry)
        outputs.remove_temp_files(self._output_dir, self._split)
        # Too many failures leave the split without COMPLETED; the driver reads info.json and
        # raises FailedFractionError itself (raised here, every runner would log a traceback).
        if not outputs.failed_fraction_message(entry, self._output_dir, self._split):
            outputs.mark_completed(self._output_dir, self._split)
        yield entry
