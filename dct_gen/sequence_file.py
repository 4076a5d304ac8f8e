"""Sequence files: one image's sparse DCT triples, size and representation as a .npz.

Written by `python -m dct_gen.codec encode` and by sampling; read back by `codec decode` and
`codec progressive`. The file loads without pickle and is checked on reading (keys, config,
triples), so a bad file is an `InputError` naming it, never a crash further on.

Keys (NPZ_KEYS, all required): `format` (NPZ_FORMAT), `channels`, `positions`, `values`
(int32, in the ordering, no stop token), `height`, `width`, `num_clipped`, and the
representation (`block_size`, `quality`, `resolution`, `clip`, `ordering`, `interval`). An
optional `source` names where the triples came from.

Layer 0: numpy and the representation; no TensorFlow.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from dct_gen import representation as rep
from dct_gen.errors import InputError

NPZ_FORMAT = 1
TRIPLE_KEYS = ("channels", "positions", "values")
CONFIG_KEYS = ("block_size", "quality", "resolution", "clip", "ordering", "interval")
NPZ_KEYS = ("format", *TRIPLE_KEYS, "height", "width", "num_clipped", *CONFIG_KEYS)


def save_npz(path: str, seq: rep.DCTSequence, cfg: rep.DCTConfig, source: str = "") -> None:
    """Writes triples, size and config as a compressed .npz that loads without pickle.

    Args:
      path: the file to write (its folder must exist).
      seq: the triples and the image size.
      cfg: their representation.
      source: where the triples came from (an input file name, a sample's index).

    Raises:
      InputError: the file cannot be written (the message names it).
    """
    arrays = {
        "format": np.int32(NPZ_FORMAT),
        "channels": seq.channels.astype(np.int32),
        "positions": seq.positions.astype(np.int32),
        "values": seq.values.astype(np.int32),
        "height": np.int32(seq.height),
        "width": np.int32(seq.width),
        "num_clipped": np.int64(seq.num_clipped),
        "ordering": np.array(cfg.ordering),
        "source": np.array(source),
    }
    for key in CONFIG_KEYS:
        if key != "ordering":
            arrays[key] = np.int32(getattr(cfg, key))
    try:
        np.savez_compressed(path, **arrays)
    except OSError as e:
        raise InputError(f"{path}: cannot write ({e})") from e


def load_npz(path: str) -> tuple[rep.DCTSequence, rep.DCTConfig]:
    """Reads a file written by `save_npz`, checking keys, config and triples.

    Returns:
      The sequence and its representation.

    Raises:
      InputError: the file is missing, not an .npz, of another format version, lacks keys, or
        holds a config or triples the representation refuses (the message names the file).
    """
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path}: not an .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except Exception as e:  # a zip, pickle or format error: the file is not an .npz we can read
        raise InputError(f"{path}: cannot read as .npz ({e})") from e
    missing = [k for k in NPZ_KEYS if k not in data]
    if missing:
        raise InputError(
            f"{path}: missing keys {missing}; expected a .npz written by "
            "`python -m dct_gen.codec encode`"
        )
    try:
        version = int(data["format"])
    except (TypeError, ValueError):
        raise InputError(f"{path}: format {data['format']!r} is not a version number") from None
    if version != NPZ_FORMAT:
        raise InputError(f"{path}: format {version}, this version reads {NPZ_FORMAT}")
    try:
        cfg = rep.DCTConfig(
            ordering=str(data["ordering"]),
            **{k: int(data[k]) for k in CONFIG_KEYS if k != "ordering"},
        )
        triples = [data[k] for k in TRIPLE_KEYS]
        for key, arr in zip(TRIPLE_KEYS, triples, strict=True):
            if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"{key} must be a 1-D integer array, got {arr.dtype} {arr.shape}")
        rep.check_triples(*triples, cfg)
        height, width = int(data["height"]), int(data["width"])
        if not (0 < height <= cfg.resolution and 0 < width <= cfg.resolution):
            raise ValueError(f"size {height}x{width} does not fit the {cfg.resolution} canvas")
    except (ValueError, TypeError) as e:
        raise InputError(f"{path}: {e}") from e
    seq = rep.DCTSequence(
        *(t.astype(np.int32) for t in triples), height, width, int(data["num_clipped"])
    )
    return seq, cfg
