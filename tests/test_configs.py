"""Gin configs: every file parses, every experiment builds in a dry run, the Table 3 values
are the paper's, the parameter counts are within 20% of Table 3's, the representation is
checked against a dataset's, every train and model setting is checked (the error names the
binding), and importing the factories pulls in no TensorFlow."""

import glob
import json
import os
import subprocess
import sys

import gin
import pytest

from dct_gen import cli, configs, train
from dct_gen import model as model_lib
from dct_gen.errors import InputError
from dct_gen.representation import DCTConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_DIR = cli.gin_dir()
EXPERIMENTS = sorted(glob.glob(os.path.join(GIN_DIR, "experiments", "*.gin")))
ALL_GIN = sorted(glob.glob(os.path.join(GIN_DIR, "**", "*.gin"), recursive=True))

V5 = [(1, 2)] * 5 + [(1, 7)]
V6 = [(1, 2)] * 6 + [(1, 7)]
VS = [(1, 2), (1, 2), (1, 3), (1, 3), (1, 7)]
D4 = [(1, 2)] * 3 + [(1, 4)]
D3 = [(1, 2)] * 3 + [(1, 3)]
LSUN = dict(
    resolution=384,
    block=8,
    quality=75,
    clip=1200,
    hidden=896,
    heads=14,
    channel=D4,
    value=V5,
    kernel=4,
    stride=2,
    batch=512,
    dropout=0.1,
    tokens=300e9,
    params=448e6,
)
# Paper Table 3, column by column.
TABLE_3 = {
    "lsun_bedroom": LSUN,
    "lsun_tower": LSUN,
    "lsun_church": LSUN,
    "ffhq": dict(
        resolution=1024,
        block=16,
        quality=35,
        clip=3200,
        hidden=896,
        heads=14,
        channel=D4,
        value=V6,
        kernel=6,
        stride=3,
        batch=448,
        dropout=0.1,
        tokens=250e9,
        params=473e6,
    ),
    "imagenet": dict(
        resolution=384,
        block=8,
        quality=75,
        clip=1200,
        hidden=1152,
        heads=14,
        channel=D4,
        value=V6,
        kernel=8,
        stride=4,
        batch=512,
        dropout=0.01,
        tokens=1000e9,
        params=738e6,
    ),
    "openimages_colorization": dict(
        resolution=640,
        block=8,
        quality=50,
        clip=1200,
        hidden=896,
        heads=18,
        channel=D4,
        value=V6,
        kernel=6,
        stride=3,
        batch=512,
        dropout=0.01,
        tokens=1000e9,
        params=533e6,
    ),
    "plant_leaves": dict(
        resolution=2048,
        block=32,
        quality=50,
        clip=4000,
        hidden=768,
        heads=12,
        channel=D3,
        value=VS,
        kernel=4,
        stride=2,
        batch=256,
        dropout=0.4,
        tokens=100e9,
        params=325e6,
    ),
    "retinopathy": dict(
        resolution=1024,
        block=16,
        quality=75,
        clip=3200,
        hidden=768,
        heads=12,
        channel=D3,
        value=VS,
        kernel=4,
        stride=2,
        batch=512,
        dropout=0.1,
        tokens=200e9,
        params=318e6,
    ),
    "clevr": dict(
        resolution=480,
        block=8,
        quality=90,
        clip=1200,
        hidden=896,
        heads=14,
        channel=D4,
        value=V6,
        kernel=6,
        stride=3,
        batch=128,
        dropout=0.5,
        tokens=50e9,
        params=483e6,
    ),
}
# Builds the big models at this width instead (the structure, vocabularies and grids stay).
SMALL = [
    "model_config.hidden_size = 32",
    "model_config.num_heads = 2",
    "model_config.key_size = 16",
]


def name_of(path):
    return os.path.splitext(os.path.basename(path))[0]


@pytest.fixture(autouse=True)
def _clear_gin():
    yield
    gin.clear_config()


def test_every_paper_experiment_has_a_file():
    assert set(TABLE_3) | {"tiny", "test"} == {name_of(p) for p in EXPERIMENTS}


@pytest.mark.parametrize("path", ALL_GIN, ids=lambda p: os.path.relpath(p, GIN_DIR))
def test_every_gin_file_parses(path):
    cli.parse_gin([path])


@pytest.mark.parametrize("name", sorted(TABLE_3))
def test_table_3_values(name):
    want = TABLE_3[name]
    cli.parse_gin([f"experiments/{name}.gin"])
    dct, model, run = configs.dct_config(), configs.model_config(), configs.train_config()
    assert (dct.resolution, dct.block_size, dct.quality, dct.clip) == (
        want["resolution"],
        want["block"],
        want["quality"],
        want["clip"],
    )
    assert (model.chunk_size, model.overlap, run.chunk_size, run.overlap) == (896, 128, 896, 128)
    assert (model.hidden_size, model.num_heads) == (want["hidden"], want["heads"])
    assert list(model.encoder_spec) == [(1, 2)] * 4
    assert list(model.channel_spec) == want["channel"]
    assert list(model.position_spec) == D4
    assert list(model.value_spec) == want["value"]
    assert (model.kernel_size, model.stride) == (want["kernel"], want["stride"])
    assert model.dropout == want["dropout"]
    assert (run.batch_size, run.learning_rate, run.tokens) == (want["batch"], 5e-4, want["tokens"])
    assert run.warmup_steps == 1000
    assert model.num_classes == (1000 if name == "imagenet" else None)
    assert dct.ordering == ("luma_first" if name == "openimages_colorization" else "interleaved")
    assert run.target_part == ("chroma" if name == "openimages_colorization" else "all")


@pytest.mark.parametrize("name", sorted(TABLE_3))
def test_parameter_count_within_20_percent_of_table_3(name):
    cli.parse_gin([f"experiments/{name}.gin"])
    count = model_lib.count_parameters(configs.model_config())
    assert abs(count / TABLE_3[name]["params"] - 1) < 0.2, count


@pytest.mark.parametrize("path", EXPERIMENTS, ids=name_of)
def test_dry_run_builds_every_experiment(path):
    """The tiny and test configs build as they are; the paper's at width 32 (building 300-740M
    parameters takes 3-8 s each; the slow test below does it), checked against the count."""
    cli.parse_gin([path], [] if name_of(path) in ("tiny", "test") else SMALL)
    result = configs.dry_run()
    assert set(result) == {"parameters", "flops_per_token"}
    assert result["parameters"] == model_lib.count_parameters(configs.model_config())
    assert result["flops_per_token"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TABLE_3))
def test_dry_run_builds_the_paper_models(name):
    cli.parse_gin([f"experiments/{name}.gin"])
    result = configs.dry_run()
    assert result["parameters"] == model_lib.count_parameters(configs.model_config())
    assert abs(result["parameters"] / TABLE_3[name]["params"] - 1) < 0.2


def test_train_dry_run_prints_one_json_line(capsys):
    args = ["--gin_file=experiments/test.gin", "--gin_param=model_config.dropout = 0.2"]
    assert train.main(args + ["--dry_run"]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 1
    assert set(json.loads(lines[0])) == {"parameters", "flops_per_token"}
    assert json.loads(lines[0])["parameters"] > 0
    assert configs.model_config().dropout == 0.2  # the bindings were parsed


def test_train_dry_run_without_a_representation_says_so_in_one_line(capsys):
    status = train.main(["--gin_file=models/test.gin", "--dry_run"])
    _, err = capsys.readouterr()
    assert status == 1 and "Traceback" not in err
    assert err.strip().splitlines() == [
        "dct_gen.train: error: a dry run reads no dataset, so gin must bind the "
        "representation, but dct_config.block_size, dct_config.quality, "
        "dct_config.resolution, dct_config.clip are not bound (include a gin/data/*.gin file)"
    ]


def test_bad_keys_and_missing_bindings_are_named():
    cli.parse_gin(["experiments/test.gin"], ["model_config.bogus = 1"])
    with pytest.raises(InputError, match="bogus"):
        configs.dry_run()
    cli.parse_gin([], ["model_config.hidden_size = 8"])
    with pytest.raises(InputError, match="dct_config.block_size"):
        configs.model_config()
    with pytest.raises(InputError, match="train_config.batch_size"):
        configs.train_config()
    cli.parse_gin(["experiments/test.gin"], ["dct_config.quality = 500"])
    with pytest.raises(InputError, match="dct_config: quality=500"):
        configs.dct_config()
    with pytest.raises(InputError, match="nope.gin"):
        cli.parse_gin(["experiments/nope.gin"])


@pytest.mark.parametrize(
    "binding, message",
    [
        ("train_config.learning_rate = -1", "train_config.learning_rate = -1: must be > 0"),
        ("train_config.learning_rate = 0", "train_config.learning_rate = 0: must be > 0"),
        ("train_config.learning_rate = 'fast'", "train_config.learning_rate = 'fast': must be"),
        ("train_config.grad_clip_norm = 0", "train_config.grad_clip_norm = 0: must be > 0"),
        ("train_config.grad_clip_norm = -2.0", "train_config.grad_clip_norm = -2.0: must be"),
        ("train_config.batch_size = 0", "train_config.batch_size = 0: must be >= 1"),
        ("train_config.batch_size = 2.5", "train_config.batch_size = 2.5: must be an integer"),
        ("train_config.batch_size = True", "train_config.batch_size = True: must be an integer"),
        ("train_config.tokens = 0", "train_config.tokens = 0: must be >= 1"),
        ("train_config.warmup_steps = -1", "train_config.warmup_steps = -1: must be >= 0"),
        ("train_config.chunk_size = 0", "train_config.chunk_size = 0: must be >= 1"),
        ("train_config.overlap = -1", "train_config.overlap = -1: must be >= 0"),
        ("train_config.overlap = 16", "train_config.overlap = 16: must be < train_config.chunk"),
        ("train_config.target_part = 'luma'", "train_config.target_part = 'luma': must be one"),
        ("train_config.mixed_precision = 'no'", "train_config.mixed_precision = 'no': must be"),
        ("model_config.hidden_size = 'abc'", "model_config.hidden_size = 'abc': must be an int"),
        ("model_config.hidden_size = 0", "model_config.hidden_size = 0: must be >= 1"),
        ("model_config.num_heads = 0", "model_config.num_heads = 0: must be >= 1"),
        ("model_config.key_size = 0", "model_config.key_size = 0: must be >= 1 (None: "),
        ("model_config.ffn_multiplier = 1.5", "model_config.ffn_multiplier = 1.5: must be an"),
        ("model_config.stride = 0", "model_config.stride = 0: must be >= 1"),
        ("model_config.value_dim = -1", "model_config.value_dim = -1: must be >= 1"),
        ("model_config.num_classes = -1", "model_config.num_classes = -1: must be >= 1 (None"),
        ("train_config.label_dropout = 1.0", "train_config.label_dropout = 1.0: must be a num"),
        ("train_config.label_dropout = 'x'", "train_config.label_dropout = 'x': must be a num"),
        ("model_config.dropout = -0.1", "model_config.dropout = -0.1: must be in [0, 1)"),
        ("model_config.dropout = 'x'", "model_config.dropout = 'x': must be a number"),
        ("model_config.structural_mask = 1", "model_config.structural_mask = 1: must be True"),
        ("model_config.value_spec = []", "model_config.value_spec = []: must be a non-empty"),
        ("model_config.encoder_spec = [(1, 'a')]", "model_config.encoder_spec = [(1, 'a')]: "),
        ("model_config.encoder_spec = [(1, -1)]", "model_config.encoder_spec = [(1, -1)]: "),
    ],
)
def test_bad_settings_are_refused_naming_the_binding(binding, message):
    cli.parse_gin(["experiments/test.gin"], [binding])
    with pytest.raises(InputError) as e:
        configs.train_config()
        configs.model_config()
    assert str(e.value).startswith(message), str(e.value)


def test_good_settings_are_kept_as_plain_numbers():
    cli.parse_gin(
        ["experiments/test.gin"],
        ["train_config.grad_clip_norm = None", "train_config.learning_rate = 1", "OVERLAP = 0"],
    )
    run = configs.train_config()
    assert run.grad_clip_norm is None  # clipping off
    assert run.learning_rate == 1.0 and isinstance(run.learning_rate, float)
    assert run.tokens == 10000 and isinstance(run.tokens, int)  # bound as 1e4
    assert run.overlap == 0 and configs.model_config().overlap == 0


def test_configs_made_in_python_are_checked_too():
    with pytest.raises(InputError, match=r"^train_config.learning_rate = -1: must be > 0"):
        configs.TrainConfig(batch_size=4, learning_rate=-1, tokens=100)
    with pytest.raises(InputError, match="train_config.grad_clip_norm = 0.0"):
        configs.TrainConfig(batch_size=4, learning_rate=1e-3, tokens=100, grad_clip_norm=0.0)
    dct = DCTConfig(block_size=4, quality=75, resolution=32, clip=200)
    with pytest.raises(ValueError, match=r"^hidden_size = 'abc': must be an integer >= 1"):
        model_lib.ModelConfig(dct=dct, hidden_size="abc", key_size=16)
    with pytest.raises(ValueError, match=r"^dct = None: must be a DCTConfig"):
        model_lib.ModelConfig(dct=None)


def test_a_config_json_with_a_bad_setting_names_the_file_and_the_field(tmp_path):
    from dct_gen import run_dir

    cli.parse_gin(["experiments/test.gin"])
    run_dir.save_run_config(str(tmp_path), configs.model_config(), configs.train_config())
    path = os.path.join(tmp_path, run_dir.RUN_CONFIG_FILE)
    with open(path) as f:
        raw = json.load(f)
    raw["train_config"]["learning_rate"] = -1.0
    with open(path, "w") as f:
        json.dump(raw, f)
    with pytest.raises(InputError) as e:
        run_dir.read_run_config(str(tmp_path))
    message = str(e.value)
    assert path in message and "train_config.learning_rate = -1.0: must be > 0" in message


def test_check_dct_config_refuses_a_contradiction():
    cli.parse_gin(["experiments/tiny.gin"])
    bound = configs.dct_config()
    configs.check_dct_config(bound, bound)
    other = DCTConfig(**{**bound.to_dict(), "quality": 50})
    with pytest.raises(InputError) as e:
        configs.check_dct_config(bound, other, where="D/info.json")
    assert str(e.value) == f"dct_config.quality = {bound.quality} in gin, but D/info.json says 50"


def test_the_representation_is_the_datas_and_gin_may_restate_any_part():
    data = DCTConfig(block_size=4, quality=75, resolution=32, clip=200)
    cli.parse_gin(["models/test.gin"])  # no dct_config binding at all
    assert configs.bound_dct_fields() == {}
    assert configs.dct_config_for_data(data) == data
    assert configs.model_config(dct=data).dct == data
    cli.parse_gin(["models/test.gin"], ["dct_config.resolution = 32"])  # agrees
    assert configs.dct_config_for_data(data) == data
    cli.parse_gin(["experiments/test.gin"], ["dct_config.ordering = 'luma_first'"])
    with pytest.raises(InputError, match="dct_config.ordering = 'luma_first' in gin, but"):
        configs.dct_config_for_data(data)


def test_importing_the_factories_imports_no_tensorflow():
    """The Beam job parses the same gin files through cli.parse_gin, which imports configs."""
    code = (
        "import sys; from dct_gen import cli; cli.parse_gin(['data/test.gin']); "
        "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert out.strip() == "[]"


# ----------------------------------------------------------------------------------------------
# Classes: from the dataset unless gin says otherwise, and checked against it.

LABELLED = configs.DatasetClasses(("cat", "dog", "sky"), "/data/info.json", "train")
UNLABELLED = configs.DatasetClasses(None, "/data/info.json", "train")


def test_classes_come_from_the_dataset_unless_gin_sets_them():
    assert LABELLED.num_classes(None) == 3  # unset: a labelled dataset is conditional
    assert LABELLED.num_classes(3) == 3
    assert LABELLED.num_classes(0) is None  # unconditional on purpose
    assert UNLABELLED.num_classes(None) is None and UNLABELLED.num_classes(0) is None


@pytest.mark.parametrize(
    "classes, bound, message",
    [
        (
            LABELLED,
            2,
            "model_config.num_classes = 2 in gin, but /data/info.json lists 3 label_names for "
            "split 'train'",
        ),
        (
            UNLABELLED,
            3,
            "model_config.num_classes = 3 in gin (a class-conditional model), but "
            "/data/info.json lists no label_names for split 'train'",
        ),
    ],
)
def test_a_class_count_the_dataset_contradicts_is_named(classes, bound, message):
    with pytest.raises(InputError) as err:
        classes.num_classes(bound)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_dataset_classes_from_info():
    info = {"splits": {"train": {"label_names": ["a", "b"]}, "test": {"label_names": None}}}
    assert configs.DatasetClasses.from_info(info, "train", "I").label_names == ("a", "b")
    assert configs.DatasetClasses.from_info(info, "test", "I").label_names is None
    with pytest.raises(InputError, match=r"I has no split 'val' \(it has \['test', 'train'\]\)"):
        configs.DatasetClasses.from_info(info, "val", "I")
    bad = {"splits": {"train": {"label_names": "ab"}}}
    with pytest.raises(InputError, match="I: splits.train.label_names = 'ab': must be a list"):
        configs.DatasetClasses.from_info(bad, "train", "I")


def test_gin_model_config_takes_the_datasets_classes():
    cli.parse_gin(["experiments/test.gin"], [])
    try:
        assert configs.model_config(classes=LABELLED).num_classes == 3
        assert configs.model_config(classes=UNLABELLED).num_classes is None
        assert configs.model_config().num_classes is None  # no dataset (a dry run)
    finally:
        gin.clear_config()
    cli.parse_gin(["experiments/test.gin"], ["model_config.num_classes = 0"])
    try:
        assert configs.model_config(classes=LABELLED).num_classes is None
    finally:
        gin.clear_config()


def test_label_dropout_is_settled_by_the_model():
    run = configs.TrainConfig(batch_size=1, learning_rate=1e-3, tokens=10)
    assert run.label_dropout is None
    assert run.with_label_dropout(3).label_dropout == configs.DEFAULT_LABEL_DROPOUT == 0.1
    assert run.with_label_dropout(None).label_dropout == 0.0
    zero = configs.TrainConfig(batch_size=1, learning_rate=1e-3, tokens=10, label_dropout=0)
    assert zero.with_label_dropout(3).label_dropout == 0.0
    some = configs.TrainConfig(batch_size=1, learning_rate=1e-3, tokens=10, label_dropout=0.2)
    with pytest.raises(InputError, match="train_config.label_dropout = 0.2, but the model is un"):
        some.with_label_dropout(None)
