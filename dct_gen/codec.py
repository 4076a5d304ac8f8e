"""The sparse DCT codec on files: images <-> (channel, position, value) triples (paper section 2).

    python -m dct_gen.codec encode IMAGE... [--out DIR]        .npz triples, one JSON line each
    python -m dct_gen.codec decode FILE.npz [--out IMAGE.png]  triples back to a PNG
    python -m dct_gen.codec progressive IMAGE [--steps N]      decoded prefixes in a row (Fig. 2g)
    python -m dct_gen.codec stats IMAGES_OR_DIR...             dense, sparse, JPEG sizes (Fig. 3)

The command comes first, then its paths and flags in any order. Directories given to `encode`
and `stats` stand for the image files directly inside them. `progressive` also takes a .npz
from `encode`, whose own representation is then used.

Representation flags (`encode`, `progressive`, `stats`): --block_size, --quality (not `stats`,
which takes --qualities), --resolution, --clip, --ordering, --interval. `progressive` alone
takes --steps, --spacing and --panel_size; `stats` alone --qualities. A flag given to a command
it does not apply to is refused.

--resolution native (the default) keeps each image's own size, its long side rounded up to a
multiple of 2 * block_size; --resolution R resizes every image so its long side is R.

--out: encode: the directory for <stem>.npz (default runs/codec); decode: the PNG (default
FILE.decoded.png beside the .npz); progressive: the PNG (default
runs/codec/IMAGE_STEM.progressive.png); stats: the directory for stats.md, stats.csv,
stats_images.csv and stats.png (default runs/codec/stats).

Exit status: 0 done, 1 a bad input file (missing, not an image, an invalid .npz), 2 a bad
command line. No TensorFlow is imported; the work is done by `dct_gen.codec_files`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from absl import flags

from dct_gen import cli
from dct_gen.errors import UsageError

PROG = "dct_gen.codec"
# The representation's choices and defaults, written out so that --help answers without
# importing numpy (the library is imported after parsing); tests/test_codec_cli.py checks them
# against dct_gen.representation, codec_files and sequence_file.
BLOCK_SIZES = (4, 8, 16, 32)
ORDERINGS = ("interleaved", "luma_first")
DEFAULTS = {"block_size": 8, "quality": 75, "clip": 1200, "ordering": "interleaved", "interval": 4}
DEFAULT_QUALITIES = (10, 25, 50, 75, 90, 95)
DEFAULT_OUT = os.path.join("runs", "codec")
CONFIG_KEYS = ("block_size", "quality", "resolution", "clip", "ordering", "interval")
COMMANDS = ("encode", "decode", "progressive", "stats")
REPRESENTATION_FLAGS = ("block_size", "resolution", "clip", "ordering", "interval")
# The flags each command takes; any other flag given on its command line is refused.
COMMAND_FLAGS = {
    "encode": {"out", "quality", *REPRESENTATION_FLAGS},
    "decode": {"out"},
    "progressive": {"out", "quality", "steps", "spacing", "panel_size", *REPRESENTATION_FLAGS},
    "stats": {"out", "qualities", *REPRESENTATION_FLAGS},
}
STATS_OUT = os.path.join(DEFAULT_OUT, "stats")


class _BlockSizeParser(flags.ArgumentParser):
    """An integer among BLOCK_SIZES."""

    def parse(self, argument: Any) -> int:
        try:
            value = int(argument)
        except (TypeError, ValueError):
            raise ValueError(f"{argument!r} is not an integer") from None
        if value not in BLOCK_SIZES:
            raise ValueError(f"{value} is not one of {', '.join(map(str, BLOCK_SIZES))}")
        return value

    def flag_type(self) -> str:
        return "int"


class _ResolutionParser(flags.ArgumentParser):
    """'native' (None: each image's own size) or a positive integer."""

    def parse(self, argument: Any) -> int | None:
        if argument is None or argument == "native":
            return None
        try:
            value = int(argument)
        except (TypeError, ValueError):
            raise ValueError(f"{argument!r}: expected 'native' or an integer") from None
        if value <= 0:
            raise ValueError(f"{value} must be positive")
        return value

    def flag_type(self) -> str:
        return "resolution"


class _QualitiesParser(flags.ArgumentParser):
    """A comma-separated list of qualities in [1, 100]; sorted, without repeats."""

    def parse(self, argument: Any) -> list[int]:
        if isinstance(argument, (list, tuple)):
            items = [str(a) for a in argument]
        else:
            items = [t.strip() for t in str(argument).split(",") if t.strip()]
        if not items:
            raise ValueError("expected a comma-separated list such as 10,50,90")
        qualities = []
        for item in items:
            try:
                q = int(item)
            except ValueError:
                raise ValueError(f"{item!r} is not an integer") from None
            if not 1 <= q <= 100:
                raise ValueError(f"{q} is outside [1, 100]")
            qualities.append(q)
        return sorted(set(qualities))

    def flag_type(self) -> str:
        return "list of int"


FLAGS = cli.flag_values()
flags.DEFINE_string(
    "out",
    None,
    "Where to write: a directory for encode (default runs/codec) and stats (default "
    "runs/codec/stats); a PNG for decode (default FILE.decoded.png) and progressive (default "
    "runs/codec/IMAGE_STEM.progressive.png).",
    flag_values=FLAGS,
)
flags.DEFINE(
    _BlockSizeParser(),
    "block_size",
    DEFAULTS["block_size"],
    f"DCT block side B: {', '.join(map(str, BLOCK_SIZES))}.",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "quality",
    DEFAULTS["quality"],
    "IJG quality in [1, 100] (encode, progressive).",
    lower_bound=1,
    upper_bound=100,
    flag_values=FLAGS,
)
flags.DEFINE(
    _ResolutionParser(),
    "resolution",
    "native",
    "Long side in pixels, a multiple of 2 * B; 'native' (the default) keeps each image's own "
    "long side, rounded up to a multiple of 2 * B.",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "clip",
    DEFAULTS["clip"],
    "Quantized values are clipped to [-clip, clip].",
    lower_bound=1,
    flag_values=FLAGS,
)
flags.DEFINE_enum(
    "ordering", DEFAULTS["ordering"], list(ORDERINGS), "Triple order.", flag_values=FLAGS
)
flags.DEFINE_integer(
    "interval",
    DEFAULTS["interval"],
    "'interleaved': chroma zigzag index i follows luma index interval * i.",
    lower_bound=1,
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "steps", 8, "progressive: the number of panels.", lower_bound=1, flag_values=FLAGS
)
flags.DEFINE_enum(
    "spacing",
    "geometric",
    ["geometric", "linear"],
    "progressive: prefix lengths halving from the end (geometric) or evenly spaced (linear).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "panel_size",
    256,
    "progressive: long side of each panel in pixels; 0 keeps the decoded size.",
    lower_bound=0,
    flag_values=FLAGS,
)
flags.DEFINE(
    _QualitiesParser(),
    "qualities",
    ",".join(map(str, DEFAULT_QUALITIES)),
    "stats: comma-separated IJG qualities.",
    flag_values=FLAGS,
    serializer=flags.CsvListSerializer(","),
)


def _command(positional: list[str]) -> tuple[str, list[str]]:
    """The command word and its paths; refuses flags the command does not take."""
    if not positional:
        raise UsageError(
            f"no command; usage: python -m {PROG} {{{','.join(COMMANDS)}}} PATH... [flags] "
            "(see --help)"
        )
    command, paths = positional[0], positional[1:]
    if command not in COMMANDS:
        raise UsageError(f"unknown command {command!r}; expected one of {', '.join(COMMANDS)}")
    for name in FLAGS:
        if FLAGS[name].present and name not in COMMAND_FLAGS[command]:
            takers = [c for c in COMMANDS if name in COMMAND_FLAGS[c]]
            raise UsageError(f"--{name} does not apply to {command} (only to {', '.join(takers)})")
    if command in ("encode", "stats") and not paths:
        raise UsageError(f"{command}: expected at least one image file or directory")
    if command in ("decode", "progressive") and len(paths) != 1:
        what = "FILE.npz" if command == "decode" else "IMAGE"
        raise UsageError(f"{command}: expected exactly one {what}, got {len(paths)} paths")
    return command, paths


def _config(command: str) -> dict[str, Any]:
    """The representation flags the command takes, as DCTConfig fields."""
    config = {k: FLAGS[k].value for k in CONFIG_KEYS if k in COMMAND_FLAGS[command]}
    res, b = config["resolution"], config["block_size"]
    if res is not None and res % (2 * b):
        raise UsageError(f"--resolution {res}: must be a multiple of 2 * --block_size = {2 * b}")
    return config


def _main(positional: list[str]) -> int:
    command, paths = _command(positional)
    config = _config(command) if command != "decode" else {}
    # numpy, Pillow and the codec load only now, after the command line is known to be good.
    from dct_gen import codec_files

    out = FLAGS.out
    if command == "encode":
        codec_files.encode_files(paths, out or DEFAULT_OUT, **config)
    elif command == "decode":
        codec_files.decode_file(paths[0], out)
    elif command == "progressive":
        codec_files.progressive_file(
            paths[0],
            out,
            steps=FLAGS.steps,
            spacing=FLAGS.spacing,
            panel_size=FLAGS.panel_size,
            **config,
        )
    else:
        codec_files.run_stats(paths, out or STATS_OUT, qualities=FLAGS.qualities, **config)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0 ok, 1 bad input file, 2 bad flags)."""
    return cli.run(_main, FLAGS, argv, prog=PROG, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
