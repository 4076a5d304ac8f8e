"""Keras layers of the DCTransformer: attention, PAR blocks with ReZero, and the embeddings.

Every layer here takes plain constructor arguments, round-trips through get_config/from_config
and is registered with Keras under the package name `dct_gen`, so that a functional model built
from them can be serialized. None of them knows about gin (gin + Layer subclasses breaks Keras).

Cached decoding (`dct_gen.sampling`) runs the decoder stacks a few elements at a time:
`TransformerStack.call_with_cache` (and `PARBlock.call_with_cache` below it) takes the elements
at window indices [index, index + n), the stack's self-attention key/value cache and the
cross-attention keys and values of the memory (`project_cross`, computed once per memory), and
returns the outputs and the updated cache; step by step it gives what `call` gives on the whole
window. Caches are laid out heads first, (b, h, W, k), so that no step transposes them. These
methods are called directly, not through Keras' `__call__`, so they cast their inputs and
weights to the layer's compute dtype themselves (mixed precision keeps float32 variables).

Shapes in comments: b batch, t window length (O + C), s memory length (encoder tokens),
d hidden size, h heads, k key size per head.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

# A large negative logit that stays finite in bfloat16 (max ~3.4e38) and float32, so that a row
# whose entries are all masked still gives a finite softmax instead of NaN.
MASK_VALUE = -1e9


def serializable(cls):
    return keras.saving.register_keras_serializable(package="dct_gen")(cls)


def write_cache(cache, update, index, jit_compile: bool = False):
    """cache[:, :, index:index + n] = update: (b, h, W, k) and (b, h, n, k) -> (b, h, W, k).

    Outside XLA a strided-slice update (which writes into the cache's buffer when nothing else
    holds it); under XLA (jit_compile), whose kernels lack that op, a dynamic-update-slice.
    """
    if jit_compile:
        from tensorflow.compiler.tf2xla.python import xla as xla_ops

        zero = tf.zeros([], tf.int32)
        return xla_ops.dynamic_update_slice(
            cache, update, tf.stack([zero, zero, tf.cast(index, tf.int32), zero])
        )
    n = tf.shape(update)[2]
    begin = tf.stack([0, 0, index, 0])
    end = tf.stack([tf.shape(cache)[0], tf.shape(cache)[1], index + n, tf.shape(cache)[3]])
    return tf.raw_ops.TensorStridedSliceUpdate(
        input=cache, begin=begin, end=end, strides=tf.ones([4], tf.int32), value=update
    )


# ----------------------------------------------------------------------------------------------
# Attention and the residual blocks (paper appendix B).


@serializable
class Attention(keras.layers.Layer):
    """Multi-head dot-product attention, self or cross, optionally causal.

    Its own layer (rather than keras.layers.MultiHeadAttention) so that cached decoding can
    reuse the projections: `project_memory` computes the keys and values of a memory once,
    `attend` takes them precomputed, and `call_with_cache` runs causal self-attention over new
    elements given the keys and values of the earlier ones.

    Args:
      hidden_size: d, the width of the query stream and of the memory.
      num_heads: h.
      key_size: k per head; h * k need not equal d (Table 3 has 1152 units with 14 heads).
      causal: position t attends to positions <= t only (self-attention in the decoders).
      dropout: on the attention weights.
    """

    def __init__(self, hidden_size, num_heads, key_size, causal=False, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size = int(hidden_size)
        self.num_heads = int(num_heads)
        self.key_size = int(key_size)
        self.causal = bool(causal)
        self.dropout = float(dropout)
        self.weights_dropout = keras.layers.Dropout(self.dropout)

    def build(self, query_shape, memory_shape=None):
        d, h, k = self.hidden_size, self.num_heads, self.key_size
        init = keras.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal")
        out_init = keras.initializers.VarianceScaling(1.0, "fan_avg", "truncated_normal")
        self.query_kernel = self.add_weight(name="query", shape=(d, h, k), initializer=init)
        self.key_kernel = self.add_weight(name="key", shape=(d, h, k), initializer=init)
        self.value_kernel = self.add_weight(name="value", shape=(d, h, k), initializer=init)
        self.output_kernel = self.add_weight(name="output", shape=(h, k, d), initializer=out_init)
        self.output_bias = self.add_weight(name="output_bias", shape=(d,), initializer="zeros")

    def _weight(self, variable):
        # The variable in the compute dtype: what Keras' autocasting gives inside `__call__`,
        # explicit so that `attend` and `project_memory` also run when called directly.
        return ops.cast(variable, self.compute_dtype)

    def project_memory(self, memory, heads_first=False):
        """Keys and values of a memory (cacheable): two (b, s, h, k) tensors, or (b, h, s, k)
        with heads_first."""
        memory = ops.cast(memory, self.compute_dtype)
        keys = ops.einsum("bsd,dhk->bshk", memory, self._weight(self.key_kernel))
        values = ops.einsum("bsd,dhk->bshk", memory, self._weight(self.value_kernel))
        if heads_first:
            # A transpose after the projection rather than an einsum straight into (b, h, s, k):
            # in bfloat16 the two round differently, and this one is what `call` computes.
            keys, values = (ops.transpose(t, (0, 2, 1, 3)) for t in (keys, values))
        return keys, values

    def attend(self, query, keys, values, query_offset=0, training=None, heads_first=False):
        """Attention of query positions (offset in the sequence by query_offset) into keys.

        keys, values: (b, s, h, k), or (b, h, s, k) with heads_first (a cache, laid out so that
        no step transposes it).
        """
        query = ops.cast(query, self.compute_dtype)
        q = ops.einsum("btd,dhk->bhtk", query, self._weight(self.query_kernel))
        q = q * (self.key_size**-0.5)
        # Softmax in float32: bfloat16 has 8 bits of mantissa.
        key_spec = "bhsk" if heads_first else "bshk"
        scores = ops.cast(ops.einsum(f"bhtk,{key_spec}->bhts", q, keys), "float32")
        if self.causal:
            t, s = ops.shape(query)[1], ops.shape(keys)[2 if heads_first else 1]
            rows = ops.arange(t)[:, None] + query_offset
            allowed = rows >= ops.arange(s)[None, :]  # (t, s)
            scores = ops.where(allowed[None, None], scores, MASK_VALUE)
        weights = ops.cast(ops.softmax(scores, axis=-1), self.compute_dtype)
        weights = self.weights_dropout(weights, training=training)
        out = ops.einsum(f"bhts,{key_spec}->bhtk", weights, values)
        out = ops.einsum("bhtk,hkd->btd", out, self._weight(self.output_kernel))
        return out + self._weight(self.output_bias)

    def empty_cache(self, batch, length):
        """A zeroed self-attention cache of `length` positions: (keys, values), each
        (b, h, length, k) in the compute dtype."""
        shape = (batch, self.num_heads, length, self.key_size)
        return ops.zeros(shape, self.compute_dtype), ops.zeros(shape, self.compute_dtype)

    def call_with_cache(self, query, cache, index, jit_compile=False):
        """Causal self-attention of n new elements at cache positions [index, index + n).

        Their keys and values are written into the cache, and each element attends to the
        cache up to its own position (what is past it is masked, whatever it holds).

        Args:
          query: (b, n, d), the new elements.
          cache: (keys, values), each (b, h, W, k): the keys and values of positions < index.
          index: the first new element's position (int or scalar int32 tensor).
          jit_compile: the caller is compiled with XLA (see `write_cache`).

        Returns:
          (b, n, d) outputs and the updated (keys, values).
        """
        if not self.causal:
            raise ValueError(f"{self.name}: call_with_cache needs causal self-attention")
        keys, values = self.project_memory(query, heads_first=True)
        keys = write_cache(cache[0], keys, index, jit_compile)
        values = write_cache(cache[1], values, index, jit_compile)
        out = self.attend(query, keys, values, query_offset=index, heads_first=True)
        return out, (keys, values)

    def call(self, query, memory=None, training=None):
        # (b, t, d), (b, s, d) -> (b, t, d); memory=None is self-attention.
        keys, values = self.project_memory(query if memory is None else memory)
        return self.attend(query, keys, values, training=training)

    def compute_output_shape(self, query_shape, memory_shape=None):
        return query_shape

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_size": self.hidden_size,
            "num_heads": self.num_heads,
            "key_size": self.key_size,
            "causal": self.causal,
            "dropout": self.dropout,
        }


@serializable
class FeedForward(keras.layers.Layer):
    """One "dense layer" of a PAR block: d -> ffn_size (GELU) -> d."""

    def __init__(self, hidden_size, ffn_size, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size = int(hidden_size)
        self.ffn_size = int(ffn_size)
        self.inner = keras.layers.Dense(self.ffn_size, activation="gelu", name="inner")
        self.outer = keras.layers.Dense(self.hidden_size, name="outer")

    def build(self, x_shape):
        self.inner.build(x_shape)
        self.outer.build((*x_shape[:-1], self.ffn_size))

    def call(self, x):
        return self.outer(self.inner(x))

    def compute_output_shape(self, x_shape):
        return x_shape

    def get_config(self):
        return {**super().get_config(), "hidden_size": self.hidden_size, "ffn_size": self.ffn_size}


@serializable
class PARBlock(keras.layers.Layer):
    """One Transformer block of a layer spec entry (n_attention, n_dense), PAR style.

    The block applies n_attention attention sublayers (each: self-attention, then, in a decoder,
    cross-attention into the encoded image), then n_dense feed-forward sublayers. Every
    sublayer is a residual branch with the layer norm inside and a ReZero scalar initialised at
    zero (paper eq. 10): H <- H + alpha * dropout(f(layernorm(H))).

    Args:
      hidden_size, num_heads, key_size: the attention shape.
      ffn_size: inner width of each dense sublayer.
      num_attention, num_dense: the layer spec entry.
      causal: masked self-attention (decoders).
      cross_attention: add a cross-attention sublayer after each self-attention (decoders).
      dropout: on each residual branch before its ReZero scale.
    """

    def __init__(
        self,
        hidden_size,
        num_heads,
        key_size,
        ffn_size,
        num_attention,
        num_dense,
        causal=False,
        cross_attention=False,
        dropout=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_size = int(hidden_size)
        self.num_heads = int(num_heads)
        self.key_size = int(key_size)
        self.ffn_size = int(ffn_size)
        self.num_attention = int(num_attention)
        self.num_dense = int(num_dense)
        self.causal = bool(causal)
        self.cross_attention = bool(cross_attention)
        self.dropout = float(dropout)
        # (kind, layer) per residual branch, in order.
        self.branches = []
        attention = lambda causal, name: Attention(
            self.hidden_size, self.num_heads, self.key_size, causal=causal, name=name
        )
        for i in range(self.num_attention):
            self.branches.append(("self", attention(self.causal, f"self_attention_{i}")))
            if self.cross_attention:
                self.branches.append(("cross", attention(False, f"cross_attention_{i}")))
        for i in range(self.num_dense):
            self.branches.append(("dense", FeedForward(hidden_size, ffn_size, name=f"dense_{i}")))
        self.norms = [
            keras.layers.LayerNormalization(epsilon=1e-6, name=f"norm_{i}")
            for i in range(len(self.branches))
        ]
        self.branch_dropout = keras.layers.Dropout(self.dropout)

    @property
    def sublayers(self):
        """The residual branches' layers, in order."""
        return [layer for _, layer in self.branches]

    def _layers_of(self, kind):
        return [layer for k, layer in self.branches if k == kind]

    def build(self, x_shape, memory_shape=None):
        for norm, (kind, layer) in zip(self.norms, self.branches):
            norm.build(x_shape)
            if kind == "dense":
                layer.build(x_shape)
            else:
                layer.build(x_shape, memory_shape)
        # One ReZero scalar per residual branch (eq. 10), initialised at zero.
        self.rezero = self.add_weight(
            name="rezero", shape=(len(self.branches),), initializer="zeros"
        )

    def _residual(self, x, branch, training=None):
        """The residual maths, shared by `call` and `call_with_cache`: for each branch i,
        x <- x + rezero[i] * dropout(branch(kind, layer, layernorm(x)))."""
        for i, (norm, (kind, layer)) in enumerate(zip(self.norms, self.branches)):
            y = branch(kind, layer, norm(x))
            y = self.branch_dropout(y, training=training)
            x = x + ops.cast(self.rezero[i], x.dtype) * y
        return x

    def call(self, x, memory=None, training=None):
        # (b, t, d), memory (b, s, d) -> (b, t, d)
        def branch(kind, layer, y):
            if kind == "self":
                return layer(y, training=training)
            if kind == "cross":
                return layer(y, memory, training=training)
            return layer(y)

        return self._residual(x, branch, training)

    def project_cross(self, memory):
        """The cross-attention keys and values of a memory (b, s, d), once per memory: one
        (keys, values) pair per cross-attention sublayer, each (b, h, s, k)."""
        return [
            layer.project_memory(memory, heads_first=True) for layer in self._layers_of("cross")
        ]

    def empty_cache(self, batch, length):
        """A zeroed cache of `length` positions: one (keys, values) pair per self-attention
        sublayer, each (b, h, length, k)."""
        return [layer.empty_cache(batch, length) for layer in self._layers_of("self")]

    def call_with_cache(self, x, cache, cross, index, jit_compile=False):
        """The block over n new elements at window indices [index, index + n), at inference.

        Args:
          x: (b, n, d), the new elements' inputs.
          cache: `empty_cache` or a previous call's cache, holding positions < index.
          cross: `project_cross(memory)` (an empty list without cross-attention).
          index: the first new element's window index (int or scalar int32 tensor).
          jit_compile: the caller is compiled with XLA.

        Returns:
          (b, n, d), what `call` gives at these rows of the whole window, and the updated
          cache.
        """
        x = ops.cast(x, self.compute_dtype)
        caches, crosses, new_cache = iter(cache), iter(cross), []

        def branch(kind, layer, y):
            if kind == "self":
                y, layer_cache = layer.call_with_cache(y, next(caches), index, jit_compile)
                new_cache.append(layer_cache)
                return y
            if kind == "cross":
                keys, values = next(crosses)
                return layer.attend(y, keys, values, heads_first=True)
            return layer(y)

        return self._residual(x, branch, training=False), new_cache

    def compute_output_shape(self, x_shape, memory_shape=None):
        return x_shape

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_size": self.hidden_size,
            "num_heads": self.num_heads,
            "key_size": self.key_size,
            "ffn_size": self.ffn_size,
            "num_attention": self.num_attention,
            "num_dense": self.num_dense,
            "causal": self.causal,
            "cross_attention": self.cross_attention,
            "dropout": self.dropout,
        }


@serializable
class TransformerStack(keras.layers.Layer):
    """A Transformer encoder or decoder: one PARBlock per layer spec entry.

    Args:
      layer_spec: list of (n_attention, n_dense) pairs (paper Table 3).
      decoder: causal self-attention plus cross-attention into a memory (else: an encoder).
      final_norm: apply a layer norm to the output (the encoder's memory).
      The rest as PARBlock.
    """

    def __init__(
        self,
        hidden_size,
        num_heads,
        key_size,
        ffn_size,
        layer_spec,
        decoder=False,
        final_norm=False,
        dropout=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_size = int(hidden_size)
        self.num_heads = int(num_heads)
        self.key_size = int(key_size)
        self.ffn_size = int(ffn_size)
        self.layer_spec = [tuple(int(n) for n in entry) for entry in layer_spec]
        self.decoder = bool(decoder)
        self.final_norm = bool(final_norm)
        self.dropout = float(dropout)
        self.blocks = [
            PARBlock(
                hidden_size,
                num_heads,
                key_size,
                ffn_size,
                num_attention=n_attention,
                num_dense=n_dense,
                causal=self.decoder,
                cross_attention=self.decoder,
                dropout=dropout,
                name=f"block_{i}",
            )
            for i, (n_attention, n_dense) in enumerate(self.layer_spec)
        ]
        self.norm = keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")

    def build(self, x_shape, memory_shape=None):
        for block in self.blocks:
            block.build(x_shape, memory_shape)
        if self.final_norm:
            self.norm.build(x_shape)

    def call(self, x, memory=None, training=None):
        for block in self.blocks:
            x = block(x, memory, training=training)
        return self.norm(x) if self.final_norm else x

    def project_cross(self, memory):
        """Each block's `project_cross(memory)`: the cross-attention keys and values a decoder
        needs per memory (compute them once, then step with `call_with_cache`)."""
        return [block.project_cross(memory) for block in self.blocks]

    def empty_cache(self, batch, length):
        """Each block's zeroed self-attention cache of `length` positions (the window)."""
        return [block.empty_cache(batch, length) for block in self.blocks]

    def call_with_cache(self, x, cache, cross, index, jit_compile=False):
        """The decoder over n new elements at window indices [index, index + n), at inference:
        step by step (or a known prefix at once, then step by step), it gives the rows that
        `call(window, memory)` gives.

        Args:
          x: (b, n, d), the new elements' inputs.
          cache: `empty_cache(b, W)` or a previous call's cache (positions < index).
          cross: `project_cross(memory)`.
          index: the first new element's window index (int or scalar int32 tensor).
          jit_compile: the caller is compiled with XLA (the cache update differs).

        Returns:
          (b, n, d) outputs and the updated cache.
        """
        if not self.decoder:
            raise ValueError(f"{self.name}: call_with_cache is for decoder (causal) stacks")
        new_cache = []
        for block, block_cache, block_cross in zip(self.blocks, cache, cross):
            x, block_cache = block.call_with_cache(x, block_cache, block_cross, index, jit_compile)
            new_cache.append(block_cache)
        return (self.norm(x) if self.final_norm else x), new_cache

    def compute_output_shape(self, x_shape, memory_shape=None):
        return x_shape

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_size": self.hidden_size,
            "num_heads": self.num_heads,
            "key_size": self.key_size,
            "ffn_size": self.ffn_size,
            "layer_spec": [list(entry) for entry in self.layer_spec],
            "decoder": self.decoder,
            "final_norm": self.final_norm,
            "dropout": self.dropout,
        }


# ----------------------------------------------------------------------------------------------
# Embeddings (paper eq. 3-9).


def downsampled_grid(grid: int, stride: int) -> int:
    """G', the side of the encoder's grid: ceil(G / stride)."""
    return -(-int(grid) // int(stride))


def conv_padding(grid: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """(before, after) zero padding that gives exactly G' = ceil(G / s) output cells.

    before = (k - s) // 2, so that output cell i sees input rows [i*s - before, i*s - before + k),
    which always contains its own stride window [i*s, i*s + s) (k >= s).
    """
    if kernel_size < stride:
        raise ValueError(f"kernel_size={kernel_size} < stride={stride}: input cells would be lost")
    out = downsampled_grid(grid, stride)
    total = (out - 1) * stride + kernel_size - grid
    before = (kernel_size - stride) // 2
    return before, total - before


@serializable
class DCTImageEmbedding(keras.layers.Layer):
    """The encoder's input: the dense DCT image -> (b, G'^2, d) tokens (paper eq. 3).

    Value embedding: each quantized coefficient v in [-clip, clip] looks up a learned vector of
    `value_dim` entries in a table shared by all channels (row v + clip; zero, the commonest
    value, has its own row). The 3B^2 vectors of a block position are concatenated and projected
    linearly to d: the projection's rows are per-(channel, embedding entry), so each channel
    weighs its coefficients in its own way, while the table gives a non-linear response to the
    value (sign, magnitude, zero) at the cost of (2 clip + 1) * value_dim parameters. A direct
    convolution over 3B^2 * value_dim channels would cost k^2 times more (hundreds of millions
    of parameters at B = 32), hence project first, then the strided convolution d -> d with the
    configured kernel k and stride s on the G x G grid (zero padding `conv_padding`: G' =
    ceil(G / s)), then learned 2-D position embeddings (row + column), flattened row-major.
    """

    def __init__(
        self,
        num_channels,
        clip,
        grid,
        hidden_size,
        kernel_size,
        stride,
        value_dim=4,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_channels = int(num_channels)  # 3B^2, the stop token not included
        self.clip = int(clip)
        self.grid = int(grid)
        self.hidden_size = int(hidden_size)
        self.kernel_size = int(kernel_size)
        self.stride = int(stride)
        self.value_dim = int(value_dim)
        self.out_grid = downsampled_grid(self.grid, self.stride)
        self.padding = conv_padding(self.grid, self.kernel_size, self.stride)
        self.table = keras.layers.Embedding(2 * self.clip + 1, self.value_dim, name="values")
        self.project = keras.layers.Dense(self.hidden_size, name="project")
        self.conv = keras.layers.Conv2D(
            self.hidden_size, self.kernel_size, strides=self.stride, padding="valid", name="conv"
        )

    def build(self, image_shape):
        g, d = self.grid, self.hidden_size
        self.table.build((None, g, g, self.num_channels))
        self.project.build((None, g, g, self.num_channels * self.value_dim))
        padded = g + sum(self.padding)
        self.conv.build((None, padded, padded, d))
        init = keras.initializers.RandomNormal(stddev=0.02)
        self.row_embedding = self.add_weight(
            name="row_embedding", shape=(self.out_grid, d), initializer=init
        )
        self.col_embedding = self.add_weight(
            name="col_embedding", shape=(self.out_grid, d), initializer=init
        )

    def call(self, image):
        # (b, G, G, 3B^2) int32 in [-clip, clip]
        g = self.grid
        x = self.table(ops.cast(image, "int32") + self.clip)  # (b, G, G, 3B^2, e)
        x = ops.reshape(x, (-1, g, g, self.num_channels * self.value_dim))
        x = self.project(x)  # (b, G, G, d)
        before, after = self.padding
        x = ops.pad(x, ((0, 0), (before, after), (before, after), (0, 0)))
        x = self.conv(x)  # (b, G', G', d)
        pos = self.row_embedding[:, None, :] + self.col_embedding[None, :, :]
        x = x + ops.cast(pos, x.dtype)[None]
        return ops.reshape(x, (-1, self.out_grid * self.out_grid, self.hidden_size))

    def compute_output_shape(self, image_shape):
        return (image_shape[0], self.out_grid * self.out_grid, self.hidden_size)

    def get_config(self):
        return {
            **super().get_config(),
            "num_channels": self.num_channels,
            "clip": self.clip,
            "grid": self.grid,
            "hidden_size": self.hidden_size,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "value_dim": self.value_dim,
        }


def encoder_cell(positions, grid: int, stride: int):
    """The encoder token holding canvas position p = row * G + col: (row // s) * G' + col // s.

    Cell i of the encoder grid is the convolution window whose stride window [i*s, i*s + s)
    contains the row (column); see `conv_padding`.
    """
    out = downsampled_grid(grid, stride)
    rows, cols = positions // grid, positions % grid
    return (rows // stride) * out + cols // stride


@serializable
class GatherEncoded(keras.layers.Layer):
    """gather(E_input, p) of paper eq. 8: for each element, the encoder token of its position."""

    def __init__(self, grid, stride, **kwargs):
        super().__init__(**kwargs)
        self.grid = int(grid)
        self.stride = int(stride)

    def call(self, memory, positions):
        # (b, s, d), (b, t) int -> (b, t, d)
        cells = encoder_cell(ops.cast(positions, "int32"), self.grid, self.stride)
        return ops.take_along_axis(memory, cells[:, :, None], axis=1)

    def compute_output_shape(self, memory_shape, positions_shape):
        return (*positions_shape, memory_shape[-1])

    def get_config(self):
        return {**super().get_config(), "grid": self.grid, "stride": self.stride}


@serializable
class OffsetEmbedding(keras.layers.Embedding):
    """An embedding of ids shifted by `offset` (values in [-clip, clip] -> rows [0, 2 clip])."""

    def __init__(self, input_dim, output_dim, offset=0, **kwargs):
        super().__init__(input_dim, output_dim, **kwargs)
        self.offset = int(offset)

    def call(self, inputs):
        return super().call(ops.cast(inputs, "int32") + self.offset)

    def get_config(self):
        return {**super().get_config(), "offset": self.offset}


@serializable
class LabelEmbedding(keras.layers.Layer):
    """Class conditioning: label -> (b, 1, d); label -1 (none) has its own row."""

    def __init__(self, num_classes, hidden_size, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.hidden_size = int(hidden_size)
        self.embedding = keras.layers.Embedding(self.num_classes + 1, self.hidden_size)

    def build(self, label_shape):
        self.embedding.build(label_shape)

    def call(self, label):
        label = ops.cast(ops.reshape(label, (-1,)), "int32")
        label = ops.where(label < 0, self.num_classes, label)
        return self.embedding(label)[:, None, :]

    def compute_output_shape(self, label_shape):
        return (label_shape[0], 1, self.hidden_size)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "hidden_size": self.hidden_size,
        }


@serializable
class ShiftRight(keras.layers.Layer):
    """Teacher forcing for eq. 4: element t sees the embedding of element t - 1; t = 0 sees a
    learned start vector (with the encoded image and the label, it stands for what came before
    the window)."""

    def __init__(self, hidden_size, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size = int(hidden_size)

    def build(self, x_shape):
        init = keras.initializers.RandomNormal(stddev=0.02)
        self.start = self.add_weight(name="start", shape=(self.hidden_size,), initializer=init)

    def call(self, x):
        # (b, t, d) -> (b, t, d)
        start = ops.broadcast_to(ops.cast(self.start, x.dtype), ops.shape(x[:, :1]))
        return ops.concatenate([start, x[:, :-1]], axis=1)

    def get_config(self):
        return {**super().get_config(), "hidden_size": self.hidden_size}


@serializable
class ChunkPositionEmbedding(keras.layers.Layer):
    """P_chunk of eq. 4: a learned embedding of the index inside the window, added to x."""

    def __init__(self, window, hidden_size, **kwargs):
        super().__init__(**kwargs)
        self.window = int(window)
        self.hidden_size = int(hidden_size)

    def build(self, x_shape):
        init = keras.initializers.RandomNormal(stddev=0.02)
        self.table = self.add_weight(
            name="table", shape=(self.window, self.hidden_size), initializer=init
        )

    def call(self, x, offset=0):
        # (b, t, d) -> (b, t, d); offset: index of x[:, 0] in the window (cached decoding).
        t = ops.shape(x)[1]
        table = ops.slice(ops.convert_to_tensor(self.table), (offset, 0), (t, self.hidden_size))
        return x + ops.cast(table, x.dtype)[None]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "window": self.window, "hidden_size": self.hidden_size}


@serializable
class Sum(keras.layers.Layer):
    """Sums its inputs, broadcasting (b, 1, d) against (b, t, d)."""

    def call(self, inputs):
        out = inputs[0]
        for x in inputs[1:]:
            out = out + ops.cast(x, out.dtype)
        return out

    def compute_output_shape(self, input_shapes):
        return max(input_shapes, key=lambda s: float("inf") if s[1] is None else s[1])


@serializable
class OutputHead(keras.layers.Layer):
    """layer norm -> linear -> float32 logits (also under mixed precision)."""

    def __init__(self, vocab_size, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.norm = keras.layers.LayerNormalization(epsilon=1e-6, dtype="float32", name="norm")
        self.logits = keras.layers.Dense(self.vocab_size, dtype="float32", name="logits")

    def build(self, x_shape):
        self.norm.build(x_shape)
        self.logits.build(x_shape)

    def call(self, x):
        return self.logits(self.norm(ops.cast(x, "float32")))

    def compute_output_shape(self, x_shape):
        return (*x_shape[:-1], self.vocab_size)

    def compute_output_spec(self, x):
        return keras.KerasTensor((*x.shape[:-1], self.vocab_size), dtype="float32")

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size}
