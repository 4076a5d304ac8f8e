"""The dataset job's output directory: existing output, --overwrite, info.json and COMPLETED.

Everything goes through Beam's FileSystems, so the same code serves local paths and gs:// (the
latter needs apache-beam[gcp]). A directory can hold several splits (one job run each): they
share one info.json, whose `splits` map gets one entry per run, and one COMPLETED marker that
lists, one per line, the splits whose conversion finished. Files are written to a temporary
name and renamed into place, so a reader never sees half a file under its final name.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from dct_gen import records
from dct_gen.errors import InputError
from dct_gen.representation import DCTConfig

# Length histogram resolution in info.json.
HISTOGRAM_BINS = 64
# Percentiles reported for sequence lengths; the suggested L_max is the last.
PERCENTILES = (50, 90, 99)
SUGGESTED_L_MAX_PERCENTILE = 99

LENGTH_DEFINITION = "number of triples + 1 (the stop token): the L of the chunk sampler"

_RAW = CompressionTypes.UNCOMPRESSED


def dumps(info: Mapping[str, Any]) -> str:
    """info.json text: indented, but with lists of numbers kept on one line."""
    text = json.dumps(info, indent=2, sort_keys=True)
    numbers = re.compile(r"\[(?:\s*-?[0-9][0-9.eE+-]*,?)+\s*\]")
    return numbers.sub(lambda m: json.dumps(json.loads(m.group(0))), text) + "\n"


class OutputExistsError(InputError, FileExistsError):
    """The output directory already holds output for this split and --overwrite was not given."""


class FailedFractionError(InputError, RuntimeError):
    """More inputs failed than --max_failed_fraction allows; COMPLETED was not written."""


# ----------------------------------------------------------------------------------------------
# Small file helpers.


def read_text(path: str) -> str | None:
    """A file's text, or None when it does not exist."""
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path, compression_type=_RAW) as f:
        return f.read().decode("utf-8")


def write_text(path: str, text: str) -> None:
    """Writes a file through a temporary name and a rename, so readers never see half of it."""
    directory, name = path.rsplit("/", 1)
    tmp = records.join(directory, f".{name}.tmp-{uuid.uuid4().hex}")
    with FileSystems.create(tmp, compression_type=_RAW) as f:
        f.write(text.encode("utf-8"))
    FileSystems.rename([tmp], [path])


def _glob(pattern: str) -> list[str]:
    result = FileSystems.match([pattern])[0]
    return sorted(m.path for m in result.metadata_list)


def _delete(paths: list[str]) -> None:
    existing = [p for p in paths if FileSystems.exists(p)]
    if existing:
        FileSystems.delete(existing)


# ----------------------------------------------------------------------------------------------
# What a directory holds.


def read_info(output_dir: str) -> dict | None:
    """The directory's info.json, checked, or None when there is none."""
    path = records.join(output_dir, records.INFO_FILENAME)
    text = read_text(path)
    if text is None:
        return None
    try:
        info = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(
            f"{path} is not valid JSON ({e}); delete it or use another directory"
        ) from None
    try:
        return dict(records.check_info(info, path))
    except ValueError as e:  # another format version, a missing field: the user's directory
        raise InputError(f"--output_dir: {e}") from None


def completed_splits(output_dir: str) -> list[str]:
    text = read_text(records.join(output_dir, records.COMPLETED_FILENAME))
    return [] if text is None else records.parse_completed(text)


def temp_files(output_dir: str, split: str) -> list[str]:
    """Leftovers of interrupted writes of this split's files (shards, dead-letter file)."""
    return _glob(records.join(output_dir, f".{split}.tfrecord-*.tmp-*")) + _glob(
        records.join(output_dir, f".{records.failed_name(split)}.tmp-*")
    )


def split_files(output_dir: str, split: str) -> list[str]:
    """The files of one split that exist in the directory: shards, dead letters, temporaries."""
    shards = _glob(records.join(output_dir, records.shard_glob(split)))
    failed = records.join(output_dir, records.failed_name(split))
    return shards + ([failed] if FileSystems.exists(failed) else []) + temp_files(output_dir, split)


def prepare_output_dir(
    output_dir: str, split: str, cfg: DCTConfig, *, overwrite: bool
) -> dict | None:
    """Checks (and with overwrite, clears) the directory before a run; returns its info.json.

    Raises:
      OutputExistsError: the directory holds output of this split and overwrite is False.
      InputError: other splits in the directory were made with a different representation.
    """
    info = read_info(output_dir)
    found = split_files(output_dir, split)
    in_info = info is not None and split in info["splits"]
    done = split in completed_splits(output_dir)
    if (found or in_info or done) and not overwrite:
        what = found[:3] + (["its entry in info.json"] if in_info else [])
        raise OutputExistsError(
            f"{output_dir} already holds output for split {split!r} "
            f"({', '.join(what)}{', ...' if len(found) > 3 else ''}); pass --overwrite to "
            "replace it, or choose another --output_dir"
        )
    if info is not None:
        others = sorted(s for s in info["splits"] if s != split)
        if others and info["representation"] != cfg.to_dict():
            raise InputError(
                f"--output_dir={output_dir} holds splits {others} made with representation "
                f"{info['representation']}; this run asks for {cfg.to_dict()}. Use another "
                "--output_dir (one directory holds one representation)"
            )
    if overwrite:
        clear_split(output_dir, split)
        info = read_info(output_dir)
    return info


def clear_split(output_dir: str, split: str) -> None:
    """Removes a split: its COMPLETED line first, then its files, then its info.json entry."""
    marker = records.join(output_dir, records.COMPLETED_FILENAME)
    done = completed_splits(output_dir)
    if split in done:
        rest = [s for s in done if s != split]
        if rest:
            write_text(marker, "".join(f"{s}\n" for s in rest))
        else:
            _delete([marker])
    _delete(split_files(output_dir, split))
    info = read_info(output_dir)
    if info is not None and split in info["splits"]:
        del info["splits"][split]
        info_path = records.join(output_dir, records.INFO_FILENAME)
        if info["splits"]:
            write_text(info_path, dumps(info))
        else:
            _delete([info_path])


def label_names_of_other_splits(info: Mapping[str, Any] | None, split: str) -> list[str] | None:
    """The label names another split of the directory uses (so that a new split agrees)."""
    if not info:
        return None
    for name, entry in sorted(info["splits"].items()):
        if name != split and entry.get("label_names"):
            return list(entry["label_names"])
    return None


# ----------------------------------------------------------------------------------------------
# info.json.


def record_features_doc() -> dict:
    """How the record features encode the triples (copied into info.json for readers)."""
    return {
        "channel_runs": "int64 list: the channel of each run of equal consecutive channels",
        "channel_run_lengths": "int64 list: the number of triples in each run",
        "position_deltas": "int64 list: position minus the previous position in its run; the "
        "first position of a run as is",
        "values": "int64 list: values zigzag-coded (v >= 0 -> 2v, v < 0 -> -2v - 1)",
        "height": "int64: resized image height in pixels",
        "width": "int64: resized image width in pixels",
        "label": "int64: class index, -1 when none",
        "key": "bytes: the source (file path or TFDS id)",
        "format_version": f"int64: {records.FORMAT_VERSION}",
        "reader": "dct_gen.records.parse_example",
    }


def length_summary(length_counts: Mapping[int, int]) -> dict:
    """Sequence-length statistics for info.json from {length: number of sequences}.

    Percentiles use the nearest-rank rule (the smallest length L such that at least p% of the
    sequences have length <= L). `length_filter_kept_fraction[q]` is the expected fraction of
    sequences that the length-bias filter keeps (probability min(L / L_max, 1), docs/training.md)
    with L_max set to percentile q; `suggested_l_max` is the p99 length.
    """
    summary: dict[str, Any] = {"definition": LENGTH_DEFINITION}
    if not length_counts:
        summary.update(count=0, suggested_l_max=None)
        return summary
    lengths = np.array(sorted(int(k) for k in length_counts), dtype=np.int64)
    freq = np.array([int(length_counts[k]) for k in lengths], dtype=np.int64)
    n = int(freq.sum())
    cdf = np.cumsum(freq)
    percentile = lambda p: int(lengths[np.searchsorted(cdf, math.ceil(p / 100 * n))])
    points = {f"p{p}": percentile(p) for p in PERCENTILES}
    points["max"] = int(lengths[-1])
    width = max(1, -(-(int(lengths[-1]) + 1) // HISTOGRAM_BINS))
    hist = np.bincount(lengths // width, weights=freq, minlength=HISTOGRAM_BINS)
    kept = {
        name: round(float(np.sum(freq * np.minimum(lengths / value, 1.0)) / n), 6)
        for name, value in points.items()
    }
    summary.update(
        count=n,
        min=int(lengths[0]),
        mean=round(float(np.sum(lengths * freq) / n), 3),
        **points,
        histogram={
            "bin_width": width,
            "counts": [int(c) for c in hist],
            "note": "counts[i] sequences have length in [i * bin_width, (i + 1) * bin_width)",
        },
        suggested_l_max=points[f"p{SUGGESTED_L_MAX_PERCENTILE}"],
        length_filter_kept_fraction=kept,
    )
    return summary


def split_entry(
    *,
    source: Mapping[str, Any],
    num_shards: int,
    split: str,
    read: int,
    stats: Mapping[str, Any],
    failed_by_reason: Mapping[str, int],
    label_names: list[str] | None,
    max_failed_fraction: float,
    shards: list[Mapping[str, Any]] | None = None,
    skipped: Mapping[str, Any] | None = None,
) -> dict:
    """One split's entry in info.json's `splits` map.

    Args:
      shards: per shard, in shard order, {"file" (its name in the output folder), "records",
        "bytes"}: what readers check each shard against. None: not listed.
      skipped: the listing's paths passed over, as transforms.SkippedSummary gives them
        ({"counts": {reason: n}, "examples": [...]}); None or empty: nothing was.
    """
    failed_total = int(sum(failed_by_reason.values()))
    triples = int(stats["triples"])
    skipped = skipped or {}
    entry = {
        "source": dict(source),
        "num_shards": int(num_shards),
        "shard_pattern": f"{split}.tfrecord-*-of-{int(num_shards):05d}",
        "failed_file": records.failed_name(split),
        "label_names": label_names,
        "num_classes": len(label_names) if label_names else 0,
        "counts": {
            "read": int(read),
            "written": int(stats["written"]),
            "failed": {k: int(v) for k, v in sorted(failed_by_reason.items())},
            "failed_total": failed_total,
            "failed_fraction": round(failed_total / read, 6) if read else 0.0,
            "clipped_coefficients": int(stats["clipped"]),
            "images_with_clipping": int(stats["images_with_clipping"]),
            "triples": triples,
            "record_bytes": int(stats["record_bytes"]),
            "bytes_per_triple": round(stats["record_bytes"] / triples, 4) if triples else None,
            "skipped": {k: int(v) for k, v in sorted(skipped.get("counts", {}).items())},
        },
        "max_failed_fraction": float(max_failed_fraction),
        "lengths": length_summary(stats["lengths"]),
    }
    if skipped.get("examples"):
        entry["skipped_examples"] = [dict(e) for e in skipped["examples"]]
    if shards is not None:
        entry["shards"] = [
            {"file": str(s["file"]), "records": int(s["records"]), "bytes": int(s["bytes"])}
            for s in shards
        ]
    return entry


def failed_fraction_message(entry: Mapping[str, Any], output_dir: str, split: str) -> str | None:
    """Why a split's entry fails the job (no input, or too many failures), or None if it passes."""
    counts = entry["counts"]
    read, failed = counts["read"], counts["failed_total"]
    if read == 0:
        skipped = counts.get("skipped") or {}
        passed = f" (it passed over {skipped_text(skipped)})" if skipped else ""
        return f"the source {entry['source']} yielded no inputs{passed}; nothing was written"
    limit = entry["max_failed_fraction"]
    if failed <= limit * read:
        return None
    return (
        f"{failed} of {read} inputs failed ({failed / read:.2%}), more than "
        f"--max_failed_fraction={limit:g}; by reason: {counts['failed']}. The failures are "
        f"listed in {records.join(output_dir, records.failed_name(split))}; info.json was "
        "written, COMPLETED was not"
    )


def skipped_text(skipped: Mapping[str, int]) -> str:
    """{"hidden": 2, "special_file": 1} -> '2 hidden files, 1 special file'."""
    return ", ".join(
        f"{n} {reason.replace('_file', '').replace('_', ' ')} file{'s' if n != 1 else ''}"
        for reason, n in sorted(skipped.items())
    )


def write_split_info(output_dir: str, cfg: DCTConfig, split: str, entry: Mapping) -> dict:
    """Merges one split's entry into info.json (re-read now, so other splits are kept)."""
    info = read_info(output_dir) or {
        "format_version": records.FORMAT_VERSION,
        "representation": cfg.to_dict(),
        "record_features": record_features_doc(),
        "splits": {},
    }
    if info["representation"] != cfg.to_dict():
        raise ValueError(
            f"{output_dir}/info.json now holds representation {info['representation']}, not "
            f"{cfg.to_dict()}: another job wrote to this directory meanwhile"
        )
    info["splits"][split] = dict(entry)
    text = dumps(info)
    write_text(records.join(output_dir, records.INFO_FILENAME), text)
    return info


def mark_completed(output_dir: str, split: str) -> None:
    """Adds the split to COMPLETED (rewritten whole, last of all the job's writes)."""
    done = completed_splits(output_dir)
    if split not in done:
        done.append(split)
    text = "".join(f"{s}\n" for s in done)
    write_text(records.join(output_dir, records.COMPLETED_FILENAME), text)


def remove_temp_files(output_dir: str, split: str) -> None:
    _delete(temp_files(output_dir, split))
