"""The training run: `python -m dct_gen.train --gin_file F --data_dir D --model_dir M`.

`train(...)` is the loop, plain Python with keyword arguments; `main` parses flags and gin, writes
the operative gin config to the run directory and calls it. The loop reads in sections: setup
(strategy, precision, seeds), input, model and optimizer, restore, loop, evaluate, save.

- Strategy (`make_strategy`): TPUStrategy with --tpu, MultiWorkerMirroredStrategy when TF_CONFIG
  names more than one task, MirroredStrategy over the local GPUs, else the default strategy.
  The global batch (train_config.batch_size) is split across replicas.
- Optimisation: Adam; learning rate linear from 0 over warmup_steps, then cosine to 0 at the
  last step; gradients clipped to a global norm. The run's length is train_config.tokens
  target elements (elements that carry loss), converted to steps as
  ceil(tokens / (batch_size * chunk_size)); --max_steps overrides it.
- Checkpoints (model_dir/checkpoints): model, optimizer, step, tokens seen, the dropout seed
  state and the input iterator (the data stream resumes exactly), every checkpoint_every
  steps, at the end and at SIGTERM. A run resumes from its model_dir by itself; a checkpoint
  that fails to restore is reported and the next older one is tried; when checkpoints exist
  and none restores the run stops rather than start again from step 0.
- Logs: model_dir/metrics.jsonl (one JSON line per log step), TensorBoard events under
  model_dir/train and model_dir/eval, model_dir/eval.jsonl (one line per evaluation), a
  console line per log step with an ETA.
- A NaN or infinite loss stops the run (`NonFiniteLossError`) before anything is saved.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from absl import app, flags

from dct_gen import run_dir
from dct_gen.training import *  # noqa: F403 (being split)

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("gin_file", [], "Gin config files (paths, or relative to gin/).")
flags.DEFINE_multi_string("gin_param", [], "Gin bindings, e.g. 'model_config.dropout = 0.0'.")
flags.DEFINE_bool("dry_run", False, "Build the model, print parameters and FLOPs, exit.")
flags.DEFINE_string("data_dir", None, "Dataset directory written by beam_jobs.build_dataset.")
flags.DEFINE_string("model_dir", None, "Run directory: checkpoints, logs; resumed from.")
flags.DEFINE_integer("max_steps", None, "Stop after this many steps (overrides the token budget).")
flags.DEFINE_string("train_split", "train", "Split to train on.")
flags.DEFINE_string("eval_split", None, "Held-out split to evaluate (none: no evaluation).")
flags.DEFINE_integer("eval_every", 1000, "Evaluate every N steps (and at the end).")
flags.DEFINE_integer("eval_batches", None, "Evaluate at most N batches (default: the whole split).")
flags.DEFINE_integer("log_every", 50, "Log metrics every N steps.")
flags.DEFINE_integer(
    "sample_every", 0, "Log sample grids and heatmaps to TensorBoard every N steps (0: never)."
)
flags.DEFINE_integer("num_tb_samples", 4, "Samples per TensorBoard grid.")
flags.DEFINE_integer(
    "sample_max_chunks", None, "Chunk limit of the TensorBoard samples (default: none)."
)
flags.DEFINE_integer("checkpoint_every", 1000, "Save a checkpoint every N steps.")
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept on disk.")
flags.DEFINE_integer("seed", 0, "Seed of the initialisation, dropout and the input pipeline.")
flags.DEFINE_bool("deterministic", False, "Enable TensorFlow op determinism (slower).")
flags.DEFINE_string("tpu", None, "Cloud TPU name or address: train with TPUStrategy.")
flags.DEFINE_float(
    "peak_flops", None, "Device peak FLOP/s per replica for MFU (default: measured)."
)


# ----------------------------------------------------------------------------------------------
# Entry point.


def _write_operative_config(model_dir: str) -> None:
    import gin

    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, run_dir.OPERATIVE_CONFIG_FILE), "w") as f:
        f.write(gin.operative_config_str())


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.gin_file:
        raise app.UsageError("--gin_file is required")
    from dct_gen import configs

    if FLAGS.dry_run:
        print(json.dumps(configs.dry_run(FLAGS.gin_file, FLAGS.gin_param)), flush=True)
        return
    for name in ("data_dir", "model_dir"):
        if not getattr(FLAGS, name):
            raise app.UsageError(f"--{name} is required (unless --dry_run)")
    if FLAGS.max_steps is not None and FLAGS.max_steps < 1:
        raise app.UsageError(f"--max_steps={FLAGS.max_steps}: must be positive")
    configs.parse(FLAGS.gin_file, FLAGS.gin_param)
    dct, model_config, train_config = (
        configs.dct_config(),
        configs.model_config(),
        configs.train_config(),
    )
    _write_operative_config(FLAGS.model_dir)
    try:
        result = train(
            model_config=model_config,
            dct_config=dct,
            train_config=train_config,
            data_dir=FLAGS.data_dir,
            model_dir=FLAGS.model_dir,
            max_steps=FLAGS.max_steps,
            train_split=FLAGS.train_split,
            eval_split=FLAGS.eval_split,
            eval_every=FLAGS.eval_every,
            sample_every=FLAGS.sample_every,
            num_samples=FLAGS.num_tb_samples,
            sample_max_chunks=FLAGS.sample_max_chunks,
            eval_batches=FLAGS.eval_batches,
            log_every=FLAGS.log_every,
            checkpoint_every=FLAGS.checkpoint_every,
            keep_checkpoints=FLAGS.keep_checkpoints,
            seed=FLAGS.seed,
            deterministic=FLAGS.deterministic,
            tpu=FLAGS.tpu,
            peak_flops=FLAGS.peak_flops,
        )
    except (NonFiniteLossError, run_dir.NoValidCheckpointError) as e:
        sys.exit(f"dct_gen.train: {type(e).__name__}: {e}")
    if result.stopped == "sigterm":
        sys.exit(128 + signal.SIGTERM)


if __name__ == "__main__":
    app.run(main)
