"""The DCTransformer model: encoder over the DCT image, stacked channel/position/value decoders.

Paper section 3.2 and appendix B. `build_model(ModelConfig)` returns a Keras 3 functional model:

  inputs   channels, positions, values  (b, t) int32, the window of O + C elements
           dct_image                    (b, G, G, 3B^2) int32, everything before the chunk
           label                        (b,) int32, only when num_classes is set (-1: none)
  outputs  channel   (b, t, 3B^2 + 1) float32 logits of element t's channel (stop included)
           position  (b, t, G^2)      logits of its position, given its true channel
           value     (b, t, 2 clip+1) logits of its value (offset by clip), given channel and
                                      position

Element t's channel logits depend only on the encoded image and elements < t; its position
logits also on its own channel, its value logits also on its own position (teacher forcing,
paper 3.2). The inputs of the three decoders (eq. 4-9):

  E_channel[t]  = C(c[t-1]) + P(p[t-1]) + V(v[t-1]) + P_chunk[t] (+ label)    (eq. 4; t = 0: a
                  learned start vector replaces the previous element)
  E_position[t] = H_channel[t] + C(c[t])                                       (eq. 6)
  E_value[t]    = H_position[t] + gather(E_input, p[t]) + P(p[t])              (eq. 8)

`model_layers(model)` hands the layers of a built model to cached decoding (`dct_gen.sampling`),
which runs them one block of elements at a time with the same weights.

The gather maps canvas position p = row * G + col to encoder token (row // s) * G' + col // s
(`layers.encoder_cell`): the encoder grid is the G x G block grid downsampled by the
convolution's stride s. The extra P(p[t]) in E_value (not in eq. 8) tells the value decoder
where inside its s x s encoder cell the position lies. The class label is added to every
encoder token and to E_channel.

Beyond the paper, a structural logit mask (`structural_mask`, switchable) removes what the
representation can never produce (`dct_gen.representation`): the channel never goes back in the
ordering's rank, a channel repeats only while a later position is left, within a channel
positions strictly increase, chroma channels use even (row, col) positions only, stored values
are never zero, and the stop element has position 0 and value 0. The sampler reuses
`channel_allowed`, `position_allowed` and `value_allowed`.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
from keras import ops

from dct_gen import layers
from dct_gen.layers import MASK_VALUE
from dct_gen.representation import DCTConfig, channel_rank

LayerSpec = tuple[tuple[int, int], ...]

# What None means for the ModelConfig fields that may be None (for the error messages).
_NONE = {"key_size": "hidden_size // num_heads", "num_classes": "unconditional"}


def _check_integer(name: str, value, least: int, note: str = "") -> None:
    """Raises ValueError naming the field unless value is an integer >= least (bool is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} = {value!r}: must be an integer >= {least}{note}")
    if value < least:
        raise ValueError(f"{name} = {value!r}: must be >= {least}{note}")


def _pair_entry(value) -> int:
    """One count of a layer spec pair, as an int (TypeError/ValueError: not an integer)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(value)
    return int(value)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything `build_model` needs; plain values, no gin.

    Attributes:
      dct: the representation (vocabularies, grid, ordering).
      hidden_size: d.
      num_heads: attention heads.
      key_size: per-head width; None: hidden_size // num_heads.
      ffn_multiplier: each dense sublayer is d -> ffn_multiplier * d -> d.
      encoder_spec, channel_spec, position_spec, value_spec: layer specs [(n_attention, n_dense)].
      kernel_size, stride: the encoder's downsampling convolution.
      chunk_size, overlap: C and O; the window is O + C elements.
      dropout: on embeddings and every residual branch.
      num_classes: class conditioning (None: unconditional).
      value_dim: width of the encoder's per-coefficient value embedding.
      structural_mask: apply the structural logit mask.
    """

    dct: DCTConfig
    hidden_size: int = 512
    num_heads: int = 8
    key_size: int | None = None
    ffn_multiplier: int = 4
    encoder_spec: LayerSpec = ((1, 2),) * 4
    channel_spec: LayerSpec = ((1, 2),) * 3 + ((1, 4),)
    position_spec: LayerSpec = ((1, 2),) * 3 + ((1, 4),)
    value_spec: LayerSpec = ((1, 2),) * 5 + ((1, 7),)
    kernel_size: int = 4
    stride: int = 2
    chunk_size: int = 896
    overlap: int = 128
    dropout: float = 0.1
    num_classes: int | None = None
    value_dim: int = 4
    structural_mask: bool = True

    def __post_init__(self):
        """Checks every field, so that a bad value fails here, naming it, and not later inside
        Keras (or after a run directory was written).

        Raises:
          ValueError: the message starts with the field's name, e.g. `hidden_size = 'abc':
            must be an integer >= 1`.
        """
        if not isinstance(self.dct, DCTConfig):
            raise ValueError(f"dct = {self.dct!r}: must be a DCTConfig")
        for name in (
            "hidden_size",
            "num_heads",
            "ffn_multiplier",
            "kernel_size",
            "stride",
            "chunk_size",
            "value_dim",
        ):
            _check_integer(name, getattr(self, name), 1)
        _check_integer("overlap", self.overlap, 0)
        for name in ("key_size", "num_classes"):
            if getattr(self, name) is not None:
                _check_integer(name, getattr(self, name), 1, " (None: " + _NONE[name] + ")")
        # Plain ints (a numpy integer would not go into config.json).
        for name in (
            "hidden_size",
            "num_heads",
            "ffn_multiplier",
            "kernel_size",
            "stride",
            "chunk_size",
            "value_dim",
            "overlap",
            "key_size",
            "num_classes",
        ):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, int(getattr(self, name)))
        dropout = self.dropout
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise ValueError(f"dropout = {dropout!r}: must be a number in [0, 1)")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout = {dropout!r}: must be in [0, 1)")
        if not isinstance(self.structural_mask, bool):
            raise ValueError(f"structural_mask = {self.structural_mask!r}: must be True or False")
        for name in ("encoder_spec", "channel_spec", "position_spec", "value_spec"):
            raw = getattr(self, name)
            try:
                spec = tuple((_pair_entry(a), _pair_entry(b)) for a, b in raw)
            except (TypeError, ValueError):
                spec = ()
            if not spec or any(a < 0 or b < 0 for a, b in spec):
                raise ValueError(
                    f"{name} = {raw!r}: must be a non-empty list of (n_attention, n_dense) "
                    "pairs of integers >= 0"
                )
            object.__setattr__(self, name, spec)
        if self.key_size is None and self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size = {self.hidden_size} is not a multiple of num_heads = "
                f"{self.num_heads}: set key_size"
            )
        if self.kernel_size < self.stride:
            raise ValueError(f"kernel_size = {self.kernel_size} < stride = {self.stride}")

    @property
    def head_size(self) -> int:
        return self.key_size or self.hidden_size // self.num_heads

    @property
    def window(self) -> int:
        return self.chunk_size + self.overlap

    @property
    def encoder_grid(self) -> int:
        return layers.downsampled_grid(self.dct.grid, self.stride)


# ----------------------------------------------------------------------------------------------
# The structural mask (beyond the paper).


@dataclasses.dataclass(frozen=True)
class StructuralTables:
    """Per-channel and per-position constants of the structural mask (numpy)."""

    rank: np.ndarray  # (3B^2 + 1,) place of each channel in the ordering; stop last
    is_chroma: np.ndarray  # (3B^2 + 1,) bool
    last_position: np.ndarray  # (3B^2 + 1,) the largest position a channel can hold
    even_position: np.ndarray  # (G^2,) bool: even row and even column (chroma positions)
    stop_token: int
    clip: int


def structural_tables(dct: DCTConfig) -> StructuralTables:
    n, g = dct.channels_per_plane, dct.grid
    ids = np.arange(dct.num_channels)
    is_chroma = (ids >= n) & (ids < dct.stop_token)
    last = np.where(is_chroma, (g - 2) * g + (g - 2), g * g - 1)
    last[dct.stop_token] = -1  # nothing follows the stop token
    pos = np.arange(dct.num_positions)
    return StructuralTables(
        rank=channel_rank(dct.block_size, dct.ordering, dct.interval).astype(np.int32),
        is_chroma=is_chroma,
        last_position=last.astype(np.int32),
        even_position=((pos // g) % 2 == 0) & ((pos % g) % 2 == 0),
        stop_token=dct.stop_token,
        clip=dct.clip,
    )


def _has_previous(prev_channel, tables: StructuralTables):
    # -1 (no previous element in the window) and the stop token (padding follows) constrain
    # nothing.
    return (prev_channel >= 0) & (prev_channel < tables.stop_token)


def channel_allowed(prev_channel, prev_position, tables: StructuralTables):
    """Which channels element t may have, given element t - 1: (...,) -> (..., 3B^2 + 1) bool.

    A channel of higher rank is always allowed (the stop token ranks last); the same channel
    only while a position after prev_position is left for it. prev_channel -1: no constraint.
    """
    prev_channel = ops.cast(prev_channel, "int32")
    has_prev = _has_previous(prev_channel, tables)
    prev = ops.where(has_prev, prev_channel, 0)
    rank = ops.convert_to_tensor(tables.rank)
    later = rank > ops.take(rank, prev)[..., None]
    ids = ops.arange(tables.rank.shape[0], dtype="int32")
    room = ops.cast(prev_position, "int32") < ops.take(
        ops.convert_to_tensor(tables.last_position), prev
    )
    same = (ids == prev[..., None]) & room[..., None]
    return later | same | ~has_prev[..., None]


def position_allowed(channel, prev_channel, prev_position, tables: StructuralTables):
    """Which positions element t may have, given its channel and element t - 1:
    (...,) -> (..., G^2) bool. Chroma: even row and column; same channel as before: a larger
    position; the stop token: position 0."""
    channel = ops.cast(channel, "int32")
    prev_channel = ops.cast(prev_channel, "int32")
    pos = ops.arange(tables.even_position.shape[0], dtype="int32")
    chroma = ops.take(ops.convert_to_tensor(tables.is_chroma), channel)
    allowed = ~chroma[..., None] | ops.convert_to_tensor(tables.even_position)
    same = _has_previous(prev_channel, tables) & (channel == prev_channel)
    allowed = allowed & (~same[..., None] | (pos > ops.cast(prev_position, "int32")[..., None]))
    return ops.where((channel == tables.stop_token)[..., None], pos == 0, allowed)


def value_allowed(channel, tables: StructuralTables):
    """Which value ids (value + clip) element t may have: (...,) -> (..., 2 clip + 1) bool.
    Stored coefficients are non-zero; the stop element's value is 0."""
    ids = ops.arange(2 * tables.clip + 1, dtype="int32")
    is_stop = (ops.cast(channel, "int32") == tables.stop_token)[..., None]
    return ops.where(is_stop, ids == tables.clip, ids != tables.clip)


def apply_mask(logits, allowed):
    """Masked logits: MASK_VALUE where not allowed (finite, so a softmax never gives NaN)."""
    return ops.where(allowed, logits, ops.cast(MASK_VALUE, logits.dtype))


@layers.serializable
class StructuralMask(keras.layers.Layer):
    """Applies the structural mask to the three logits of a window (teacher forcing)."""

    def __init__(self, dct_config, **kwargs):
        super().__init__(**kwargs)
        self.dct_config = dict(dct_config)
        self.tables = structural_tables(DCTConfig.from_dict(self.dct_config))

    def call(self, channel_logits, position_logits, value_logits, channels, positions):
        # logits (b, t, vocab) float32; channels, positions (b, t) int32
        channels = ops.cast(channels, "int32")
        positions = ops.cast(positions, "int32")
        prev_channels = ops.pad(channels[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
        prev_positions = ops.pad(positions[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
        t = self.tables
        return (
            apply_mask(channel_logits, channel_allowed(prev_channels, prev_positions, t)),
            apply_mask(
                position_logits, position_allowed(channels, prev_channels, prev_positions, t)
            ),
            apply_mask(value_logits, value_allowed(channels, t)),
        )

    def compute_output_spec(self, channel_logits, position_logits, value_logits, *args):
        return tuple(
            keras.KerasTensor(x.shape, dtype=x.dtype)
            for x in (channel_logits, position_logits, value_logits)
        )

    def get_config(self):
        return {**super().get_config(), "dct_config": self.dct_config}


# ----------------------------------------------------------------------------------------------
# The functional model.

COMPONENTS = ("channel", "position", "value")  # the decoders, in the order they run


def _decoder_name(component: str) -> str:
    return f"{component}_decoder"


def _head_name(component: str) -> str:
    return f"{component}_head"


def _embedding_name(component: str) -> str:
    return f"{component}_embedding"


def build_model(config: ModelConfig, name: str = "dctransformer") -> keras.Model:
    """Builds the DCTransformer functional model (see the module docstring for its contract)."""
    dct, d = config.dct, config.hidden_size
    g = dct.grid
    common = dict(
        hidden_size=d,
        num_heads=config.num_heads,
        key_size=config.head_size,
        ffn_size=config.ffn_multiplier * d,
        dropout=config.dropout,
    )
    inputs = {
        "channels": keras.Input((None,), dtype="int32", name="channels"),
        "positions": keras.Input((None,), dtype="int32", name="positions"),
        "values": keras.Input((None,), dtype="int32", name="values"),
        "dct_image": keras.Input((g, g, dct.stop_token), dtype="int32", name="dct_image"),
    }
    if config.num_classes:
        inputs["label"] = keras.Input((), dtype="int32", name="label")

    # Encoder (eq. 3).
    x = layers.DCTImageEmbedding(
        num_channels=dct.stop_token,
        clip=dct.clip,
        grid=g,
        hidden_size=d,
        kernel_size=config.kernel_size,
        stride=config.stride,
        value_dim=config.value_dim,
        name="dct_image_embedding",
    )(inputs["dct_image"])  # (b, G'^2, d)
    label = None
    if config.num_classes:
        label = layers.LabelEmbedding(config.num_classes, d, name="label_embedding")(
            inputs["label"]
        )  # (b, 1, d)
        x = layers.Sum(name="encoder_label")([x, label])
    x = keras.layers.Dropout(config.dropout, name="encoder_dropout")(x)
    memory = layers.TransformerStack(
        layer_spec=config.encoder_spec, final_norm=True, name="encoder", **common
    )(x)  # (b, G'^2, d)

    # Element embeddings, shared by the decoders.
    channel_embedding = keras.layers.Embedding(dct.num_channels, d, name=_embedding_name("channel"))
    position_embedding = keras.layers.Embedding(
        dct.num_positions, d, name=_embedding_name("position")
    )
    value_embedding = layers.OffsetEmbedding(
        dct.num_values, d, offset=dct.clip, name=_embedding_name("value")
    )
    c = channel_embedding(inputs["channels"])  # (b, t, d)
    p = position_embedding(inputs["positions"])  # (b, t, d)
    v = value_embedding(inputs["values"])  # (b, t, d)

    def decoder(spec, component):
        return layers.TransformerStack(
            layer_spec=spec, decoder=True, name=_decoder_name(component), **common
        )

    # Channel decoder (eq. 4, 5).
    e = layers.ShiftRight(d, name="shift_right")(layers.Sum(name="element")([c, p, v]))
    e = layers.ChunkPositionEmbedding(config.window, d, name="chunk_position_embedding")(e)
    if label is not None:
        e = layers.Sum(name="decoder_label")([e, label])
    e = keras.layers.Dropout(config.dropout, name="channel_dropout")(e)
    h_channel = decoder(config.channel_spec, "channel")(e, memory)  # (b, t, d)

    # Position decoder (eq. 6, 7): the element's own channel.
    e = layers.Sum(name="position_input")([h_channel, c])
    e = keras.layers.Dropout(config.dropout, name="position_dropout")(e)
    h_position = decoder(config.position_spec, "position")(e, memory)

    # Value decoder (eq. 8, 9): the encoder token at the element's own position.
    gathered = layers.GatherEncoded(g, config.stride, name="gather")(memory, inputs["positions"])
    e = layers.Sum(name="value_input")([h_position, gathered, p])
    e = keras.layers.Dropout(config.dropout, name="value_dropout")(e)
    h_value = decoder(config.value_spec, "value")(e, memory)

    logits = (
        layers.OutputHead(dct.num_channels, name=_head_name("channel"))(h_channel),
        layers.OutputHead(dct.num_positions, name=_head_name("position"))(h_position),
        layers.OutputHead(dct.num_values, name=_head_name("value"))(h_value),
    )
    if config.structural_mask:
        # float32 even under mixed precision (a bfloat16 layer would cast the logits down).
        logits = StructuralMask(dct.to_dict(), dtype="float32", name="structural_mask")(
            *logits, inputs["channels"], inputs["positions"]
        )
    outputs = dict(zip(COMPONENTS, logits))
    return keras.Model(inputs=inputs, outputs=outputs, name=name)


@dataclasses.dataclass(frozen=True)
class ModelLayers:
    """The layers of a `build_model` model, for cached decoding (the same objects: weights
    shared, nothing copied).

    Attributes:
      image_embedding: the DCT image -> encoder tokens (eq. 3).
      label_embedding: label -> (b, 1, d); None for unconditional models.
      encoder: the encoder stack (its output is the memory).
      embeddings: per component (COMPONENTS), the element embedding C, P or V.
      start: the learned start vector (d,) of the channel decoder's first element.
      chunk_positions: P_chunk, the (W, d) table of window indices.
      decoders: per component, its decoder stack (`TransformerStack.call_with_cache`).
      heads: per component, its output head (float32 logits, before the structural mask).
    """

    image_embedding: layers.DCTImageEmbedding
    label_embedding: layers.LabelEmbedding | None
    encoder: layers.TransformerStack
    embeddings: dict
    start: object
    chunk_positions: object
    decoders: dict
    heads: dict


def model_layers(model: keras.Model) -> ModelLayers:
    """The layers of a model from `build_model` (see ModelLayers)."""
    names = {layer.name for layer in model.layers}
    return ModelLayers(
        image_embedding=model.get_layer("dct_image_embedding"),
        label_embedding=(
            model.get_layer("label_embedding") if "label_embedding" in names else None
        ),
        encoder=model.get_layer("encoder"),
        embeddings={c: model.get_layer(_embedding_name(c)) for c in COMPONENTS},
        start=model.get_layer("shift_right").start,
        chunk_positions=model.get_layer("chunk_position_embedding").table,
        decoders={c: model.get_layer(_decoder_name(c)) for c in COMPONENTS},
        heads={c: model.get_layer(_head_name(c)) for c in COMPONENTS},
    )


def input_names(model: keras.Model) -> list[str]:
    return [t.name for t in model.inputs]


def forward(model: keras.Model, batch: dict, training: bool = False) -> dict:
    """The full forward pass on a batch dict of `dct_gen.data.make_dataset` (extra keys ignored).

    Returns {"channel", "position", "value"}: float32 logits (b, t, vocab).
    """
    return model({k: batch[k] for k in input_names(model)}, training=training)


# ----------------------------------------------------------------------------------------------
# Loss and bits per subpixel.


def compute_losses(outputs: dict, batch: dict, dct: DCTConfig) -> dict:
    """Cross-entropies under the loss mask, in nats, and bits per subpixel (docs/representation.md).

    Target elements (loss_mask 1) count the channel, position and value cross-entropies; the
    stop element counts only its channel; overlap and padding count nothing.

    Returns:
      loss: total nats / target elements in the batch (the optimisation objective);
      nats: (b,) total nats per example; {component}_nats: (b,) per component;
      tokens: target elements in the batch;
      bits_per_subpixel and {component}_bits_per_subpixel: the mean over examples (with targets)
        of each chunk's bits / (3 * height * width), the chunk's share of its image's bits per
        subpixel (summing an image's chunks gives the image's; paper Figure 9 plots these);
      bits_per_subpixel_per_example: (b,).
    """
    loss_mask = ops.cast(batch["loss_mask"], "float32")
    channels = ops.cast(batch["channels"], "int32")
    targets = {
        "channel": channels,
        "position": ops.cast(batch["positions"], "int32"),
        "value": ops.cast(batch["values"], "int32") + dct.clip,
    }
    not_stop = ops.cast(channels != dct.stop_token, "float32")
    weights = {
        "channel": loss_mask,
        "position": loss_mask * not_stop,
        "value": loss_mask * not_stop,
    }
    out = {}
    total = 0.0
    for name in COMPONENTS:
        ce = ops.sparse_categorical_crossentropy(
            targets[name], ops.cast(outputs[name], "float32"), from_logits=True
        )  # (b, t)
        out[f"{name}_nats"] = ops.sum(ce * weights[name], axis=1)
        total = total + out[f"{name}_nats"]
    out["nats"] = total
    tokens = ops.sum(loss_mask)
    out["tokens"] = tokens
    out["loss"] = ops.sum(total) / ops.maximum(tokens, 1.0)
    subpixels = 3.0 * ops.cast(batch["height"], "float32") * ops.cast(batch["width"], "float32")
    has_targets = ops.cast(ops.sum(loss_mask, axis=1) > 0, "float32")
    examples = ops.maximum(ops.sum(has_targets), 1.0)
    to_bpd = lambda nats: nats / math.log(2.0) / ops.maximum(subpixels, 1.0)
    out["bits_per_subpixel_per_example"] = to_bpd(total)
    out["bits_per_subpixel"] = ops.sum(to_bpd(total) * has_targets) / examples
    for name in COMPONENTS:
        out[f"{name}_bits_per_subpixel"] = (
            ops.sum(to_bpd(out[f"{name}_nats"]) * has_targets) / examples
        )
    return out


# ----------------------------------------------------------------------------------------------
# Cost.


def count_parameters(config: ModelConfig) -> int:
    """The parameter count of `build_model(config)`, without building it (tests check that the
    two agree). Lets tools size the paper's 300-700M-parameter models in microseconds."""
    dct, d = config.dct, config.hidden_size
    a = config.num_heads * config.head_size
    f = config.ffn_multiplier * d
    norm = 2 * d
    attention = 4 * d * a + d
    dense = 2 * d * f + f + d
    n = dct.num_values * config.value_dim  # encoder value table
    n += dct.stop_token * config.value_dim * d + d  # projection
    n += config.kernel_size**2 * d * d + d  # convolution
    n += 2 * config.encoder_grid * d  # row and column embeddings
    if config.num_classes:
        n += (config.num_classes + 1) * d

    def stack(spec, decoder):
        total = 0
        for n_attention, n_dense in spec:
            branches = n_attention * (2 if decoder else 1) + n_dense
            total += n_attention * (2 if decoder else 1) * attention + n_dense * dense
            total += branches * (norm + 1)  # layer norm and ReZero scalar per branch
        return total

    n += stack(config.encoder_spec, False) + norm
    for spec in (config.channel_spec, config.position_spec, config.value_spec):
        n += stack(spec, True)
    n += (dct.num_channels + dct.num_positions + dct.num_values) * d  # element embeddings
    n += d + config.window * d  # start vector, chunk positions
    n += sum(norm + d * v + v for v in (dct.num_channels, dct.num_positions, dct.num_values))
    return int(n)


def flops_per_token(config: ModelConfig, training: bool = True) -> float:
    """Model FLOPs per target token (an element that carries loss), counted analytically.

    One window costs the encoder over G'^2 tokens (value embedding projection, strided
    convolution, Transformer) plus the three decoders over O + C elements (projections,
    attention scores and weighted sums over the full t x t and t x G'^2 matrices, dense
    sublayers, output heads); multiply-adds count 2. The window carries C target tokens. With
    training=True the forward cost is tripled (backward pass = 2x forward).
    """
    dct, d = config.dct, config.hidden_size
    a = config.num_heads * config.head_size  # attention width
    f = config.ffn_multiplier * d
    g, n = dct.grid, config.encoder_grid**2
    t = config.window
    flops = 2.0 * g * g * dct.stop_token * config.value_dim * d  # projection
    flops += 2.0 * n * config.kernel_size**2 * d * d  # convolution

    def self_attention(length):
        return 2.0 * length * 4 * d * a + 4.0 * length * length * a

    def cross_attention(length, memory):
        return 2.0 * (length * 2 * d * a + memory * 2 * d * a) + 4.0 * length * memory * a

    dense = lambda length: 2.0 * length * 2 * d * f
    for n_attention, n_dense in config.encoder_spec:
        flops += n_attention * self_attention(n) + n_dense * dense(n)
    for spec in (config.channel_spec, config.position_spec, config.value_spec):
        for n_attention, n_dense in spec:
            flops += n_attention * (self_attention(t) + cross_attention(t, n)) + n_dense * dense(t)
    flops += 2.0 * t * d * (dct.num_channels + dct.num_positions + dct.num_values)
    flops /= config.chunk_size
    return 3.0 * flops if training else flops
