"""Chunked autoregressive sampling with key/value caches (paper 3.3; DESIGN.md "Sampling").

`Sampler(model, model_config)` walks the layers of a model built by `dct_gen.model.build_model`
(weights shared, nothing copied) and samples sequences of (channel, position, value) triples
chunk by chunk, exactly as the model was trained on them (`dct_gen.data`):

- chunk k of a sequence starts at element start = base + k * C (base: 0, or the number of luma
  elements for colorization, whose targets are the chroma part); its window is the O + C
  elements from first = max(start - O, 0), and the encoder sees the DCT image of the elements
  before `start`;
- per chunk, the DCT image is built and encoded once, and the cross-attention keys and values
  of every decoder layer are computed once;
- then, element by element, the channel decoder, the channel draw, the position decoder, the
  position draw, the value decoder and the value draw run in turn, each decoder over one new
  element with a key/value cache of its self-attention layers (the cache holds the window);
- elements that are already known (the overlap, or a task's context) are forced instead of
  drawn. When the whole overlap is known for every running image, it is pushed through the
  decoders in one parallel pass (the prefill) instead of element by element.

Each image stops at its stop token while the others continue; sampling also stops after
`max_chunks` chunks (the image is then a truncated, still decodable, prefix). The structural
mask of the model is applied as in training, so sampled sequences are always valid triples.
Draws use temperature, top-k and top-p (nucleus) filtering on each of the three distributions,
with stateless random numbers keyed on (seed, chunk, element, component): the same seed gives
the same sequences.

Everything runs in TensorFlow graphs with static shapes: `sample_chunk` is one tf.function
per chunk (the Python driver `sample` loops over chunks, reporting progress, and stops early);
`sample_graph` puts the chunk loop itself in the graph (the SavedModel export uses it).

Shapes: b batch, N sequence buffer, W = O + C window, d hidden, h heads, k key size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

import numpy as np

from dct_gen import pictures
from dct_gen.sampling import *  # noqa: F403 (being split)

# ----------------------------------------------------------------------------------------------
# The command line.

TASKS = ("generate", "upsample", "colorize")


def _progress(enabled: bool) -> Callable[[str], None] | None:
    if not enabled:
        return None
    tty = sys.stderr.isatty()

    def report(line: str) -> None:
        sys.stderr.write(("\r" + line.ljust(100)) if tty else line + "\n")
        sys.stderr.flush()

    return report


def build_parser(task: str) -> argparse.ArgumentParser:
    usage = {
        "generate": "python -m dct_gen.sample (--model_dir DIR | --saved_model DIR) [flags]",
        "upsample": "python -m dct_gen.sample upsample IMAGE... (--model_dir | --saved_model) "
        "[flags]",
        "colorize": "python -m dct_gen.sample colorize IMAGE... (--model_dir | --saved_model) "
        "[flags]",
    }[task]
    p = argparse.ArgumentParser(
        prog="python -m dct_gen.sample",
        usage=usage,
        description="Sample images from a trained DCTransformer: unconditional or "
        "class-conditional samples (default), `upsample IMAGE...` (B x upsampling, 8x at B = 8, "
        "interleaved models) or `colorize IMAGE...` (luma_first models).",
    )
    if task != "generate":
        p.add_argument("images", nargs="+", help="input image files")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model_dir", help="run directory of dct_gen.train (newest checkpoint)")
    source.add_argument("--saved_model", help="SavedModel directory of dct_gen.export")
    p.add_argument("--out", default=os.path.join("runs", "samples"), help="output directory")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same images)")
    if task == "generate":
        p.add_argument("--num_samples", type=int, default=16, help="how many samples")
        p.add_argument("--label", type=int, default=-1, help="class label (-1: none)")
        p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (> 0)")
        p.add_argument("--top_p", type=float, default=1.0, help="nucleus sampling (1: off)")
        p.add_argument("--top_k", type=int, default=0, help="top-k sampling (0: off)")
    else:
        p.add_argument(
            "--num_samples", type=int, default=3, help="samples per input image (default 3)"
        )
    p.add_argument("--batch_size", type=int, default=16, help="samples drawn together")
    p.add_argument(
        "--max_chunks",
        type=int,
        default=None,
        help="chunk limit per sample (default: enough for the longest possible sequence)",
    )
    p.add_argument("--jit", action="store_true", help="compile each chunk with XLA")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def _read_inputs(paths: list[str]) -> list[np.ndarray]:
    from dct_gen import images as images_lib

    out = []
    for path in paths:
        try:
            out.append(images_lib.read_image(path))
        except images_lib.ImageError as e:
            message = str(e)
            raise ValueError(message if path in message else f"{path}: {message}") from e
    return out


def _comparisons(task, inputs, samples, per_image, out_dir, panel=256) -> list[str]:
    """One PNG per input: the input (enlarged), then its samples."""

    written = []
    images = samples.images()
    fit = lambda image: np.asarray(pictures.panel(np.asarray(image, np.uint8), panel))
    for i, image in enumerate(inputs):
        row = [fit(image)] + [fit(im) for im in images[i * per_image : (i + 1) * per_image]]
        path = os.path.join(out_dir, f"{task}_{i:03d}_comparison.png")
        written.append(pictures.save_png(pictures.grid(row, columns=len(row)), path))
    return written


def run(argv: list[str]) -> dict:
    """The command line's work; returns the files written (raises ValueError on bad input)."""
    task = argv[0] if argv and argv[0] in TASKS[1:] else "generate"
    args = build_parser(task).parse_args(argv[1:] if task != "generate" else argv)
    for name in ("num_samples", "batch_size") + (("max_chunks",) if args.max_chunks else ()):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name}={getattr(args, name)}: must be >= 1")
    progress = _progress(not args.quiet)
    options_kw = {}
    if task == "generate":
        options_kw = dict(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)
    try:
        SampleOptions(**options_kw)
    except ValueError as e:
        raise ValueError(f"--{e}") from e  # the messages start with the option's name
    inputs = _read_inputs(args.images) if task != "generate" else []

    if args.saved_model:
        source = SavedModelSource(args.saved_model)
        options = SampleOptions(**options_kw)
        if task == "generate":
            if args.top_k:
                raise ValueError("--top_k: the SavedModel's sample signature has no top_k")
            samples = source.sample(args.num_samples, args.label, options, args.seed, progress)
        else:
            samples = source.conditional(task, inputs, args.num_samples, args.seed, progress)
    else:
        from dct_gen import run_dir

        run_ = run_dir.load_run(args.model_dir, mixed_precision=False, log=lambda line: None)
        model, model_config = run_.model, run_.model_config
        max_chunks = args.max_chunks or default_max_chunks(model_config)
        options = SampleOptions(max_chunks=max_chunks, **options_kw)
        sampler = Sampler(model, model_config, jit_compile=args.jit)
        cfg = model_config.dct
        common = dict(options=options, seed=args.seed, batch_size=args.batch_size)
        if task == "generate":
            samples = sample_batches(
                sampler, args.num_samples, labels=args.label, progress=progress, **common
            )
        else:
            make = upsampling_context if task == "upsample" else colorization_context
            contexts = []
            for path, image in zip(args.images, inputs):
                try:
                    ctx, _ = make(image, cfg)
                except ValueError as e:
                    raise ValueError(f"{path}: {e}") from e
                contexts += [ctx] * args.num_samples
            samples = sample_batches(
                sampler,
                len(contexts),
                contexts=contexts,
                context_is_base=task == "colorize",
                progress=progress,
                **common,
            )
    if progress and sys.stderr.isatty():
        sys.stderr.write("\n")
    prefix = "sample" if task == "generate" else task
    files = write_samples(samples, args.out, prefix=prefix)
    if task != "generate":
        files["comparisons"] = _comparisons(task, inputs, samples, args.num_samples, args.out)
    stopped = int(samples.finished.sum())
    print(
        json.dumps(
            {
                "task": task,
                "out": args.out,
                "samples": len(samples.sequences),
                "stopped": stopped,
                "seconds": round(samples.seconds, 2),
                "grid": files["grid"][0],
            }
        ),
        flush=True,
    )
    return files


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        run(argv)
    except (ValueError, FileNotFoundError) as e:
        print(f"dct_gen.sample: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
