"""The matplotlib charts (`dct_gen.plots`): exact sizes, something drawn in each series' colour,
empty or broken input refused with a message that says what is wrong, pyplot left alone."""

import subprocess
import sys

import numpy as np
import pytest

from dct_gen import plots

SUMMARY = [
    {"quality": q, "dense_bpsp": 5.6, "sparse_bpsp": 0.5 + q / 50, "jpeg_bpsp": 0.1 + q / 200}
    for q in (75, 10, 50)  # not sorted: the plot sorts by quality
]
MODELS = [
    {"parameters": 905_721, "bits_per_subpixel": 0.444, "label": "d=64"},
    {"parameters": 2_782_201, "bits_per_subpixel": 0.443, "label": "d=128"},
]
REFERENCES = {"JPEG + tables": 0.557, "JPEG": 0.468, "25% below JPEG": 0.351}
CHUNKS = {i: {"channel": 0.01 / (i + 1), "position": 0.02, "value": 0.05} for i in range(6)}


def _pixels_of(image: np.ndarray, color: str) -> int:
    """How many pixels have exactly this '#rrggbb' colour."""
    rgb = np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)], np.uint8)
    return int(np.count_nonzero(np.all(image == rgb, axis=-1)))


def _check_picture(image: np.ndarray, size: tuple[int, int]) -> None:
    width, height = size
    assert image.shape == (height, width, 3) and image.dtype == np.uint8
    # Not blank, not filled: a white background, dark text and axes, and many colours drawn.
    assert 0.25 < np.mean(np.all(image == 255, axis=-1)) < 0.95
    assert np.count_nonzero(image.max(axis=-1) < 80) > 500
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20


@pytest.mark.parametrize("size", [(760, 480), (401, 303)])
def test_stats_plot_size_and_series(size):
    image = plots.stats_plot(SUMMARY, "Figure 3", size=size)
    _check_picture(image, size)
    for _, _, color in plots.STATS_SERIES:
        assert _pixels_of(image, color) > 30, color


def test_scaling_plot_size_and_lines():
    image = plots.scaling_plot(MODELS, REFERENCES, "scaling", size=(700, 450))
    _check_picture(image, (700, 450))
    assert _pixels_of(image, plots.MODEL_COLOR) > 30
    for color in plots.REFERENCE_COLORS[: len(REFERENCES)]:
        assert _pixels_of(image, color) > 30, color
    # One model and no references still draw.
    _check_picture(plots.scaling_plot(MODELS[:1]), (760, 500))


def test_chunk_bits_plot_stacks_the_three_parts():
    image = plots.chunk_bits_plot(CHUNKS, "bits per chunk", size=(640, 400))
    _check_picture(image, (640, 400))
    for part in plots.CHUNK_PARTS:
        assert _pixels_of(image, plots.CHUNK_COLORS[part]) > 30, part
    # A TensorBoard image: one chunk is enough, and the keys may be any ints in any order.
    one = plots.chunk_bits_plot({3: {"channel": 0.1, "position": 0.2, "value": 0.3}})
    _check_picture(one, (640, 400))


def test_chunk_bits_plot_of_many_chunks():
    """Many chunks (146) in one panel: the three colours still show, and the bars follow
    their values."""
    many = {
        k: {"channel": 0.001, "position": 0.002, "value": 0.004 / (1 + k % 7)} for k in range(146)
    }
    image = plots.chunk_bits_plot(many, size=(640, 400))
    _check_picture(image, (640, 400))
    for part in plots.CHUNK_PARTS:
        assert _pixels_of(image, plots.CHUNK_COLORS[part]) > 200, part
    # The value bars vary with k % 7: the top edge of the stack is not one straight line.
    green = plots.CHUNK_COLORS["value"]
    rgb = np.array([int(green[i : i + 2], 16) for i in (1, 3, 5)], np.uint8)
    value = np.all(image == rgb, axis=-1)
    tops = [int(np.argmax(col)) for col in value.T if col.any()]
    assert len(set(tops)) > 3


def test_the_style_of_the_session_does_not_change_the_picture():
    import matplotlib

    before = plots.stats_plot(SUMMARY)
    with matplotlib.rc_context({"axes.facecolor": "black", "lines.linewidth": 9}):
        during = plots.stats_plot(SUMMARY)
    np.testing.assert_array_equal(before, during)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: plots.stats_plot([]), ["stats_plot", "empty"]),
        (lambda: plots.stats_plot([{"quality": 50, "dense_bpsp": 1.0}]), ["sparse_bpsp", "50"]),
        (lambda: plots.stats_plot(SUMMARY, size=(0, 100)), ["size", "positive"]),
        (lambda: plots.scaling_plot([]), ["scaling_plot", "no models"]),
        (
            lambda: plots.scaling_plot([{"parameters": 0, "bits_per_subpixel": 1.0}]),
            ["parameters", "positive"],
        ),
        (lambda: plots.scaling_plot(MODELS, {"JPEG": float("nan")}), ["JPEG", "not finite"]),
        (lambda: plots.chunk_bits_plot({}), ["chunk_bits_plot", "empty"]),
        (lambda: plots.chunk_bits_plot({2: {"channel": 0.1}}), ["chunk 2", "'position'"]),
        (
            lambda: plots.chunk_bits_plot({0: {"channel": 1, "position": "x", "value": 1}}),
            ["chunk 0 position", "not a number"],
        ),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(call, words):
    with pytest.raises(ValueError) as info:
        call()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_pyplot_and_the_backend_are_left_alone():
    """Drawing neither imports pyplot nor switches an interactive session's backend."""
    code = (
        "import sys, matplotlib; matplotlib.use('svg'); "
        "from dct_gen import plots; "
        "plots.stats_plot([{'quality': 50, 'dense_bpsp': 5, 'sparse_bpsp': 1, 'jpeg_bpsp': 0.3}]); "
        "assert 'matplotlib.pyplot' not in sys.modules; "
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
