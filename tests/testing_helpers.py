"""Helpers several test files share (not a test file): photo crops, small models and real
windows for the model and sampling tests."""

import keras
import numpy as np

from dct_gen import layers
from dct_gen import model as model_lib
from dct_gen.representation import DCTConfig, dct_image

# conftest's labelled dataset: three classes, each the crops of one bundled photo.
LABELLED_PHOTOS = ("astronaut", "chelsea", "coffee")


def small_config(block_size=4, resolution=32, num_classes=None, **kwargs):
    defaults = dict(
        hidden_size=32,
        num_heads=2,
        key_size=16,
        ffn_multiplier=2,
        value_dim=2,
        encoder_spec=((1, 1),),
        channel_spec=((1, 1),),
        position_spec=((1, 2),),
        value_spec=((1, 1), (1, 1)),
        kernel_size=4,
        stride=2,
        chunk_size=12,
        overlap=4,
        dropout=0.0,
    )
    defaults.update(kwargs)
    dct = DCTConfig(block_size=block_size, quality=75, resolution=resolution, clip=60)
    return model_lib.ModelConfig(dct=dct, num_classes=num_classes, **defaults)


def build(config, seed=0):
    """A model whose ReZero scalars are non-zero (at zero, every block is the identity and a
    causality test would pass for the wrong reason)."""
    keras.utils.set_random_seed(seed)
    model = model_lib.build_model(config)
    for layer in model.layers:
        if isinstance(layer, layers.TransformerStack):
            for block in layer.blocks:
                block.rezero.assign(
                    np.random.default_rng(seed).uniform(0.5, 1.0, block.rezero.shape)
                )
    return model


def random_batch(config, batch=2, seed=0):
    dct, t = config.dct, config.window
    rng = np.random.default_rng(seed)
    g = dct.grid
    out = {
        "channels": rng.integers(0, dct.num_channels, (batch, t)),
        "positions": rng.integers(0, dct.num_positions, (batch, t)),
        "values": rng.integers(-dct.clip, dct.clip + 1, (batch, t)),
        "dct_image": rng.integers(-5, 6, (batch, g, g, dct.stop_token)),
        "label": rng.integers(-1, 3, (batch,)),
        "height": np.full((batch,), dct.resolution),
        "width": np.full((batch,), dct.resolution // 2),
    }
    out = {k: v.astype(np.int32) for k, v in out.items()}
    out["loss_mask"] = np.ones((batch, t), np.float32)
    out["loss_mask"][:, : config.overlap] = 0
    return out


def real_window(seq, cfg, start, chunk_size, overlap):
    """One example as dct_gen.data cuts it: window, masks and the DCT image of the prefix."""
    channels = np.append(seq.channels, cfg.stop_token)
    positions = np.append(seq.positions, 0)
    values = np.append(seq.values, 0)
    length, window = channels.size, chunk_size + overlap
    first = max(start - overlap, 0)
    idx = first + np.arange(window)
    real = idx < min(start + chunk_size, length)
    safe = np.where(real, idx, 0)
    return {
        "channels": np.where(real, channels[safe], 0).astype(np.int32),
        "positions": np.where(real, positions[safe], 0).astype(np.int32),
        "values": np.where(real, values[safe], 0).astype(np.int32),
        "loss_mask": (real & (idx >= start)).astype(np.float32),
        "mask": real.astype(np.float32),
        "dct_image": dct_image(seq, cfg, num_triples=start).astype(np.int32),
        "height": np.int32(seq.height),
        "width": np.int32(seq.width),
        "label": np.int32(-1),
    }


def stack_windows(windows):
    return {k: np.stack([w[k] for w in windows]) for k in windows[0]}


def crop_even(image: np.ndarray, multiple: int = 16) -> np.ndarray:
    """Crops an image to sides that are multiples of `multiple` (no resampling)."""
    h, w = image.shape[:2]
    return image[: h // multiple * multiple, : w // multiple * multiple]
