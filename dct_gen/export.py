"""Export a trained run as a TensorFlow SavedModel that needs neither dct_gen nor Keras.

Usage:
  python -m dct_gen.export --model_dir=RUN --out=SAVED_MODEL [--max_num_samples=64]
      [--max_chunks=N]

The run's newest checkpoint that restores is exported in float32. Load the result with
`tf.saved_model.load(SAVED_MODEL)` and call `loaded.signatures[NAME](...)`: sample, log_prob,
upsample (interleaved models) and colorize (luma_first models); `loaded.config_json` holds the
model configuration. docs/sampling.md lists each signature's arguments (dtype, shape, values);
a bad one fails with an InvalidArgumentError that names it. Loading a SavedModel runs its graph:
load only exports you trust. Prints one JSON line: {"saved_model", "step", "signatures"}.

--out must be a new or empty directory, or an earlier export of this command (it holds
saved_model.pb and dct_gen_export.json, and nothing else), which is then replaced. Anything else
at --out (the run directory, a file, a directory with other contents) is refused and left as it
is. The SavedModel is written beside --out first and renamed into place.

Exit status: 0 done; 1 bad input (--model_dir is not a trained run, --out refused); 2 bad flags.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from absl import flags

from dct_gen import cli
from dct_gen.errors import InputError

# saved_model.DEFAULT_MAX_SAMPLES (a test checks they agree), here so that --help does not
# import TensorFlow.
DEFAULT_MAX_SAMPLES = 64

FLAGS = cli.flag_values()

flags.DEFINE_string(
    "model_dir", None, "The run directory (python -m dct_gen.train); required.", flag_values=FLAGS
)
flags.DEFINE_string(
    "out",
    None,
    "The SavedModel directory to write: new, empty, or an earlier export (replaced); required.",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "max_num_samples",
    DEFAULT_MAX_SAMPLES,
    "The cap on the sample signature's num_samples.",
    lower_bound=1,
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "max_chunks",
    None,
    "The chunk limit per sample (default: enough for the longest possible sequence).",
    lower_bound=1,
    flag_values=FLAGS,
)


def _main(argv: list[str]) -> int:
    cli.no_positional(argv)
    cli.require(FLAGS, "model_dir", "out")
    import json

    import tensorflow as tf

    from dct_gen import saved_model

    if not tf.io.gfile.isdir(FLAGS.model_dir):
        raise InputError(f"--model_dir={FLAGS.model_dir}: no such directory")
    # Before the run loads: a refused --out costs nothing.
    saved_model.check_out(FLAGS.out, FLAGS.model_dir, name="--out")
    result = saved_model.export_run(
        FLAGS.model_dir,
        FLAGS.out,
        max_num_samples=FLAGS.max_num_samples,
        max_chunks=FLAGS.max_chunks,
    )
    print(json.dumps(result), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0 done, 1 bad input, 2 bad flags)."""
    return cli.run(_main, FLAGS, argv, prog="dct_gen.export", doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
