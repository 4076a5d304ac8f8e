"""What a training run writes for TensorBoard, read back with TensorBoard's own event loader:
the Figure 9 picture and the grouped held-out scalars at every evaluation, the configs as
text, the hparams, and the captions of the sample grids. The run is conftest's `trained_run`
(evaluations at 15 and 30, samples at 30); nothing here trains. Also the caption and grid
pictures (`dct_gen.pictures`) on small arrays."""

import io
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.util import tensor_util

from dct_gen import model as model_lib
from dct_gen import pictures, plots, run_dir, training

EVAL_TAGS = {
    "bits_per_subpixel",
    "bits_per_subpixel/channel",
    "bits_per_subpixel/position",
    "bits_per_subpixel/value",
    "bits_per_subpixel/first_chunk",
    "bits_per_subpixel/last_chunk",
}


def _events(directory: str) -> event_accumulator.EventAccumulator:
    """Every summary of the event files in `directory` (not its subfolders), all kept."""
    accumulator = event_accumulator.EventAccumulator(
        directory, size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    return accumulator


def _by_step(accumulator, tag: str) -> dict:
    return {e.step: tensor_util.make_ndarray(e.tensor_proto) for e in accumulator.Tensors(tag)}


def _png(value: np.ndarray) -> np.ndarray:
    """An image summary's value ([width, height, png]) as an RGB array."""
    width, height, data = (bytes(v) for v in value[:3])
    image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert image.shape == (int(height), int(width), 3)
    return image


def _text(value: np.ndarray) -> str:
    return value.item().decode() if value.shape == () else bytes(value.flat[0]).decode()


def _eval_lines(model_dir: str) -> list[dict]:
    with open(os.path.join(model_dir, run_dir.EVAL_FILE)) as f:
        return [json.loads(line) for line in f]


# ----------------------------------------------------------------------------------------------
# Held-out evaluations.


def test_figure_9_picture_at_every_evaluation(trained_run):
    events = _events(os.path.join(trained_run.model_dir, "eval"))
    pictured = _by_step(events, training.EVAL_FIGURE_TAG)
    assert sorted(pictured) == [15, 30]
    for value in pictured.values():
        image = _png(value)
        assert image.shape == (400, 640, 3)
        # The three stacked parts are drawn, each in its colour.
        for part, color in plots.CHUNK_COLORS.items():
            rgb = np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)], np.uint8)
            assert np.count_nonzero(np.all(image == rgb, axis=-1)) > 30, part
    meta = events.SummaryMetadata(training.EVAL_FIGURE_TAG)
    assert meta.plugin_data.plugin_name == "images"
    assert "Figure 9" in meta.summary_description


def test_grouped_eval_scalars_equal_eval_jsonl(trained_run):
    """A handful of scalars, not one tag per chunk; their values are eval.jsonl's."""
    events = _events(os.path.join(trained_run.model_dir, "eval"))
    hparams = hparams_metadata.SESSION_START_INFO_TAG
    assert set(events.Tags()["tensors"]) == EVAL_TAGS | {training.EVAL_FIGURE_TAG, hparams}
    for want in _eval_lines(trained_run.model_dir):
        matches = [re.fullmatch(r"chunk_(\d+)/bits_per_subpixel", k) for k in want]
        chunk_indices = [int(m.group(1)) for m in matches if m]
        assert len(chunk_indices) > 1  # the held-out images span several chunks
        expected = {
            "bits_per_subpixel": want["bits_per_subpixel"],
            "bits_per_subpixel/first_chunk": want["chunk_0/bits_per_subpixel"],
            "bits_per_subpixel/last_chunk": want[f"chunk_{max(chunk_indices)}/bits_per_subpixel"],
        }
        for c in ("channel", "position", "value"):
            expected[f"bits_per_subpixel/{c}"] = want[f"{c}_bits_per_subpixel"]
        for tag, value in expected.items():
            got = _by_step(events, tag)[want["step"]]
            assert float(got) == pytest.approx(value, rel=1e-6), (tag, want["step"])


def test_eval_scalars_order_chunks_by_number():
    """chunk_10 comes after chunk_9 (not between chunk_1 and chunk_2)."""
    values = {"bits_per_subpixel": 3.0, "sequences": 2.0, "chunks": 11.0}
    values.update({f"{c}_bits_per_subpixel": 1.0 for c in training.COMPONENTS})
    for k in range(11):
        values[f"chunk_{k}/bits_per_subpixel"] = 0.3 * (k + 1)
        for j, c in enumerate(training.COMPONENTS):
            values[f"chunk_{k}/{c}_bits_per_subpixel"] = 0.1 * (k + 1) + 0.01 * j
    by_chunk = training.bits_by_chunk(values)
    assert list(by_chunk) == list(range(11))
    assert by_chunk[10] == pytest.approx({"channel": 1.1, "position": 1.11, "value": 1.12})
    scalars = training.eval_scalars(values)
    assert set(scalars) == EVAL_TAGS
    assert scalars["bits_per_subpixel/first_chunk"] == pytest.approx(0.3)
    assert scalars["bits_per_subpixel/last_chunk"] == pytest.approx(3.3)


# ----------------------------------------------------------------------------------------------
# The run's start: configs as text, hparams.


def _code(text: str) -> str:
    lines = text.split("\n")
    assert all(line.startswith("    ") or not line for line in lines), text[:200]
    return "\n".join(line[4:] for line in lines)


def test_config_json_as_text_at_the_first_step(trained_run):
    events = _events(os.path.join(trained_run.model_dir, "train"))
    texts = _by_step(events, training.RUN_CONFIG_TAG)
    assert sorted(texts) == [0]
    with open(os.path.join(trained_run.model_dir, run_dir.RUN_CONFIG_FILE)) as f:
        assert json.loads(_code(_text(texts[0]))) == json.load(f)
    assert events.SummaryMetadata(training.RUN_CONFIG_TAG).plugin_data.plugin_name == "text"
    # This run was started from Python without a gin configuration: no text for it.
    assert training.OPERATIVE_CONFIG_TAG not in events.Tags()["tensors"]


def test_operative_config_and_config_json_as_markdown_code(tmp_path):
    gin_text = "model_config.hidden_size = 32\n# `backticks` stay text\ntrain_config.batch_size = 4"
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        training.write_config_text(7, '{"a": 1}', gin_text)
    writer.close()
    events = _events(str(tmp_path))
    assert _code(_text(_by_step(events, training.OPERATIVE_CONFIG_TAG)[7])) == gin_text
    assert json.loads(_code(_text(_by_step(events, training.RUN_CONFIG_TAG)[7]))) == {"a": 1}


def test_hparams_beside_the_held_out_bits(trained_run, test_configs):
    events = _events(os.path.join(trained_run.model_dir, "eval"))  # beside the held-out bits
    tags = events.Tags()["tensors"]
    assert hparams_metadata.SESSION_START_INFO_TAG in tags
    start = hparams_metadata.parse_session_start_info_plugin_data(
        events.SummaryMetadata(hparams_metadata.SESSION_START_INFO_TAG).plugin_data.content
    )
    got = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    with open(os.path.join(trained_run.model_dir, run_dir.RUN_CONFIG_FILE)) as f:
        config = json.load(f)
    train_config, dct = config["train_config"], config["model_config"]["dct"]
    for name in ("chunk_size", "overlap", "batch_size", "learning_rate", "warmup_steps"):
        assert got[name] == pytest.approx(train_config[name]), name
    for name in ("block_size", "quality", "resolution", "ordering"):
        assert got[name] == dct[name], name
    assert got["hidden_size"] == config["model_config"]["hidden_size"]
    assert got["parameters"] == model_lib.count_parameters(test_configs()["model_config"])
    assert got["total_steps"] == 30
    assert set(got) == {
        "parameters", "hidden_size", "layers", "num_classes", "block_size", "quality",
        "resolution", "ordering", "chunk_size", "overlap", "target_part", "batch_size",
        "learning_rate", "warmup_steps", "total_steps", "mixed_precision", "seed",
    }  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Samples: captioned grids.


def test_sample_grids_are_captioned(trained_run):
    events = _events(os.path.join(trained_run.model_dir, "train"))
    captions = _text(_by_step(events, training.SAMPLE_CAPTIONS_TAG)[30])
    lines = captions.split("\n")
    assert len(lines) == 2  # num_samples
    for i, line in enumerate(lines):
        # seed 0 + step 30: the seed of the draws at step 30; the defaults of SampleOptions.
        assert f"seed 30 #{i}" in line and "T 1 top-p 1" in line and "step 30" in line, line
        assert re.search(r"\d+ triples", line), line
    for tag in ("samples", "heatmaps"):
        (image,) = _by_step(events, tag).values()
        assert _png(image).shape[0] > 128  # the samples' cells (128 px at most) and captions
        assert "seed" in events.SummaryMetadata(tag).summary_description


def test_sample_caption_lines():
    lines = pictures.sample_caption(
        index=2,
        seed=31,
        label=1,
        label_names=["dog", "cat"],
        temperature=0.9,
        top_p=0.95,
        top_k=0,
        guidance=2.5,
        step=1200,
        triples=1234,
        finished=False,
    )
    assert lines == [
        "label 1: cat",
        "seed 31 #2",
        "T 0.9 top-p 0.95 guidance 2.5",
        "step 1200",
        "1,234 triples, cut",
    ]
    # A label without names, none (-1), top-k on, no guidance.
    assert pictures.sample_caption(label=3, seed=0) == ["label 3", "seed 0"]
    assert pictures.sample_caption(label=-1, temperature=1.0, top_p=1.0, top_k=5) == [
        "T 1 top-p 1 top-k 5"
    ]


def _solid(height: int, width: int, rgb) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.uint8), (height, width, 3)).copy()


def test_grid_keeps_each_images_own_size():
    wide, tall = _solid(10, 40, (200, 0, 0)), _solid(40, 10, (0, 0, 200))
    out = pictures.grid([wide, tall], columns=2, margin=4)
    # Columns as wide as their image, the row as tall as its tallest: no square cells.
    assert out.shape == (4 + 40 + 4, 4 + 40 + 4 + 10 + 4, 3)
    np.testing.assert_array_equal(out[4 + 15 : 4 + 25, 4:44], wide)  # centred vertically
    np.testing.assert_array_equal(out[4:44, 48:58], tall)
    # Above and below the wide image: the neutral cell background, not white.
    np.testing.assert_array_equal(out[4:19, 4:44], _solid(15, 40, pictures.CELL_BACKGROUND))
    assert (out[:4] == 255).all() and (out[:, 44:48] == 255).all()
    # Images of one size tile exactly as before: white margins only.
    same = [_solid(8, 12, (k * 40, 0, 0)) for k in range(5)]
    out = pictures.grid(same, margin=2)
    assert out.shape == (2 * 8 + 3 * 2, 3 * 12 + 4 * 2, 3)
    np.testing.assert_array_equal(out[12:20, 16:28], same[4])
    assert (out[12:20, 30:42] == 255).all()  # the missing sixth cell stays white


def test_captions_make_a_taller_grid_with_text_under_each_cell():
    images = [_solid(32, 32, (255, 255, 255)), _solid(16, 32, (255, 255, 255))]
    plain = pictures.grid(images, columns=2)
    captions = [pictures.sample_caption(seed=5, index=i, step=30) for i in range(2)]
    out = pictures.grid(images, columns=2, captions=captions)
    assert out.shape[0] > plain.shape[0] + 2 * 12  # two lines of 12-px text
    assert out.shape[1] >= plain.shape[1]  # a column widens to its widest caption line
    band = out[4 + 32 :]  # beneath the row of images: dark text on white
    assert np.count_nonzero(band.max(axis=-1) < 100) > 50
    assert np.count_nonzero(plain.max(axis=-1) < 100) == 0
    single = pictures.captioned(images[0], ["seed 5 #0"])
    assert single.shape[0] > 32 + 8 and np.count_nonzero(single.max(axis=-1) < 100) > 10
    with pytest.raises(ValueError, match="1 captions for 2 images"):
        pictures.grid(images, captions=[["x"]])
