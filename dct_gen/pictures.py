"""Pictures of sequences and samples, as uint8 RGB arrays or Pillow images, and PNG files.

- `save_png`: writes an array or image, creating the folder; errors name the file.
- `heatmap`: where a sequence placed its triples, per block (paper Figure 1, right).
- `grid`, `enlarge`, `panel`: tiling and scaling samples for viewing. Grid cells keep each
  image's own size and aspect: every column is as wide as its widest image, every row as tall
  as its tallest, and a smaller image sits centred on a neutral grey (CELL_BACKGROUND), so a
  non-square sample shows its real shape. Optional captions go under each cell.
- `captioned`, `sample_caption`: one image with text beneath; the caption lines of a sample
  (label, seed, temperature, top-p, guidance, checkpoint step).
- `progressive_points`, `progressive_strip`: decoded prefixes side by side (Figure 2g).
- `font`: Pillow's default font at a size, for labels.

Used by the codec (`codec_files`), sampling and the training summaries. Charts with axes are
in `dct_gen.plots`. Layer 0: numpy, Pillow and the representation; no TensorFlow.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dct_gen import representation as rep
from dct_gen.errors import InputError


def save_png(image: np.ndarray | Image.Image, path: str) -> str:
    """Writes an RGB image (array or PIL) as a PNG, creating the folder; returns the path.

    Raises:
      InputError: the file cannot be written (the message names it).
    """
    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.ascontiguousarray(np.asarray(image, np.uint8)))
    try:
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        image.save(path, format="PNG")
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot write ({e})") from e
    return path


def heatmap(seq: rep.DCTSequence, cfg: rep.DCTConfig, size: int | None = None) -> np.ndarray:
    """Where content was placed: the number of triples at each block position.

    Args:
      seq: the sequence (a sample or an encoded image).
      cfg: its representation.
      size: the long side of the result in pixels (nearest neighbour); None: the image's size.

    Returns:
      uint8 RGB array the shape of the image (or scaled to `size`), each block coloured from
      black (no triple) through red and yellow to white (the most triples of any block).
    """
    counts = np.bincount(seq.positions, minlength=cfg.num_positions).astype(np.float64)
    counts = counts.reshape(cfg.grid, cfg.grid)
    b = cfg.block_size
    counts = counts[: -(-seq.height // b), : -(-seq.width // b)]
    t = counts / max(counts.max(), 1.0)
    # A black-red-yellow-white ramp.
    rgb = np.stack([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)], -1)
    rgb = np.repeat(np.repeat((rgb * 255).astype(np.uint8), b, 0), b, 1)[: seq.height, : seq.width]
    if size:
        scale = size / max(seq.height, seq.width)
        shape = (max(1, round(seq.width * scale)), max(1, round(seq.height * scale)))
        rgb = np.asarray(Image.fromarray(rgb).resize(shape, Image.Resampling.NEAREST))
    return rgb


CELL_BACKGROUND = (224, 224, 224)  # around an image smaller than its cell: neutral, not white
CAPTION_FONT_SIZE = 12


def grid(
    images: Sequence[np.ndarray],
    columns: int | None = None,
    margin: int = 4,
    captions: Sequence[Sequence[str]] | None = None,
) -> np.ndarray:
    """Tiles uint8 RGB images (any sizes) row by row on white, each at its own size.

    Every column is as wide as its widest image (or caption line), every row as tall as its
    tallest image; an image smaller than its cell is centred on CELL_BACKGROUND, so its own
    shape stays visible (never stretched, never padded to a square of white). With captions,
    each cell gets its lines beneath, centred, in black on white.

    Args:
      images: HxWx3 (or HxWx4: alpha dropped, or HxW grey) uint8 arrays.
      columns: images per row; None: the smallest square that holds them.
      margin: white pixels around and between the cells.
      captions: one list of text lines per image (an empty list: none for that image); None:
        no captions.

    Raises:
      ValueError: no images, or not one caption per image.
    """
    if not len(images):
        raise ValueError("grid: no images")
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"grid: {len(captions)} captions for {len(images)} images")
    images = [_rgb(im) for im in images]
    columns = max(1, min(columns or int(np.ceil(np.sqrt(len(images)))), len(images)))
    rows = -(-len(images) // columns)
    text_font = font(CAPTION_FONT_SIZE)
    line_h = text_font.getbbox("Ag")[3] + 4  # also the bitmap font's (it has no metrics)
    lines = [[str(t) for t in c] for c in captions] if captions is not None else None
    # Each cell's size: the image, and its caption's widest line and number of lines.
    widths = [im.shape[1] for im in images]
    if lines is not None:
        widths = [
            max([w] + [int(np.ceil(text_font.getlength(t))) + 2 for t in ls])
            for w, ls in zip(widths, lines)
        ]
    col_w = [max(widths[c::columns]) for c in range(columns)]
    row_h, cap_h = [], []
    for r in range(rows):
        cells = range(r * columns, min((r + 1) * columns, len(images)))
        row_h.append(max(images[i].shape[0] for i in cells))
        n_lines = max(len(lines[i]) for i in cells) if lines is not None else 0
        cap_h.append(n_lines * line_h + (2 if n_lines else 0))
    xs = np.cumsum([margin] + [w + margin for w in col_w])
    ys = np.cumsum([margin] + [h + c + margin for h, c in zip(row_h, cap_h)])
    out = np.full((ys[-1], xs[-1], 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, columns)
        x, y, w, h = xs[c], ys[r], col_w[c], row_h[r]
        out[y : y + h, x : x + w] = CELL_BACKGROUND
        top, left = y + (h - im.shape[0]) // 2, x + (w - im.shape[1]) // 2
        out[top : top + im.shape[0], left : left + im.shape[1]] = im
    if lines is None or not any(lines):
        return out
    picture = Image.fromarray(out)
    draw = ImageDraw.Draw(picture)
    for i, ls in enumerate(lines):
        r, c = divmod(i, columns)
        y = ys[r] + row_h[r] + 2
        for text in ls:
            tw = text_font.getlength(text)
            draw.text((xs[c] + (col_w[c] - tw) / 2, y), text, fill="black", font=text_font)
            y += line_h
    return np.asarray(picture)


def captioned(image: np.ndarray, lines: Sequence[str], margin: int = 4) -> np.ndarray:
    """The image (uint8 RGB) with text lines centred beneath it, on white (`grid` of one)."""
    return grid([image], columns=1, margin=margin, captions=[list(lines)])


def sample_caption(
    *,
    index: int | None = None,
    seed: int | None = None,
    label: int | None = None,
    label_names: Sequence[str] | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    guidance: float | None = None,
    step: int | None = None,
    triples: int | None = None,
    finished: bool | None = None,
) -> list[str]:
    """The caption lines of one sample: what drew it, so a picture says where it came from.

    Lines, each only when its figures are given: the label ("label 3: cat", the name from
    label_names when there is one; a negative label is none); "seed S #i" (sample i of the
    draws made with seed S); "T 1 top-p 0.9" (with "top-k K" when on, "guidance G" when given);
    "step N" (the checkpoint step); "T triples" (", cut" when the chunk limit stopped it).

    Returns:
      The lines, e.g. ["label 3: cat", "seed 30 #1", "T 1 top-p 0.9", "step 30", "812 triples"].
    """
    out = []
    if label is not None and int(label) >= 0:
        label = int(label)
        name = label_names[label] if label_names is not None and label < len(label_names) else None
        out.append(f"label {label}: {name}" if name else f"label {label}")
    if seed is not None:
        out.append(f"seed {seed}" + (f" #{index}" if index is not None else ""))
    elif index is not None:
        out.append(f"#{index}")
    draws = []
    if temperature is not None:
        draws.append(f"T {temperature:g}")
    if top_p is not None:
        draws.append(f"top-p {top_p:g}")
    if top_k:
        draws.append(f"top-k {top_k}")
    if guidance is not None:
        draws.append(f"guidance {guidance:g}")
    if draws:
        out.append(" ".join(draws))
    if step is not None:
        out.append(f"step {step}")
    if triples is not None:
        out.append(f"{triples:,} triples" + (", cut" if finished is False else ""))
    return out


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, np.uint8)
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=-1)
    return image[..., :3]


def enlarge(image: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour enlargement by the largest whole factor that keeps the long side
    within `size` (at least 1: never shrinks), so every block stays a crisp square."""
    scale = max(1, size // max(image.shape[:2]))
    return np.repeat(np.repeat(image, scale, 0), scale, 1)


def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at `size` pixels (the small bitmap font without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def progressive_points(length: int, steps: int, spacing: str = "geometric") -> list[int]:
    """The prefix lengths at which to decode: `steps` points ending at `length`.

    `linear` spaces them evenly; `geometric` spaces them by a constant ratio from length/2^(steps-1)
    (capped below at 1), which shows the coarse early images that linear spacing skips. An empty
    sequence gives `steps` zeros.

    Raises:
      ValueError: steps < 1, or an unknown spacing.
    """
    if steps < 1:
        raise ValueError(f"steps={steps}: must be >= 1")
    if length == 0:
        return [0] * steps
    k = np.arange(1, steps + 1)
    if spacing == "linear":
        points = np.rint(length * k / steps)
    elif spacing == "geometric":
        points = np.rint(length * 2.0 ** (k - steps))
    else:
        raise ValueError(f"spacing={spacing!r}: must be 'linear' or 'geometric'")
    return [int(p) for p in np.clip(points, 1, length)]


def panel(image: np.ndarray, panel_size: int) -> Image.Image:
    """The image scaled so its long side is panel_size (0: as it is): nearest neighbour when
    enlarging, Lanczos when shrinking."""
    im = Image.fromarray(image)
    if panel_size <= 0:
        return im
    h, w = image.shape[:2]
    scale = panel_size / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # Nearest keeps block edges crisp when enlarging; Lanczos avoids aliasing when shrinking.
    method = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    return im.resize(size, method)


def progressive_strip(
    seq: rep.DCTSequence,
    cfg: rep.DCTConfig,
    *,
    steps: int = 8,
    spacing: str = "geometric",
    panel_size: int = 256,
    margin: int = 8,
) -> tuple[Image.Image, list[int]]:
    """Decodes `steps` prefixes of the sequence and lays them out left to right, labelled.

    Each panel is the decoded prefix scaled so its long side is `panel_size` (0: decoded size);
    below it, the number of triples decoded and their share of the sequence.

    Args:
      seq, cfg: the sequence and its representation.
      steps, spacing: the prefixes, as in `progressive_points`.
      panel_size: the long side of each panel in pixels; 0 keeps the decoded size.
      margin: white pixels around and between the panels.

    Returns:
      The strip (RGB Pillow image) and the prefix lengths.
    """
    points = progressive_points(len(seq), steps, spacing)
    panels = [panel(rep.decode(seq, cfg, num_triples=n), panel_size) for n in points]
    pw, ph = panels[0].size
    text_font = font(max(11, min(16, pw // 12)))
    label_h = 2 * (text_font.getbbox("0%")[3] + 4)
    strip = Image.new(
        "RGB", (steps * pw + (steps + 1) * margin, ph + 2 * margin + label_h), "white"
    )
    draw = ImageDraw.Draw(strip)
    length = max(len(seq), 1)
    for i, (picture, n) in enumerate(zip(panels, points, strict=True)):
        x = margin + i * (pw + margin)
        strip.paste(picture, (x, margin))
        lines = (f"{n:,} triples", f"{100.0 * n / length:.3g}% of {len(seq):,}")
        y = margin + ph + 4
        for line in lines:
            tw = draw.textlength(line, font=text_font)
            draw.text((x + (pw - tw) / 2, y), line, fill="black", font=text_font)
            y += label_h // 2
    return strip, points
