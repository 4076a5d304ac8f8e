"""Shared fixtures: the real photos bundled with scikit-image and scikit-learn, the test
config, datasets the Beam job writes from photo crops, and one trained run of the test config.

No test imports another test file; what several need lives here."""

import functools
import os
from typing import NamedTuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices for the tf.distribute tests; this must happen before TF starts.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)

from testing_helpers import LABELLED_PHOTOS  # noqa: E402

from dct_gen import photos  # noqa: E402


@pytest.fixture(scope="session")
def two_cpu_strategy():
    """One MirroredStrategy over the two logical CPUs, shared by every test that needs one: two
    strategies in one process hand out the same collective instance keys, and the second one's
    all-reduce then fails with "Shape mismatch in the collective instance" (TF issue 62790)."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@functools.cache
def _load(path: str) -> np.ndarray:
    return photos.load_rgb(path)


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


# ----------------------------------------------------------------------------------------------
# Datasets and a trained run of the test config, built once per session and shared.

TEST_GIN = "experiments/test.gin"


def load_test_configs(*params: str) -> dict:
    """The test config's dct_config, model_config and train_config (with extra bindings)."""
    import gin

    from dct_gen import cli, configs

    cli.parse_gin([TEST_GIN], list(params))
    try:
        return dict(
            dct_config=configs.dct_config(),
            model_config=configs.model_config(),
            train_config=configs.train_config(),
        )
    finally:
        gin.clear_config()


@pytest.fixture(scope="session")
def make_dataset(tmp_path_factory):
    """A factory: make_dataset(cfg, splits, num_shards=2) -> a dataset directory written by the
    Beam job from real photo crops; splits maps a split name to (number of images, seed).
    Each distinct call is built once per session."""
    from beam_jobs.pipeline import run_pipeline

    built = {}

    def make(cfg, splits: dict[str, tuple[int, int]], num_shards: int = 2) -> str:
        key = (cfg, tuple(sorted(splits.items())), num_shards)
        if key not in built:
            tmp = str(tmp_path_factory.mktemp("dataset"))
            out = os.path.join(tmp, "data")
            for split, (count, seed) in splits.items():
                images = os.path.join(tmp, f"images_{split}")
                photos.write_crops(images, count, seed=seed)
                run_pipeline(
                    output_dir=out,
                    cfg=cfg,
                    image_glob=f"{images}/*.png",
                    split=split,
                    num_shards=num_shards,
                )
            built[key] = out
        return built[key]

    return make


@pytest.fixture(scope="session")
def test_configs():
    """A function: test_configs(*gin_bindings) -> dict(dct_config=, model_config=,
    train_config=) of gin/experiments/test.gin (gin is left cleared)."""
    return load_test_configs


# The test config's splits: 16 training images, 4 held out, and a split of one image.
TEST_SPLITS = {"train": (16, 0), "validation": (4, 1), "one": (1, 5)}


@pytest.fixture(scope="session")
def test_data_dir(make_dataset) -> str:
    """The test config's dataset (TEST_SPLITS)."""
    return make_dataset(load_test_configs()["dct_config"], TEST_SPLITS)


@pytest.fixture(scope="session")
def labelled_data_dir(tmp_path_factory) -> str:
    """A dataset of the test config with label_names testing_helpers.LABELLED_PHOTOS (three
    classes, each the crops of one photo, in folders named after it): 4 training images per
    class and 1 held out (splits train and validation), built by the Beam job with
    labels_from_dirs."""
    from beam_jobs.pipeline import run_pipeline

    tmp = str(tmp_path_factory.mktemp("labelled"))
    out = os.path.join(tmp, "data")
    by_name = {os.path.basename(p).split(".")[0]: p for p in photos.color_photo_paths()}
    for split, count, seed in (("train", 4, 0), ("validation", 1, 1)):
        root = os.path.join(tmp, f"images_{split}")
        for i, name in enumerate(LABELLED_PHOTOS):
            folder = os.path.join(root, name)
            photos.write_crops(folder, count, seed=seed * 10 + i, paths=[by_name[name]])
        run_pipeline(
            output_dir=out,
            cfg=load_test_configs()["dct_config"],
            image_glob=f"{root}/*/*.png",
            labels_from_dirs=True,
            split=split,
            num_shards=2,
        )
    return out


class TrainedRun(NamedTuple):
    model_dir: str
    data_dir: str
    result: object  # the training library's TrainResult
    lines: list  # the console lines it printed


@pytest.fixture(scope="session")
def trained_run(test_data_dir, tmp_path_factory) -> TrainedRun:
    """The test config trained for 30 steps on test_data_dir: checkpoints every 10 steps,
    held-out evaluations of 'validation' at 15 and 30, TensorBoard samples at 30.

    Shared by every test that needs a trained run: tests must not write into its directory
    (copy it first)."""
    from dct_gen import training

    model_dir = str(tmp_path_factory.mktemp("trained_run"))
    lines = []
    result = training.train(
        **load_test_configs(),
        data_dir=test_data_dir,
        model_dir=model_dir,
        max_steps=30,
        log_every=1,
        checkpoint_every=10,
        eval_split="validation",
        eval_every=15,
        sample_every=30,
        num_samples=2,
        sample_max_chunks=2,
        peak_flops=1e11,  # a fixed MFU denominator: tests skip the peak measurement
        log=lines.append,
    )
    return TrainedRun(model_dir, test_data_dir, result, lines)


@pytest.fixture(scope="session")
def conditional_run(labelled_data_dir, tmp_path_factory) -> TrainedRun:
    """The test config trained for 8 steps on labelled_data_dir through the command line's
    path (gin leaves num_classes unset, so the dataset's three classes make it conditional;
    label_dropout takes its default): a checkpoint and TensorBoard samples at step 8, drawn
    with classifier-free guidance 2.

    Shared: tests must not write into its directory (copy it first)."""
    import gin

    from dct_gen import cli, configs, records, training

    model_dir = str(tmp_path_factory.mktemp("conditional_run"))
    cli.parse_gin([TEST_GIN], [])
    try:
        model_config, train_config = configs.configs_for_dataset(
            records.read_info(labelled_data_dir), "train"
        )
    finally:
        gin.clear_config()
    lines = []
    result = training.train(
        model_config=model_config,
        train_config=train_config,
        data_dir=labelled_data_dir,
        model_dir=model_dir,
        max_steps=8,
        log_every=1,
        checkpoint_every=8,
        sample_every=8,
        num_samples=3,
        sample_max_chunks=1,
        sample_guidance=2.0,
        peak_flops=1e11,
        log=lines.append,
    )
    return TrainedRun(model_dir, labelled_data_dir, result, lines)
