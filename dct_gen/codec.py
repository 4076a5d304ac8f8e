"""Command line for the sparse DCT codec: encode, decode, progressive strips, Figure 3 statistics.

    python -m dct_gen.codec encode IMAGE... [--out DIR]       .npz triples, one JSON line per image
    python -m dct_gen.codec decode FILE.npz [--out IMAGE.png] triples back to an image
    python -m dct_gen.codec progressive IMAGE [--steps N]     decoded prefixes as a strip (Fig. 2g)
    python -m dct_gen.codec stats IMAGES_OR_DIR...            dense vs sparse vs JPEG size (Fig. 3)

Resolution: by default every image keeps its own size. Its long side is rounded up to a multiple
of 2 * block_size (`DCTConfig` accepts no other canvas), so an image is resized only when its
long side is not already such a multiple, and then by fewer than 2 * block_size pixels.
`--resolution R` resizes every image so its long side is R instead (the records' rule).

Bits per subpixel follow DESIGN.md: bits divided by 3 * height * width of the resized image.
Dense and sparse bits are `representation.dense_bits` and `representation.sparse_bits` (the stop
token included); JPEG bits are the size of the whole file Pillow writes (headers included).

This module imports numpy, Pillow and the representation only: no TensorFlow.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from dct_gen import images, pictures, sequence_file
from dct_gen import representation as rep
from dct_gen.errors import InputError

DEFAULT_QUALITIES = (10, 25, 50, 75, 90, 95)
DEFAULT_OUT = os.path.join("runs", "codec")
_DEFAULTS = rep.DCTConfig()


class CodecError(InputError):
    """A problem with an input file or a flag; the message names it."""


class UsageError(CodecError):
    """A bad command line (exit status 2)."""


# ----------------------------------------------------------------------------------------------
# Inputs.


def read_image(path: str) -> np.ndarray:
    """Reads an image file as uint8 HxWx3 RGB with `dct_gen.images` (EXIF orientation applied,
    16-bit scaled, transparency composited on white, grayscale replicated to RGB)."""
    if os.path.isdir(path):
        raise CodecError(f"{path}: is a directory, expected an image file")
    if not os.path.exists(path):
        raise CodecError(f"{path}: no such file")
    try:
        return images.read_image(path)
    except images.ImageError as e:
        raise CodecError(f"cannot read as an image ({e.reason}): {e}") from e


def _is_image_name(name: str) -> bool:
    """Whether Pillow can open files with this name's extension (write-only formats excluded)."""
    fmt = Image.registered_extensions().get(os.path.splitext(name)[1].lower())
    return fmt is not None and fmt in Image.OPEN


def find_images(paths: Sequence[str]) -> list[str]:
    """Expands directories (not recursively) into their image files, sorted; keeps files."""
    found = []
    for path in paths:
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if _is_image_name(n))
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
    block_size: int = _DEFAULTS.block_size,
    quality: int = _DEFAULTS.quality,
    resolution: int | None = None,
    clip: int = _DEFAULTS.clip,
    ordering: str = _DEFAULTS.ordering,
    interval: int = _DEFAULTS.interval,
) -> rep.DCTConfig:
    """The DCTConfig for an image of this size; resolution None keeps the image's own size."""
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
    return bits / rep.num_subpixels(height, width)


# ----------------------------------------------------------------------------------------------
# encode / decode.


def encode_image(image: np.ndarray, cfg: rep.DCTConfig) -> tuple[rep.DCTSequence, dict]:
    """Encodes one image; returns the sequence and its JSON record (sizes, PSNR, clipped)."""
    resized = rep.resize(rep.as_rgb(image), cfg)
    seq = rep.encode(resized, cfg)
    restored = rep.decode(seq, cfg)
    quality_db = psnr(resized, restored)
    record = {
        "height": seq.height,
        "width": seq.width,
        "resolution": cfg.resolution,
        "length": len(seq),
        "dense_bpsp": round(
            bits_per_subpixel(rep.dense_bits(seq.height, seq.width, cfg), seq.height, seq.width), 5
        ),
        "sparse_bpsp": round(
            bits_per_subpixel(rep.sparse_bits(len(seq), cfg), seq.height, seq.width), 5
        ),
        "psnr": None if math.isinf(quality_db) else round(quality_db, 3),
        "clipped": seq.num_clipped,
    }
    return seq, record


def _npz_names(paths: Sequence[str], out_dir: str) -> list[str]:
    outs = [os.path.join(out_dir, os.path.splitext(os.path.basename(p))[0] + ".npz") for p in paths]
    seen: dict[str, str] = {}
    for src, out in zip(paths, outs, strict=True):
        if out in seen:
            raise CodecError(
                f"{seen[out]} and {src} would both write {out}; encode them into different --out"
            )
        seen[out] = src
    return outs


def encode_files(paths: Sequence[str], out_dir: str, **config) -> list[dict]:
    """Encodes image files to `out_dir/<stem>.npz`; returns one record per image (and prints it).

    Args:
      paths: image files or directories of images.
      out_dir: where the .npz files go (created if needed).
      **config: DCTConfig fields; resolution None keeps each image's own size.
    """
    files = find_images(paths)
    outs = _npz_names(files, out_dir)
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


def decode_file(path: str, out: str | None = None) -> dict:
    """Decodes a .npz to a PNG (default: `<stem>.decoded.png` beside it); prints a JSON line."""
    seq, cfg = sequence_file.load_npz(path)
    if out is None:
        out = os.path.splitext(path)[0] + ".decoded.png"
    try:
        image = rep.decode(seq, cfg)
    except ValueError as e:
        raise CodecError(f"{path}: {e}") from e
    pictures.save_png(Image.fromarray(image), out)
    record = {"npz": path, "out": out, "height": seq.height, "width": seq.width, "length": len(seq)}
    print(json.dumps(record), flush=True)
    return record


# ----------------------------------------------------------------------------------------------
# progressive (Figure 2g).


def progressive_file(
    path: str, out: str | None = None, *, steps: int, spacing: str, panel_size: int, **config
) -> dict:
    """`progressive` for an image file (encoded with **config) or an encoded .npz."""
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


def image_stats(image: np.ndarray, qualities: Sequence[int], **config) -> list[dict]:
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


def summarize(rows: Sequence[dict]) -> list[dict]:
    """Averages per-image rows over images, one summary row per quality (ascending)."""
    out = []
    for q in sorted({r["quality"] for r in rows}):
        sel = [r for r in rows if r["quality"] == q]
        mean = lambda key, sel=sel: float(np.mean([r[key] for r in sel]))
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


def format_table(summary: Sequence[dict]) -> str:
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


def _nice_step(span: float, target_ticks: int = 6) -> float:
    raw = span / max(target_ticks, 1)
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


_SERIES = (
    ("dense_bpsp", "dense DCT", (31, 119, 180)),
    ("sparse_bpsp", "sparse DCT", (214, 39, 40)),
    ("jpeg_bpsp", "JPEG (Pillow, optimized)", (44, 160, 44)),
)


def label_axes(
    img: Image.Image,
    font,
    box: tuple[float, float, float, float],
    xlabel: str,
    ylabel: str,
    title: str,
    title_y: int = 14,
) -> None:
    """Writes a plot's x label (centred below), y label (rotated, left) and title (centred,
    at title_y); box is the plot area (x0, x1, y0 bottom, y1 top)."""
    x0, x1, y0, y1 = box
    draw = ImageDraw.Draw(img)
    tw = draw.textlength(xlabel, font=font)
    draw.text(((x0 + x1 - tw) / 2, img.size[1] - 30), xlabel, fill="black", font=font)
    bbox = font.getbbox(ylabel)
    tmp = Image.new("RGB", (bbox[2] + 4, bbox[3] + 4), "white")
    ImageDraw.Draw(tmp).text((2, 2), ylabel, fill="black", font=font)
    tmp = tmp.rotate(90, expand=True)
    img.paste(tmp, (6, int((y0 + y1 - tmp.size[1]) // 2)))
    tw = draw.textlength(title, font=font)
    draw.text(((x0 + x1 - tw) / 2, title_y), title, fill="black", font=font)


def plot_stats(
    summary: Sequence[dict], title: str, size: tuple[int, int] = (760, 480)
) -> Image.Image:
    """Figure 3 as a line chart: bits per subpixel against quality, one line per representation."""
    width, height = size
    left, right, top, bottom = 72, 24, 76, 64
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font, small = pictures.font(15), pictures.font(13)
    x0, x1, y0, y1 = left, width - right, height - bottom, top  # plot box; y grows downwards
    ymax_data = max([s[k] for s in summary for k, _, _ in _SERIES] + [1e-3])
    ystep = _nice_step(ymax_data * 1.05)
    ymax = ystep * math.ceil(ymax_data * 1.05 / ystep)
    px = lambda q: x0 + (x1 - x0) * q / 100.0
    py = lambda v: y0 - (y0 - y1) * v / ymax

    for i in range(int(round(ymax / ystep)) + 1):  # horizontal grid and y ticks
        v = i * ystep
        draw.line([(x0, py(v)), (x1, py(v))], fill=(225, 225, 225))
        label = f"{v:g}"
        tw = draw.textlength(label, font=small)
        draw.text((x0 - 8 - tw, py(v) - 8), label, fill="black", font=small)
    for q in range(0, 101, 10):  # vertical grid and x ticks
        draw.line([(px(q), y0), (px(q), y1)], fill=(240, 240, 240))
        draw.line([(px(q), y0), (px(q), y0 + 5)], fill="black")
        tw = draw.textlength(str(q), font=small)
        draw.text((px(q) - tw / 2, y0 + 8), str(q), fill="black", font=small)
    draw.rectangle([x0, y1, x1, y0], outline="black")

    label_axes(
        img,
        font,
        (x0, x1, y0, y1),
        "quality (IJG scale, same for the DCT codec and JPEG)",
        "bits per image-subpixel",
        title,
        title_y=14,
    )

    for key, _, color in _SERIES:
        pts = [(px(s["quality"]), py(s[key])) for s in summary]
        if len(pts) > 1:
            draw.line(pts, fill=color, width=3, joint="curve")
        for x, y in pts:
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=color, outline="white")

    # Legend: one row between the title and the plot box, so it never hides a point.
    entries = [(name, color, draw.textlength(name, font=small)) for _, name, color in _SERIES]
    total = sum(40 + tw for _, _, tw in entries) + 24 * (len(entries) - 1)
    lx, ly = (x0 + x1 - total) / 2, 50
    for name, color, tw in entries:
        draw.line([(lx, ly), (lx + 30, ly)], fill=color, width=3)
        draw.ellipse([lx + 11, ly - 4, lx + 19, ly + 4], fill=color, outline="white")
        draw.text((lx + 38, ly - 8), name, fill="black", font=small)
        lx += 40 + tw + 24
    return img


def run_stats(
    paths: Sequence[str],
    out_dir: str,
    *,
    qualities: Sequence[int] = DEFAULT_QUALITIES,
    **config,
) -> dict:
    """`stats`: Figure 3 over image files; writes the table, the per-image CSV and the plot.

    Writes `stats.md` (the table), `stats.csv` (the same numbers), `stats_images.csv` (one row per
    image and quality) and `stats.png` (the plot) under `out_dir`.

    Returns:
      {"summary": [...], "rows": [...], "files": {name: path}}.
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
    with open(written["table"], "w") as f:
        f.write(table)
    for key, records in (("csv", summary), ("images_csv", rows)):
        with open(written[key], "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
    b = config.get("block_size", _DEFAULTS.block_size)
    res = config.get("resolution")
    res_text = "each image's own size" if res is None else f"long side {res}"
    title = f"Bits per subpixel, {len(files)} images, B={b}, {res_text}"
    pictures.save_png(plot_stats(summary, title), written["plot"])
    print(table, end="")
    for path in written.values():
        print(f"wrote {path}")
    return {"summary": summary, "rows": rows, "files": written}


# ----------------------------------------------------------------------------------------------
# Command line.


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # raise instead of exiting, so main() can be called in-process
        raise UsageError(f"{message}\n{self.format_usage()}".rstrip())


def _quality(text: str) -> int:
    try:
        q = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= q <= 100:
        raise argparse.ArgumentTypeError(f"{q} is outside [1, 100]")
    return q


def _qualities(text: str) -> list[int]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list such as 10,50,90")
    qualities = []
    for item in items:
        try:
            qualities.append(_quality(item))
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None
    return sorted(set(qualities))


def _resolution(text: str) -> int | None:
    if text == "native":
        return None
    try:
        r = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 'native' or an integer") from None
    if r <= 0:
        raise argparse.ArgumentTypeError(f"{r} must be positive")
    return r


def _int_at_least(minimum: int):
    """An argparse type: an integer no smaller than `minimum`."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"{n} must be >= {minimum}")
        return n

    return parse


_positive = _int_at_least(1)
_non_negative = _int_at_least(0)


def _add_config_flags(p: argparse.ArgumentParser, quality: bool = True) -> None:
    p.add_argument(
        "--block_size",
        type=int,
        choices=rep.BLOCK_SIZES,
        default=_DEFAULTS.block_size,
        help="DCT block side B (default %(default)s)",
    )
    if quality:
        p.add_argument(
            "--quality",
            type=_quality,
            default=_DEFAULTS.quality,
            help="IJG quality in [1, 100] (default %(default)s)",
        )
    p.add_argument(
        "--resolution",
        type=_resolution,
        default=None,
        help="long side in pixels, a multiple of 2*B; 'native' (default) keeps each "
        "image's own long side, rounded up to a multiple of 2*B",
    )
    p.add_argument(
        "--clip",
        type=_positive,
        default=_DEFAULTS.clip,
        help="quantized values are clipped to [-clip, clip] (default %(default)s)",
    )
    p.add_argument(
        "--ordering",
        choices=rep.ORDERINGS,
        default=_DEFAULTS.ordering,
        help="triple order (default %(default)s)",
    )
    p.add_argument(
        "--interval",
        type=_positive,
        default=_DEFAULTS.interval,
        help="'interleaved': chroma zigzag index i follows luma index interval*i "
        "(default %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m dct_gen.codec",
        description="Sparse DCT codec (DCTransformer, section 2): images <-> (channel, position, "
        "value) triples.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("encode", help="images -> .npz triples; one JSON line per image")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or directories")
    _add_config_flags(p)
    p.add_argument("--out", default=DEFAULT_OUT, help="output directory (default %(default)s)")

    p = sub.add_parser("decode", help=".npz triples -> PNG")
    p.add_argument("npz", metavar="FILE.npz")
    p.add_argument("--out", default=None, help="PNG path (default: FILE.decoded.png)")

    p = sub.add_parser("progressive", help="decoded prefixes side by side (Figure 2g)")
    p.add_argument(
        "image",
        metavar="IMAGE",
        help="an image file, or a .npz from encode (whose own config is then used)",
    )
    p.add_argument("--steps", type=_positive, default=8, help="panels (default %(default)s)")
    p.add_argument(
        "--spacing",
        choices=("geometric", "linear"),
        default="geometric",
        help="prefix lengths: halving from the end, or evenly (default %(default)s)",
    )
    p.add_argument(
        "--panel_size",
        type=_non_negative,
        default=256,
        help="long side of each panel in pixels; 0 keeps the decoded size (default %(default)s)",
    )
    _add_config_flags(p)
    p.add_argument(
        "--out", default=None, help=f"PNG path (default: {DEFAULT_OUT}/IMAGE_STEM.progressive.png)"
    )

    p = sub.add_parser("stats", help="dense vs sparse vs JPEG bits per subpixel (Figure 3)")
    p.add_argument("images", nargs="+", metavar="IMAGES_OR_DIR", help="image files or directories")
    p.add_argument(
        "--qualities",
        type=_qualities,
        default=list(DEFAULT_QUALITIES),
        help="comma-separated qualities (default 10,25,50,75,90,95)",
    )
    _add_config_flags(p, quality=False)
    p.add_argument(
        "--out",
        default=os.path.join(DEFAULT_OUT, "stats"),
        help="output directory (default %(default)s)",
    )
    return parser


def _config_flags(args: argparse.Namespace) -> dict:
    config = {k: getattr(args, k) for k in sequence_file.CONFIG_KEYS if hasattr(args, k)}
    res, b = config["resolution"], config["block_size"]
    if res is not None and res % (2 * b):
        raise UsageError(f"--resolution {res}: must be a multiple of 2 * --block_size = {2 * b}")
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0 ok, 1 bad input file, 2 bad flags)."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        parser.print_help(sys.stderr)
        return 2
    try:
        args = parser.parse_args(argv)
        if args.command == "encode":
            encode_files(args.images, args.out, **_config_flags(args))
        elif args.command == "decode":
            decode_file(args.npz, args.out)
        elif args.command == "progressive":
            progressive_file(
                args.image,
                args.out,
                steps=args.steps,
                spacing=args.spacing,
                panel_size=args.panel_size,
                **_config_flags(args),
            )
        elif args.command == "stats":
            run_stats(args.images, args.out, qualities=args.qualities, **_config_flags(args))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
