"""The sparse DCT codec on files: encode images to .npz triples, decode them, draw progressive
strips (paper Figure 2g) and measure the paper's Figure 3 (dense vs sparse DCT vs JPEG size).

`python -m dct_gen.codec` is the command line over these functions; `dct_gen.demo` calls them
directly. Each function that writes also prints what it wrote (one JSON line per image, or the
statistics table), as the command line shows it.

Resolution: with `resolution=None` every image keeps its own size. Its long side is rounded up
to a multiple of 2 * block_size (`DCTConfig` accepts no other canvas), so an image is resized
only when its long side is not already such a multiple, and then by fewer than 2 * block_size
pixels. An integer resolution resizes every image so its long side is that (the records' rule).

Bits per subpixel are bits divided by 3 * height * width of the resized image. Dense and sparse
bits are `representation.dense_bits` and `representation.sparse_bits` (the stop token
included); JPEG bits are the size of the whole file Pillow writes (headers included).

Layer 0: numpy, Pillow and the representation; no TensorFlow. The statistics plot draws with
matplotlib (`dct_gen.plots`), imported only when `run_stats` draws it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from dct_gen import images, pictures, sequence_file
from dct_gen import representation as rep
from dct_gen.errors import InputError

DEFAULT_QUALITIES = (10, 25, 50, 75, 90, 95)
DEFAULT_OUT = os.path.join("runs", "codec")
DEFAULTS = rep.DCTConfig()  # the representation flags' defaults


class CodecError(InputError):
    """A problem with an input file or an output path; the message names it."""


# ----------------------------------------------------------------------------------------------
# Inputs.


def read_image(path: str) -> np.ndarray:
    """Reads an image file as uint8 HxWx3 RGB with `dct_gen.images` (EXIF orientation applied,
    16-bit scaled, transparency composited on white, grayscale replicated to RGB).

    Raises:
      CodecError: the path is missing, a directory, or not an image (the message names it).
    """
    if os.path.isdir(path):
        raise CodecError(f"{path}: is a directory, expected an image file")
    if not os.path.exists(path):
        raise CodecError(f"{path}: no such file")
    try:
        return images.read_image(path)
    except images.ImageError as e:
        raise CodecError(f"cannot read as an image ({e.reason}): {e}") from e


def is_image_name(name: str) -> bool:
    """Whether Pillow can open files with this name's extension (write-only formats excluded)."""
    fmt = Image.registered_extensions().get(os.path.splitext(name)[1].lower())
    return fmt is not None and fmt in Image.OPEN


def find_images(paths: Sequence[str]) -> list[str]:
    """Expands directories (not recursively) into their image files, sorted; keeps files.

    Raises:
      CodecError: a path does not exist, or a directory holds no image files.
    """
    found = []
    for path in paths:
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if is_image_name(n))
            files = [os.path.join(path, n) for n in names]
            files = [f for f in files if os.path.isfile(f)]
            if not files:
                raise CodecError(f"{path}: directory holds no image files")
            found.extend(files)
        elif os.path.exists(path):
            found.append(path)
        else:
            raise CodecError(f"{path}: no such file or directory")
    return found


def native_resolution(height: int, width: int, block_size: int) -> int:
    """The default canvas: the long side rounded up to a multiple of 2 * block_size."""
    step = 2 * block_size
    return max(step, -(-max(height, width) // step) * step)


def make_config(
    height: int,
    width: int,
    *,
    block_size: int = DEFAULTS.block_size,
    quality: int = DEFAULTS.quality,
    resolution: int | None = None,
    clip: int = DEFAULTS.clip,
    ordering: str = DEFAULTS.ordering,
    interval: int = DEFAULTS.interval,
) -> rep.DCTConfig:
    """The DCTConfig for an image of this size; resolution None keeps the image's own size.

    Raises:
      ValueError: DCTConfig refuses the fields (e.g. a resolution not a multiple of 2B).
    """
    if resolution is None:
        resolution = native_resolution(height, width, block_size)
    return rep.DCTConfig(
        block_size=block_size,
        quality=quality,
        resolution=resolution,
        clip=clip,
        ordering=ordering,
        interval=interval,
    )


def _make_dir(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise CodecError(f"--out {path}: cannot create the directory ({e})") from e


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB over all subpixels; inf when the images are equal."""
    mse = np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def bits_per_subpixel(bits: float, height: int, width: int) -> float:
    """Bits divided by the image's 3 * height * width subpixels."""
    return bits / rep.num_subpixels(height, width)


# ----------------------------------------------------------------------------------------------
# encode / decode.


def encode_image(image: np.ndarray, cfg: rep.DCTConfig) -> tuple[rep.DCTSequence, dict[str, Any]]:
    """Encodes one image; returns the sequence and its JSON record (sizes, PSNR, clipped)."""
    resized = rep.resize(rep.as_rgb(image), cfg)
    seq = rep.encode(resized, cfg)
    restored = rep.decode(seq, cfg)
    quality_db = psnr(resized, restored)
    h, w = seq.height, seq.width
    record = {
        "height": h,
        "width": w,
        "resolution": cfg.resolution,
        "length": len(seq),
        "dense_bpsp": round(bits_per_subpixel(rep.dense_bits(h, w, cfg), h, w), 5),
        "sparse_bpsp": round(bits_per_subpixel(rep.sparse_bits(len(seq), cfg), h, w), 5),
        "psnr": None if math.isinf(quality_db) else round(quality_db, 3),
        "clipped": seq.num_clipped,
    }
    return seq, record


def npz_paths(paths: Sequence[str], out_dir: str) -> list[str]:
    """`out_dir/<stem>.npz` for each input.

    Raises:
      CodecError: two inputs share a stem (checked before anything is written).
    """
    outs = [os.path.join(out_dir, os.path.splitext(os.path.basename(p))[0] + ".npz") for p in paths]
    seen: dict[str, str] = {}
    for src, out in zip(paths, outs, strict=True):
        if out in seen:
            raise CodecError(
                f"{seen[out]} and {src} would both write {out}; encode them into different --out"
            )
        seen[out] = src
    return outs


def encode_files(paths: Sequence[str], out_dir: str, **config: Any) -> list[dict[str, Any]]:
    """Encodes image files to `out_dir/<stem>.npz`; returns one record per image (and prints it).

    Args:
      paths: image files or directories of images.
      out_dir: where the .npz files go (created if needed).
      **config: DCTConfig fields; resolution None keeps each image's own size.

    Raises:
      CodecError: a missing or unreadable input, clashing stems, an output that cannot be
        written, or a config the image does not fit (the message names the file).
    """
    files = find_images(paths)
    outs = npz_paths(files, out_dir)
    _make_dir(out_dir)
    records = []
    for path, out in zip(files, outs, strict=True):
        image = read_image(path)
        try:
            cfg = make_config(*image.shape[:2], **config)
            seq, record = encode_image(image, cfg)
        except ValueError as e:
            raise CodecError(f"{path}: {e}") from e
        sequence_file.save_npz(out, seq, cfg, source=os.path.basename(path))
        record = {"image": path, "out": out, **record}
        print(json.dumps(record), flush=True)
        records.append(record)
    return records


def decode_file(path: str, out: str | None = None) -> dict[str, Any]:
    """Decodes a .npz to a PNG (default: `<stem>.decoded.png` beside it); prints a JSON line.

    Raises:
      InputError: the .npz is missing or invalid (`sequence_file.load_npz`), or the PNG cannot
        be written.
    """
    seq, cfg = sequence_file.load_npz(path)
    if out is None:
        out = os.path.splitext(path)[0] + ".decoded.png"
    try:
        image = rep.decode(seq, cfg)
    except ValueError as e:
        raise CodecError(f"{path}: {e}") from e
    pictures.save_png(image, out)
    record = {"npz": path, "out": out, "height": seq.height, "width": seq.width, "length": len(seq)}
    print(json.dumps(record), flush=True)
    return record


# ----------------------------------------------------------------------------------------------
# progressive (Figure 2g).


def progressive_file(
    path: str,
    out: str | None = None,
    *,
    steps: int,
    spacing: str,
    panel_size: int,
    **config: Any,
) -> dict[str, Any]:
    """Decoded prefixes of one image's sequence side by side (`pictures.progressive_strip`).

    Args:
      path: an image file (encoded with **config) or a .npz from `encode_files` (whose own
        config is used; **config is then ignored).
      out: the PNG to write; None: `DEFAULT_OUT/<stem>.progressive.png`.
      steps, spacing, panel_size: see `pictures.progressive_strip`.
      **config: DCTConfig fields for an image file; resolution None keeps its own size.

    Returns:
      The JSON record printed: image, out, length, points (prefix lengths), ordering and
      strip_size.
    """
    if path.lower().endswith(".npz"):
        seq, cfg = sequence_file.load_npz(path)
    else:
        image = read_image(path)
        try:
            cfg = make_config(*image.shape[:2], **config)
            seq = rep.encode(image, cfg)
        except ValueError as e:
            raise CodecError(f"{path}: {e}") from e
    if out is None:
        stem = os.path.splitext(os.path.basename(path))[0]
        out = os.path.join(DEFAULT_OUT, f"{stem}.progressive.png")
    strip, points = pictures.progressive_strip(
        seq, cfg, steps=steps, spacing=spacing, panel_size=panel_size
    )
    pictures.save_png(strip, out)
    record = {
        "image": path,
        "out": out,
        "length": len(seq),
        "points": points,
        "ordering": cfg.ordering,
        "strip_size": list(strip.size),
    }
    print(json.dumps(record), flush=True)
    return record


# ----------------------------------------------------------------------------------------------
# stats (Figure 3).


def jpeg_bits(image: np.ndarray, quality: int) -> int:
    """Bits of Pillow's optimized baseline JPEG (4:2:0) of an RGB image: the whole file."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality, optimize=True, subsampling=2)
    return 8 * buf.tell()


def image_stats(image: np.ndarray, qualities: Sequence[int], **config: Any) -> list[dict]:
    """Figure 3 for one image: per quality, dense, sparse and JPEG bits per subpixel.

    The image is resized once (it depends on block size and resolution, not on quality); JPEG
    compresses exactly the pixels the DCT codec encodes.
    """
    cfg = make_config(*image.shape[:2], **config)
    resized = rep.resize(rep.as_rgb(image), cfg)
    h, w = resized.shape[:2]
    rows = []
    for q in qualities:
        cfg_q = make_config(h, w, **{**config, "quality": q, "resolution": cfg.resolution})
        seq = rep.encode(resized, cfg_q)
        rows.append(
            {
                "quality": q,
                "height": h,
                "width": w,
                "length": len(seq),
                "clipped": seq.num_clipped,
                "dense_bpsp": bits_per_subpixel(rep.dense_bits(h, w, cfg_q), h, w),
                "sparse_bpsp": bits_per_subpixel(rep.sparse_bits(len(seq), cfg_q), h, w),
                "jpeg_bpsp": bits_per_subpixel(jpeg_bits(resized, q), h, w),
            }
        )
    return rows


def summarize(rows: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Averages per-image rows over images, one summary row per quality (ascending)."""
    out = []
    for q in sorted({r["quality"] for r in rows}):
        sel = [r for r in rows if r["quality"] == q]

        def mean(key: str, sel: list = sel) -> float:
            return float(np.mean([r[key] for r in sel]))

        out.append(
            {
                "quality": q,
                "images": len(sel),
                "dense_bpsp": mean("dense_bpsp"),
                "sparse_bpsp": mean("sparse_bpsp"),
                "jpeg_bpsp": mean("jpeg_bpsp"),
                "sparse_over_jpeg": mean("sparse_bpsp") / mean("jpeg_bpsp"),
                "mean_length": mean("length"),
            }
        )
    return out


def format_table(summary: Sequence[Mapping[str, Any]]) -> str:
    """The summary as a Markdown table."""
    head = (
        "| quality | images | dense bpsp | sparse bpsp | JPEG bpsp | sparse / JPEG | mean length |"
    )
    lines = [head, "|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summary:
        lines.append(
            f"| {s['quality']} | {s['images']} | {s['dense_bpsp']:.3f} | {s['sparse_bpsp']:.3f} "
            f"| {s['jpeg_bpsp']:.3f} | {s['sparse_over_jpeg']:.2f} | {s['mean_length']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def _write_csv(path: str, records: Sequence[Mapping[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)


def run_stats(
    paths: Sequence[str],
    out_dir: str,
    *,
    qualities: Sequence[int] = DEFAULT_QUALITIES,
    **config: Any,
) -> dict[str, Any]:
    """Figure 3 over image files; writes the table, the CSV files and the plot, and prints
    the table and the paths written.

    Writes `stats.md` (the table), `stats.csv` (the same numbers), `stats_images.csv` (one row per
    image and quality) and `stats.png` (the plot, `plots.stats_plot`) under `out_dir`.

    Args:
      paths: image files or directories of images.
      out_dir: the output directory (created if needed).
      qualities: IJG qualities, each in [1, 100].
      **config: DCTConfig fields other than quality; resolution None keeps each image's size.

    Returns:
      {"summary": [...], "rows": [...], "files": {name: path}}.

    Raises:
      CodecError: no quality, a missing or unreadable input, or an unwritable output.
    """
    if not qualities:
        raise CodecError("--qualities: no quality given")
    files = find_images(paths)
    rows = []
    for path in files:
        image = read_image(path)
        try:
            rows.extend({"image": path, **row} for row in image_stats(image, qualities, **config))
        except ValueError as e:
            raise CodecError(f"{path}: {e}") from e
    summary = summarize(rows)
    _make_dir(out_dir)
    written = {
        "table": os.path.join(out_dir, "stats.md"),
        "csv": os.path.join(out_dir, "stats.csv"),
        "images_csv": os.path.join(out_dir, "stats_images.csv"),
        "plot": os.path.join(out_dir, "stats.png"),
    }
    table = format_table(summary)
    try:
        with open(written["table"], "w") as f:
            f.write(table)
        _write_csv(written["csv"], summary)
        _write_csv(written["images_csv"], rows)
    except OSError as e:
        raise CodecError(f"--out {out_dir}: cannot write ({e})") from e

    # matplotlib takes seconds to import: only this function needs it, not every codec command.
    from dct_gen import plots

    block = config.get("block_size", DEFAULTS.block_size)
    res = config.get("resolution")
    res_text = "each image's own size" if res is None else f"long side {res}"
    title = f"Bits per subpixel, {len(files)} images, B={block}, {res_text}"
    pictures.save_png(plots.stats_plot(summary, title), written["plot"])
    print(table, end="")
    for path in written.values():
        print(f"wrote {path}")
    return {"summary": summary, "rows": rows, "files": written}
