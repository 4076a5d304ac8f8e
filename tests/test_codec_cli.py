"""The codec command line (`python -m dct_gen.codec`, absl flags) and its library
(`dct_gen.codec_files`), called in-process; and the demo's codec steps."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dct_gen import codec, codec_files, demo, errors, photos, pictures, plots, sequence_file
from dct_gen import representation as rep


def _made_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth colour gradient with texture: deterministic, and with detail in every plane."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    rgb = np.stack(
        [
            128 + 90 * np.sin(xx / 7.0),
            128 + 90 * np.cos(yy / 5.0),
            (xx + yy) * 255.0 / (height + width),
        ],
        axis=-1,
    )
    rgb += rng.normal(0, 12, rgb.shape)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _save(path, array, mode=None) -> str:
    Image.fromarray(array, mode=mode).save(path)
    return str(path)


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _photo(name: str) -> str:
    paths = {os.path.basename(p): p for p in photos.color_photo_paths()}
    return paths[name]


@pytest.fixture
def made_png(tmp_path):
    return _save(tmp_path / "made.png", _made_image(40, 56))


# ----------------------------------------------------------------------------------------------
# encode / decode


def test_encode_prints_one_json_line_and_writes_npz(made_png, tmp_path, capsys):
    out = tmp_path / "npz"
    assert codec.main(["encode", made_png, "--quality", "50", "--out", str(out)]) == 0
    (record,) = _json_lines(capsys.readouterr().out)
    assert set(record) == {
        "image",
        "out",
        "height",
        "width",
        "resolution",
        "length",
        "dense_bpsp",
        "sparse_bpsp",
        "psnr",
        "clipped",
    }

    # Native resolution: the long side 56 rounds up to 64, a multiple of 2B = 16.
    cfg = rep.DCTConfig(block_size=8, quality=50, resolution=64)
    image = _made_image(40, 56)
    resized = rep.resize(image, cfg)
    seq = rep.encode(image, cfg)
    assert record["resolution"] == 64
    assert (record["height"], record["width"]) == resized.shape[:2] == (48, 64)
    assert record["length"] == len(seq)
    assert record["clipped"] == seq.num_clipped == 0
    subpixels = rep.num_subpixels(48, 64)
    assert record["dense_bpsp"] == pytest.approx(rep.dense_bits(48, 64, cfg) / subpixels, abs=1e-5)
    assert record["sparse_bpsp"] == pytest.approx(
        rep.sparse_bits(len(seq), cfg) / subpixels, abs=1e-5
    )
    assert record["psnr"] == pytest.approx(
        codec_files.psnr(resized, rep.decode(seq, cfg)), abs=1e-3
    )
    assert 20 < record["psnr"] < 60

    assert record["out"] == str(out / "made.npz")
    with np.load(record["out"], allow_pickle=False) as npz:
        assert set(sequence_file.NPZ_KEYS) <= set(npz.files)
        np.testing.assert_array_equal(npz["channels"], seq.channels)
        np.testing.assert_array_equal(npz["positions"], seq.positions)
        np.testing.assert_array_equal(npz["values"], seq.values)
        assert str(npz["ordering"]) == "interleaved" and int(npz["quality"]) == 50


def test_decode_reproduces_the_library_decode(made_png, tmp_path, capsys):
    out = tmp_path / "npz"
    assert codec.main(["encode", made_png, "--block_size", "4", "--out", str(out)]) == 0
    assert codec.main(["decode", str(out / "made.npz")]) == 0  # default: made.decoded.png
    record = _json_lines(capsys.readouterr().out)[-1]
    assert record["out"] == str(out / "made.decoded.png")

    cfg = rep.DCTConfig(block_size=4, quality=75, resolution=56)
    expected = rep.decode(rep.encode(_made_image(40, 56), cfg), cfg)
    decoded = np.asarray(Image.open(record["out"]))
    assert decoded.shape == (40, 56, 3)  # long side 56 is a multiple of 8: nothing resized
    np.testing.assert_array_equal(decoded, expected)


def test_round_trip_on_a_photo(tmp_path, capsys):
    chelsea = _photo("chelsea.png")
    args = ["--resolution", "128", "--ordering", "luma_first", "--quality", "90"]
    assert codec.main(["encode", chelsea, *args, "--out", str(tmp_path)]) == 0
    png = str(tmp_path / "cat.png")
    assert codec.main(["decode", str(tmp_path / "chelsea.npz"), "--out", png]) == 0
    encoded, decoded = _json_lines(capsys.readouterr().out)
    assert (
        (encoded["height"], encoded["width"]) == (decoded["height"], decoded["width"]) == (80, 128)
    )
    assert decoded["length"] == encoded["length"] > 0

    cfg = rep.DCTConfig(quality=90, resolution=128, ordering="luma_first")
    resized = rep.resize(photos.load_rgb(chelsea), cfg)
    restored = np.asarray(Image.open(png))
    assert restored.shape == resized.shape
    assert codec_files.psnr(resized, restored) == pytest.approx(encoded["psnr"], abs=1e-3)
    assert encoded["psnr"] > 30


def test_directories_expand_and_clashing_names_are_refused(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    _save(src / "b.png", _made_image(32, 32, seed=1))
    _save(src / "a.jpg", _made_image(16, 48, seed=2))
    (src / "notes.txt").write_text("not an image")
    assert codec.main(["encode", str(src), "--out", str(tmp_path / "o")]) == 0
    records = _json_lines(capsys.readouterr().out)
    assert [os.path.basename(r["image"]) for r in records] == ["a.jpg", "b.png"]
    assert (records[0]["height"], records[0]["width"]) == (16, 48)

    _save(src / "a.png", _made_image(16, 16))
    assert codec.main(["encode", str(src), "--out", str(tmp_path / "o2")]) == 1
    err = capsys.readouterr().err
    assert "a.jpg" in err and "a.png" in err and "a.npz" in err
    assert not os.path.exists(tmp_path / "o2")  # refused before writing anything


def test_gray_rgba_and_16_bit_inputs(tmp_path, capsys):
    gray = _made_image(32, 32)[:, :, 0]
    rgba = np.dstack([_made_image(32, 32), np.zeros((32, 32), np.uint8)])  # fully transparent
    deep = (gray.astype(np.uint16) * 257).astype(np.uint16)
    paths = [
        _save(tmp_path / "gray.png", gray),
        _save(tmp_path / "clear.png", rgba),
        str(tmp_path / "deep.png"),
    ]
    Image.fromarray(deep).save(paths[2])  # 16-bit PNG (mode I;16)
    assert Image.open(paths[2]).mode.startswith("I")
    assert codec.main(["encode", *paths, "--quality", "95", "--out", str(tmp_path / "o")]) == 0
    assert len(_json_lines(capsys.readouterr().out)) == 3

    gray_seq, cfg = sequence_file.load_npz(str(tmp_path / "o" / "gray.npz"))
    assert gray_seq.channels.max() < cfg.channels_per_plane  # replicated gray: no chroma at all
    clear_seq, cfg = sequence_file.load_npz(str(tmp_path / "o" / "clear.npz"))
    assert rep.decode(clear_seq, cfg).min() >= 250  # composited on white
    deep_seq, cfg = sequence_file.load_npz(str(tmp_path / "o" / "deep.npz"))
    # Scaled from 16 bits to 8, not clipped: the same image as the 8-bit gray one.
    np.testing.assert_array_equal(deep_seq.values, gray_seq.values)


# ----------------------------------------------------------------------------------------------
# progressive


def test_progressive_points():
    assert pictures.progressive_points(1000, 4, "linear") == [250, 500, 750, 1000]
    assert pictures.progressive_points(1000, 4, "geometric") == [125, 250, 500, 1000]
    assert pictures.progressive_points(3, 5, "geometric") == [1, 1, 1, 2, 3]
    assert pictures.progressive_points(0, 3) == [0, 0, 0]
    assert pictures.progressive_points(7, 1) == [7]
    with pytest.raises(ValueError, match="spacing"):
        pictures.progressive_points(10, 2, "cubic")


def test_progressive_strip_panels_are_the_decoded_prefixes(tmp_path, capsys):
    image = _save(tmp_path / "wide.png", _made_image(48, 64, seed=5))
    out = str(tmp_path / "strip.png")
    args = ["--steps", "4", "--spacing", "linear", "--panel_size", "0", "--resolution", "64"]
    assert codec.main(["progressive", image, *args, "--out", out]) == 0
    (record,) = _json_lines(capsys.readouterr().out)
    strip = np.asarray(Image.open(out))
    margin, steps, (h, w) = 8, 4, (48, 64)  # the target size already: not resized
    assert record["strip_size"] == [strip.shape[1], strip.shape[0]]
    assert strip.shape[1] == steps * w + (steps + 1) * margin
    assert strip.shape[0] > h + 2 * margin  # room for the labels

    cfg = rep.DCTConfig(resolution=64)
    seq = rep.encode(_made_image(48, 64, seed=5), cfg)
    assert record["length"] == len(seq) and record["points"][-1] == len(seq)
    assert record["points"] == pictures.progressive_points(len(seq), steps, "linear")
    for i, n in enumerate(record["points"]):
        x = margin + i * (w + margin)
        panel = strip[margin : margin + h, x : x + w]
        np.testing.assert_array_equal(panel, rep.decode(seq, cfg, num_triples=n))


def test_progressive_default_panel_size_and_npz_input(tmp_path, capsys):
    assert codec.main(["encode", _photo("astronaut.png"), "--out", str(tmp_path)]) == 0
    out = str(tmp_path / "strip.png")
    assert codec.main(["progressive", str(tmp_path / "astronaut.npz"), "--out", out]) == 0
    encoded, record = _json_lines(capsys.readouterr().out)
    assert record["length"] == encoded["length"]
    assert len(record["points"]) == 8  # default steps
    assert np.all(np.diff(record["points"]) > 0)
    with Image.open(out) as im:
        assert im.size[0] == 8 * 256 + 9 * 8  # square photo: every panel is 256 x 256
        assert im.size == tuple(record["strip_size"])


# ----------------------------------------------------------------------------------------------
# stats


def test_stats_table_csv_and_plot(tmp_path, capsys):
    images = [
        _save(tmp_path / "one.png", _made_image(48, 64, seed=3)),
        _save(tmp_path / "two.png", _made_image(64, 40, seed=4)),
    ]
    out = tmp_path / "stats"
    argv = ["stats", *images, "--qualities", "75,25", "--block_size", "8", "--out", str(out)]
    assert codec.main(argv) == 0
    printed = capsys.readouterr().out
    table = [line for line in printed.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 2  # header, then one row per quality, ascending
    assert table[1].startswith("| 25 | 2 |") and table[2].startswith("| 75 | 2 |")
    for name in ("stats.md", "stats.csv", "stats_images.csv", "stats.png"):
        assert f"wrote {out / name}" in printed

    with open(out / "stats.csv") as f:
        summary = list(csv.DictReader(f))
    with open(out / "stats_images.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(s["quality"]) for s in summary] == [25, 75]
    assert len(rows) == 4
    low, high = (float(s["sparse_bpsp"]) for s in summary)
    assert 0 < low < high  # more quality, more non-zero coefficients

    # Each number is the representation's own, and JPEG compresses the same resized pixels.
    image = _made_image(64, 40, seed=4)
    cfg = rep.DCTConfig(quality=25, resolution=64)
    resized = rep.resize(image, cfg)
    seq = rep.encode(resized, cfg)
    (row,) = [r for r in rows if r["image"] == images[1] and r["quality"] == "25"]
    subpixels = rep.num_subpixels(*resized.shape[:2])
    assert int(row["length"]) == len(seq)
    assert float(row["sparse_bpsp"]) == pytest.approx(rep.sparse_bits(len(seq), cfg) / subpixels)
    dense = rep.dense_bits(*resized.shape[:2], cfg)  # 64 x 40 is resized: 40 rounds to 2B
    assert float(row["dense_bpsp"]) == pytest.approx(dense / subpixels)
    assert float(row["jpeg_bpsp"]) == pytest.approx(codec_files.jpeg_bits(resized, 25) / subpixels)
    mean_jpeg = np.mean([float(r["jpeg_bpsp"]) for r in rows if r["quality"] == "25"])
    assert float(summary[0]["jpeg_bpsp"]) == pytest.approx(mean_jpeg)

    # The plot (matplotlib): its size, and a line of each series' own colour.
    plot = np.asarray(Image.open(out / "stats.png").convert("RGB"))
    assert plot.shape == (480, 760, 3)
    for _, _, color in plots.STATS_SERIES:
        rgb = np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)], np.uint8)
        assert np.count_nonzero(np.all(plot == rgb, axis=-1)) > 50, color


def test_stats_on_a_photo_directory_matches_figure_3_shape(tmp_path, capsys):
    src = tmp_path / "photos"
    src.mkdir()
    for name in ("chelsea.png", "coffee.png"):
        os.symlink(_photo(name), src / name)
    out = tmp_path / "stats"
    argv = ["stats", str(src), "--qualities", "10,50,95", "--resolution", "128", "--out", str(out)]
    assert codec.main(argv) == 0
    capsys.readouterr()
    with open(out / "stats.csv") as f:
        summary = {int(s["quality"]): s for s in csv.DictReader(f)}
    assert all(int(s["images"]) == 2 for s in summary.values())
    # Figure 3: the sparse representation is far smaller than the dense one below high quality.
    assert float(summary[50]["sparse_bpsp"]) < 0.5 * float(summary[50]["dense_bpsp"])
    sparse = [float(summary[q]["sparse_bpsp"]) for q in (10, 50, 95)]
    jpeg = [float(summary[q]["jpeg_bpsp"]) for q in (10, 50, 95)]
    assert sparse == sorted(sparse) and jpeg == sorted(jpeg)


# ----------------------------------------------------------------------------------------------
# errors


@pytest.fixture
def bad_files(tmp_path, made_png):
    (tmp_path / "broken.png").write_text("this is not a PNG")
    np.savez(tmp_path / "partial.npz", channels=np.zeros(3, np.int32))
    (tmp_path / "text.npz").write_text("not a zip")
    codec.main(["encode", made_png, "--out", str(tmp_path)])
    with np.load(tmp_path / "made.npz") as npz:
        data = dict(npz)
    np.savez(tmp_path / "far.npz", **{**data, "positions": data["positions"] + 10**6})
    np.savez(tmp_path / "badcfg.npz", **{**data, "block_size": np.int32(7)})
    (tmp_path / "empty").mkdir()
    return tmp_path


@pytest.mark.parametrize(
    "argv, status, words",
    [
        (["encode", "{d}/missing.png"], 1, ["missing.png", "no such file"]),
        (["encode", "{d}/broken.png"], 1, ["broken.png", "cannot read as an image"]),
        (["encode", "{d}/empty"], 1, ["empty", "no image files"]),
        (["encode", "{d}/made.png", "--quality", "0"], 2, ["--quality", "[1, 100]"]),
        (["encode", "{d}/made.png", "--quality", "high"], 2, ["--quality", "'high'"]),
        (["encode", "{d}/made.png", "--resolution", "100"], 2, ["--resolution 100", "16"]),
        (["encode", "{d}/made.png", "--block_size", "6"], 2, ["--block_size", "6"]),
        (["encode", "{d}/made.png", "--ordering", "random"], 2, ["--ordering", "random"]),
        (["encode", "{d}/made.png", "--out", "{d}/made.png"], 1, ["--out", "made.png"]),
        (["decode", "{d}/missing.npz"], 1, ["missing.npz", "no such file"]),
        (["decode", "{d}/partial.npz"], 1, ["partial.npz", "missing keys", "'positions'"]),
        (["decode", "{d}/text.npz"], 1, ["text.npz", "not an .npz"]),
        (["decode", "{d}/far.npz"], 1, ["far.npz", "positions outside"]),
        (["decode", "{d}/badcfg.npz"], 1, ["badcfg.npz", "block_size=7"]),
        (["progressive", "{d}/made.png", "--steps", "0"], 2, ["--steps", "positive"]),
        (["progressive", "{d}/made.png", "{d}/made.png"], 2, ["progressive", "exactly one"]),
        (["progressive", "{d}/broken.png"], 1, ["broken.png"]),
        (["stats", "{d}/made.png", "--qualities", "10,x"], 2, ["--qualities", "'x'"]),
        (["stats", "{d}/made.png", "--qualities", "50,101"], 2, ["--qualities", "101"]),
        (["stats", "{d}/made.png", "--qualities", ","], 2, ["--qualities", "comma-separated"]),
        (["stats", "{d}/made.png", "{d}/broken.png"], 1, ["broken.png"]),
        (["transcode", "x"], 2, ["transcode"]),
        ([], 2, ["usage"]),
        (["encode"], 2, ["encode", "at least one"]),
        (["encode", "{d}/made.png", "--bogus", "1"], 2, ["bogus"]),
        # A flag of another command is refused, naming it.
        (["encode", "{d}/made.png", "--steps", "3"], 2, ["--steps", "progressive"]),
        (["encode", "{d}/made.png", "--qualities", "50"], 2, ["--qualities", "stats"]),
        (["stats", "{d}/made.png", "--quality", "50"], 2, ["--quality", "encode"]),
        (["decode", "{d}/made.npz", "--block_size", "8"], 2, ["--block_size", "decode"]),
        (["decode", "{d}/made.npz", "{d}/far.npz"], 2, ["decode", "exactly one"]),
    ],
)
def test_errors_name_the_file_or_flag(bad_files, capsys, argv, status, words):
    capsys.readouterr()
    argv = [a.format(d=bad_files) for a in argv]
    assert codec.main(argv) == status
    captured = capsys.readouterr()
    # One line, `<prog>: error: <message>`, naming the file or flag; no traceback.
    assert captured.err.count("\n") == 1 and captured.err.startswith("dct_gen.codec: error: ")
    for word in words:
        assert word in captured.err, (word, captured.err)
    assert "Traceback" not in captured.err


def test_codec_error_is_an_input_error():
    assert issubclass(codec_files.CodecError, errors.InputError)
    with pytest.raises(errors.InputError, match="nowhere.png"):
        codec_files.read_image("nowhere.png")


def test_flags_do_not_carry_over_between_calls(made_png, tmp_path, capsys):
    assert codec.main(["encode", made_png, "--quality", "20", "--out", str(tmp_path / "a")]) == 0
    assert codec.main(["encode", made_png, "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    _, low = sequence_file.load_npz(str(tmp_path / "a" / "made.npz"))
    _, default = sequence_file.load_npz(str(tmp_path / "b" / "made.npz"))
    assert (low.quality, default.quality) == (20, 75)


def test_help_exits_cleanly(capsys):
    assert codec.main(["stats", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith(codec.__doc__.strip().splitlines()[0])
    for flag in ("--qualities", "--block_size", "--resolution", "--out", "--steps"):
        assert flag in help_text


def test_flag_defaults_are_the_librarys():
    """The entry point writes the defaults out (so --help needs no numpy); they must agree."""
    defaults = rep.DCTConfig()
    assert codec.DEFAULTS == {k: getattr(defaults, k) for k in codec.DEFAULTS}
    assert set(codec.DEFAULTS) | {"resolution"} == set(sequence_file.CONFIG_KEYS)
    assert codec.CONFIG_KEYS == sequence_file.CONFIG_KEYS
    assert (codec.BLOCK_SIZES, codec.ORDERINGS) == (rep.BLOCK_SIZES, rep.ORDERINGS)
    assert codec.DEFAULT_QUALITIES == codec_files.DEFAULT_QUALITIES
    assert codec.DEFAULT_OUT == codec_files.DEFAULT_OUT


def test_cli_module_imports_nothing_heavy():
    """--help answers at once: importing the entry point loads neither TensorFlow nor matplotlib
    (only `stats` draws), nor numpy and Pillow (loaded after the flags parse)."""
    code = (
        "import sys, dct_gen.codec; "
        "heavy = ('tensorflow', 'keras', 'matplotlib', 'numpy', 'PIL'); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in heavy); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ----------------------------------------------------------------------------------------------
# demo


def test_demo_writes_what_it_prints(tmp_path, capsys):
    out = tmp_path / "demo"
    assert demo.main(["--out", str(out), "--steps", "progressive,roundtrip"]) == 0
    printed = capsys.readouterr().out
    listed = [line.split("] ", 1)[1] for line in printed.splitlines() if line.startswith("  [")]
    assert len(listed) == 4 + 2  # two photos x two orderings; one .npz and its decoded .png
    for path in listed:
        assert os.path.isfile(path) and path.startswith(str(out)), path
    assert demo.main(["--out", str(out), "--steps", "stats,bogus"]) == 2  # a bad flag value
    assert "bogus" in capsys.readouterr().err
    # A second run skips the steps already done.
    assert demo.main(["--out", str(out), "--steps", "roundtrip"]) == 0
    assert "roundtrip: already done" in capsys.readouterr().out
