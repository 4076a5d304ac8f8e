"""How closely the codec's coefficients and images agree with libjpeg-turbo, on the bundled photos.

    python bench/libjpeg_agreement.py [--qualities 50,75,90,100]

For each colour photo (cropped to multiples of 16, encoded at its own size) and quality: Pillow
writes a 4:2:0 JPEG at that quality, `jpeglib` reads libjpeg's quantized coefficients back, and
the script prints the share of coefficients where ours equal libjpeg's, our sequence length over
libjpeg's non-zero count, and the PSNR of our round trip beside Pillow's JPEG round trip. The
tests assert the same relations (>= 99% agreement, lengths within 2%, PSNR within 0.5 dB at
qualities 50, 75 and 90); this prints the figures the README quotes.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile

import jpeglib
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dct_gen import photos  # noqa: E402
from dct_gen import representation as rep  # noqa: E402


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


def compare(image: np.ndarray, quality: int, tmp: str) -> dict:
    cfg = rep.DCTConfig(quality=quality, resolution=max(image.shape[:2]))
    path = os.path.join(tmp, "x.jpg")
    Image.fromarray(image).save(path, "JPEG", quality=quality, subsampling=2)
    jpeg = jpeglib.read_dct(path)
    planes, _, _, _ = rep.quantized_planes(image, cfg)
    zz = rep.zigzag(8)
    agree = total = nonzero = 0
    for ours, theirs in zip(planes, (jpeg.Y, jpeg.Cb, jpeg.Cr), strict=True):
        theirs = theirs.reshape(theirs.shape[0], theirs.shape[1], 64)[:, :, zz]
        agree += int(np.count_nonzero(theirs == ours))
        total += theirs.size
        nonzero += int(np.count_nonzero(theirs))
    seq = rep.encode(image, cfg)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality, subsampling=2)
    pillow = np.asarray(Image.open(buf).convert("RGB"))
    return {
        "agreement": agree / total,
        "length_ratio": len(seq) / nonzero,
        "psnr": psnr(rep.decode(seq, cfg), image),
        "psnr_pillow": psnr(pillow, image),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--qualities", default="50,75,90,100")
    args = parser.parse_args()
    qualities = [int(q) for q in args.qualities.split(",")]
    print(f"{'photo':24} {'q':>4} {'agree %':>8} {'len/libjpeg':>12} {'PSNR':>7} {'Pillow':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for path in photos.color_photo_paths():
            image = photos.load_rgb(path)
            image = image[: image.shape[0] // 16 * 16, : image.shape[1] // 16 * 16]
            for q in qualities:
                r = compare(image, q, tmp)
                print(
                    f"{os.path.basename(path):24} {q:4d} {100 * r['agreement']:8.2f} "
                    f"{r['length_ratio']:12.4f} {r['psnr']:7.2f} {r['psnr_pillow']:7.2f}"
                )


if __name__ == "__main__":
    main()
