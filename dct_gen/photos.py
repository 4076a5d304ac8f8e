"""Finds the real photographs that scikit-image and scikit-learn ship, for demos, tests and benches.

Nothing is downloaded: every file named here is inside the installed wheels. Colour photos are
RGB; the grayscale ones are kept apart because their chroma is empty.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

from dct_gen import images, pictures

# File names inside skimage/data and sklearn/datasets/images.
_SKIMAGE_COLOR = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
    "motorcycle_left.png",
    "retina.jpg",
    "ihc.png",
)
_SKIMAGE_GRAY = ("camera.png", "moon.png", "brick.png", "grass.png", "gravel.png", "coins.png")
_SKLEARN_COLOR = ("china.jpg", "flower.jpg")


def _package_dir(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"cannot find the package {module!r}; install the test extra: pip install -e '.[test]'"
        )
    return list(spec.submodule_search_locations)[0]


def color_photo_paths() -> list[str]:
    """Paths of the bundled colour photographs, in a fixed order."""
    skimage_dir = _package_dir("skimage.data")
    sklearn_dir = _package_dir("sklearn.datasets.images")
    paths = [os.path.join(skimage_dir, n) for n in _SKIMAGE_COLOR]
    paths += [os.path.join(sklearn_dir, n) for n in _SKLEARN_COLOR]
    return [p for p in paths if os.path.exists(p)]


def gray_photo_paths() -> list[str]:
    """Paths of the bundled grayscale photographs, in a fixed order."""
    skimage_dir = _package_dir("skimage.data")
    paths = [os.path.join(skimage_dir, n) for n in _SKIMAGE_GRAY]
    return [p for p in paths if os.path.exists(p)]


def load_rgb(path: str) -> np.ndarray:
    """Reads an image file as a uint8 HxWx3 RGB array (with `dct_gen.images.read_image`)."""
    return images.read_image(path)


def write_crops(
    folder: str,
    count: int,
    *,
    seed: int,
    sides: tuple[int, int] = (24, 64),
    paths: list[str] | None = None,
    flip: bool = False,
) -> list[str]:
    """Writes `count` square PNG crops of the photos (cycling through them) into `folder`.

    Each crop's side is drawn from [sides[0], sides[1]) and its corner uniformly, from a
    generator seeded with `seed`, so the same call writes the same files. With `flip`, about
    half the crops are mirrored left to right. Returns the paths written, in order.
    """
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = color_photo_paths() if paths is None else list(paths)
    written = []
    for i in range(count):
        image = load_rgb(paths[i % len(paths)])
        side = int(rng.integers(*sides))
        y = int(rng.integers(0, image.shape[0] - side))
        x = int(rng.integers(0, image.shape[1] - side))
        crop = image[y : y + side, x : x + side]
        if flip and rng.random() < 0.5:
            crop = crop[:, ::-1]
        out = os.path.join(folder, f"{i:04d}.png")
        pictures.save_png(crop, out)
        written.append(out)
    return written
