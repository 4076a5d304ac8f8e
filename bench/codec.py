"""Single-thread throughput of the sparse DCT codec beside Pillow's libjpeg-turbo, on real photos.

    python bench/codec.py [--quality 75] [--block_size 8] [--repeats 5]   (or: make bench)

Times, in megapixels per second of image:
- encode: `representation.encode` (colour transform, chroma downsampling, DCT, quantization,
  triples) of a uint8 array, numpy throughout;
- encode XLA: `dct_ops.encode`, the same with the colour/DCT/quantization front end compiled by
  XLA (TensorFlow on one thread; compilation happens in the warm-up call);
- decode: `representation.decode` of those triples back to a uint8 array;
- JPEG encode: Pillow `save(format="JPEG", quality=q, subsampling=2)` (4:2:0, libjpeg-turbo's
  default Huffman tables, `optimize=False`) of the same array, into memory;
- JPEG decode: Pillow open + load of those bytes, to a uint8 array.

Every image is cropped to multiples of 2 * block_size pixels and encoded with resolution equal to
its long side, so neither resizing nor padding is timed, and JPEG sees exactly the same pixels.
Each image's time per operation is the median of `--repeats` calls after a warm-up call; the
overall figure is total pixels over the sum of those times.

Threads: the BLAS/OpenMP thread variables are set to 1 before numpy is imported and the process
is pinned to one CPU (Linux), so both codecs run on one core.
"""

import os

_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
for _var in _THREAD_VARS:  # must precede the numpy import: BLAS reads these once, when it loads
    os.environ[_var] = "1"

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import PIL  # noqa: E402
from PIL import Image, features  # noqa: E402

from dct_gen import photos  # noqa: E402
from dct_gen import representation as rep  # noqa: E402

TARGET_ENCODE_RATIO = 0.25


def _pin_to_one_cpu() -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity on this OS)"
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu}"


def _blas_threads() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed, not checked"
    pools = threadpool_info()
    if not pools:
        return "no BLAS/OpenMP pools loaded"
    return ", ".join(f"{p['internal_api']}={p['num_threads']}" for p in pools)


def load_images(block_size: int, max_images: int | None) -> list[tuple[str, np.ndarray]]:
    """The bundled colour photos, each cropped to multiples of 2 * block_size."""
    step = 2 * block_size
    images = []
    for path in photos.color_photo_paths()[:max_images]:
        x = photos.load_rgb(path)
        h, w = (x.shape[0] // step) * step, (x.shape[1] // step) * step
        images.append((os.path.basename(path), np.ascontiguousarray(x[:h, :w])))
    return images


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of one call of fn, over `repeats` timed calls after a warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


OPS = ("encode", "encode_xla", "decode", "jpeg_encode", "jpeg_decode")


def run(
    *, quality: int = 75, block_size: int = 8, repeats: int = 5, max_images: int | None = None
) -> dict:
    """Times the four operations on every image; returns megapixels per second and the ratios.

    Overall throughput is total pixels over the sum of per-image median times.
    """
    images = load_images(block_size, max_images)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from dct_gen import dct_ops

    per_image, seconds = [], dict.fromkeys(OPS, 0.0)
    sparse_bpsp, jpeg_bpsp = [], []
    for name, x in images:
        cfg = rep.DCTConfig(block_size=block_size, quality=quality, resolution=max(x.shape[:2]))
        seq = rep.encode(x, cfg)
        buf = io.BytesIO()
        Image.fromarray(x).save(buf, format="JPEG", quality=quality, subsampling=2)
        jpeg = buf.getvalue()

        def jpeg_encode(x=x) -> bytes:
            out = io.BytesIO()
            Image.fromarray(x).save(out, format="JPEG", quality=quality, subsampling=2)
            return out.getvalue()

        def jpeg_decode(jpeg=jpeg) -> np.ndarray:
            with Image.open(io.BytesIO(jpeg)) as im:
                return np.asarray(im.convert("RGB"))

        ops = {
            "encode": lambda x=x, cfg=cfg: rep.encode(x, cfg),
            "encode_xla": lambda x=x, cfg=cfg: dct_ops.encode(x, cfg),
            "decode": lambda seq=seq, cfg=cfg: rep.decode(seq, cfg),
            "jpeg_encode": jpeg_encode,
            "jpeg_decode": jpeg_decode,
        }
        mp = x.shape[0] * x.shape[1] / 1e6
        row = {"image": name, "size": list(x.shape[:2]), "megapixels": mp}
        for op in OPS:
            t = _median_seconds(ops[op], repeats)
            seconds[op] += t
            row[op] = mp / t
        per_image.append(row)
        subpixels = rep.num_subpixels(*x.shape[:2])
        sparse_bpsp.append(rep.sparse_bits(len(seq), cfg) / subpixels)
        jpeg_bpsp.append(8 * len(jpeg) / subpixels)

    megapixels = sum(r["megapixels"] for r in per_image)
    mps = {op: megapixels / seconds[op] for op in OPS}
    return {
        "quality": quality,
        "block_size": block_size,
        "repeats": repeats,
        "megapixels": megapixels,
        "mp_per_s": mps,
        "encode_ratio": mps["encode"] / mps["jpeg_encode"],
        "encode_xla_ratio": mps["encode_xla"] / mps["jpeg_encode"],
        "decode_ratio": mps["decode"] / mps["jpeg_decode"],
        "sparse_bpsp": statistics.mean(sparse_bpsp),
        "jpeg_bpsp": statistics.mean(jpeg_bpsp),
        "per_image": per_image,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/codec.py", description=__doc__.split("\n")[0])
    parser.add_argument("--quality", type=int, default=75)
    parser.add_argument("--block_size", type=int, choices=rep.BLOCK_SIZES, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes (median reported)")
    parser.add_argument("--max_images", type=int, default=None, help="use the first N photos")
    parser.add_argument("--no_pin", action="store_true", help="do not pin to one CPU")
    args = parser.parse_args(argv)

    pinned = "not pinned (--no_pin)" if args.no_pin else _pin_to_one_cpu()
    turbo = features.version_feature("libjpeg_turbo")
    jpeg_lib = f"libjpeg-turbo {turbo}" if turbo else f"libjpeg {features.version('jpg')}"
    print(
        f"single thread: {', '.join(_THREAD_VARS)} set to 1 before importing numpy; {pinned}; "
        f"BLAS/OpenMP threads: {_blas_threads()}"
    )
    print(
        f"Python {platform.python_version()}, numpy {np.__version__}, Pillow {PIL.__version__} "
        f"({jpeg_lib}), {platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    r = run(
        quality=args.quality,
        block_size=args.block_size,
        repeats=args.repeats,
        max_images=args.max_images,
    )
    print(
        f"{len(r['per_image'])} bundled colour photos, {r['megapixels']:.2f} MP in all, each "
        f"cropped to multiples of {2 * args.block_size} px and encoded at resolution = its long "
        "side (no resizing, no padding timed)"
    )
    print(
        f"block_size {args.block_size}, quality {args.quality}; JPEG 4:2:0, optimize=False; "
        f"per image the median of {args.repeats} calls after a warm-up call\n"
    )
    head = ("encode", "enc XLA", "decode", "JPEG enc", "JPEG dec", "enc ratio", "XLA ratio")
    names = [f"{row['image']} {row['size'][0]}x{row['size'][1]}" for row in r["per_image"]]
    width = max(len(n) for n in names) + 2
    print(f"{'MP/s':{width}s}" + "".join(f"{h:>10s}" for h in head))
    for name, row in zip(names, r["per_image"], strict=True):
        cells = "".join(f"{row[op]:10.1f}" for op in OPS)
        ratios = f"{row['encode'] / row['jpeg_encode']:10.3f}"
        ratios += f"{row['encode_xla'] / row['jpeg_encode']:10.3f}"
        print(f"{name:{width}s}{cells}{ratios}")
    cells = "".join(f"{r['mp_per_s'][op]:10.1f}" for op in OPS)
    print(f"{'all images':{width}s}{cells}{r['encode_ratio']:10.3f}{r['encode_xla_ratio']:10.3f}")
    for label, key in (("encode (numpy)", "encode_ratio"), ("encode (XLA)", "encode_xla_ratio")):
        verdict = "meets" if r[key] >= TARGET_ENCODE_RATIO else "below"
        print(
            f"\n{label}: {r[key]:.3f}x libjpeg-turbo's encoder "
            f"(target >= {TARGET_ENCODE_RATIO}x: {verdict})",
            end="",
        )
    print()
    print(f"decode: {r['decode_ratio']:.3f}x libjpeg-turbo's decoder")
    print(
        f"size: sparse triples {r['sparse_bpsp']:.3f} bits/subpixel (fixed-width, no entropy "
        f"coding), JPEG {r['jpeg_bpsp']:.3f}"
    )
    print(json.dumps({k: v for k, v in r.items() if k != "per_image"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
