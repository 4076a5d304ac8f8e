"""SavedModel export: `python -m dct_gen.export --model_dir DIR --out SAVED_MODEL`.

The SavedModel needs neither dct_gen nor Keras to run: load it with
`tf.saved_model.load(SAVED_MODEL)` and call its signatures (also in
`loaded.signatures[name]`):

  sample(num_samples int32, label int32, temperature float32, top_p float32, seed int64)
      -> images uint8 (n, R, R, 3), the canvas: sample i is images[i, :heights[i], :widths[i]];
         heights, widths int32 (n,); channels, positions, values int32 (n, L), padded, without
         the stop token; lengths int32 (n,); stopped bool (n,), whether each sample reached
         its stop token (else the chunk limit cut it).
  log_prob(channels int32 (L,), positions, values, height int32, width int32)
      -> bits_per_subpixel float32 (the sequence's exact negative log-likelihood, stop token
         included, over 3 * height * width), channel_/position_/value_bits_per_subpixel,
         nats float32.
  upsample(image uint8 (h, w, 3), seed int64)          interleaved models
      -> as sample, one image: B x upsampling (8x at B = 8) of the image, whose first channel of
         Y, Cb and Cr is the context (`dct_gen.sample.upsampling_context`); context_length.
  colorize(image uint8 (h, w, 1 or 3), seed int64)     luma_first models
      -> as sample, one image: the image's luma kept, its chroma sampled; context_length.

`loaded.config_json` holds the representation and model configuration (JSON). Each signature
checks its inputs in the graph and fails with an InvalidArgumentError whose message starts
with the argument's name: a label out of range, num_samples below 1 or above the cap, a
temperature or top_p out of range, an image of the wrong rank, channels or size, a sequence
whose arrays differ in length or hold ids out of range.

In-graph encoding (`dct_ops.encode_dct_image`) and resizing (`tf.image.resize`, Lanczos) can
differ from the numpy codec's on rare coefficients by one step; the context a signature builds
is still kept exactly in its output.
"""

from __future__ import annotations

import argparse
import json
import sys

from dct_gen.saved_model import *  # noqa: F403 (being split)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dct_gen.export",
        description="Export a trained run as a TF SavedModel with sample, log_prob, upsample "
        "(interleaved models) and colorize (luma_first models) signatures.",
    )
    parser.add_argument("--model_dir", required=True, help="run directory of dct_gen.train")
    parser.add_argument("--out", required=True, help="SavedModel directory to write")
    parser.add_argument(
        "--max_num_samples",
        type=int,
        default=DEFAULT_MAX_SAMPLES,
        help="cap on sample's num_samples (default %(default)s)",
    )
    parser.add_argument(
        "--max_chunks",
        type=int,
        default=None,
        help="chunk limit per sample (default: enough for the longest possible sequence)",
    )
    args = parser.parse_args(argv)
    if args.max_num_samples < 1:
        parser.error(f"--max_num_samples={args.max_num_samples}: must be >= 1")
    if args.max_chunks is not None and args.max_chunks < 1:
        parser.error(f"--max_chunks={args.max_chunks}: must be >= 1")
    from dct_gen import run_dir

    try:
        run = run_dir.load_run(args.model_dir, mixed_precision=False, log=lambda line: None)
    except (FileNotFoundError, ValueError) as e:
        print(f"dct_gen.export: {e}", file=sys.stderr)
        return 2
    model, model_config, train_config, step = (
        run.model,
        run.model_config,
        run.train_config,
        run.step,
    )
    names = export(
        model,
        model_config,
        args.out,
        target_part=train_config.target_part,
        max_num_samples=args.max_num_samples,
        max_chunks=args.max_chunks,
    )
    print(json.dumps({"saved_model": args.out, "step": step, "signatures": names}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
