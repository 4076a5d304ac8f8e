"""Charts of the project's measurements, drawn with matplotlib and returned as RGB uint8 arrays
(height x width x 3), ready for `pictures.save_png` or `tf.summary.image` (add a batch axis).

- `stats_plot`: the paper's Figure 3, bits per subpixel against JPEG quality for the dense DCT
  image, the sparse triples and JPEG (`python -m dct_gen.codec stats`).
- `scaling_plot`: held-out bits per subpixel against parameters, with reference lines such as
  JPEG's (a small Figure 9; `bench/quality.py`).
- `chunk_bits_plot`: held-out bits per subpixel of each chunk index, split into channel,
  position and value (a panel of the paper's Figure 9).

Every chart is drawn on its own `matplotlib.figure.Figure` with the Agg canvas, never through
pyplot, so the backend of an interactive session is left alone, and under matplotlib's default
style, so a user's matplotlibrc does not change the pictures. matplotlib is imported by the
functions that draw (it takes seconds to import), so importing this module is cheap.

Layer 0: numpy and matplotlib; no TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Figure 3's series: the summary key, the legend label and the colour (matplotlib's first ones).
STATS_SERIES = (
    ("dense_bpsp", "dense DCT", "#1f77b4"),
    ("sparse_bpsp", "sparse DCT", "#d62728"),
    ("jpeg_bpsp", "JPEG (Pillow, optimized)", "#2ca02c"),
)
MODEL_COLOR = "#1f77b4"  # the models' line in `scaling_plot`
REFERENCE_COLORS = ("#969696", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")
CHUNK_PARTS = ("channel", "position", "value")
CHUNK_COLORS = {"channel": "#1f77b4", "position": "#ff7f0e", "value": "#2ca02c"}


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = (int(s) for s in size)
    if width <= 0 or height <= 0:
        raise ValueError(f"size {size}: width and height must be positive")
    return width, height


def _finite(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{what}: {number} is not finite")
    return number


def render(draw: Callable[[Figure], None], size: tuple[int, int], dpi: int = 100) -> np.ndarray:
    """Calls draw(figure) on a new figure of `size` = (width, height) pixels and rasterizes it.

    Returns:
      uint8 RGB array of shape (height, width, 3).
    """
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width, height = _check_size(size)
    # The style must hold while drawing too: artists read some settings only at draw time.
    with matplotlib.style.context("default"):
        figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, layout="constrained")
        canvas = FigureCanvasAgg(figure)
        draw(figure)
        canvas.draw()
        rgb = np.array(canvas.buffer_rgba())[..., :3]
    # Inches times dpi can land a hair below a whole pixel; pad or crop to the exact size.
    out = np.full((height, width, 3), 255, np.uint8)
    h, w = min(height, rgb.shape[0]), min(width, rgb.shape[1])
    out[:h, :w] = rgb[:h, :w]
    return out


def _legend_above(ax: Any, ncols: int) -> None:
    """The legend in a row between the title and the axes, where it hides no data; the
    constrained layout makes room for it (a figure legend would overlap the title)."""
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=ncols, frameon=False)


# ----------------------------------------------------------------------------------------------
# Figure 3.


def stats_plot(
    summary: Sequence[Mapping[str, Any]],
    title: str = "",
    size: tuple[int, int] = (760, 480),
) -> np.ndarray:
    """Figure 3: bits per subpixel against quality, one line per representation.

    Args:
      summary: one row per quality (`codec_files.summarize`): "quality" and the keys of
        STATS_SERIES (dense_bpsp, sparse_bpsp, jpeg_bpsp).
      title: the chart's title.
      size: (width, height) in pixels.

    Returns:
      uint8 RGB array of shape (height, width, 3).

    Raises:
      ValueError: no rows, or a row without a finite value for a key (the message names it).
    """
    if not summary:
        raise ValueError("stats_plot: no rows to plot (summary is empty)")
    rows = sorted(summary, key=lambda r: _finite(r.get("quality"), "stats_plot: quality"))
    qualities = [float(r["quality"]) for r in rows]
    series = []
    for key, label, color in STATS_SERIES:
        values = [_finite(r.get(key), f"stats_plot: {key} at quality {r['quality']}") for r in rows]
        series.append((values, label, color))

    def draw(figure: Figure) -> None:
        ax = figure.add_subplot()
        for values, label, color in series:
            ax.plot(qualities, values, color=color, linewidth=2.5, marker="o", markersize=6,
                    markeredgecolor="white", label=label)  # fmt: skip
        ax.set_xlim(0, 100)
        ax.set_xticks(range(0, 101, 10))
        ax.set_ylim(bottom=0)
        ax.grid(True, color="#e6e6e6")
        ax.set_axisbelow(True)
        ax.set_xlabel("quality (IJG scale, same for the DCT codec and JPEG)")
        ax.set_ylabel("bits per image-subpixel")
        if title:
            figure.suptitle(title)
        _legend_above(ax, ncols=len(series))

    return render(draw, size)


# ----------------------------------------------------------------------------------------------
# Model size against bits (a small Figure 9).


def _parameter_label(value: float, _position: Any = None) -> str:
    if value >= 1e6:
        return f"{value / 1e6:g}M"
    if value >= 1e3:
        return f"{value / 1e3:g}k"
    return f"{value:g}"


def scaling_plot(
    models: Sequence[Mapping[str, Any]],
    references: Mapping[str, float] | None = None,
    title: str = "",
    size: tuple[int, int] = (760, 500),
) -> np.ndarray:
    """Held-out bits per subpixel against parameters (log scale), one point per model, with
    horizontal reference lines (e.g. JPEG's bits on the same images).

    Args:
      models: each {"parameters": count > 0, "bits_per_subpixel": value, "label": text}; the
        label (optional) is written beside the point.
      references: name -> bits per subpixel, each drawn as a dashed horizontal line, in order,
        coloured from REFERENCE_COLORS.
      title: the chart's title.
      size: (width, height) in pixels.

    Returns:
      uint8 RGB array of shape (height, width, 3).

    Raises:
      ValueError: no models, or a missing, non-finite or non-positive figure (named).
    """
    if not models:
        raise ValueError("scaling_plot: no models to plot")
    points = []
    for i, m in enumerate(models):
        params = _finite(m.get("parameters"), f"scaling_plot: model {i} parameters")
        if params <= 0:
            raise ValueError(f"scaling_plot: model {i} parameters {params:g} must be positive")
        bits = _finite(m.get("bits_per_subpixel"), f"scaling_plot: model {i} bits_per_subpixel")
        points.append((params, bits, str(m.get("label", ""))))
    points.sort()
    lines = [
        (name, _finite(v, f"scaling_plot: reference {name!r}"))
        for name, v in (references or {}).items()
    ]

    def draw(figure: Figure) -> None:
        from matplotlib.ticker import FuncFormatter, LogLocator

        ax = figure.add_subplot()
        ax.set_xscale("log")
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ax.plot(xs, ys, color=MODEL_COLOR, linewidth=2.5, marker="o", markersize=7,
                markeredgecolor="white", label="DCTransformer", zorder=3)  # fmt: skip
        for (name, value), color in zip(lines, _cycle(REFERENCE_COLORS, len(lines))):
            ax.axhline(value, color=color, linewidth=2, linestyle="--", label=name)
        for x, y, label in points:
            text = f"{label}: {y:.3f}" if label else f"{y:.3f}"
            ax.annotate(text, (x, y), xytext=(6, 8), textcoords="offset points",
                        color=MODEL_COLOR, fontsize=9)  # fmt: skip
        # A quarter of a decade of room on each side, so a single model still gets an axis.
        lo, hi = math.log10(min(xs)), math.log10(max(xs))
        ax.set_xlim(10 ** (lo - 0.25), 10 ** (hi + 0.25))
        ax.xaxis.set_major_formatter(FuncFormatter(_parameter_label))
        ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
        ax.xaxis.set_minor_formatter(FuncFormatter(_parameter_label))
        ax.grid(True, which="both", color="#e6e6e6")
        ax.set_axisbelow(True)
        ax.set_xlabel("parameters (log scale)")
        ax.set_ylabel("held-out bits per subpixel")
        if title:
            figure.suptitle(title)
        _legend_above(ax, ncols=2)

    return render(draw, size)


def _cycle(colors: Sequence[str], n: int) -> list[str]:
    return [colors[i % len(colors)] for i in range(n)]


# ----------------------------------------------------------------------------------------------
# Bits per chunk (a panel of Figure 9).


def chunk_bits_plot(
    bits_by_chunk: Mapping[int, Mapping[str, float]],
    title: str = "",
    size: tuple[int, int] = (640, 400),
) -> np.ndarray:
    """Held-out bits per subpixel of each chunk index, stacked as channel, position and value.

    Args:
      bits_by_chunk: chunk index -> {"channel": bits, "position": bits, "value": bits}, each
        in bits per subpixel (summing the chunks of an image gives the image's).
      title: the chart's title.
      size: (width, height) in pixels.

    Returns:
      uint8 RGB array of shape (height, width, 3), e.g. for `tf.summary.image(name, x[None])`.

    Raises:
      ValueError: no chunks, or a chunk without a finite value for a part (the message names
        the chunk and the part).
    """
    if not bits_by_chunk:
        raise ValueError("chunk_bits_plot: no chunks to plot (bits_by_chunk is empty)")
    chunks = sorted(int(c) for c in bits_by_chunk)
    by_index = {int(c): parts for c, parts in bits_by_chunk.items()}
    stacks = {}
    for part in CHUNK_PARTS:
        values = []
        for c in chunks:
            parts = by_index[c]
            if part not in parts:
                raise ValueError(f"chunk_bits_plot: chunk {c} has no {part!r} bits")
            values.append(_finite(parts[part], f"chunk_bits_plot: chunk {c} {part}"))
        stacks[part] = np.asarray(values)

    def draw(figure: Figure) -> None:
        from matplotlib.ticker import MaxNLocator

        ax = figure.add_subplot()
        bottom = np.zeros(len(chunks))
        for part in CHUNK_PARTS:
            ax.bar(chunks, stacks[part], width=0.85, bottom=bottom, color=CHUNK_COLORS[part],
                   label=part, linewidth=0)  # fmt: skip
            bottom = bottom + stacks[part]
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(chunks[0] - 0.6, chunks[-1] + 0.6)
        ax.grid(True, axis="y", color="#e6e6e6")
        ax.set_axisbelow(True)
        ax.set_xlabel("chunk index")
        ax.set_ylabel("held-out bits per subpixel")
        if title:
            figure.suptitle(title)
        _legend_above(ax, ncols=len(CHUNK_PARTS))

    return render(draw, size)
