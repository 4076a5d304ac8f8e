"""The gin factories: what gin files bind for the representation, the model and the run.

The factories here are what gin files bind; the library underneath (`dct_gen.model`,
`dct_gen.representation`) takes plain keyword arguments and knows nothing of gin. Keras layers
are never gin-configurable (that breaks Keras); gin builds plain config objects and
`build_model` turns them into a model. Parsing gin files is `dct_gen.cli.parse_gin`'s job.

- `dct_config`: the representation (block size, quality, resolution, clip, ordering, interval).
  A dataset's info.json states the representation its records were written with, and training
  takes it from there; gin may restate it (gin/data/*.gin do), and `check_dct_config` refuses
  a restatement that contradicts the dataset.
- `model_config`: the architecture (paper Table 3), a `dct_gen.model.ModelConfig`.
- `train_config`: batch size, learning rate, token budget, chunking (a `TrainConfig`).

Importing this module imports neither TensorFlow nor Keras (the Beam dataset job parses the
same gin files); `dct_gen.model` is imported inside the functions that build a ModelConfig.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Any

import gin

from dct_gen.errors import InputError
from dct_gen.representation import DCTConfig

# The dct_config fields without a default: a representation bound in gin must give them all.
REQUIRED_DCT_FIELDS = ("block_size", "quality", "resolution", "clip")


def _required(name: str, value):
    if value is None:
        raise InputError(f"gin binding {name} is required but not set")
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
    """The representation bound in gin (training checks it against the data's info.json).

    Raises:
      InputError: a field without a default is not bound, or the values are not a valid
        representation (the message names the field).
    """
    fields = dict(
        block_size=_required("dct_config.block_size", block_size),
        quality=_required("dct_config.quality", quality),
        resolution=_required("dct_config.resolution", resolution),
        clip=_required("dct_config.clip", clip),
        ordering=ordering,
        interval=interval,
    )
    try:
        return DCTConfig(**fields)
    except (TypeError, ValueError) as e:
        raise InputError(f"dct_config: {e}") from e


def bound_dct_fields() -> dict[str, Any]:
    """The dct_config fields the parsed gin configuration binds, with their values ({}: none)."""
    return dict(gin.get_bindings("dct_config"))


def check_dct_config(
    bound: DCTConfig | Mapping[str, Any],
    from_info: DCTConfig,
    where: str = "info.json",
    source: str = " in gin",
) -> None:
    """Refuses a representation that contradicts the dataset's.

    Args:
      bound: a whole DCTConfig, or only the fields that were stated (`bound_dct_fields()`).
      from_info: the dataset's representation (`records.representation_from_info`).
      where: the info.json path, for the message.
      source: where `bound` comes from, for the message (" in gin"; "" for a caller's config).

    Raises:
      InputError: a field differs; the message names each such field and both values, e.g.
        `dct_config.resolution = 64 in gin, but DATA_DIR/info.json says 32`.
    """
    stated = bound.to_dict() if isinstance(bound, DCTConfig) else dict(bound)
    wanted = from_info.to_dict()
    unknown = sorted(set(stated) - set(wanted))
    if unknown:
        raise InputError(f"unknown dct_config fields {unknown}; known: {sorted(wanted)}")
    diff = [
        f"dct_config.{k} = {v!r}{source}, but {where} says {wanted[k]!r}"
        for k, v in sorted(stated.items())
        if wanted[k] != v
    ]
    if diff:
        raise InputError("; ".join(diff))


def dct_config_for_data(from_info: DCTConfig, where: str = "info.json") -> DCTConfig:
    """The representation to train with: the dataset's, after checking every dct_config field
    gin binds against it (gin may bind all, some or none of them).

    Raises:
      InputError: a bound field contradicts the dataset (the message names it and both values).
    """
    check_dct_config(bound_dct_fields(), from_info, where)
    return from_info


@dataclasses.dataclass(frozen=True)
class DatasetClasses:
    """What a dataset's info.json says about the classes of the split a model trains on.

    Attributes:
      label_names: the class names (index = label); None: the split is unlabelled.
      where: the info.json path, for messages.
      split: the split's name, for messages.
    """

    label_names: tuple[str, ...] | None
    where: str = "info.json"
    split: str = "train"

    @classmethod
    def from_info(cls, info: Mapping[str, Any], split: str, where: str) -> DatasetClasses:
        """The classes info.json (already read, at `where`) records for `split`.

        Raises:
          InputError: the split is not in info.json, or its label_names is not a list of names.
        """
        splits = info.get("splits", {})
        entry = splits.get(split)
        if not isinstance(entry, Mapping):
            raise InputError(f"{where} has no split {split!r} (it has {sorted(splits)})")
        names = entry.get("label_names")
        if names is None or names == []:
            return cls(None, where, split)
        if not isinstance(names, list) or not all(isinstance(n, (str, int)) for n in names):
            raise InputError(
                f"{where}: splits.{split}.label_names = {names!r}: must be a list of names"
            )
        return cls(tuple(str(n) for n in names), where, split)

    def num_classes(self, bound: int | None) -> int | None:
        """The model's class count: `bound` (what gin's model_config.num_classes says) checked
        against the dataset; None (not bound) takes the dataset's count; 0 asks for an
        unconditional model on purpose.

        Returns:
          The number of classes, or None for an unconditional model.

        Raises:
          InputError: gin's count contradicts the dataset's, or a conditional model meets an
            unlabelled split; the message names both values.
        """
        if bound is None:
            return len(self.label_names) if self.label_names else None
        if _is_integer(bound) and bound == 0:
            return None
        if not _is_integer(bound) or bound < 0:
            return bound  # ModelConfig names the binding and what it must be
        check_num_classes(int(bound), self, source=" in gin")
        return int(bound)


def check_num_classes(num_classes: int | None, classes: DatasetClasses, source: str = "") -> None:
    """Refuses a class-conditional model (num_classes >= 1) whose dataset split is unlabelled or
    has another number of classes. An unconditional model (None) fits any dataset.

    Raises:
      InputError: e.g. `model_config.num_classes = 2 in gin, but DATA/info.json lists 3
        label_names for split 'train'`.
    """
    if not num_classes:
        return
    stated = f"model_config.num_classes = {num_classes}{source}"
    if classes.label_names is None:
        raise InputError(
            f"{stated} (a class-conditional model), but {classes.where} lists no label_names for "
            f"split {classes.split!r}: the dataset is unlabelled (build it with --labels_from_dirs "
            "or from a labelled TFDS dataset, or set model_config.num_classes = 0)"
        )
    if len(classes.label_names) != num_classes:
        raise InputError(
            f"{stated}, but {classes.where} lists {len(classes.label_names)} label_names for "
            f"split {classes.split!r} (leave model_config.num_classes unset to take the "
            "dataset's, or 0 for an unconditional model)"
        )


@gin.configurable("model_config", denylist=["dct", "classes"])
def model_config(dct: DCTConfig | None = None, classes: DatasetClasses | None = None, **kwargs):
    """The architecture, a `dct_gen.model.ModelConfig`; `dct` defaults to `dct_config()`.

    Keys: the fields of ModelConfig. `num_classes` unset (None) takes the dataset's count of
    classes when `classes` is given (a labelled dataset trains a class-conditional model), and
    0 asks for an unconditional model.

    Args:
      dct: the representation (None: `dct_config()`).
      classes: the training split's classes (`DatasetClasses.from_info`); None: no dataset
        (a dry run), and num_classes None or 0 is unconditional.

    Raises:
      InputError: an unknown key, a value out of range or of the wrong kind (the message names
        it: `model_config.hidden_size = 'abc': must be an integer >= 1`), a representation
        field that is needed and not bound, or a class count the dataset contradicts.
    """
    from dct_gen import model as model_lib

    fields = {f.name for f in dataclasses.fields(model_lib.ModelConfig)} - {"dct"}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise InputError(f"unknown model_config keys {unknown}; known: {sorted(fields)}")
    bound = kwargs.get("num_classes")
    if classes is not None:
        kwargs["num_classes"] = classes.num_classes(bound)
    elif _is_integer(bound) and bound == 0:
        kwargs["num_classes"] = None
    dct = dct or dct_config()
    try:
        return model_lib.ModelConfig(dct=dct, **kwargs)
    except (TypeError, ValueError) as e:
        # ModelConfig's messages start with the field's name: `hidden_size = 'abc': ...`.
        raise InputError(f"model_config.{e}") from e


def configs_for_dataset(info: Mapping[str, Any], split: str, where: str = "info.json"):
    """The model and train configs that the parsed gin configuration binds, for a dataset: its
    representation (gin's dct_config bindings must agree with it, `dct_config_for_data`) and
    the classes of the split the model trains on (`DatasetClasses`: model_config.num_classes
    unset takes them).

    Args:
      info: the dataset's info.json, as read (`dct_gen.records.read_info`).
      split: the split the model trains on.
      where: the info.json path, for messages.

    Returns:
      (a `dct_gen.model.ModelConfig`, a `TrainConfig`).

    Raises:
      InputError: a binding that contradicts the dataset, or a bad setting (the message names
        the binding).
    """
    from dct_gen import records

    dct = dct_config_for_data(records.representation_from_info(info), where)
    classes = DatasetClasses.from_info(info, split, where)
    return model_config(dct=dct, classes=classes), train_config()


TARGET_PARTS = ("all", "chroma")
# train_config.label_dropout of a class-conditional model when gin leaves it unset.
DEFAULT_LABEL_DROPOUT = 0.1
# TrainConfig's integer fields and their least values.
_INTEGER_FIELDS = {"batch_size": 1, "tokens": 1, "warmup_steps": 0, "chunk_size": 1, "overlap": 0}


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The run's hyperparameters (paper Table 3, appendix C).

    Every field is checked when the object is made (`check`), so a bad value stops a run before
    it writes anything.

    Attributes:
      batch_size: global batch (split across replicas), >= 1.
      learning_rate: peak Adam learning rate, after the linear warmup; finite and > 0.
      tokens: training length in target tokens (elements that carry loss), >= 1.
      warmup_steps: linear warmup steps, then cosine decay; >= 0.
      chunk_size, overlap: C and O of the input pipeline (and of the model's window);
        C > O >= 0.
      target_part: "all", or "chroma" for colorization on luma_first data (paper 4.3).
      mixed_precision: bfloat16 compute with float32 variables.
      grad_clip_norm: gradients are clipped to this global norm (the paper does not say; 1.0);
        finite and > 0, or None: no clipping.
      label_dropout: the rate at which a class-conditional model's training examples have
        their label replaced by the null label (-1), so that the "no label" embedding is
        trained (unconditional sampling, upsampling and classifier-free guidance use it); in
        [0, 1). None: DEFAULT_LABEL_DROPOUT for a class-conditional model, 0 otherwise
        (`with_label_dropout` settles it when the model is known).
    """

    batch_size: int
    learning_rate: float
    tokens: int
    warmup_steps: int = 1000
    chunk_size: int = 896
    overlap: int = 128
    target_part: str = "all"
    mixed_precision: bool = True
    grad_clip_norm: float | None = 1.0
    label_dropout: float | None = None

    def __post_init__(self):
        self.check()
        # Plain Python numbers, whatever kind of number came in (a rate bound as `1` in gin, a
        # numpy integer): config.json stores them as JSON.
        for name in _INTEGER_FIELDS:
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("learning_rate", "grad_clip_norm", "label_dropout"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, float(value))

    def with_label_dropout(self, num_classes: int | None) -> TrainConfig:
        """This config with label_dropout settled for a model with `num_classes` classes (None:
        unconditional): its default when unset.

        Raises:
          InputError: label_dropout > 0 for an unconditional model (there is no label to drop).
        """
        if not num_classes:
            if self.label_dropout:
                raise InputError(
                    f"train_config.label_dropout = {self.label_dropout}, but the model is "
                    "unconditional (model_config.num_classes is unset or 0): there is no label "
                    "to drop; remove the binding or give the model classes"
                )
            return dataclasses.replace(self, label_dropout=0.0)
        if self.label_dropout is None:
            return dataclasses.replace(self, label_dropout=DEFAULT_LABEL_DROPOUT)
        return self

    def check(self) -> None:
        """Raises InputError naming the first field out of range, as
        `train_config.learning_rate = -1: must be > 0`."""
        for name, least in _INTEGER_FIELDS.items():
            value = getattr(self, name)
            if not _is_integer(value):
                raise InputError(f"train_config.{name} = {value!r}: must be an integer")
            if value < least:
                raise InputError(f"train_config.{name} = {value!r}: must be >= {least}")
        if self.overlap >= self.chunk_size:
            raise InputError(
                f"train_config.overlap = {self.overlap}: must be < train_config.chunk_size = "
                f"{self.chunk_size}"
            )
        for name, allow_none in (("learning_rate", False), ("grad_clip_norm", True)):
            value = getattr(self, name)
            if value is None and allow_none:
                continue
            off = " (None: no clipping)" if allow_none else ""
            if not _is_number(value):
                raise InputError(f"train_config.{name} = {value!r}: must be a number{off}")
            if not math.isfinite(value) or value <= 0:
                raise InputError(f"train_config.{name} = {value!r}: must be > 0 and finite{off}")
        if self.target_part not in TARGET_PARTS:
            raise InputError(
                f"train_config.target_part = {self.target_part!r}: must be one of "
                f"{', '.join(repr(p) for p in TARGET_PARTS)}"
            )
        dropout = self.label_dropout
        if dropout is not None and (not _is_number(dropout) or not 0 <= dropout < 1):
            raise InputError(
                f"train_config.label_dropout = {dropout!r}: must be a number in [0, 1) (None: "
                f"{DEFAULT_LABEL_DROPOUT} for a class-conditional model)"
            )
        if not isinstance(self.mixed_precision, bool):
            raise InputError(
                f"train_config.mixed_precision = {self.mixed_precision!r}: must be True or False"
            )


def _as_integer(value):
    """value as an int when it is one, or a float with an integral value (gin writes token
    budgets as 1e9); anything else is left for TrainConfig.check to name."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


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
    grad_clip_norm: float | None = 1.0,
    label_dropout: float | None = None,
) -> TrainConfig:
    """The run's hyperparameters; batch_size, learning_rate and tokens must be bound.

    `grad_clip_norm = None` turns clipping off. `label_dropout = None` (unset) is 0.1 for a
    class-conditional model and 0 for an unconditional one.

    Raises:
      InputError: one of those is not bound, or a value is out of range or of the wrong kind
        (the message names the binding and its value).
    """
    integers = dict(
        batch_size=_required("train_config.batch_size", batch_size),
        tokens=_required("train_config.tokens", tokens),
        warmup_steps=warmup_steps,
        chunk_size=chunk_size,
        overlap=overlap,
    )
    return TrainConfig(
        learning_rate=_required("train_config.learning_rate", learning_rate),
        grad_clip_norm=grad_clip_norm,
        label_dropout=label_dropout,
        target_part=target_part,
        mixed_precision=mixed_precision,
        **{name: _as_integer(value) for name, value in integers.items()},
    )


def dry_run(config=None) -> dict:
    """Builds a model without reading data.

    Args:
      config: a `dct_gen.model.ModelConfig`; None: `model_config()` of the parsed gin
        configuration, whose representation must then be bound in gin (no info.json is read).

    Returns:
      {"parameters": trainable and non-trainable weights of the built model,
       "flops_per_token": training FLOPs per target token (`dct_gen.model.flops_per_token`)}.

    Raises:
      InputError: gin binds no complete representation, or an unknown model_config key.
    """
    import keras

    from dct_gen import model as model_lib

    if config is None:
        bound = bound_dct_fields()
        missing = [f"dct_config.{f}" for f in REQUIRED_DCT_FIELDS if f not in bound]
        if missing and "dct" not in gin.get_bindings("model_config"):
            raise InputError(
                "a dry run reads no dataset, so gin must bind the representation, but "
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not bound "
                "(include a gin/data/*.gin file)"
            )
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
