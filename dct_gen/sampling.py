"""The sampling library: cached chunked decoding of a trained model, and the tasks on top of it.

`Sampler(model, model_config)` takes the layers of a model built by `dct_gen.model.build_model`
(`model.model_layers`: weights shared, nothing copied) and samples sequences of (channel,
position, value) triples chunk by chunk (paper 3.3), exactly as the model was trained on them
(`dct_gen.data`):

- chunk k of a sequence starts at element start = base + k * C (base: 0, or the number of luma
  elements for colorization, whose targets are the chroma part); its window is the O + C
  elements from first = max(start - O, 0), and the encoder sees the DCT image of the elements
  before `start`;
- per chunk, the DCT image is built and encoded once, and the cross-attention keys and values
  of every decoder layer are computed once;
- then, element by element, the channel decoder, the channel draw, the position decoder, the
  position draw, the value decoder and the value draw run in turn, each decoder over one new
  element with a key/value cache of its self-attention layers (the cache holds the window;
  `layers.TransformerStack.call_with_cache` runs a decoder on it);
- elements that are already known (the overlap, or a task's context) are forced instead of
  drawn. When the whole overlap is known for every running image, it is pushed through the
  decoders in one parallel pass (the prefill) instead of element by element.

Each image stops at its stop token while the others continue; sampling also stops after
`max_chunks` chunks from the image's first chunk with anything to draw (the image is then a
truncated, still decodable, prefix). The structural mask of the model is applied as in
training, and at window index 0 it also follows the element before the window, which training's
mask (over the window alone) cannot see: with no overlap (O = 0) that is the previous chunk's
last element. Sampled sequences are therefore always valid triples
(`representation.check_sequence`); the decoders' inputs are training's exactly. Draws use
temperature, top-k and top-p (nucleus) filtering on each of the three distributions, with
stateless random numbers keyed on (seed, chunk, element, component): the same seed gives the
same sequences. A class-conditional model can be sampled with classifier-free guidance
(`SampleOptions.guidance`, `guide_logits`): the conditional and the null-label (-1) rows run as
one batch of 2b, and each draw comes from null + g * (cond - null), masked and filtered after.
Label -1 and guidance need a trained null label (`null_label_trained`).

Everything runs in TensorFlow graphs with static shapes: `sample_chunk` is one tf.function
per chunk (the Python driver `sample` loops over chunks, reporting progress, and stops early);
`sample_graph` puts the chunk loop itself in the graph (the SavedModel export uses it). Under
mixed precision the decoders run in the model's compute dtype (bfloat16) and the logits in
float32, as in training.

The tasks: `sample_batches` (plain or class-conditional samples, or samples continuing given
contexts), `upsampling_context` and `colorization_context` (the contexts of B x upsampling and
colorization), `Samples` and `write_samples` (the files a sampling run writes),
`SavedModelSource` (the same through an exported SavedModel's signatures), `sample_task` and
`write_task` (a whole task in one call: `python -m dct_gen.sample` is these two), and
`images_tf` / `extent_tf` (decoding sampled triples inside a graph, for the export).

Shapes: b batch, N sequence buffer, W = O + C window, d hidden, h heads, k key size.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from PIL import Image

from dct_gen import dct_ops, layers, pictures, sequence_file
from dct_gen import model as model_lib
from dct_gen import representation as rep
from dct_gen.errors import InputError, UsageError
from dct_gen.representation import DCTConfig

# The draws take temperature and top_p as float32 normal numbers: a value outside this range
# would reach the graph as 0 or inf.
FLOAT32_NORMAL = (float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max))


@dataclasses.dataclass(frozen=True)
class SampleOptions:
    """How draws are made.

    Attributes:
      temperature: logits are divided by it (finite and > 0, within float32's normal range
        FLOAT32_NORMAL; near 0 the draws become greedy, large values make every move the
        structural mask allows about equally likely).
      top_p: nucleus sampling, keep the smallest set of values whose probability reaches top_p
        (in (0, 1], at least float32's smallest normal number; 1: off).
      top_k: keep the k most likely (0: off).
      max_chunks: the chunk limit per image (past its context).
      guidance: the classifier-free guidance scale g (finite, >= 0) of a class-conditional
        model: each of the three distributions is drawn from null + g * (cond - null), cond the
        logits with the sample's label and null those with the null label -1 (`guide_logits`).
        1: no guidance (plain conditional sampling, one pass); 0: unconditional; above 1: more
        typical of the class. Any value but 1 needs a model whose null label was trained
        (`null_label_trained`).

    Raises:
      UsageError: an option of the wrong type or out of range (infinite or NaN among them);
        the message starts with the option's name.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_chunks: int = 64
    guidance: float = 1.0

    def __post_init__(self):
        # The messages start with the option's name (the command line prefixes `--`).
        for name, kind, what in (
            ("temperature", numbers.Real, "a number"),
            ("top_p", numbers.Real, "a number"),
            ("top_k", numbers.Integral, "an integer"),
            ("max_chunks", numbers.Integral, "an integer"),
            ("guidance", numbers.Real, "a number"),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, kind):
                raise UsageError(f"{name}={value!r}: must be {what}")
        low, high = FLOAT32_NORMAL
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise UsageError(f"temperature={self.temperature}: must be finite and > 0")
        if not low <= self.temperature <= high:
            raise UsageError(
                f"temperature={self.temperature}: must lie in float32's range "
                f"[{low:.4g}, {high:.4g}]"
            )
        if not 0 < self.top_p <= 1:  # NaN fails both comparisons
            raise UsageError(f"top_p={self.top_p}: must be in (0, 1]")
        if self.top_p < low:
            raise UsageError(f"top_p={self.top_p}: must be at least {low:.4g} (float32)")
        if self.top_k < 0:
            raise UsageError(f"top_k={self.top_k}: must be >= 0 (0 is off)")
        if self.max_chunks < 1:
            raise UsageError(f"max_chunks={self.max_chunks}: must be >= 1")
        check_guidance_value(self.guidance)


def filter_logits(logits, temperature, top_p, top_k):
    """Temperature, then top-k, then top-p on (b, vocab) float32 logits (tensors or numbers).

    Filtered entries get MASK_VALUE; the most likely entry always stays. Entries the
    structural mask removed (MASK_VALUE) stay at MASK_VALUE whatever the temperature, and the
    others are scaled relative to the row's largest logit, which becomes 0: a huge temperature
    cannot bring masked moves level with allowed ones, and a tiny one gives greedy draws instead
    of overflowing to +inf (`tf.random.stateless_categorical` answers a row holding +inf with
    an id outside the vocabulary). The distribution is the softmax of logits / temperature.
    """
    logits = tf.convert_to_tensor(logits, tf.float32)
    masked = logits <= layers.MASK_VALUE
    top = tf.reduce_max(logits, axis=-1, keepdims=True)
    # A temperature below float32's smallest normal number is flushed to zero on most devices.
    temperature = tf.maximum(tf.cast(temperature, tf.float32), np.finfo(np.float32).tiny)
    scaled = tf.maximum((logits - top) / temperature, layers.MASK_VALUE)
    logits = tf.where(masked, tf.constant(layers.MASK_VALUE, tf.float32), scaled)
    top_k = tf.cast(top_k, tf.int32)
    top_p = tf.cast(top_p, tf.float32)
    vocab = tf.shape(logits)[-1]

    def filtered():
        ordered = tf.sort(logits, axis=-1, direction="DESCENDING")
        # top-k: the k-th largest logit is the threshold.
        k = tf.clip_by_value(tf.where(top_k > 0, top_k, vocab), 1, vocab)
        kth = tf.gather(ordered, k - 1, axis=-1)[:, None]
        # top-p: keep an entry while the probability before it is below top_p.
        probs = tf.nn.softmax(ordered, axis=-1)
        before = tf.cumsum(probs, axis=-1, exclusive=True)
        kept = tf.where(before < top_p, ordered, tf.float32.max)
        pth = tf.reduce_min(kept, axis=-1, keepdims=True)
        threshold = tf.maximum(kth, pth)
        return tf.where(logits >= threshold, logits, layers.MASK_VALUE)

    return tf.cond((top_k > 0) | (top_p < 1.0), filtered, lambda: logits)


def check_guidance_value(guidance) -> None:
    """Raises UsageError unless guidance is a finite number >= 0 that float32 holds."""
    if isinstance(guidance, bool) or not isinstance(guidance, numbers.Real):
        raise UsageError(f"guidance={guidance!r}: must be a number")
    if not (math.isfinite(guidance) and guidance >= 0):  # NaN fails both
        raise UsageError(f"guidance={guidance}: must be finite and >= 0 (1: no guidance)")
    if guidance > FLOAT32_NORMAL[1]:
        raise UsageError(f"guidance={guidance}: must be at most {FLOAT32_NORMAL[1]:.4g} (float32)")


def guide_logits(logits, guidance):
    """Classifier-free guidance on (2b, vocab) raw logits whose first b rows are conditional
    (the samples' labels) and last b rows unconditional (label -1): (b, vocab) logits
    null + g * (cond - null).

    g = 1 gives the conditional rows and g = 0 the unconditional rows exactly (not only up to
    rounding), so those two scales draw what plain sampling with the label, or with -1, draws.
    Other scales are clipped into [MASK_VALUE / 2, -MASK_VALUE / 2].
    """
    cond, null = tf.split(logits, 2, axis=0)
    g = tf.cast(guidance, logits.dtype)
    # A huge scale must neither overflow to inf (NaN after filtering) nor push an allowed move
    # down to MASK_VALUE, where the draws would take it for one the structural mask removed.
    bound = -0.5 * layers.MASK_VALUE
    mixed = tf.clip_by_value(null + g * (cond - null), -bound, bound)
    return tf.where(tf.equal(g, 1.0), cond, tf.where(tf.equal(g, 0.0), null, mixed))


def _twice(t):
    """(b, ...) -> (2b, ...): the conditional rows, then the same again for the null label."""
    return tf.concat([t, t], axis=0)


def _gather(buffer, index):
    """buffer (b, N), index (b,) -> (b,), indices clipped into the buffer."""
    n = tf.shape(buffer)[1]
    return tf.gather(buffer, tf.clip_by_value(index, 0, n - 1)[:, None], batch_dims=1)[:, 0]


def _write(buffer, index, value, where):
    """buffer[b, index[b]] = value[b] where `where` (b,), else unchanged."""
    old = _gather(buffer, index)
    n = tf.shape(buffer)[1]
    rows = tf.range(tf.shape(buffer)[0])
    idx = tf.stack([rows, tf.clip_by_value(index, 0, n - 1)], axis=1)
    return tf.tensor_scatter_nd_update(buffer, idx, tf.where(where, value, old))


class Sampler:
    """Samples from a DCTransformer functional model with cached decoding.

    Args:
      model: a model from `dct_gen.model.build_model(model_config)` (trained weights).
      model_config: its ModelConfig.
      jit_compile: compile each chunk with XLA.
      null_label_trained: whether the model's null label (-1) was trained
        (`null_label_trained` of the run's config.json; `Sampler.from_run` reads it). False
        (a class-conditional model trained with train_config.label_dropout = 0): label -1 and
        guidance other than 1 are refused. Unconditional models ignore it.
      label_names: the class names (index = label), or None; for captions and for
        `resolve_label`.

    Classifier-free guidance (`SampleOptions.guidance` g != 1) runs the encoder and the three
    decoders on a batch of 2b rows, the b samples with their labels and the same b with label
    -1, each half with its own caches; the guided logits of each component (`guide_logits`)
    are masked and filtered, and the one draw feeds both halves' next inputs.
    """

    DECODERS = model_lib.COMPONENTS

    def __init__(
        self,
        model,
        model_config: model_lib.ModelConfig,
        jit_compile: bool = False,
        *,
        null_label_trained: bool = True,
        label_names: Sequence[str] | None = None,
    ):
        self.model = model
        self.null_label_trained = bool(null_label_trained)
        self.label_names = None if label_names is None else [str(n) for n in label_names]
        self.config = model_config
        self.dct: DCTConfig = model_config.dct
        self.window = model_config.window
        parts = model_lib.model_layers(model)
        self.image_embedding = parts.image_embedding
        self.label_embedding = parts.label_embedding
        self.encoder = parts.encoder
        self.embeddings = parts.embeddings
        self.start_vector = parts.start
        self.chunk_table = parts.chunk_positions
        self.stacks = parts.decoders
        self.heads = parts.heads
        self.tables = (
            model_lib.structural_tables(self.dct) if model_config.structural_mask else None
        )
        self.dtype = self.encoder.compute_dtype
        self.rank = tf.constant(
            model_lib.structural_tables(self.dct).rank, tf.int32
        )  # channel -> place in the ordering
        self.jit_compile = bool(jit_compile)
        self.sample_chunk = tf.function(self._chunk, jit_compile=self.jit_compile)

    @classmethod
    def from_run(cls, run, jit_compile: bool = False) -> Sampler:
        """The Sampler of a loaded run (`run_dir.load_run`), with whether its null label was
        trained and its class names, from its config.json."""
        raw = read_run_json(run.model_dir)
        return cls(
            run.model,
            run.model_config,
            jit_compile=jit_compile,
            null_label_trained=null_label_trained(raw),
            label_names=run_label_names(raw),
        )

    def check_labels(self, labels) -> None:
        """Raises UsageError unless every label (an int or an array) is one the model takes
        (`check_label`)."""
        for label in np.unique(np.asarray(labels, np.int64)):
            check_label(
                int(label), self.config.num_classes, self.null_label_trained, self.label_names
            )

    def check_guidance(self, guidance: float) -> None:
        """Raises UsageError unless the model can be sampled with this guidance scale
        (`check_guidance`)."""
        check_guidance(guidance, self.config.num_classes, self.null_label_trained)

    # ------------------------------------------------------------------------------------------
    # Encoder and decoders, one block of elements at a time.

    def encode(self, dct_image, label):
        """The encoder once per chunk: memory (b, S, d), each decoder's cross-attention keys and
        values (`TransformerStack.project_cross`) and the label vector (b, 1, d) or None."""
        x = self.image_embedding(dct_image)
        label_vector = None
        if self.label_embedding is not None:
            label_vector = self.label_embedding(label)  # (b, 1, d)
            x = x + tf.cast(label_vector, x.dtype)
        memory = self.encoder(x)
        cross = {name: stack.project_cross(memory) for name, stack in self.stacks.items()}
        return memory, cross, label_vector

    def empty_caches(self, batch):
        """Zeroed self-attention caches of the window: per decoder, its stack's
        `empty_cache(batch, W)`."""
        return {name: stack.empty_cache(batch, self.window) for name, stack in self.stacks.items()}

    def decode(self, name, x, caches, cross, offset):
        """Decoder `name` over the elements at window indices [offset, offset + n).

        x (b, n, d): their inputs; caches, cross: that decoder's cache and cross-attention keys
        and values. Returns the outputs (b, n, d) and the updated cache
        (`layers.TransformerStack.call_with_cache`).
        """
        return self.stacks[name].call_with_cache(
            x, caches, cross, offset, jit_compile=self.jit_compile
        )

    def channel_input(self, prev, offset, n, label_vector):
        """E_channel (eq. 4) for window indices [offset, offset + n): prev (c, p, v), each
        (b, n), the previous element's triple (ignored at index 0, which gets the start
        vector)."""
        e = sum(self.embeddings[k](t) for k, t in zip(self.DECODERS, prev))
        e = tf.cast(e, self.dtype)
        index = offset + tf.range(n)
        start = tf.cast(self.start_vector, self.dtype)[None, None, :]
        e = tf.where((index == 0)[None, :, None], start, e)
        e = e + tf.cast(tf.gather(self.chunk_table, index), self.dtype)[None]
        if label_vector is not None:
            e = e + tf.cast(label_vector, self.dtype)
        return e

    def position_input(self, h_channel, channel):
        """E_position (eq. 6): the channel decoder's output plus the element's channel (b, n)."""
        return h_channel + tf.cast(self.embeddings["channel"](channel), self.dtype)

    def value_input(self, h_position, memory, position):
        """E_value (eq. 8): the position decoder's output plus the encoder token at the
        element's position (b, n) and that position's embedding."""
        cells = layers.encoder_cell(position, self.dct.grid, self.config.stride)
        gathered = tf.gather(memory, cells, batch_dims=1)
        p = self.embeddings["position"](position)
        return h_position + tf.cast(gathered, self.dtype) + tf.cast(p, self.dtype)

    def mask_logits(self, name, logits, channel, prev_channel, prev_position):
        """The structural mask of decoder `name` on its (b, vocab) logits, given the element's
        channel (position and value), and the previous element's channel and position (-1:
        none); the logits unchanged when the model has no structural mask."""
        if self.tables is None:
            return logits
        if name == "channel":
            allowed = model_lib.channel_allowed(prev_channel, prev_position, self.tables)
        elif name == "position":
            allowed = model_lib.position_allowed(channel, prev_channel, prev_position, self.tables)
        else:
            allowed = model_lib.value_allowed(channel, self.tables)
        return model_lib.apply_mask(logits, allowed)

    def prefill(self, window_triples, caches, cross, memory, label_vector, n):
        """Pushes the first n window elements (all known) through the three decoders at once;
        returns the updated caches."""
        c, p, v = (t[:, :n] for t in window_triples)
        prev = [tf.pad(t[:, :-1], [[0, 0], [1, 0]]) for t in (c, p, v)]
        caches = dict(caches)
        h, caches["channel"] = self.decode(
            "channel", self.channel_input(prev, 0, n, label_vector), caches["channel"],
            cross["channel"], 0,
        )  # fmt: skip
        h, caches["position"] = self.decode(
            "position", self.position_input(h, c), caches["position"], cross["position"], 0
        )
        _, caches["value"] = self.decode(
            "value", self.value_input(h, memory, p), caches["value"], cross["value"], 0
        )
        return caches

    def element(
        self, j, prev, forced, known, caches, cross, memory, label_vector, draw, min_rank=None,
        before=None, guidance=None,
    ):  # fmt: skip
        """One element at window index j: channel, position, value in turn.

        prev: the previous element's (c, p, v), each (b,) (anything at j = 0); forced: (c, p, v)
        used where `known` (b,) bool; draw(name, logits) -> (b,) ids; min_rank: optional (b,),
        drawn channels rank at least this in the ordering (colorization: chroma only); before:
        optional (c, p), each (b,), the element before the window (-1: none), which the
        structural mask of window index 0 follows (the decoders never see it, as in training).
        guidance: None, or the scale g (scalar tensor): then caches, cross, memory and
        label_vector hold 2b rows (the samples' labels, then label -1) and each head's logits
        are guided (`guide_logits`) before the structural mask.
        Returns the element's (c, p, v), the three masked (b, vocab) logits and the updated
        caches.
        """
        caches = dict(caches)
        both = (lambda t: t) if guidance is None else _twice
        head = lambda name, h: (
            self.heads[name](h)[:, 0]
            if guidance is None
            else guide_logits(self.heads[name](h)[:, 0], guidance)
        )
        # At window index 0 the decoders get the start vector, as in training; the structural
        # mask still follows the element before the window where there is one (with no overlap,
        # chunk k > 0 starts right after chunk k - 1's last element), or a draw there could
        # break the rules: a (channel, position) pair again, a channel out of the ordering.
        none = tf.fill(tf.shape(prev[0]), -1)
        before_c, before_p = (none, none) if before is None else before
        prev_c = tf.where(j > 0, prev[0], before_c)
        prev_p = tf.where(j > 0, prev[1], before_p)
        x = self.channel_input([both(t)[:, None] for t in prev], j, 1, label_vector)
        h, caches["channel"] = self.decode("channel", x, caches["channel"], cross["channel"], j)
        logits_c = self.mask_logits("channel", head("channel", h), None, prev_c, prev_p)
        if min_rank is not None:
            logits_c = model_lib.apply_mask(logits_c, self.rank[None, :] >= min_rank[:, None])
        c = tf.where(known, forced[0], draw("channel", logits_c))

        x = self.position_input(h, both(c)[:, None])
        h, caches["position"] = self.decode("position", x, caches["position"], cross["position"], j)
        logits_p = self.mask_logits("position", head("position", h), c, prev_c, prev_p)
        p = tf.where(known, forced[1], draw("position", logits_p))

        x = self.value_input(h, memory, both(p)[:, None])
        h, caches["value"] = self.decode("value", x, caches["value"], cross["value"], j)
        logits_v = self.mask_logits("value", head("value", h), c, prev_c, prev_p)
        v = tf.where(known, forced[2], draw("value", logits_v) - self.dct.clip)
        return (c, p, v), (logits_c, logits_p, logits_v), caches

    # ------------------------------------------------------------------------------------------
    # One chunk.

    def _chunk(self, state: dict, chunk, seed, temperature, top_p, top_k, guidance=None):
        """Samples chunk `chunk` (scalar int32) of every running image; returns the new state.

        guidance: None (plain sampling), or the guidance scale (scalar float32): the chunk then
        runs on 2b rows, conditional and null (see the class docstring).

        state: channels, positions, values (b, N) int32, the sequence buffers; known (b,) how
        many leading elements are fixed (context and what earlier chunks drew); base (b,) where
        chunk 0 starts; done (b,) bool, stopped; length (b,) triples before the stop token (or
        known, while running); label (b,); min_rank (b,) the lowest channel rank a draw may
        take; last_chunk (b,) the last chunk each image may sample (its chunk limit); steps (),
        element steps run so far.
        """
        cfg, c_size, overlap, w = self.dct, self.config.chunk_size, self.config.overlap, self.window
        buffers = [state["channels"], state["positions"], state["values"]]
        known, base, done = state["known"], state["base"], state["done"]
        batch, n_buffer = tf.shape(buffers[0])[0], tf.shape(buffers[0])[1]
        start = base + chunk * c_size
        first = tf.maximum(start - overlap, 0)
        end = tf.minimum(start + c_size, n_buffer)
        running = ~done & (start < n_buffer) & (chunk <= state["last_chunk"])

        dct_image = dct_ops.dct_image_from_triples(*buffers, cfg, num_triples=start)
        both = (lambda t: t) if guidance is None else _twice
        labels = state["label"]
        if guidance is not None:
            labels = tf.concat([labels, tf.fill(tf.shape(labels), -1)], axis=0)
        memory, cross, label_vector = self.encode(both(dct_image), labels)
        caches = self.empty_caches(tf.shape(labels)[0])
        seed = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), chunk)

        def draw(name, logits, j):
            key = tf.random.experimental.stateless_fold_in(seed, j * 3 + self.DECODERS.index(name))
            filtered = filter_logits(logits, temperature, top_p, top_k)
            return tf.random.stateless_categorical(filtered, 1, key, dtype=tf.int32)[:, 0]

        # The window's elements live in (b, W) buffers during the chunk (cheap per-element
        # writes); what was drawn goes back into the sequence buffers at the end.
        index = first[:, None] + tf.range(w)[None, :]  # (b, W) sequence index
        in_buffer = index < n_buffer
        safe = tf.minimum(index, n_buffer - 1)
        window = [tf.gather(t, safe, batch_dims=1) for t in buffers]
        window_known = index < known[:, None]

        # The prefill: the overlap in one pass, when it is known for every running image.
        j0 = tf.constant(0)
        if overlap > 0:
            can_prefill = tf.reduce_all(~running | (known - first >= overlap))
            caches = tf.cond(
                can_prefill,
                lambda: self.prefill(
                    [both(t) for t in window], caches, cross, memory, label_vector, overlap
                ),
                lambda: caches,
            )
            j0 = tf.where(can_prefill, overlap, 0)

        def active(j, done):
            return running & ~done & (first + j < end)

        def cond(j, window, caches, done, length, steps):
            return (j < w) & tf.reduce_any(active(j, done))

        # The element before the window (known: it precedes the chunk's start), for the
        # structural mask of window index 0; -1 where the window starts the sequence.
        has_before = first > 0
        before = [tf.where(has_before, _gather(t, first - 1), -1) for t in buffers[:2]]

        def body(j, window, caches, done, length, steps):
            i = first + j
            act = active(j, done)
            column = tf.fill([batch], j)
            prev = [_gather(t, column - 1) for t in window]
            forced = [_gather(t, column) for t in window]
            is_known = _gather(tf.cast(window_known, tf.int32), column) > 0
            triple, _, caches = self.element(
                j, prev, forced, is_known, caches, cross, memory, label_vector,
                lambda name, logits: draw(name, logits, j), state["min_rank"], before, guidance,
            )  # fmt: skip
            write = act & ~is_known
            window = [_write(t, column, x, write) for t, x in zip(window, triple)]
            stopped = act & (triple[0] == cfg.stop_token)
            # Forced elements never shorten the sequence below what is known.
            length = tf.where(stopped, i, tf.where(act, tf.maximum(length, i + 1), length))
            return j + 1, window, caches, done | stopped, length, steps + 1

        j_end, window, _, now_done, length, steps = tf.while_loop(
            cond,
            body,
            (j0, window, caches, done, state["length"], state["steps"]),
            maximum_iterations=w,
        )
        # Write back the drawn elements: window indices [j0, j_end) of running images.
        drawn = running[:, None] & in_buffer & ~window_known
        drawn &= (tf.range(w)[None, :] < j_end) & (index < end[:, None])
        rows = tf.broadcast_to(tf.range(batch)[:, None], [batch, w])
        idx = tf.stack([rows, safe], axis=-1)
        # scatter_nd adds: entries not drawn (clipped duplicates among them) add zero.
        shape = tf.shape(buffers[0])
        written = tf.scatter_nd(idx, tf.cast(drawn, tf.int32), shape) > 0
        out = dict(state)
        for name, buf, win in zip(("channels", "positions", "values"), buffers, window):
            out[name] = tf.where(written, tf.scatter_nd(idx, tf.where(drawn, win, 0), shape), buf)
        out["known"] = tf.where(running & ~now_done, tf.maximum(known, end), known)
        out["length"] = length
        out["done"] = now_done | (running & (end >= n_buffer))
        out["steps"] = steps
        return out

    # ------------------------------------------------------------------------------------------
    # Drivers.

    def initial_state(
        self, batch, capacity: int, context=None, label=None, base=None, min_rank=None
    ):
        """The state before the first chunk (numpy arrays or tensors in, tensors out).

        batch: the number of sequences; capacity: the sequence buffer's length N. context:
        optional (channels, positions, values, lengths), (b, n) and (b,) with n <= N: the
        elements every sequence starts with (kept exactly). label: (b,), -1 none. base: (b,)
        where chunk 0 starts (default 0). min_rank: the lowest channel rank (in the ordering) a
        drawn element may have, a scalar (default 0).
        """
        buffers = [tf.zeros([batch, capacity], tf.int32) for _ in range(3)]
        known = tf.zeros([batch], tf.int32)
        if context is not None:
            *triples, lengths = context
            known = tf.reshape(tf.cast(lengths, tf.int32), [batch])
            buffers = []
            for t in triples:
                t = tf.cast(t, tf.int32)
                valid = tf.range(tf.shape(t)[1])[None, :] < known[:, None]
                t = tf.where(valid, t, 0)
                buffers.append(tf.pad(t, [[0, 0], [0, capacity - tf.shape(t)[1]]]))
        label = tf.fill([batch], -1) if label is None else tf.cast(label, tf.int32)
        base = tf.zeros([batch], tf.int32) if base is None else tf.cast(base, tf.int32)
        return {
            "channels": buffers[0],
            "positions": buffers[1],
            "values": buffers[2],
            "known": known,
            "base": tf.reshape(base, [batch]),
            "done": tf.zeros([batch], tf.bool),
            "length": known,
            "label": tf.reshape(label, [batch]),
            "min_rank": tf.fill([batch], tf.cast(0 if min_rank is None else min_rank, tf.int32)),
            "last_chunk": tf.fill([batch], tf.int32.max),  # no limit; `sample` sets it
            "steps": tf.constant(0),
        }

    def first_chunks(self, state):
        """Each image's first chunk with anything to draw (b,): chunks wholly inside its context
        are skipped."""
        return (state["known"] - state["base"]) // self.config.chunk_size

    def first_chunk(self, state) -> int:
        """The first chunk of the batch with anything to draw."""
        return int(tf.reduce_min(self.first_chunks(state)).numpy())

    def with_limit(self, state, max_chunks):
        """The state with each image's chunk limit: max_chunks from its own first chunk (images
        whose contexts differ in length start at different chunks)."""
        last = self.first_chunks(state) + tf.cast(max_chunks, tf.int32) - 1
        return dict(state, last_chunk=last)

    def sample(
        self,
        state: dict,
        options: SampleOptions,
        seed: int,
        progress: Callable[[int, int, dict], None] | None = None,
    ) -> dict:
        """Runs chunks until every image stops or reaches its chunk limit (options.max_chunks
        chunks from its first chunk); returns the final state.

        options.guidance other than 1 guides every draw (the class docstring); exactly 1 runs
        the plain, single-pass chunk. progress(chunk, last_chunk, state) is called after each
        chunk.

        Raises:
          UsageError: a label in the state, or the guidance, that the model cannot take
            (`check_label`, `check_guidance`).
        """
        self.check_labels(state["label"])
        self.check_guidance(options.guidance)
        guidance = None
        if options.guidance != 1:
            guidance = tf.constant(options.guidance, tf.float32)
        k0 = self.first_chunk(state)
        state = self.with_limit(state, options.max_chunks)
        last = int(tf.reduce_max(state["last_chunk"]).numpy())
        seed = tf.constant([seed, 0], tf.int64)
        args = (
            tf.constant(options.temperature, tf.float32),
            tf.constant(options.top_p, tf.float32),
            tf.constant(options.top_k, tf.int32),
        )
        for k in range(k0, last + 1):
            state = self.sample_chunk(state, tf.constant(k, tf.int32), seed, *args, guidance)
            if progress is not None:
                progress(k, last, state)
            if bool(tf.reduce_all(state["done"])):
                break
        return state

    def sample_graph(self, state, max_chunks, seed, temperature, top_p, top_k, guidance=None):
        """The chunk loop inside the graph (for export): tensors in, final state out.

        guidance: None (plain sampling only), or a scalar float32 tensor: each chunk runs the
        plain pass where it equals 1 and the guided one otherwise (both are traced). Nothing
        here checks it or the labels: the caller does (the SavedModel, in its graph).
        """
        k0 = tf.reduce_min(self.first_chunks(state))
        state = self.with_limit(state, max_chunks)
        last = tf.reduce_max(state["last_chunk"]) + 1

        def cond(k, state):
            return (k < last) & ~tf.reduce_all(state["done"])

        def body(k, state):
            args = (state, k, seed, temperature, top_p, top_k)
            if guidance is None:
                return k + 1, self._chunk(*args)
            g = tf.cast(guidance, tf.float32)
            return k + 1, tf.cond(
                tf.equal(g, 1.0), lambda: self._chunk(*args), lambda: self._chunk(*args, g)
            )

        _, state = tf.while_loop(cond, body, (k0, state))
        return state

    # ------------------------------------------------------------------------------------------
    # Scoring a given window through the cached path (tests: cached == full forward).

    def cached_logits(self, batch: dict, prefill: bool = True, before=None, guidance=None):
        """The masked logits of every element of a training window, computed element by element
        through the caches (the overlap prefilled when `prefill` and chunk_start > 0).

        batch: a `dct_gen.data.make_dataset` batch (channels, positions, values, dct_image,
        label, indices). before: optional (channels, positions), each (b,), of the element
        before each window, which `sample_chunk` gives the structural mask of window index 0
        (-1: none; None: none for every window, as the model's own mask). guidance: None, or
        a scale g: the guided logits, as sampling with guidance g draws from them. Returns
        {"channel", "position", "value"}: (b, W, vocab) float32, to compare with
        `model.forward` where the window holds real elements.
        """
        triples = [tf.cast(batch[k], tf.int32) for k in ("channels", "positions", "values")]
        b = tf.shape(triples[0])[0]
        label = tf.cast(batch.get("label", tf.fill([b], -1)), tf.int32)
        dct_image = batch["dct_image"]
        if guidance is not None:
            guidance = tf.constant(guidance, tf.float32)
            label = tf.concat([label, tf.fill([b], -1)], axis=0)
            dct_image = _twice(dct_image)
        memory, cross, label_vector = self.encode(dct_image, label)
        rows = tf.shape(label)[0]
        caches = self.empty_caches(rows)
        j0 = 0
        overlap = self.config.overlap
        outputs = {name: [] for name in self.DECODERS}
        if prefill and overlap > 0:
            rows_triples = triples if guidance is None else [_twice(t) for t in triples]
            full = self.prefill(
                rows_triples, self.empty_caches(rows), cross, memory, label_vector, overlap
            )
            caches, j0 = full, overlap
        for j in range(self.window):
            if j < j0:
                continue
            prev = [t[:, j - 1] if j > 0 else tf.zeros([b], tf.int32) for t in triples]
            forced = [t[:, j] for t in triples]
            _, logits, caches = self.element(
                tf.constant(j), prev, forced, tf.ones([b], tf.bool), caches, cross, memory,
                label_vector, lambda name, logits: tf.zeros([b], tf.int32),
                before=None if before is None else [tf.cast(t, tf.int32) for t in before],
                guidance=guidance,
            )  # fmt: skip
            for name, x in zip(self.DECODERS, logits):
                outputs[name].append(x)
        return {name: tf.stack(x, axis=1) if x else None for name, x in outputs.items()}, j0


# ----------------------------------------------------------------------------------------------
# Tasks: contexts, batches, results.


def max_length(cfg: DCTConfig) -> int:
    """The longest possible sequence (stop token included): every coefficient non-zero."""
    g, n = cfg.grid, cfg.channels_per_plane
    return g * g * n + 2 * (g // 2) * (-(-g // 2)) * n + 1


def default_max_chunks(model_config: model_lib.ModelConfig) -> int:
    """Chunks enough for the longest possible sequence: sampling never truncates by default."""
    return -(-max_length(model_config.dct) // model_config.chunk_size)


@dataclasses.dataclass
class Samples:
    """Sampled sequences and what they came from.

    Attributes:
      cfg: the representation.
      sequences: one DCTSequence per sample (context included, stop token not), with the
        image size: the context's for upsampling and colorization, else the extent rule
        (`representation.extent_from_positions`).
      finished: whether each sample reached its stop token (else the chunk limit cut it).
      context_lengths: how many leading triples were given.
      labels: the class label of each sample (-1: none).
      elements: element steps the sampler ran (batch-wide, all batches).
      seconds: wall time of the sampling.
    """

    cfg: DCTConfig
    sequences: list[rep.DCTSequence]
    finished: np.ndarray
    context_lengths: np.ndarray
    labels: np.ndarray
    elements: int = 0
    seconds: float = 0.0

    def images(self) -> list[np.ndarray]:
        """The decoded samples (decoded once, then kept)."""
        if getattr(self, "_images", None) is None:
            self._images = [rep.decode(seq, self.cfg) for seq in self.sequences]
        return self._images


# ----------------------------------------------------------------------------------------------
# Labels: the null label, guidance, class names.

NULL_LABEL_UNTRAINED = (
    "this model was trained with train_config.label_dropout = 0, so it has no trained "
    "'no label' embedding"
)


def null_label_trained(raw_config: Mapping[str, Any]) -> bool:
    """Whether a run's null label (-1, "no label") was trained, from its config.json as read
    (`run_dir.read_json`): train_config.label_dropout > 0. A run that does not record it
    (older runs) or records 0 never replaced a label by -1, so the null label's embedding is
    untrained: sampling a class-conditional model with label -1, upsampling without a label and
    classifier-free guidance are then refused. Unconditional models only ever see -1; callers
    apply this to class-conditional models (model_config.num_classes > 0) only.
    """
    train = raw_config.get("train_config") if isinstance(raw_config, Mapping) else None
    rate = train.get("label_dropout") if isinstance(train, Mapping) else None
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        return False
    return math.isfinite(rate) and rate > 0


def run_label_names(raw_config: Mapping[str, Any]) -> list[str] | None:
    """The class names (index = label) a run's config.json records under "label_names"; None
    when it records none.

    Raises:
      InputError: "label_names" is there but not a list of names.
    """
    names = raw_config.get("label_names") if isinstance(raw_config, Mapping) else None
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, (str, int)) for n in names):
        raise InputError(f"label_names = {names!r}: must be a list of class names or null")
    return [str(n) for n in names]


def read_run_json(model_dir: str) -> dict:
    """A run directory's config.json as plain JSON ({} when it has none)."""
    from dct_gen import run_dir

    raw = run_dir.read_json(os.path.join(model_dir, run_dir.RUN_CONFIG_FILE), {})
    return raw if isinstance(raw, dict) else {}


def describe_classes(num_classes: int, label_names: Sequence[str] | None = None) -> str:
    """The classes as messages list them: "0..N-1", with their names when there are some."""
    text = f"0..{num_classes - 1}"
    if label_names:
        text += ": " + ", ".join(str(n) for n in label_names)
    return text


def check_label(
    label: int,
    num_classes: int | None,
    null_label_trained: bool = True,
    label_names: Sequence[str] | None = None,
) -> None:
    """Raises UsageError unless the model takes the class label.

    -1 (no class) fits an unconditional model, and a class-conditional one whose null label
    was trained (`null_label_trained`); a class-conditional model takes 0..num_classes - 1.
    The message starts with `label=<label>:`.
    """
    if num_classes and not -1 <= label < num_classes:
        raise UsageError(f"label={label}: out of range [-1, {num_classes})")
    if not num_classes and label != -1:
        raise UsageError(f"label={label}: this model is unconditional (num_classes is not set)")
    if num_classes and label == -1 and not null_label_trained:
        classes = describe_classes(num_classes, label_names)
        raise UsageError(f"label=-1: {NULL_LABEL_UNTRAINED}; pass a class ({classes})")


def check_guidance(
    guidance: float, num_classes: int | None, null_label_trained: bool = True
) -> None:
    """Raises UsageError unless a model can be sampled with this classifier-free guidance scale:
    a finite number >= 0; other than 1 (no guidance) only for a class-conditional model whose
    null label was trained. The message starts with `guidance=<g>:`."""
    check_guidance_value(guidance)
    if guidance == 1:
        return
    if not num_classes:
        raise UsageError(
            f"guidance={guidance}: this model is unconditional (num_classes is not set); "
            "guidance needs a class-conditional model (1: no guidance)"
        )
    if not null_label_trained:
        raise UsageError(
            f"guidance={guidance}: guidance needs the null label, but {NULL_LABEL_UNTRAINED}; "
            "pass 1 (no guidance)"
        )


def resolve_label(value: str | int | None, num_classes: int | None, label_names=None) -> int:
    """A label given as an index or a class name: an integer (in any form int() reads) is an
    index, anything else a name from label_names; None is -1 (no class). The range is
    `check_label`'s to check.

    Raises:
      UsageError: a name the model does not have (the message lists its names), or a name for
        a model without names.
    """
    if value is None:
        return -1
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        pass
    names = list(label_names or [])
    if text in names:
        return names.index(text)
    if not num_classes:
        raise UsageError(f"label={text!r}: this model is unconditional (num_classes is not set)")
    if not names:
        raise UsageError(
            f"label={text!r}: this model records no class names; pass an index "
            f"(0..{num_classes - 1})"
        )
    classes = describe_classes(num_classes, names)
    raise UsageError(f"label={text!r}: not a class name of this model; its classes: {classes}")


def upsampling_context(image: np.ndarray, cfg: DCTConfig) -> tuple[rep.DCTSequence, np.ndarray]:
    """The context of B x upsampling (8x at B = 8) from a low-resolution RGB image.

    The output size (H, W) is what the codec makes of an image B times the input's size (long
    side = resolution, `representation.target_size`); the input is resized to (H / B, W / B)
    when it is not that size already. Each input pixel then fills one B x B block: encoding
    that blocky image gives DC coefficients that are the quantized block means, and its first
    channels of Y, Cb and Cr (the first three of the interleaved ordering) are the
    context. Returns the context (with size H x W) and the low-resolution image used.
    """
    if cfg.ordering != "interleaved":
        raise InputError(
            f"upsampling needs an interleaved model (Y0, Cb0, Cr0 first); this one is "
            f"{cfg.ordering}"
        )
    b = cfg.block_size
    image = rep.as_rgb(np.asarray(image))
    h, w = rep.target_size(image.shape[0] * b, image.shape[1] * b, cfg)
    low = image
    if image.shape[:2] != (h // b, w // b):
        pil = Image.fromarray(image).resize((w // b, h // b), Image.Resampling.LANCZOS)
        low = np.asarray(pil, np.uint8)
    blocky = np.repeat(np.repeat(low, b, axis=0), b, axis=1)
    seq = rep.encode(blocky, cfg)
    rank = rep.channel_rank(b, cfg.ordering, cfg.interval)
    keep = rank[seq.channels] < 3
    # Y0, Cb0, Cr0 rank 0, 1, 2: the context is a prefix of the ordering.
    assert np.all(keep[: int(keep.sum())])
    return seq.prefix(int(keep.sum())), low


def colorization_context(image: np.ndarray, cfg: DCTConfig) -> tuple[rep.DCTSequence, np.ndarray]:
    """The context of colorization: every luma triple of the image's grey version.

    A colour input is turned grey first (its JPEG luma, Y of YCbCr). Returns the context (with
    the resized image's size) and the grey image used (resized).
    """
    if cfg.ordering != "luma_first":
        raise InputError(
            f"colorization needs a luma_first model (trained with target_part='chroma'); this "
            f"one is {cfg.ordering}"
        )
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] >= 3:
        y, _, _ = rep.rgb_to_ycbcr(rep.as_rgb(image))  # centred: Y - 128
        grey = np.clip(y + 128.0, 0, 255).astype(np.uint8)
    else:
        grey = image.reshape(image.shape[:2]).astype(np.uint8)
    grey = rep.resize(np.repeat(grey[:, :, None], 3, axis=2), cfg)
    seq = rep.encode(grey, cfg)
    luma = int(np.sum(seq.channels < cfg.channels_per_plane))
    return seq.prefix(luma), grey


def sample_batches(
    sampler: Sampler,
    num_samples: int,
    *,
    options: SampleOptions,
    seed: int,
    labels=None,
    contexts: list[rep.DCTSequence] | None = None,
    context_is_base: bool = False,
    batch_size: int = 16,
    progress: Callable[[str], None] | None = None,
) -> Samples:
    """Draws num_samples sequences in batches of batch_size.

    labels: an int or one per sample (class-conditional models; -1: none). contexts: one per
    sample, kept exactly as the first triples. context_is_base: colorization: chunk 0 starts
    after the context (the model was trained on chroma chunks after all luma) and only chroma
    channels are drawn. options.guidance: the classifier-free guidance scale (1: none).

    Raises:
      UsageError: num_samples or batch_size below 1, a label the model does not have (-1 among
        them when its null label was not trained), guidance the model cannot take.
    """
    cfg, cmodel = sampler.dct, sampler.config
    if num_samples < 1:
        raise UsageError(f"num_samples={num_samples}: must be >= 1")
    if batch_size < 1:
        raise UsageError(f"batch_size={batch_size}: must be >= 1")
    labels = np.broadcast_to(np.asarray(-1 if labels is None else labels, np.int32), num_samples)
    sampler.check_labels(labels)
    sampler.check_guidance(options.guidance)
    if contexts is not None and len(contexts) != num_samples:
        raise ValueError(f"{len(contexts)} contexts for {num_samples} samples")
    out_seqs, finished, ctx_lengths = [], [], []
    elements, t0 = 0, time.perf_counter()
    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        ctx = None if contexts is None else contexts[start : start + n]
        lengths = np.array([len(c) for c in ctx] if ctx else [0] * n, np.int32)
        capacity = min(
            int(lengths.max()) + options.max_chunks * cmodel.chunk_size, max_length(cfg) + 1
        )
        capacity = max(capacity, int(lengths.max()) + 1)
        context = None
        if ctx:
            width = max(int(lengths.max()), 1)
            arrays = [np.zeros((n, width), np.int32) for _ in range(3)]
            for i, c in enumerate(ctx):
                for a, t in zip(arrays, (c.channels, c.positions, c.values)):
                    a[i, : len(t)] = t
            context = (*arrays, lengths)
        state = sampler.initial_state(
            n,
            capacity,
            context=context,
            label=labels[start : start + n],
            base=lengths if context_is_base else None,
            min_rank=cfg.channels_per_plane if context_is_base else None,
        )

        def report(k, last, st, start=start, n=n):
            if progress is not None:
                running = int(n - np.sum(st["done"].numpy()))
                progress(
                    f"samples {start + 1}-{start + n} of {num_samples}: chunk {k + 1} (limit "
                    f"{last + 1}), {running} of {n} running, {int(st['steps'].numpy()):,} steps"
                )

        state = sampler.sample(state, options, seed=seed * 1_000_003 + start, progress=report)
        elements += int(state["steps"].numpy())
        arrays = {k: state[k].numpy() for k in ("channels", "positions", "values", "length")}
        for i in range(n):
            length = int(arrays["length"][i])
            stopped = length < capacity and arrays["channels"][i, length] == cfg.stop_token
            c, p, v = (arrays[k][i, :length].copy() for k in ("channels", "positions", "values"))
            if ctx:
                h, w = ctx[i].height, ctx[i].width
            else:
                h, w = rep.extent_from_positions(p, cfg)
            out_seqs.append(rep.DCTSequence(c, p, v, h, w))
            finished.append(bool(stopped))
            ctx_lengths.append(int(lengths[i]))
    return Samples(
        cfg,
        out_seqs,
        np.array(finished),
        np.array(ctx_lengths, np.int32),
        labels.copy(),
        elements,
        time.perf_counter() - t0,
    )


# ----------------------------------------------------------------------------------------------
# In-graph decoding (the SavedModel's sample signature).


def extent_tf(positions, lengths, cfg: DCTConfig):
    """`representation.extent_from_positions` of each row's first `lengths` positions:
    (b, N), (b,) -> heights, widths (b,) int32."""
    positions = tf.cast(positions, tf.int32)
    valid = tf.range(tf.shape(positions)[1])[None, :] < lengths[:, None]
    rows = tf.reduce_max(tf.where(valid, positions // cfg.grid, 0), axis=1)
    cols = tf.reduce_max(tf.where(valid, positions % cfg.grid, 0), axis=1)
    step, b = 2 * cfg.block_size, cfg.block_size
    to_pixels = lambda blocks: (((blocks + 1) * b + step - 1) // step) * step
    return to_pixels(rows), to_pixels(cols)


def images_tf(channels, positions, values, lengths, cfg: DCTConfig, heights=None, widths=None):
    """Decodes sampled rows to uint8 images on the canvas (b, R, R, 3), plus their sizes."""
    if heights is None:
        heights, widths = extent_tf(positions, lengths, cfg)
    dense = dct_ops.dct_image_from_triples(channels, positions, values, cfg, num_triples=lengths)
    images = dct_ops.decode_dct_image(dense, cfg, heights, widths)
    rows = tf.range(tf.shape(images)[1])
    inside = (rows[None, :, None] < heights[:, None, None]) & (
        rows[None, None, :] < widths[:, None, None]
    )
    return tf.where(inside[..., None], images, tf.zeros_like(images)), heights, widths


# ----------------------------------------------------------------------------------------------
# Pictures: grids, heatmaps (paper Figure 1, right), progressive strips (Figure 2g).


SAMPLE_INFO_KEYS = ("seed", "temperature", "top_p", "top_k", "guidance", "checkpoint_step")


def sample_captions(samples: Samples, info: Mapping[str, Any] | None = None) -> list[list[str]]:
    """Each sample's caption lines (`pictures.sample_caption`): label (and its name), seed and
    index, temperature, top-p, top-k and guidance, checkpoint step, length.

    Args:
      samples: what was drawn.
      info: how: any of SAMPLE_INFO_KEYS, and "label_names" (a list, index = label).
    """
    info = dict(info or {})
    return [
        pictures.sample_caption(
            index=i,
            seed=info.get("seed"),
            label=int(samples.labels[i]),
            label_names=info.get("label_names"),
            temperature=info.get("temperature"),
            top_p=info.get("top_p"),
            top_k=info.get("top_k"),
            guidance=info.get("guidance"),
            step=info.get("checkpoint_step"),
            triples=len(seq),
            finished=bool(samples.finished[i]),
        )
        for i, seq in enumerate(samples.sequences)
    ]


def write_samples(
    samples: Samples,
    out_dir: str,
    prefix: str = "sample",
    panel: int = 256,
    info: Mapping[str, Any] | None = None,
) -> dict[str, list[str]]:
    """Writes, for each sample: PREFIX_NNN.png (the image), PREFIX_NNN.npz (its triples, which
    `python -m dct_gen.codec decode` reads), PREFIX_NNN_heatmap.png and
    PREFIX_NNN_progressive.png; and PREFIX_grid.png and PREFIX_heatmaps.png, each cell captioned
    (`sample_captions`), and PREFIX.json: how the samples were drawn (`info`: seed,
    temperature, top-p, top-k, guidance, checkpoint step; null where not given) and, per
    sample, its index, size, length, context length, whether it stopped, label and label name."""

    info = dict(info or {})
    captions = sample_captions(samples, info)
    label_names = info.get("label_names")
    cfg = samples.cfg
    files: dict[str, list[str]] = {"images": [], "triples": [], "heatmaps": [], "progressive": []}
    images, maps = [], []
    for i, (seq, image) in enumerate(zip(samples.sequences, samples.images())):
        stem = os.path.join(out_dir, f"{prefix}_{i:03d}")
        files["images"].append(pictures.save_png(image, stem + ".png"))
        sequence_file.save_npz(stem + ".npz", seq, cfg, source=f"{prefix} {i}")
        files["triples"].append(stem + ".npz")
        hm = pictures.heatmap(seq, cfg)
        files["heatmaps"].append(
            pictures.save_png(pictures.enlarge(hm, panel), stem + "_heatmap.png")
        )
        strip, _ = pictures.progressive_strip(seq, cfg, steps=6, panel_size=min(panel, 160))
        files["progressive"].append(stem + "_progressive.png")
        strip.save(files["progressive"][-1], format="PNG")
        images.append(pictures.enlarge(image, panel))
        maps.append(pictures.enlarge(hm, panel))
    files["grid"] = [
        pictures.save_png(
            pictures.grid(images, captions=captions), os.path.join(out_dir, f"{prefix}_grid.png")
        )
    ]
    files["heatmap_grid"] = [
        pictures.save_png(
            pictures.grid(maps, captions=captions),
            os.path.join(out_dir, f"{prefix}_heatmaps.png"),
        )
    ]

    def label_name(label: int) -> str | None:
        if label < 0 or not label_names or label >= len(label_names):
            return None
        return str(label_names[label])

    summary = {
        "num_samples": len(samples.sequences),
        "seconds": round(samples.seconds, 3),
        "element_steps": samples.elements,
        **{key: info.get(key) for key in SAMPLE_INFO_KEYS},
        "samples": [
            {
                "index": i,
                "image": files["images"][i],
                "height": seq.height,
                "width": seq.width,
                "triples": len(seq),
                "context_triples": int(samples.context_lengths[i]),
                "stopped": bool(samples.finished[i]),
                "label": int(samples.labels[i]),
                "label_name": label_name(int(samples.labels[i])),
                "caption": captions[i],
            }
            for i, seq in enumerate(samples.sequences)
        ],
    }
    path = os.path.join(out_dir, f"{prefix}.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=2)
    files["summary"] = [path]
    return files


# ----------------------------------------------------------------------------------------------
# The SavedModel as a source (no dct_gen model code runs: only its signatures).


class SavedModelSource:
    """Sampling through an exported SavedModel's signatures (`dct_gen.export`).

    Attributes:
      cfg, num_classes, max_num_samples: from the export's config_json.
      null_label_trained, label_names: likewise (an export from before they were recorded:
        True and None).
      signatures: the signature names.

    Raises:
      InputError: path is not a SavedModel directory (the message names it).
    """

    def __init__(self, path: str):
        if not tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
            raise InputError(f"{path}: not a SavedModel directory (no saved_model.pb there)")
        self.loaded = tf.saved_model.load(path)
        raw = json.loads(self.loaded.config_json.numpy())
        self.cfg = DCTConfig.from_dict(raw["model_config"]["dct"])
        self.num_classes = raw["model_config"].get("num_classes")
        self.max_num_samples = int(raw["max_num_samples"])
        self.null_label_trained = bool(raw.get("null_label_trained", True))
        self.label_names = run_label_names(raw)
        self.signatures = set(self.loaded.signatures.keys())

    def takes(self, signature: str, argument: str) -> bool:
        """Whether a signature has an argument (exports before guidance lack `guidance`, and
        their upsample, colorize and log_prob `label`)."""
        _, kwargs = self.loaded.signatures[signature].structured_input_signature
        return argument in kwargs

    def _optional(self, signature: str, label: int, guidance: float) -> dict:
        """The label and guidance arguments a signature takes; a value other than the old
        behaviour's (-1, 1) for one that does not take it is refused."""
        out = {}
        for name, value, plain in (("label", label, -1), ("guidance", guidance, 1.0)):
            if self.takes(signature, name):
                dtype = tf.int32 if name == "label" else tf.float32
                out[name] = tf.constant(value, dtype)
            elif value != plain:
                raise UsageError(
                    f"{name}={value}: this SavedModel's {signature} signature takes no {name} "
                    "(exported by an earlier version); export the run again"
                )
        return out

    def check(self, label: int, guidance: float) -> None:
        """Raises UsageError for a label or guidance the exported model cannot take (what its
        signatures would refuse in the graph), before any call."""
        check_label(label, self.num_classes, self.null_label_trained, self.label_names)
        check_guidance(guidance, self.num_classes, self.null_label_trained)

    def _samples(self, outputs: list[dict], labels, context_lengths=None) -> Samples:
        seqs, finished = [], []
        for out in outputs:
            out = {k: v.numpy() for k, v in out.items()}
            for i in range(out["lengths"].shape[0]):
                n = int(out["lengths"][i])
                seqs.append(
                    rep.DCTSequence(
                        out["channels"][i, :n].astype(np.int32),
                        out["positions"][i, :n].astype(np.int32),
                        out["values"][i, :n].astype(np.int32),
                        int(out["heights"][i]),
                        int(out["widths"][i]),
                    )
                )
                finished.append(bool(out["stopped"][i]))
        ctx = np.zeros(len(seqs), np.int32) if context_lengths is None else context_lengths
        return Samples(self.cfg, seqs, np.array(finished), np.asarray(ctx, np.int32), labels)

    def sample(self, num_samples, label, options: SampleOptions, seed, progress=None) -> Samples:
        """num_samples samples with `label` (-1: none), options' temperature, top_p and
        guidance, in calls of at most max_num_samples."""
        self.check(label, options.guidance)
        extra = self._optional("sample", label, options.guidance)
        outputs = []
        for start in range(0, num_samples, self.max_num_samples):
            n = min(self.max_num_samples, num_samples - start)
            outputs.append(
                self.loaded.signatures["sample"](
                    num_samples=tf.constant(n, tf.int32),
                    label=tf.constant(label, tf.int32),
                    temperature=tf.constant(options.temperature, tf.float32),
                    top_p=tf.constant(options.top_p, tf.float32),
                    seed=tf.constant(seed * 1_000_003 + start, tf.int64),
                    **{k: v for k, v in extra.items() if k != "label"},
                )
            )
            if progress:
                progress(f"samples {start + 1}-{start + n} of {num_samples} done")
        return self._samples(outputs, np.full(num_samples, label, np.int32))

    def conditional(
        self,
        task: str,
        images,
        per_image: int,
        seed: int,
        progress=None,
        label: int = -1,
        guidance: float = 1.0,
    ):
        """per_image samples of a task ("upsample", "colorize") for each image, with the class
        label (-1: none) and guidance scale."""
        if task not in self.signatures:
            raise InputError(
                f"this SavedModel has no {task} signature (it has {sorted(self.signatures)})"
            )
        self.check(label, guidance)
        extra = self._optional(task, label, guidance)
        outputs, ctx = [], []
        for i, image in enumerate(images):
            for j in range(per_image):
                out = self.loaded.signatures[task](
                    image=tf.constant(image, tf.uint8),
                    seed=tf.constant(seed * 1_000_003 + i * per_image + j, tf.int64),
                    **extra,
                )
                ctx.append(int(out.pop("context_length")))
                outputs.append(out)
            if progress:
                progress(f"{task}: image {i + 1} of {len(images)} done")
        n = len(outputs)
        return self._samples(outputs, np.full(n, label, np.int32), np.array(ctx, np.int32))


# ----------------------------------------------------------------------------------------------
# A task in one call (the command line, the demo).

TASKS = ("generate", "upsample", "colorize")


def sample_task(
    source: Sampler | SavedModelSource,
    task: str = "generate",
    *,
    num_samples: int,
    images: Sequence[np.ndarray] = (),
    label: int = -1,
    options: SampleOptions | None = None,
    seed: int = 0,
    batch_size: int = 16,
    progress: Callable[[str], None] | None = None,
) -> Samples:
    """The samples of one task, from a trained model's Sampler or from a SavedModel.

    Args:
      source: a Sampler, or a SavedModelSource (which draws through the export's signatures).
      task: "generate" (plain or class-conditional samples), "upsample" (B x upsampling of
        each image, `upsampling_context`) or "colorize" (`colorization_context`).
      num_samples: generate: how many; a task: how many per image.
      images: the task's input images (uint8 RGB or grey arrays); none for generate.
      label: the class label of every sample, of any task (-1: none; a class-conditional model
        whose null label was not trained needs a class).
      options: how draws are made (None: the defaults, with a chunk limit long enough for any
        image). options.guidance (classifier-free guidance, 1: none) applies to every task. A
        SavedModel's task signatures take none of the others, its sample signature
        temperature and top_p only.
      seed: the same seed gives the same samples.
      batch_size: samples drawn together (a Sampler).
      progress: called with one line per chunk (a Sampler) or per call (a SavedModel).

    Raises:
      UsageError: a bad argument; the message starts with its name (a label or guidance the
        model cannot take among them: `check_label`, `check_guidance`).
      InputError: the model cannot do the task (upsampling needs an interleaved model,
        colorization a luma_first one; a SavedModel without the task's signature).
    """
    if task not in TASKS:
        raise UsageError(f"task={task!r}: one of {', '.join(TASKS)}")
    if (task == "generate") == bool(len(images)):
        raise UsageError(f"images: {task} takes {'none' if task == 'generate' else 'some'}")
    if num_samples < 1:
        raise UsageError(f"num_samples={num_samples}: must be >= 1")
    if isinstance(source, SavedModelSource):
        options = options or SampleOptions()
        source.check(label, options.guidance)
        if task != "generate":
            return source.conditional(
                task, images, num_samples, seed, progress, label=label, guidance=options.guidance
            )
        if options.top_k:
            raise UsageError(f"top_k={options.top_k}: the SavedModel's sample signature has none")
        return source.sample(num_samples, label, options, seed, progress)
    options = options or SampleOptions(max_chunks=default_max_chunks(source.config))
    source.check_labels(label)
    source.check_guidance(options.guidance)
    common = dict(options=options, seed=seed, batch_size=batch_size, progress=progress)
    if task == "generate":
        return sample_batches(source, num_samples, labels=label, **common)
    make = upsampling_context if task == "upsample" else colorization_context
    contexts = [make(image, source.dct)[0] for image in images]
    return sample_batches(
        source,
        len(contexts) * num_samples,
        labels=label,
        contexts=[c for c in contexts for _ in range(num_samples)],
        context_is_base=task == "colorize",
        **common,
    )


def write_task(
    samples: Samples,
    out_dir: str,
    task: str = "generate",
    images: Sequence[np.ndarray] = (),
    panel: int = 256,
    info: Mapping[str, Any] | None = None,
) -> dict[str, list[str]]:
    """`write_samples` with the task's name as the prefix ("sample" for generate) and, for a
    task, one TASK_NNN_comparison.png per input image: the image (enlarged), then its samples
    (`sample_task` keeps each image's samples together), captioned. Returns the files by
    kind."""
    prefix = "sample" if task == "generate" else task
    files = write_samples(samples, out_dir, prefix=prefix, panel=panel, info=info)
    if task == "generate" or not len(images):
        return files
    per_image = len(samples.sequences) // len(images)
    decoded = samples.images()
    fit = lambda image: np.asarray(pictures.panel(np.asarray(image, np.uint8), panel))
    captions = sample_captions(samples, info)
    files["comparisons"] = []
    for i, image in enumerate(images):
        own = slice(i * per_image, (i + 1) * per_image)
        row = [fit(image)] + [fit(im) for im in decoded[own]]
        path = os.path.join(out_dir, f"{task}_{i:03d}_comparison.png")
        strip = pictures.grid(row, columns=len(row), captions=[["input"]] + captions[own])
        files["comparisons"].append(pictures.save_png(strip, path))
    return files
