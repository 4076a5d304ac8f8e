"""Entry point: `python -m dct_gen.train --gin_file F [--gin_file G ...] [--gin_param P ...]`.

Today it does the dry run only: `--dry_run` builds the model from gin and prints one JSON line,
{"parameters": ..., "flops_per_token": ...}, without reading data. Training is not there yet.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("gin_file", [], "Gin config files (paths, or relative to gin/).")
flags.DEFINE_multi_string("gin_param", [], "Gin bindings, e.g. 'model_config.dropout = 0.0'.")
flags.DEFINE_bool("dry_run", False, "Build the model, print parameters and FLOPs, exit.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.dry_run:
        sys.exit("dct_gen.train: training is not implemented yet; only --dry_run works")
    if not FLAGS.gin_file:
        raise app.UsageError("--gin_file is required")
    from dct_gen import configs

    print(json.dumps(configs.dry_run(FLAGS.gin_file, FLAGS.gin_param)), flush=True)


if __name__ == "__main__":
    app.run(main)
