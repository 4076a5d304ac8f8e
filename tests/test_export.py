"""The SavedModel export of the shared trained run: loaded in a fresh Python process that never
imports dct_gen, it samples, scores a sequence exactly as evaluation does and names the argument
of each bad input (infinite or NaN temperatures, top_p out of range, a wrong rank); upsample and
colorize build the numpy path's context (Pillow's Lanczos resize reproduced in the graph, pixel
for pixel); the command refuses to replace anything but an earlier export, and bad flags and bad
input are one line each. The graph's argument checks are also traced on their own (fast)."""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from dct_gen import dct_ops, evaluation, export, records, run_dir, sampling, saved_model
from dct_gen import model as model_lib
from dct_gen import representation as rep
from dct_gen.errors import InputError, UsageError

# Each export traces the sampling loop into a graph, about a minute: the tests of an export are
# marked slow (`make test-slow`).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    """The command line's export of the trained run: (directory, its stdout, its status)."""
    out = str(tmp_path_factory.mktemp("export") / "saved_model")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = export.main(
            [f"--model_dir={trained_run.model_dir}", f"--out={out}", "--max_chunks=6"]
        )
    return out, stdout.getvalue(), status


def _export_main(capsys, *args):
    """export.main's status and its stderr, which must be one error line or nothing."""
    status = export.main(list(args))
    err = capsys.readouterr().err.strip()
    if status:
        assert err.startswith("dct_gen.export: error: ") and "\n" not in err, err
    return status, err


def _tree(path):
    """Every file under path with its bytes."""
    out = {}
    for folder, _, files in os.walk(path):
        for name in files:
            full = os.path.join(folder, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, path)] = f.read()
    return out


@pytest.mark.slow
def test_the_export_is_marked_and_reports_itself(exported, trained_run):
    out, stdout, status = exported
    assert status == 0
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report == {
        "saved_model": out,
        "step": 30,
        "signatures": ["log_prob", "sample", "upsample"],
    }
    with open(os.path.join(out, saved_model.EXPORT_FILE)) as f:
        marker = json.load(f)
    assert marker["format"] == saved_model.EXPORT_FORMAT
    assert (marker["model_dir"], marker["step"]) == (trained_run.model_dir, 30)
    assert (marker["max_chunks"], marker["max_num_samples"]) == (6, 64)
    assert saved_model.is_export(out)
    assert not [n for n in os.listdir(os.path.dirname(out)) if n != "saved_model"]  # no leftovers


FRESH = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    path, seq_file = sys.argv[1], sys.argv[2]
    m = tf.saved_model.load(path)
    out = {"signatures": sorted(m.signatures.keys())}
    s = m.signatures["sample"](
        num_samples=tf.constant(2), label=tf.constant(-1), temperature=tf.constant(1.0),
        top_p=tf.constant(1.0), seed=tf.constant(3, tf.int64), guidance=tf.constant(1.0))
    again = m.signatures["sample"](
        num_samples=tf.constant(2), label=tf.constant(-1), temperature=tf.constant(1.0),
        top_p=tf.constant(1.0), seed=tf.constant(3, tf.int64), guidance=tf.constant(1.0))
    out["sample_shapes"] = {k: v.shape.as_list() for k, v in s.items()}
    out["lengths"] = s["lengths"].numpy().tolist()
    out["same_seed_same_images"] = bool(np.array_equal(s["images"], again["images"]))
    seq = np.load(seq_file)
    lp = m.signatures["log_prob"](
        channels=tf.constant(seq["channels"]), positions=tf.constant(seq["positions"]),
        values=tf.constant(seq["values"]), height=tf.constant(int(seq["height"])),
        width=tf.constant(int(seq["width"])), label=tf.constant(-1))
    out["log_prob"] = {k: float(v) for k, v in lp.items()}
    img = np.asarray(np.random.default_rng(0).integers(0, 256, (3, 4, 3)), np.uint8)
    up = m.signatures["upsample"](image=tf.constant(img), seed=tf.constant(1, tf.int64),
                                  label=tf.constant(-1), guidance=tf.constant(1.0))
    n = int(up["context_length"])
    out["upsample"] = {"context_length": n, "length": int(up["lengths"][0]),
                       "height": int(up["heights"][0]), "width": int(up["widths"][0])}
    errors = {}
    bad = {
        "num_samples_zero": ("sample", dict(num_samples=tf.constant(0), label=tf.constant(-1))),
        "num_samples_cap": ("sample", dict(num_samples=tf.constant(10**6), label=tf.constant(-1))),
        "label": ("sample", dict(num_samples=tf.constant(1), label=tf.constant(7))),
        "image": ("upsample", dict(image=tf.zeros([4, 4, 2], tf.uint8))),
        "positions": ("log_prob", dict(positions=tf.constant(seq["positions"][:-1]))),
        "guidance": ("sample", dict(num_samples=tf.constant(1), label=tf.constant(-1),
                                    guidance=tf.constant(2.0))),
        "log_prob_label": ("log_prob", dict(positions=tf.constant(seq["positions"]),
                                            label=tf.constant(0))),
    }
    for name, (sig, kwargs) in bad.items():
        args = dict(temperature=tf.constant(1.0), top_p=tf.constant(1.0)) if sig == "sample" else {}
        if sig == "log_prob":
            args = dict(channels=tf.constant(seq["channels"]), values=tf.constant(seq["values"]),
                        height=tf.constant(int(seq["height"])),
                        width=tf.constant(int(seq["width"])), label=tf.constant(-1))
        else:
            args["seed"] = tf.constant(0, tf.int64)
            args["guidance"] = tf.constant(1.0)
            if sig == "upsample":
                args["label"] = tf.constant(-1)
        args.update(kwargs)
        try:
            m.signatures[sig](**args)
            errors[name] = None
        except tf.errors.InvalidArgumentError as e:
            errors[name] = e.message
    out["errors"] = errors
    # The functions on the loaded object default the newer arguments (label -1, guidance 1).
    short = m.sample(tf.constant(2), tf.constant(-1), tf.constant(1.0), tf.constant(1.0),
                     tf.constant(3, tf.int64))
    out["defaults_as_before"] = bool(np.array_equal(short["images"], s["images"]))
    out["dct_gen_imported"] = any(k.startswith("dct_gen") for k in sys.modules)
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_saved_model_in_a_fresh_process(exported, trained_run, test_configs, tmp_path):
    saved, _, status = exported
    assert status == 0
    # The one-image split scored by the evaluation library: what log_prob must give.
    run = run_dir.load_run(trained_run.model_dir, log=lambda _: None)
    want = evaluation.likelihood(run, data_dir=trained_run.data_dir, split="one")
    assert want["sequences"] == 1
    (raw,) = list(tf.data.TFRecordDataset(records.split_files(trained_run.data_dir, "one")))
    seq = {k: v.numpy() for k, v in records.parse_example(raw).items() if k != "key"}
    seq_file = str(tmp_path / "seq.npz")
    np.savez(seq_file, **seq)

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", FRESH, saved, seq_file],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),  # not the repository: dct_gen cannot be imported by accident
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not out["dct_gen_imported"]
    assert out["signatures"] == ["log_prob", "sample", "upsample"]
    r = test_configs()["dct_config"].resolution
    assert out["sample_shapes"]["images"] == [2, r, r, 3]
    assert out["same_seed_same_images"]
    for name in ("", "channel_", "position_", "value_"):
        key = f"{name}bits_per_subpixel"
        np.testing.assert_allclose(out["log_prob"][key], want[key], rtol=1e-4)
    assert out["upsample"]["length"] >= out["upsample"]["context_length"] > 0
    errors = out["errors"]
    assert "num_samples: must be >= 1" in errors["num_samples_zero"]
    assert "num_samples: at most" in errors["num_samples_cap"]
    assert "label:" in errors["label"]
    assert "image:" in errors["image"]
    assert "positions:" in errors["positions"]
    assert "guidance: the model is unconditional; pass 1 (no guidance), got 2" in errors["guidance"]
    assert "label: the model is unconditional; pass -1, got 0" in errors["log_prob_label"]
    assert out["defaults_as_before"]

    # The sampling library reads the SavedModel too.
    source = sampling.SavedModelSource(saved)
    samples = source.sample(2, -1, sampling.SampleOptions(), seed=0)
    assert len(samples.sequences) == 2 and len(samples.images()) == 2


def _graph_context(cfg, channels):
    """The in-graph encoder on a given image, traced as the SavedModel traces it."""
    spec = [tf.TensorSpec([None, None, 3], tf.uint8)]
    return tf.function(
        lambda im: dct_ops.triples_from_dct_image(
            dct_ops.encode_dct_image(im, cfg), cfg, channels=channels
        ),
        input_signature=spec,
    )


# The arguments of upsample and colorize but the image: seed 0, no label, no guidance.
TASK_ARGS = dict(seed=tf.constant(0, tf.int64), label=tf.constant(-1), guidance=tf.constant(1.0))


def _context(out):
    n = int(out["context_length"])
    return [out[k][0, :n].numpy() for k in ("channels", "positions", "values")]


@pytest.mark.slow
def test_resize_reproduces_pillow_pixel_for_pixel(color_photos, test_configs):
    cfg = test_configs()["dct_config"]
    rng = np.random.default_rng(0)
    for name, photo in sorted(color_photos.items()):
        for _ in range(3):
            top, left = rng.integers(0, 40, 2)
            crop = photo[top : top + rng.integers(20, 300), left : left + rng.integers(20, 300)]
            height, width = (int(v) for v in rng.integers(3, 90, 2))
            for gap in (None, 3.0):
                want = Image.fromarray(crop).resize(
                    (width, height), Image.Resampling.LANCZOS, reducing_gap=gap
                )
                got = saved_model.resize_like_pillow(crop, height, width, reducing_gap=gap)
                np.testing.assert_array_equal(got.numpy(), np.asarray(want), err_msg=name)

    # A 30 x 45 input comes out at exactly the numpy path's size: for upsampling (the
    # low-resolution image, a 4 x 4 block per pixel) and for colorization.
    photo = color_photos["chelsea.png"][100:130, 200:245]
    assert photo.shape == (30, 45, 3)
    b = cfg.block_size
    context, low = sampling.upsampling_context(photo, cfg)
    assert low.shape == (6, 8, 3) and (context.height, context.width) == (24, 32)
    got = saved_model.resize_like_pillow(photo, context.height // b, context.width // b)
    np.testing.assert_array_equal(got.numpy(), low)
    colour_cfg = test_configs("dct_config.ordering = 'luma_first'")["dct_config"]
    context, grey = sampling.colorization_context(photo, colour_cfg)
    luma = saved_model.luma_like_codec(photo)[:, :, None]
    got = saved_model.resize_like_pillow(luma, *grey.shape[:2], reducing_gap=3.0)
    np.testing.assert_array_equal(got.numpy()[:, :, 0], grey[:, :, 0])
    assert grey.shape[:2] == (24, 32)


@pytest.mark.slow
def test_upsample_of_a_30x45_photo_builds_the_numpy_context(exported, color_photos, test_configs):
    loaded = tf.saved_model.load(exported[0])
    cfg = test_configs()["dct_config"]
    photo = color_photos["chelsea.png"][100:130, 200:245]
    out = loaded.signatures["upsample"](image=tf.constant(photo), **TASK_ARGS)
    context, low = sampling.upsampling_context(photo, cfg)
    assert (int(out["heights"][0]), int(out["widths"][0])) == (24, 32)
    assert (context.height, context.width) == (24, 32)
    channels, positions, values = _context(out)
    np.testing.assert_array_equal(channels, context.channels)
    np.testing.assert_array_equal(positions, context.positions)
    # A blocky image's DC coefficients can sit exactly on a rounding edge, where the traced
    # encoder's float order may round the other way: one step at most.
    assert np.abs(values - context.values).max() <= 1
    # The pixels are the numpy path's: the traced encoder on its low-resolution image agrees.
    n = cfg.channels_per_plane
    encode = _graph_context(cfg, (0, n, 2 * n))
    blocky = np.repeat(np.repeat(low, cfg.block_size, axis=0), cfg.block_size, axis=1)
    np.testing.assert_array_equal(values, encode(tf.constant(blocky))[2].numpy())


@pytest.mark.slow
def test_colorize_context_equals_the_numpy_path(tmp_path, color_photos, gray_photo, test_configs):
    configs = test_configs("dct_config.ordering = 'luma_first'")
    model_config = configs["model_config"]
    cfg = model_config.dct
    model = model_lib.build_model(model_config)
    saved = str(tmp_path / "colorize")
    names = saved_model.export(model, model_config, saved, target_part="chroma", max_chunks=3)
    assert names == ["colorize", "log_prob", "sample"]
    loaded = tf.saved_model.load(saved)
    encode = _graph_context(cfg, tuple(range(cfg.channels_per_plane)))
    inputs = {
        "chelsea (reduced, then resampled)": color_photos["chelsea.png"],
        "a 30 x 45 crop (enlarged)": color_photos["coffee.png"][200:230, 300:345],
        "a grey photo, one channel": gray_photo[:, :, None],
    }
    for what, image in inputs.items():
        out = loaded.signatures["colorize"](image=tf.constant(image), **TASK_ARGS)
        context, grey = sampling.colorization_context(image, cfg)
        channels, positions, values = _context(out)
        size = (int(out["heights"][0]), int(out["widths"][0]))
        assert size == (context.height, context.width) == grey.shape[:2], what
        np.testing.assert_array_equal(channels, context.channels, err_msg=what)
        np.testing.assert_array_equal(positions, context.positions, err_msg=what)
        # The grey image is the numpy path's pixel for pixel: the traced encoder on it gives
        # the SavedModel's context exactly.
        np.testing.assert_array_equal(values, encode(tf.constant(grey))[2].numpy(), err_msg=what)
        # The traced encoder's float order rounds a rare coefficient the other way: one step.
        differ = np.flatnonzero(values != context.values)
        assert np.abs(values - context.values).max() <= 1, what
        assert len(differ) <= max(2, len(values) // 50), (what, len(differ), len(values))
        # Sampling keeps the luma and draws chroma only.
        length = int(out["lengths"][0])
        drawn = out["channels"][0, len(channels) : length].numpy()
        assert np.all(drawn >= cfg.channels_per_plane), what
    with pytest.raises(tf.errors.InvalidArgumentError, match="image:"):
        loaded.signatures["colorize"](image=tf.zeros([4, 4, 2], tf.uint8), **TASK_ARGS)


@pytest.mark.slow
def test_out_is_refused_unless_new_empty_or_an_earlier_export(
    trained_run, exported, tmp_path, capsys
):
    run_copy = str(tmp_path / "run")
    shutil.copytree(trained_run.model_dir, run_copy)
    before = _tree(run_copy)
    model = f"--model_dir={run_copy}"

    # The run directory itself, or a directory that holds it.
    status, err = _export_main(capsys, model, f"--out={run_copy}")
    assert status == 1 and f"--out={run_copy}:" in err and "run directory" in err
    status, err = _export_main(capsys, model, f"--out={tmp_path}")
    assert status == 1 and f"--out={tmp_path}:" in err
    # A directory with other contents, and a file.
    other = tmp_path / "photos"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    status, err = _export_main(capsys, model, f"--out={other}")
    assert status == 1 and f"--out={other}:" in err and "refusing to replace" in err
    a_file = tmp_path / "model.txt"
    a_file.write_text("keep me too")
    status, err = _export_main(capsys, model, f"--out={a_file}")
    assert status == 1 and f"--out={a_file}:" in err and "not a directory" in err
    # An export that someone added files to is not ours alone any more.
    copy = tmp_path / "export_with_notes"
    shutil.copytree(exported[0], copy)
    (copy / "notes.txt").write_text("mine")
    status, err = _export_main(capsys, model, f"--out={copy}")
    assert status == 1 and f"--out={copy}:" in err
    assert _tree(run_copy) == before
    assert (other / "notes.txt").read_text() == "keep me"
    assert a_file.read_text() == "keep me too" and (copy / "notes.txt").read_text() == "mine"
    # Library callers get the same refusal.
    with pytest.raises(InputError, match="run directory"):
        saved_model.export_run(run_copy, run_copy)
    assert _tree(run_copy) == before

    # What may be replaced: nothing, an empty directory, an earlier export (also one from
    # before the marker existed).
    saved_model.check_out(str(tmp_path / "new"), run_copy)
    (tmp_path / "empty").mkdir()
    saved_model.check_out(str(tmp_path / "empty"), run_copy)
    saved_model.check_out(exported[0], run_copy)
    unmarked = tmp_path / "unmarked"
    shutil.copytree(exported[0], unmarked)
    os.remove(unmarked / saved_model.EXPORT_FILE)
    assert saved_model.is_export(str(unmarked))
    saved_model.check_out(str(unmarked), run_copy)
    assert not saved_model.is_export(str(copy)) and not saved_model.is_export(run_copy)

    # Bad flags: status 2; a run directory that is not one: status 1.
    status, err = _export_main(capsys, model)
    assert status == 2 and "--out is required" in err
    status, err = _export_main(capsys, model, f"--out={tmp_path / 'x'}", "--max_num_samples=0")
    assert status == 2 and "--max_num_samples" in err
    status, err = _export_main(capsys, f"--model_dir={tmp_path / 'nowhere'}", "--out=x")
    assert status == 1 and "--model_dir=" in err and "no such directory" in err
    status, err = _export_main(capsys, f"--model_dir={other}", f"--out={tmp_path / 'x'}")
    assert status == 1 and "config.json does not exist" in err
    assert not os.path.exists(tmp_path / "x")


@pytest.mark.slow
def test_an_earlier_export_is_replaced_and_nothing_beside_it_touched(
    trained_run, exported, tmp_path, capsys
):
    out = tmp_path / "saved_model"
    shutil.copytree(exported[0], out)
    os.remove(out / saved_model.EXPORT_FILE)  # an export from before the marker
    # Paths that an older version used as its temporary directory, now someone else's.
    for name in ("saved_model.tmp", "saved_model.partial"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "keep.txt").write_text(name)
    argv = [f"--model_dir={trained_run.model_dir}", f"--out={out}", "--max_num_samples=2"]
    assert export.main(argv) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["saved_model"] == str(out) and report["step"] == 30
    with open(out / saved_model.EXPORT_FILE) as f:
        assert json.load(f)["max_num_samples"] == 2
    assert json.loads(tf.saved_model.load(str(out)).config_json.numpy())["max_num_samples"] == 2
    assert sorted(os.listdir(tmp_path)) == [
        "saved_model",
        "saved_model.partial",
        "saved_model.tmp",
    ]
    for name in ("saved_model.tmp", "saved_model.partial"):
        assert (tmp_path / name / "keep.txt").read_text() == name


# ----------------------------------------------------------------------------------------------
# Bad arguments are named: the graph's checks traced on their own (fast), then the SavedModel.

SAMPLE_ARGS = dict(num_samples=2, label=-1, temperature=1.0, top_p=1.0, seed=0, guidance=1.0)
SAMPLE_DTYPES = dict(
    num_samples=tf.int32,
    label=tf.int32,
    temperature=tf.float32,
    top_p=tf.float32,
    seed=tf.int64,
    guidance=tf.float32,
)
SCALAR_SHAPE = "must be a scalar (shape [])"
# (argument, bad value, what the message says), each for the sample signature.
BAD_SAMPLE_ARGS = [
    ("temperature", float("inf"), "temperature: must be finite and > 0, got inf"),
    ("temperature", float("-inf"), "temperature: must be finite and > 0, got -inf"),
    ("temperature", float("nan"), "temperature: must be finite and > 0, got nan"),
    ("temperature", 0.0, "temperature: must be finite and > 0, got 0"),
    ("temperature", [1.0, 2.0], f"temperature: {SCALAR_SHAPE}, got shape [2]"),
    ("top_p", float("nan"), "top_p: must be in (0, 1], got nan"),
    ("top_p", float("inf"), "top_p: must be in (0, 1], got inf"),
    ("top_p", 1.5, "top_p: must be in (0, 1], got 1.5"),
    ("top_p", 0.0, "top_p: must be in (0, 1], got 0"),
    ("top_p", [[0.5]], f"top_p: {SCALAR_SHAPE}, got shape [1 1]"),
    ("num_samples", 0, "num_samples: must be >= 1, got 0"),
    ("num_samples", [2], f"num_samples: {SCALAR_SHAPE}, got shape [1]"),
    ("label", 3, "label: the model is unconditional; pass -1, got 3"),
    ("label", [[-1]], f"label: {SCALAR_SHAPE}, got shape [1 1]"),
    ("seed", [1, 2], f"seed: {SCALAR_SHAPE}, got shape [2]"),
    ("guidance", float("inf"), "guidance: must be finite and >= 0, got inf"),
    ("guidance", float("nan"), "guidance: must be finite and >= 0, got nan"),
    ("guidance", -0.5, "guidance: must be finite and >= 0, got -0.5"),
    ("guidance", 2.0, "guidance: the model is unconditional; pass 1 (no guidance), got 2"),
    ("guidance", [1.0], f"guidance: {SCALAR_SHAPE}, got shape [1]"),
]


def _any_shape(*dtypes):
    """Input specs of unknown shape, as the signatures declare them."""
    return [tf.TensorSpec(None, d) for d in dtypes]


def _failure(fn, *args, **kwargs) -> str:
    """The InvalidArgumentError message fn raises."""
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        fn(*args, **kwargs)
    return raised.value.message


@pytest.fixture(scope="module")
def graph_checks(test_configs):
    """The signatures' argument checks, each traced alone with the signatures' input specs
    (unknown shapes): sample's (cap 4, unconditional), upsample's and colorize's image (at most
    64 pixels a side) and log_prob's (the test config, sequences of at most 5 triples)."""
    cfg = test_configs()["dct_config"]

    def sample(num_samples, label, temperature, top_p, seed, guidance):
        checked = saved_model._sample_arguments(
            num_samples, label, temperature, top_p, seed, num_classes=None, max_samples=4
        )
        return (*checked, saved_model._guidance(guidance, num_classes=None))

    sample = tf.function(sample, input_signature=_any_shape(*SAMPLE_DTYPES.values()))
    images = {
        name: tf.function(
            lambda im, c=channels: saved_model._image_argument(im, c, 64),
            input_signature=_any_shape(tf.uint8),
        )
        for name, channels in (("upsample", (3,)), ("colorize", (1, 3)))
    }
    log_prob = tf.function(
        lambda *a: saved_model._log_prob_arguments(*a, cfg=cfg, capacity=6),
        input_signature=_any_shape(*[tf.int32] * 5),
    )
    return dict(cfg=cfg, sample=sample, log_prob=log_prob, **images)


def _sample_call(fn, **changes):
    args = {**SAMPLE_ARGS, **changes}
    return fn(**{k: tf.constant(v, SAMPLE_DTYPES[k]) for k, v in args.items()})


def _log_prob_args(cfg, **changes):
    args = dict(channels=[0, 1], positions=[0, 3], values=[5, -2], height=16, width=32)
    args.update(changes)
    return [tf.constant(args[k], tf.int32) for k in ("channels", "positions", "values")] + [
        tf.constant(args[k], tf.int32) for k in ("height", "width")
    ]


def test_graph_checks_pass_good_arguments_through(graph_checks):
    n, label, temperature, top_p, seed, guidance = _sample_call(
        graph_checks["sample"], temperature=1e30, top_p=1e-6
    )
    assert (int(n), int(label), float(temperature), float(top_p), int(seed), float(guidance)) == (
        2,
        -1,
        np.float32(1e30),
        np.float32(1e-6),
        0,
        1.0,
    )
    # Each checked argument has its static rank back (what follows in the graph needs it).
    concrete = graph_checks["sample"].get_concrete_function()
    assert [t.shape.rank for t in concrete.structured_outputs] == [0] * 6
    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    np.testing.assert_array_equal(graph_checks["upsample"](image), image)
    np.testing.assert_array_equal(graph_checks["colorize"](image[:, :, :1]), image[:, :, :1])
    out = graph_checks["log_prob"](*_log_prob_args(graph_checks["cfg"]))
    assert [t.numpy().tolist() for t in out] == [[0, 1], [0, 3], [5, -2], 16, 32]


@pytest.mark.parametrize("name,value,message", BAD_SAMPLE_ARGS)
def test_graph_checks_name_a_bad_sample_argument(graph_checks, name, value, message):
    assert message in _failure(_sample_call, graph_checks["sample"], **{name: value})


def test_graph_checks_name_the_other_bad_arguments(graph_checks):
    sample = graph_checks["sample"]
    assert "num_samples: at most 4 per call" in _failure(_sample_call, sample, num_samples=5)
    for signature, shape, message in [
        ("upsample", (1, 4, 4, 3), "image: must be (height, width, 3) uint8, got shape [1 4 4 3]"),
        ("upsample", (4, 4), "image: must be (height, width, 3) uint8, got shape [4 4]"),
        ("upsample", (4, 4, 1), "image: must be (height, width, 3) uint8, got shape [4 4 1]"),
        ("colorize", (4, 4, 2), "image: must be (height, width, 1 or 3) uint8, got shape [4 4 2]"),
        ("colorize", (0, 4, 1), "image: height and width must be >= 1, got shape [0 4 1]"),
        ("upsample", (4, 65, 3), "image: height and width must be <= 64, got shape [4 65 3]"),
    ]:
        got = _failure(graph_checks[signature], tf.zeros(shape, tf.uint8))
        assert message in got, (signature, shape)
    cfg = graph_checks["cfg"]
    stop, r, clip = cfg.stop_token, cfg.resolution, cfg.clip
    for changes, message in [
        (dict(channels=5), "channels: must be a vector (L,) int32, got shape []"),
        (dict(positions=[[0, 3]]), "positions: must be a vector (L,) int32, got shape [1 2]"),
        (dict(positions=[0]), "positions: must have the length of channels (2), got 1"),
        (dict(values=[5, -2, 0]), "values: must have the length of channels (2), got 3"),
        (
            dict(channels=[0, stop]),
            f"channels: ids must lie in [0, {stop}), got values in [0, {stop}]",
        ),
        (
            dict(values=[clip + 1, 0]),
            f"values: ids must lie in [{-clip}, {clip + 1}), got values in [0, {clip + 1}]",
        ),
        (dict(height=0), f"height: must be in [1, {r}], got 0"),
        (dict(width=r + 1), f"width: must be in [1, {r}], got {r + 1}"),
        (dict(width=[r]), f"width: {SCALAR_SHAPE}, got shape [1]"),
        (
            dict(channels=[0] * 6, positions=[0] * 6, values=[0] * 6),
            "channels: at most 5 triples, got 6",
        ),
    ]:
        got = _failure(graph_checks["log_prob"], *_log_prob_args(cfg, **changes))
        assert message in got, changes


# Sequences no codec writes (the test config: B = 4, G = 8, interleaved: Y0 = 0, Cb0 = 16,
# Cr0 = 32, Y1 = 1, ...), each a change to VALID_SEQUENCE and the start of the message that
# names its first broken triple and the rule, as representation.check_sequence words it.
VALID_SEQUENCE = dict(
    channels=[0, 0, 16, 1], positions=[0, 9, 2, 3], values=[5, -3, 4, 2], height=16, width=32
)
IMPOSSIBLE_SEQUENCES = [
    (dict(values=[5, 0, 4, 2]), "triple 1: value 0 (channel 0, position 9); stored values are"),
    (dict(channels=[0, 0, 16, 0]), "triple 3: channel 0 comes before channel 16 of the previous"),
    (dict(positions=[0, 0, 2, 3]), "triple 1: position 0 of channel 0 does not come after"),
    (dict(positions=[0, 9, 3, 3]), "triple 2: chroma channel 16 at position 3 (row 0, column 3)"),
    (dict(height=8, positions=[0, 17, 2, 3]), "triple 1: position 17 (row 2, column 1) lies"),
    (dict(width=8), "triple 2: position 2 (row 0, column 2) lies outside the 16x8 image, whose"),
    (dict(values=[5, 0, 4, 2], width=8), "triple 1: value 0"),  # the first broken triple
]


def test_graph_checks_refuse_an_impossible_sequence(graph_checks):
    """log_prob's graph check names the first broken triple and its rule, in the words of the
    numpy check; a sequence the codec can write passes unchanged."""
    cfg = graph_checks["cfg"]
    out = graph_checks["log_prob"](*_log_prob_args(cfg, **VALID_SEQUENCE))
    assert [t.numpy().tolist() for t in out] == list(VALID_SEQUENCE.values())
    for changes, message in IMPOSSIBLE_SEQUENCES:
        args = {**VALID_SEQUENCE, **changes}
        got = _failure(graph_checks["log_prob"], *_log_prob_args(cfg, **args))
        with pytest.raises(ValueError) as raised:
            c, p, v = (np.array(args[k]) for k in ("channels", "positions", "values"))
            rep.check_sequence(c, p, v, cfg, args["height"], args["width"])
        assert str(raised.value).startswith(message), (changes, str(raised.value))
        assert f"[{raised.value}]" in got, (changes, got)


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(exported[0])


@pytest.mark.slow
def test_the_saved_model_names_each_bad_argument(loaded, trained_run, test_configs):
    """Through the real signatures: values, ranks and the dtype TensorFlow checks itself."""
    sample = loaded.signatures["sample"]
    for name, value, message in BAD_SAMPLE_ARGS:
        assert message in _failure(_sample_call, sample, **{name: value}), (name, value)
    upsample = loaded.signatures["upsample"]
    for shape in [(1, 4, 4, 3), (4, 4)]:
        got = _failure(upsample, image=tf.zeros(shape, tf.uint8), **TASK_ARGS)
        assert "image: must be (height, width, 3) uint8, got shape" in got, shape
    image = tf.zeros([4, 4, 3], tf.uint8)
    for name, value, message in [
        ("seed", tf.constant([0], tf.int64), f"seed: {SCALAR_SHAPE}, got shape [1]"),
        ("label", tf.constant(1), "label: the model is unconditional; pass -1, got 1"),
        ("guidance", tf.constant(3.0), "guidance: the model is unconditional; pass 1"),
        ("guidance", tf.constant(-1.0), "guidance: must be finite and >= 0, got -1"),
    ]:
        got = _failure(upsample, image=image, **{**TASK_ARGS, name: value})
        assert message in got, (name, got)
    cfg = test_configs()["dct_config"]
    log_prob = loaded.signatures["log_prob"]
    args = dict(zip(("channels", "positions", "values", "height", "width"), _log_prob_args(cfg)))
    args["label"] = tf.constant(-1)
    got = _failure(log_prob, **{**args, "channels": tf.constant([[0, 1]])})
    assert "channels: must be a vector (L,) int32, got shape [1 2]" in got
    got = _failure(log_prob, **{**args, "height": tf.constant([16])})
    assert f"height: {SCALAR_SHAPE}, got shape [1]" in got
    # An impossible sequence is refused, naming its first broken triple and the rule (it used
    # to be scored about 1e9 nats).
    for changes, message in IMPOSSIBLE_SEQUENCES:
        values = _log_prob_args(cfg, **{**VALID_SEQUENCE, **changes})
        got = _failure(log_prob, **dict(zip(VALID_SEQUENCE, values)), label=tf.constant(-1))
        assert message in got, (changes, got)
    valid = log_prob(
        **dict(zip(VALID_SEQUENCE, _log_prob_args(cfg, **VALID_SEQUENCE))), label=tf.constant(-1)
    )
    assert 0 < float(valid["nats"]) < 1e4
    # A wrong dtype is refused by TensorFlow before the graph runs; docs/sampling.md lists them.
    with pytest.raises((tf.errors.InvalidArgumentError, TypeError, ValueError)):
        _sample_call(sample, seed=tf.constant(0, tf.int32))


@pytest.mark.slow
def test_a_huge_temperature_keeps_the_structural_rules(loaded, test_configs):
    """Every allowed move about equally likely, and no masked one: a temperature of inf used
    to let masked moves through and break the rules."""
    cfg = test_configs()["dct_config"]
    out = _sample_call(loaded.signatures["sample"], num_samples=3, temperature=1e30, seed=5)
    for i, n in enumerate(out["lengths"].numpy()):
        triples = [out[k][i, :n].numpy() for k in ("channels", "positions", "values")]
        rep.check_triples(*triples, cfg)


# ----------------------------------------------------------------------------------------------
# Class-conditional models: the label and guidance checks, and an export that guides.


@pytest.mark.parametrize("null_label_trained", [True, False])
def test_graph_checks_of_a_class_conditional_label_and_guidance(null_label_trained):
    """Three classes: labels 0..2 pass, -1 only when the null label was trained; guidance
    other than 1 only then too; a bad scale is named whatever the model."""
    kw = dict(num_classes=3, null_label_trained=null_label_trained)
    label = tf.function(lambda x: saved_model._label(x, **kw), input_signature=_any_shape(tf.int32))
    guidance = tf.function(
        lambda x: saved_model._guidance(x, **kw), input_signature=_any_shape(tf.float32)
    )
    for good in (0, 2):
        assert int(label(tf.constant(good))) == good
    assert float(guidance(tf.constant(1.0))) == 1.0
    assert "label: out of range [-1, 3) (-1: no class), got 3" in _failure(label, tf.constant(3))
    assert "label: out of range [-1, 3) (-1: no class), got -2" in _failure(label, tf.constant(-2))
    for bad, message in [
        (float("inf"), "guidance: must be finite and >= 0, got inf"),
        (-1.0, "guidance: must be finite and >= 0, got -1"),
    ]:
        assert message in _failure(guidance, tf.constant(bad))
    if null_label_trained:
        assert int(label(tf.constant(-1))) == -1
        for g in (0.0, 2.5):
            assert float(guidance(tf.constant(g))) == g
    else:
        got = _failure(label, tf.constant(-1))
        assert "label: this model was trained with train_config.label_dropout = 0" in got
        assert "pass a class in [0, 3), got -1" in got
        got = _failure(guidance, tf.constant(2.5))
        assert "guidance: guidance needs the null label" in got and "got 2.5" in got
        assert "pass 1 (no guidance)" in got


@pytest.mark.slow  # an export that traces the plain and the guided chunk: a few minutes
def test_a_class_conditional_export_guides_and_scores_with_a_label(tmp_path, test_configs):
    """A three-class model whose null label was trained: guidance 0 with a class draws what no
    class draws, guided samples follow the structural rules, upsample takes a label and a scale,
    log_prob scores given a label, and config_json records the names."""
    configs = test_configs("model_config.num_classes = 3")
    model_config = configs["model_config"]
    cfg = model_config.dct
    model = model_lib.build_model(model_config)
    saved = str(tmp_path / "conditional")
    names = ["sky", "sea", "sand"]
    saved_model.export(model, model_config, saved, max_chunks=3, label_names=names)
    loaded = tf.saved_model.load(saved)
    config = json.loads(loaded.config_json.numpy())
    assert config["label_names"] == names and config["null_label_trained"] is True
    sample = loaded.signatures["sample"]

    def draw(label, guidance, seed=4):
        return _sample_call(sample, num_samples=3, label=label, guidance=guidance, seed=seed)

    # Guidance 0 is unconditional: the null half exactly, whatever the label.
    null = draw(-1, 1.0)
    for label in (0, 2):
        unguided_null = draw(label, 0.0)
        for k in ("channels", "positions", "values", "lengths"):
            np.testing.assert_array_equal(unguided_null[k], null[k], err_msg=k)
    # Strong guidance: valid sequences, and not the unguided ones.
    guided, plain = draw(1, 4.0), draw(1, 1.0)
    assert not np.array_equal(guided["values"], plain["values"])
    for out in (guided, plain):
        for i, n in enumerate(out["lengths"].numpy()):
            rep.check_triples(
                *(out[k][i, :n].numpy() for k in ("channels", "positions", "values")), cfg
            )
    # Upsampling with a class and a scale keeps its context.
    image = np.asarray(np.random.default_rng(0).integers(0, 256, (3, 4, 3)), np.uint8)
    up = loaded.signatures["upsample"](
        image=tf.constant(image), seed=tf.constant(1, tf.int64), label=tf.constant(2),
        guidance=tf.constant(2.0),
    )  # fmt: skip
    assert int(up["lengths"][0]) >= int(up["context_length"]) > 0
    # log_prob: given a label, scored as the model scores it with that label (labels change
    # the figure), and -1 the default of the function on the loaded object.
    args = dict(zip(VALID_SEQUENCE, _log_prob_args(cfg, **VALID_SEQUENCE)))
    nats = {
        label: float(loaded.signatures["log_prob"](**args, label=tf.constant(label))["nats"])
        for label in (-1, 0, 1)
    }
    assert len(set(nats.values())) == 3, nats
    assert float(loaded.log_prob(*args.values())["nats"]) == nats[-1]
    # The library reads the names and checks guidance before any call.
    source = sampling.SavedModelSource(saved)
    assert source.label_names == names and source.null_label_trained
    samples = sampling.sample_task(
        source, num_samples=2, label=1, options=sampling.SampleOptions(guidance=0.0), seed=3
    )
    assert samples.labels.tolist() == [1, 1]
    with pytest.raises(UsageError, match="label=3: out of range"):
        sampling.sample_task(source, num_samples=1, label=3)
