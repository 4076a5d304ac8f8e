"""Gin bindings for the model and the run, and the dry run (the only gin-aware library module).

The factories here are what gin files bind; the library underneath (`dct_gen.model`,
`dct_gen.representation`) takes plain keyword arguments and knows nothing of gin. Keras layers
are never gin-configurable (that breaks Keras); gin builds plain config objects and
`build_model` turns them into a model.

- `dct_config`: the representation (block size, quality, resolution, clip, ordering, interval).
  These define the data on disk, so they are bindings of their own that training checks against
  the dataset's info.json (`check_dct_config`).
- `model_config`: the architecture (paper Table 3), a `dct_gen.model.ModelConfig`.
- `train_config`: batch size, learning rate, token budget, chunking (a `TrainConfig`).

Gin files live in the repository's `gin/` folder, which is on gin's search path, so files
include each other as `include 'models/lsun.gin'`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import gin

from dct_gen import model as model_lib
from dct_gen.representation import DCTConfig

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin")
# gin/ is searched first: includes are relative to it, and a miss on another prefix logs an
# error (gin's resource reader) even when a later prefix finds the file.
_prefixes = getattr(gin.config, "_LOCATION_PREFIXES", None)
if _prefixes is None:  # another gin version: the public call (appends; may log misses)
    gin.add_config_file_search_path(GIN_DIR)
elif GIN_DIR not in _prefixes:
    _prefixes.insert(0, GIN_DIR)


def _required(name: str, value):
    if value is None:
        raise ValueError(f"gin binding {name} is required but not set")
    return value


@gin.configurable("dct_config")
def dct_config(
    block_size: int | None = None,
    quality: int | None = None,
    resolution: int | None = None,
    clip: int | None = None,
    ordering: str = "interleaved",
    interval: int = 4,
) -> DCTConfig:
    """The representation the data was written with (checked against info.json)."""
    return DCTConfig(
        block_size=_required("dct_config.block_size", block_size),
        quality=_required("dct_config.quality", quality),
        resolution=_required("dct_config.resolution", resolution),
        clip=_required("dct_config.clip", clip),
        ordering=ordering,
        interval=interval,
    )


def check_dct_config(bound: DCTConfig, from_info: DCTConfig) -> None:
    """Refuses a gin representation that contradicts the dataset's; the error names the keys."""
    diff = [
        f"dct_config.{k}: gin {v!r} != info.json {from_info.to_dict()[k]!r}"
        for k, v in bound.to_dict().items()
        if from_info.to_dict()[k] != v
    ]
    if diff:
        raise ValueError("gin contradicts the dataset's info.json: " + "; ".join(diff))


@gin.configurable("model_config")
def model_config(dct: DCTConfig | None = None, **kwargs) -> model_lib.ModelConfig:
    """The architecture; `dct` defaults to `dct_config()`. Keys: the fields of ModelConfig."""
    fields = {f.name for f in dataclasses.fields(model_lib.ModelConfig)} - {"dct"}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ValueError(f"unknown model_config keys {unknown}; known: {sorted(fields)}")
    return model_lib.ModelConfig(dct=dct or dct_config(), **kwargs)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The run's hyperparameters (paper Table 3, appendix C).

    Attributes:
      batch_size: global batch (split across replicas).
      learning_rate: peak Adam learning rate, after the linear warmup.
      tokens: training length in target tokens (elements that carry loss).
      warmup_steps: linear warmup steps, then cosine decay.
      chunk_size, overlap: C and O of the input pipeline (and of the model's window).
      target_part: "all", or "chroma" for colorization on luma_first data (paper 4.3).
      mixed_precision: bfloat16 compute with float32 variables.
      grad_clip_norm: gradients are clipped to this global norm (the paper does not say; 1.0).
    """

    batch_size: int
    learning_rate: float
    tokens: int
    warmup_steps: int = 1000
    chunk_size: int = 896
    overlap: int = 128
    target_part: str = "all"
    mixed_precision: bool = True
    grad_clip_norm: float = 1.0


@gin.configurable("train_config")
def train_config(
    batch_size: int | None = None,
    learning_rate: float | None = None,
    tokens: float | None = None,
    warmup_steps: int = 1000,
    chunk_size: int = 896,
    overlap: int = 128,
    target_part: str = "all",
    mixed_precision: bool = True,
    grad_clip_norm: float = 1.0,
) -> TrainConfig:
    return TrainConfig(
        batch_size=int(_required("train_config.batch_size", batch_size)),
        learning_rate=float(_required("train_config.learning_rate", learning_rate)),
        tokens=int(_required("train_config.tokens", tokens)),
        warmup_steps=int(warmup_steps),
        chunk_size=int(chunk_size),
        overlap=int(overlap),
        target_part=target_part,
        mixed_precision=bool(mixed_precision),
        grad_clip_norm=float(grad_clip_norm),
    )


def resolve_gin_file(path: str) -> str:
    """An existing path as given, else the path relative to gin/ (e.g. 'experiments/tiny.gin')."""
    if os.path.exists(path):
        return os.path.abspath(path)
    if os.path.exists(os.path.join(GIN_DIR, path)):
        return os.path.join(GIN_DIR, path)
    raise FileNotFoundError(f"gin file {path!r} not found (nor under {GIN_DIR})")


def parse(gin_files: Sequence[str] = (), gin_params: Sequence[str] = ()) -> None:
    """Clears gin and parses files (paths, or relative to gin/) and bindings."""
    gin.clear_config()
    files = [resolve_gin_file(f) for f in gin_files]
    gin.parse_config_files_and_bindings(files, list(gin_params))


def dry_run(gin_files: Sequence[str], gin_params: Sequence[str] = ()) -> dict:
    """Builds the model from gin without reading data.

    Returns:
      {"parameters": trainable and non-trainable weights of the built model,
       "flops_per_token": training FLOPs per target token (`dct_gen.model.flops_per_token`)}.
    """
    import keras

    parse(gin_files, gin_params)
    config = model_config()
    keras.backend.clear_session()
    model = model_lib.build_model(config)
    result = {
        "parameters": int(model.count_params()),
        "flops_per_token": float(model_lib.flops_per_token(config)),
    }
    del model
    keras.backend.clear_session()
    return result
