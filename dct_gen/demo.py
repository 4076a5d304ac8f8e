"""The `make demo` job: runs the project's steps on an embedded default and says where results are.

For now the steps show the representation on the real photos bundled with scikit-image and
scikit-learn (nothing is downloaded):

- `stats`: Figure 3 on the colour photos (dense vs sparse DCT vs JPEG bits per subpixel), as a
  table and a plot.
- `progressive`: Figure 2g strips (decoded prefixes) for two photos, in both orderings.
- `roundtrip`: one photo encoded to .npz triples and decoded back to PNG.

Each step is a function `(out_dir) -> list of written paths`, registered in `STEPS`; later steps
(training, sampling) are added the same way.

    python -m dct_gen.demo --out runs/demo [--steps stats,progressive,roundtrip]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence

from dct_gen import codec, photos

QUALITIES = (10, 25, 50, 75, 90, 95)
PROGRESSIVE_PHOTOS = ("astronaut.png", "chelsea.png")


def _photos(names: Sequence[str]) -> list[str]:
    by_name = {os.path.basename(p): p for p in photos.color_photo_paths()}
    return [by_name[n] for n in names if n in by_name]


def step_stats(out_dir: str) -> list[str]:
    """Figure 3 over every bundled colour photo, each at its own size."""
    result = codec.run_stats(
        photos.color_photo_paths(), os.path.join(out_dir, "stats"), qualities=QUALITIES
    )
    return list(result["files"].values())


def step_progressive(out_dir: str) -> list[str]:
    """Figure 2g strips: eight prefixes, each twice the length of the one before."""
    written = []
    for path in _photos(PROGRESSIVE_PHOTOS):
        stem = os.path.splitext(os.path.basename(path))[0]
        for ordering in ("interleaved", "luma_first"):
            out = os.path.join(out_dir, "progressive", f"{stem}_{ordering}.png")
            codec.progressive_file(
                path, out, steps=8, spacing="geometric", panel_size=256, ordering=ordering
            )
            written.append(out)
    return written


def step_roundtrip(out_dir: str) -> list[str]:
    """One photo to triples (.npz) and back (.png)."""
    npz_dir = os.path.join(out_dir, "roundtrip")
    records = codec.encode_files(_photos(PROGRESSIVE_PHOTOS[:1]), npz_dir, quality=75)
    decoded = [codec.decode_file(r["out"])["out"] for r in records]
    return [r["out"] for r in records] + decoded


STEPS: dict[str, Callable[[str], list[str]]] = {
    "stats": step_stats,
    "progressive": step_progressive,
    "roundtrip": step_roundtrip,
}


def run(out_dir: str, steps: Sequence[str] = tuple(STEPS)) -> dict[str, list[str]]:
    """Runs the named steps in order; returns the files each wrote."""
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise ValueError(f"unknown steps {unknown}; known: {list(STEPS)}")
    os.makedirs(out_dir, exist_ok=True)
    written = {}
    for name in steps:
        summary = (STEPS[name].__doc__ or "").strip().split("\n")[0]
        print(f"== {name}: {summary}", flush=True)
        start = time.perf_counter()
        written[name] = STEPS[name](out_dir)
        print(f"== {name}: done in {time.perf_counter() - start:.1f} s\n", flush=True)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dct_gen.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", default=os.path.join("runs", "demo"), help="output directory")
    parser.add_argument(
        "--steps",
        default=",".join(STEPS),
        help=f"comma-separated steps to run, in order (default {','.join(STEPS)})",
    )
    args = parser.parse_args(argv)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    try:
        written = run(args.out, steps)
    except (ValueError, codec.CodecError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"Demo outputs under {os.path.abspath(args.out)}:")
    for name, paths in written.items():
        for path in paths:
            print(f"  [{name}] {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
