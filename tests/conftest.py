"""Shared fixtures: the real photos bundled with scikit-image and scikit-learn, loaded once."""

import functools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices for the tf.distribute tests; this must happen before TF starts.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)

from dct_gen import photos  # noqa: E402


@functools.cache
def _load(path: str) -> np.ndarray:
    return photos.load_rgb(path)


def crop_even(image: np.ndarray, multiple: int = 16) -> np.ndarray:
    """Crops an image to sides that are multiples of `multiple` (no resampling)."""
    h, w = image.shape[:2]
    return image[: h // multiple * multiple, : w // multiple * multiple]


@pytest.fixture(scope="session")
def color_photos() -> dict[str, np.ndarray]:
    """name -> uint8 RGB array, for the colour photos (retina and hubble left out: large)."""
    out = {}
    for path in photos.color_photo_paths():
        name = os.path.basename(path)
        if name not in ("retina.jpg", "hubble_deep_field.jpg"):
            out[name] = _load(path)
    assert len(out) >= 6, out.keys()
    return out


@pytest.fixture(scope="session")
def gray_photo() -> np.ndarray:
    return _load(photos.gray_photo_paths()[0])[:, :, 0]
