"""The evaluation command on the shared trained run (the test config, 30 steps on records the Beam
job makes from real photos): bits per subpixel equal the training run's own evaluation of the
same checkpoint, their components sum to the total, JSON and TensorBoard outputs are written;
sample metrics run end to end (a stand-in feature network, the reference statistics cached and
recomputed); bad flags and bad input are one line each that names the flag or the file."""

import glob
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from dct_gen import evaluate, evaluation, metrics, photos, run_dir
from dct_gen import representation as rep
from dct_gen.errors import InputError, UsageError

COMPONENTS = ("channel", "position", "value")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A copy of the shared trained run, which these tests may write into."""
    model_dir = str(tmp_path / "run")
    shutil.copytree(trained_run.model_dir, model_dir)
    return model_dir


def small_extractor(name="test-convnet"):
    """A fixed random conv net standing in for Inception (16 x 16 images, 8 + 48 features)."""
    init = keras.initializers.GlorotUniform(seed=0)
    images = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, 4, "same", activation="relu", kernel_initializer=init)(images)
    pool = keras.layers.GlobalAveragePooling2D()(x)  # (b, 8)
    model = keras.Model(images, {"pool": pool, "spatial": x[..., :3]})  # (b, 4, 4, 3)
    return metrics.KerasFeatureExtractor(model, image_size=(16, 16), name=name)


def _eval_lines(model_dir):
    with open(os.path.join(model_dir, run_dir.EVAL_FILE)) as f:
        return [json.loads(line) for line in f if line.strip()]


def _tags(directory):
    tags = {}
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                a = tf.make_ndarray(value.tensor)
                if a.shape == () and a.dtype.kind == "f":  # scalars (not the picture)
                    tags[value.tag] = (event.step, float(a))
    return tags


def _main(capsys, *args):
    """evaluate.main's status and its stderr, which must be one error line or nothing."""
    status = evaluate.main(list(args))
    err = capsys.readouterr().err.strip()
    if status:
        assert err.startswith("dct_gen.evaluate: error: ") and "\n" not in err, err
    return status, err


def test_bits_per_subpixel_equal_the_training_runs_evaluation(run_copy, test_data_dir, capsys):
    assert evaluate.main([f"--model_dir={run_copy}", f"--data_dir={test_data_dir}"]) == 0
    with open(os.path.join(run_copy, evaluation.DEFAULT_OUT)) as f:
        written = json.load(f)
    got = written["likelihood"]
    # The split defaults to the one the run evaluated (eval.jsonl).
    assert (got["step"], got["split"], got["partial"]) == (30, "validation", False)
    assert got["checkpoint"].endswith(os.path.join("checkpoints", "ckpt-30"))
    # The training loop evaluated the same weights at step 30 with the same evaluator.
    want = _eval_lines(run_copy)[-1]
    assert (want["step"], want["split"]) == (30, "validation")
    names = [k for k in want if k not in ("step", "split", "partial", "seconds")]
    assert "chunk_1/value_bits_per_subpixel" in names  # sequences longer than one chunk
    for name in names:
        assert got[name] == pytest.approx(want[name], rel=1e-5), name
    assert got["sequences"] == 4
    total = sum(got[f"{c}_bits_per_subpixel"] for c in COMPONENTS)
    assert got["bits_per_subpixel"] == pytest.approx(total, rel=1e-9)
    chunks = sorted(int(k.split("/")[0][6:]) for k in got if k.endswith("/bits_per_subpixel"))
    for k in chunks:
        parts = sum(got[f"chunk_{k}/{c}_bits_per_subpixel"] for c in COMPONENTS)
        assert got[f"chunk_{k}/bits_per_subpixel"] == pytest.approx(parts, rel=1e-9)

    tags = _tags(os.path.join(run_copy, evaluation.SUMMARY_DIR, "validation"))
    for tag, name in (
        ("bits_per_subpixel", "bits_per_subpixel"),
        ("bits_per_subpixel/position", "position_bits_per_subpixel"),
        ("bits_per_subpixel/first_chunk", "chunk_0/bits_per_subpixel"),
    ):
        step, value = tags[tag]
        assert step == 30 and value == pytest.approx(got[name], rel=1e-6)
    printed = capsys.readouterr()
    assert "restored" in printed.out
    # Progress on stderr: chunks, sequences of the split's total (info.json), rate and ETA.
    assert "validation: " in printed.err and " of 4, " in printed.err and "ETA" in printed.err

    # An older checkpoint (no evaluation in eval.jsonl at step 20): other figures, which do not
    # depend on the batch size.
    older = {}
    for batch_size in (3, 4):
        out = os.path.join(run_copy, f"batch{batch_size}.json")
        args = [f"--model_dir={run_copy}", f"--data_dir={test_data_dir}", f"--out={out}"]
        args += ["--split", "validation", "--checkpoint", "20", f"--batch_size={batch_size}"]
        assert evaluate.main(args) == 0
        with open(out) as f:
            older[batch_size] = json.load(f)["likelihood"]
        assert older[batch_size]["batch_size"] == batch_size
    assert older[3]["step"] == older[4]["step"] == 20
    for name in names:
        assert older[3][name] == pytest.approx(older[4][name], rel=1e-5), name
    assert older[3]["bits_per_subpixel"] != pytest.approx(got["bits_per_subpixel"], rel=1e-6)


def test_load_names_what_is_missing(trained_run, test_configs, tmp_path):
    configs = test_configs()
    run = run_dir.load_run(trained_run.model_dir, log=lambda _: None)
    model, model_config, dct_config, train_config = run
    assert (dct_config, model_config, train_config) == (
        configs["dct_config"],
        configs["model_config"],
        configs["train_config"].with_label_dropout(None),  # settled when the run started
    )
    assert run.step == 30 and model.count_params() > 0
    older = run_dir.load_run(trained_run.model_dir, checkpoint=20, log=lambda _: None)
    assert older.step == 20 and older.checkpoint.endswith("ckpt-20")

    with pytest.raises(InputError, match="does not exist"):
        run_dir.load_run(str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="config.json does not exist"):
        run_dir.load_run(str(tmp_path))
    shutil.copy(os.path.join(trained_run.model_dir, run_dir.RUN_CONFIG_FILE), tmp_path)
    with pytest.raises(InputError, match="no checkpoint in .*checkpoints"):
        run_dir.load_run(str(tmp_path))
    with pytest.raises(InputError, match="no checkpoint 15"):
        run_dir.load_run(trained_run.model_dir, checkpoint=15)


def test_sample_metrics_end_to_end_with_a_stand_in_network(run_copy, test_data_dir, tmp_path):
    samples = str(tmp_path / "samples")
    photos.write_crops(samples, 10, seed=5, sides=(24, 40))
    out = str(tmp_path / "evaluation.json")
    lines = []
    common = dict(
        model_dir=run_copy,
        samples_dir=samples,
        num_samples=10,
        reference_data_dir=test_data_dir,
        num_reference=8,
        extractor=small_extractor(),
        out=out,
        log=lines.append,
    )
    result = evaluation.run_evaluation(**common)
    got = result["samples"]
    assert (got["num_samples"], got["num_reference"], got["k"], got["step"]) == (10, 8, 3, 30)
    assert got["fid"] > 0 and got["sfid"] > 0
    assert 0 <= got["precision"] <= 1 and 0 <= got["recall"] <= 1
    assert "likelihood" not in result and got["extractor"] == "test-convnet"
    assert got["feature_network"] == "test-convnet (not comparable with published FIDs)"
    assert got["inception_graph"] is None and got["inception_graph_md5"] is None
    assert any("[features: test-convnet (not comparable with published FIDs)]" in x for x in lines)
    with open(out) as f:
        assert json.load(f) == json.loads(json.dumps(result))
    cache = os.path.join(run_copy, evaluation.SUMMARY_DIR, "reference_train_8.npz")
    assert got["reference_cache"] == cache and os.path.exists(cache)
    tags = _tags(os.path.join(run_copy, evaluation.SUMMARY_DIR, "samples"))
    assert set(tags) == {"fid", "sfid", "precision", "recall"}
    assert tags["fid"] == (30, pytest.approx(got["fid"], rel=1e-6))

    # The reference statistics are the decoded training records' features (the first 8).
    stored, reference = metrics.load_statistics(cache)
    assert stored["num_images"] == 8 and stored["split"] == "train"
    decoded = list(metrics.dataset_images(test_data_dir, "train"))
    assert len(decoded) == 16 and all(max(im.shape[:2]) == 32 for im in decoded)
    direct = metrics.extract_features(decoded[:8], small_extractor(), log=None)
    np.testing.assert_allclose(reference.pool, direct.pool, rtol=1e-5, atol=1e-6)

    # A second call reuses them, with the same figures; another count recomputes them.
    again = evaluation.run_evaluation(**common)["samples"]
    assert any("reusing the statistics cached" in line for line in lines)
    assert again["fid"] == pytest.approx(got["fid"], rel=1e-9)
    lines.clear()
    fewer = evaluation.run_evaluation(**dict(common, num_reference=6, reference_cache=cache))
    assert fewer["samples"]["num_reference"] == 6
    assert any("num_images: 8 -> 6" in line and "recomputing" in line for line in lines)


def test_bad_flags_and_bad_input_are_one_line_each(run_copy, test_data_dir, tmp_path, capsys):
    missing = str(tmp_path / "missing")
    data = f"--data_dir={test_data_dir}"
    # Bad command lines: status 2.
    status, err = _main(capsys, data)
    assert status == 2 and "--model_dir is required" in err
    status, err = _main(capsys, f"--model_dir={run_copy}")
    assert status == 2 and "nothing to evaluate" in err and "--data_dir" in err
    status, err = _main(capsys, f"--model_dir={run_copy}", data, "--num_samples=0")
    assert status == 2 and "--num_samples" in err
    status, err = _main(capsys, f"--model_dir={run_copy}", data, "--spilt=test")
    assert status == 2 and "spilt" in err
    status, err = _main(capsys, f"--model_dir={run_copy}", data, "validation")
    assert status == 2 and "unexpected arguments: validation" in err

    # Bad input: status 1.
    status, err = _main(capsys, f"--model_dir={missing}", data)
    assert status == 1 and f"--model_dir={missing}: no such directory" in err
    status, err = _main(capsys, f"--model_dir={run_copy}", f"--data_dir={missing}")
    assert status == 1 and f"--data_dir={missing}: no such directory" in err
    status, err = _main(capsys, f"--model_dir={run_copy}", f"--data_dir={tmp_path}")
    assert status == 1 and f"--data_dir={tmp_path}: not a dataset directory" in err
    status, err = _main(capsys, f"--model_dir={run_copy}", data, "--split", "test")
    assert status == 1 and "--split=test" in err and "'test'" in err
    not_a_run = tmp_path / "not_a_run"
    not_a_run.mkdir()
    status, err = _main(capsys, f"--model_dir={not_a_run}", data)
    assert status == 1 and "config.json does not exist" in err
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    shutil.copy(os.path.join(run_copy, run_dir.RUN_CONFIG_FILE), untrained)
    status, err = _main(capsys, f"--model_dir={untrained}", data)
    assert status == 1 and "no checkpoint in" in err and str(untrained) in err
    status, err = _main(capsys, f"--model_dir={run_copy}", data, "--checkpoint=15")
    assert status == 1 and "no checkpoint 15" in err

    samples = str(tmp_path / "samples")
    photos.write_crops(samples, 4, seed=6)
    status, err = _main(capsys, f"--model_dir={run_copy}", f"--samples_dir={missing}", data)
    assert status == 1 and f"--samples_dir={missing}: no such directory" in err
    status, err = _main(capsys, f"--model_dir={run_copy}", f"--samples_dir={samples}")
    assert status == 2 and "--reference_data_dir" in err
    args = [f"--model_dir={run_copy}", f"--samples_dir={samples}"]
    args.append(f"--reference_data_dir={test_data_dir}")
    status, err = _main(capsys, *args)
    assert status == 1 and "holds 4 images, fewer than --num_samples=50000" in err
    status, err = _main(capsys, *args, "--num_samples=4", "--num_reference=17")
    assert status == 1 and "fewer than the 17 reference images" in err
    status, err = _main(capsys, *args, "--num_samples=4", "--reference_split=test")
    assert status == 1 and "'test'" in err
    weights = str(tmp_path / metrics.INCEPTION_WEIGHTS_FILE)
    status, err = _main(capsys, *args, "--num_samples=4", f"--inception_weights={weights}")
    assert status == 1 and f"--inception_weights {weights} does not exist" in err
    assert metrics.INCEPTION_WEIGHTS_URL in err
    status, err = _main(capsys, *args, "--generate", f"--inception_weights={weights}")
    assert status == 1 and f"--inception_weights {weights} does not exist" in err
    assert not os.path.exists(os.path.join(run_copy, evaluation.SUMMARY_DIR, "generated"))


def _stand_in_graph(path):
    """A GraphDef with the tensor names of the 2015 Inception graph: ExpandDims (the input, a
    placeholder here), pool_3 (n, 1, 1, 3): the mean colour of the image resized to 2 x 2, and
    mixed_6/conv (n, 2, 2, 9): that image three times over (the real one is 17 x 17 x 192; a
    small grid keeps sFID's covariances small)."""
    g = tf.Graph()
    with g.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [1, None, None, 3], name="ExpandDims")
        small = tf.raw_ops.ResizeBilinear(images=images, size=tf.constant([2, 2]), name="r")
        tf.raw_ops.Mean(input=small, axis=tf.constant([1, 2]), keep_dims=True, name="pool_3")
        tf.raw_ops.ConcatV2(values=[small] * 3, axis=tf.constant(3), name="mixed_6/conv")
    with open(path, "wb") as f:
        f.write(g.as_graph_def().SerializeToString())
    return str(path)


def _text_summaries(directory):
    texts = {}
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                a = tf.make_ndarray(value.tensor)
                if a.dtype.kind in "SO":
                    texts[value.tag] = (event.step, a.item().decode())
    return texts


def _graph_flag_case(test_configs, test_data_dir, tmp_path):
    model_dir = _random_run(tmp_path / "run", test_configs, checkpoint=False)
    graph = _stand_in_graph(tmp_path / "classify_image_graph_def.pb")
    samples = str(tmp_path / "samples")
    photos.write_crops(samples, 4, seed=6, sides=(24, 40))
    out = str(tmp_path / "evaluation.json")
    args = [f"--model_dir={model_dir}", f"--samples_dir={samples}", "--num_samples=4"]
    args += [f"--reference_data_dir={test_data_dir}", f"--out={out}", "--quiet"]
    return model_dir, graph, samples, out, args


def test_bad_inception_graph_flags_are_one_line_before_anything_runs(
    test_configs, test_data_dir, tmp_path, capsys
):
    model_dir, graph, samples, _, args = _graph_flag_case(test_configs, test_data_dir, tmp_path)
    missing = str(tmp_path / "nowhere.pb")
    status, err = _main(capsys, *args, f"--inception_graph={missing}")
    assert status == 1 and f"--inception_graph={missing}: no such file" in err
    assert "inception-2015-12-05.tgz" in err
    not_a_graph = os.path.join(samples, os.listdir(samples)[0])  # a PNG
    status, err = _main(capsys, *args, "--generate", f"--inception_graph={not_a_graph}")
    assert status == 1 and f"--inception_graph={not_a_graph}: not a TensorFlow GraphDef" in err
    assert not os.path.exists(os.path.join(model_dir, evaluation.SUMMARY_DIR, "generated"))
    status, err = _main(capsys, *args, f"--inception_graph={graph}", "--inception_weights=w.h5")
    assert status == 2 and "not both" in err


@pytest.mark.slow
def test_inception_graph_flag_feeds_the_graph_and_labels_every_report(
    test_configs, test_data_dir, tmp_path, capsys
):
    """--inception_graph: the sample metrics come from the graph (the figures equal those of
    its features computed directly), and the JSON, the printed line and TensorBoard say so,
    with the file's md5."""
    import hashlib

    model_dir, graph, samples, out, args = _graph_flag_case(test_configs, test_data_dir, tmp_path)
    with open(graph, "rb") as f:
        md5 = hashlib.md5(f.read()).hexdigest()
    assert evaluate.main([*args, f"--inception_graph={graph}"]) == 0
    printed = capsys.readouterr().out
    with open(out) as f:
        got = json.load(f)["samples"]
    assert got["feature_network"] == "inception_2015_12_05_graph"
    assert (got["inception_graph"], got["inception_graph_md5"]) == (graph, md5)
    assert got["extractor"] == f"inception_2015_12_05_graph:md5={md5}"
    assert f"[features: inception_2015_12_05_graph, md5 {md5}]" in printed
    texts = _text_summaries(os.path.join(model_dir, evaluation.SUMMARY_DIR, "samples"))
    assert texts == {"feature_network": (0, f"inception_2015_12_05_graph, md5 {md5}")}

    # Both sides went through the graph: the cached reference statistics (3 pool features, not
    # Keras' 2048) and the samples' features computed here give the reported figures.
    stored, reference = metrics.load_statistics(got["reference_cache"])
    assert stored["extractor"] == got["extractor"] and reference.pool.shape == (4, 3)
    extractor = metrics.inception_graph(graph)
    files = metrics.image_files(samples)
    sampled = metrics.Statistics.from_features(
        metrics.extract_features(metrics.read_images(files), extractor, log=None)
    )
    assert sampled.spatial_moments.mean.shape == (2 * 2 * 7,)
    fid = metrics.frechet_distance(sampled.pool_moments, reference.pool_moments)
    sfid = metrics.frechet_distance(sampled.spatial_moments, reference.spatial_moments)
    assert (got["fid"], got["sfid"]) == (pytest.approx(fid), pytest.approx(sfid))


def test_generated_samples_feed_the_sample_metrics(run_copy, test_data_dir, tmp_path):
    run = run_dir.load_run(run_copy, log=lambda _: None)
    out = str(tmp_path / "generated")
    evaluation.generate_samples(run, num_samples=5, out_dir=out, max_chunks=3, log=None)
    files = sorted(os.listdir(out))
    assert files == [f"generated_{i:06d}.png" for i in range(5)]
    result = evaluation.run_evaluation(
        model_dir=run_copy,
        samples_dir=out,
        num_samples=5,
        reference_data_dir=test_data_dir,
        num_reference=5,
        extractor=small_extractor(),
        out=str(tmp_path / "evaluation.json"),
        log=lambda _: None,
    )
    assert result["samples"]["num_samples"] == 5 and np.isfinite(result["samples"]["fid"])


# ----------------------------------------------------------------------------------------------
# --images: anyone's photos, beside JPEG and JPEG XL.

IMAGE_PHOTOS = ("chelsea.png", "coffee.png")
B8 = "dct_config.block_size = 8"  # the test config at JPEG's block size


def _photo_dir(directory, names=IMAGE_PHOTOS, junk=True):
    """A folder of bundled photos (and a file that is not an image, to be skipped)."""
    os.makedirs(directory, exist_ok=True)
    by_name = {os.path.basename(p): p for p in photos.color_photo_paths()}
    for name in names:
        shutil.copy(by_name[name], os.path.join(directory, name))
    if junk:
        with open(os.path.join(directory, "notes.png"), "wb") as f:
            f.write(b"not an image")
    return str(directory)


def _random_run(model_dir, test_configs, *bindings, checkpoint=True):
    """A run directory of the test config (with bindings) holding untrained weights (ReZero
    scalars non-zero, so every block acts): exact likelihoods and the baselines need no
    training. Without `checkpoint`, config.json alone."""
    from testing_helpers import build

    configs = test_configs(*bindings)
    os.makedirs(model_dir)
    run_dir.save_run_config(model_dir, configs["model_config"], configs["train_config"])
    if checkpoint:
        model = build(configs["model_config"])
        prefix = os.path.join(model_dir, run_dir.CHECKPOINT_DIR, "ckpt")
        run_dir.model_checkpoint(model).save(prefix)
    return str(model_dir)


def _model_nats(run, seq):
    """An independent log-likelihood of one sequence, in nats per component: the windows built
    in numpy (`testing_helpers.real_window`, the codec's own DCT image of each prefix), the
    Keras model called eagerly, and the cross-entropies taken from its logits here."""
    from testing_helpers import real_window, stack_windows

    from dct_gen import model as model_lib

    cfg, tc = run.model_config.dct, run.train_config
    assert tc.target_part == "all"
    starts = range(0, len(seq) + 1, tc.chunk_size)  # the stop token ends the sequence
    batch = stack_windows([real_window(seq, cfg, s, tc.chunk_size, tc.overlap) for s in starts])
    logits = model_lib.forward(run.model, batch)
    targets = {
        "channel": batch["channels"],
        "position": batch["positions"],
        "value": batch["values"] + cfg.clip,
    }
    weight = {"channel": batch["loss_mask"]}
    weight["position"] = weight["value"] = batch["loss_mask"] * (
        batch["channels"] != cfg.stop_token
    )
    out = {}
    for c in COMPONENTS:
        z = np.asarray(logits[c], np.float64)
        log_softmax = z - z.max(-1, keepdims=True)
        log_softmax -= np.log(np.exp(log_softmax).sum(-1, keepdims=True))
        picked = np.take_along_axis(log_softmax, targets[c][..., None], -1)[..., 0]
        out[c] = float(-(picked * weight[c]).sum())
    return out


def test_images_bits_equal_log_prob_and_the_baselines_those_of_the_same_coefficients(
    test_configs, tmp_path, capsys
):
    """--images on bundled photos (block size 8): each photo's bits equal an independent
    log-likelihood of the sequence the codec makes of it; the JPEG column is jpeg_baseline's
    optimized scan of those coefficients, the JXL column the size of imagecodecs' recompression
    of that JPEG file; a file that is not an image is skipped and listed; a table on stdout,
    progress with a rate and an ETA on stderr; a directory is taken as its files."""
    from dct_gen import demo, jpeg_baseline
    from dct_gen import images as images_lib
    from dct_gen import representation as rep

    model_dir = _random_run(tmp_path / "run", test_configs, B8)
    folder = _photo_dir(tmp_path / "photos")
    assert evaluation.image_files(folder) == evaluation.image_files(f"{folder}/*")
    out = str(tmp_path / "images.json")
    assert evaluate.main([f"--model_dir={model_dir}", f"--images={folder}/*", f"--out={out}"]) == 0
    captured = capsys.readouterr()
    with open(out) as f:
        written = json.load(f)
    assert sorted(written) == ["images", "model_dir"]
    got = written["images"]
    assert (got["step"], got["num_images"], got["num_skipped"]) == (1, 2, 1)
    assert got["pattern"] == f"{folder}/*" and got["target_part"] == "all"
    rows = got["per_image"]
    assert [os.path.basename(r["file"]) for r in rows] == list(IMAGE_PHOTOS)
    (skipped,) = got["skipped"]
    assert skipped["file"].endswith("notes.png") and skipped["reason"] == "not_an_image"
    try:
        import imagecodecs
    except ImportError:
        imagecodecs = None

    run = run_dir.load_run(model_dir, log=lambda _: None)
    cfg = run.model_config.dct
    for row in rows:
        seq = rep.encode(images_lib.read_image(row["file"]), cfg)
        assert (row["height"], row["width"], row["triples"]) == (seq.height, seq.width, len(seq))
        assert max(row["height"], row["width"]) == cfg.resolution
        subpixels = 3 * seq.height * seq.width
        want = _model_nats(run, seq)
        for c in COMPONENTS:
            bits = want[c] / np.log(2) / subpixels
            assert row[f"{c}_bits_per_subpixel"] == pytest.approx(bits, rel=1e-4), c
        total = sum(want.values()) / np.log(2)
        assert row["bits"] == pytest.approx(total, rel=1e-4)
        assert row["bits_per_subpixel"] == pytest.approx(total / subpixels, rel=1e-4)
        jpeg = jpeg_baseline.jpeg_bits(seq, cfg, return_bytes=True)
        assert row["jpeg_bits_per_subpixel"] == jpeg["bits_per_subpixel"]
        assert (row["jpeg_bits"], row["jpeg_file_bits"]) == (
            jpeg["entropy_bits"],
            jpeg["file_bits"],
        )
        if imagecodecs is None:
            assert row["jxl_bits"] is None
        else:
            assert row["jxl_bits"] == 8 * len(imagecodecs.jpegxl_encode_jpeg(jpeg["jpeg"]))
            assert row["jxl_bits_per_subpixel"] == row["jxl_bits"] / subpixels
    mean = lambda key: np.mean([r[key] for r in rows])  # noqa: E731
    assert got["bits_per_subpixel"] == pytest.approx(mean("bits_per_subpixel"))
    pooled = sum(r["bits"] for r in rows) / sum(r["subpixels"] for r in rows)
    assert got["bits_per_subpixel_pooled"] == pytest.approx(pooled)
    assert got["jpeg_bits_per_subpixel"] == pytest.approx(mean("jpeg_bits_per_subpixel"))
    jpeg_mean = mean("jpeg_bits_per_subpixel")
    assert got["saving_vs_jpeg"] == pytest.approx(1 - got["bits_per_subpixel"] / jpeg_mean)
    assert got["baselines"]["jpeg"]["available"]
    assert got["baselines"]["jxl"]["available"] == (imagecodecs is not None)
    if imagecodecs is None:
        assert "imagecodecs" in got["baselines"]["jxl"]["reason"]
    else:
        jxl_mean = mean("jxl_bits_per_subpixel")
        assert got["saving_vs_jxl"] == pytest.approx(1 - got["bits_per_subpixel"] / jxl_mean)

    table = captured.out
    for name, row in zip(IMAGE_PHOTOS, rows):
        line = next(t for t in table.splitlines() if t.startswith(name + " "))
        assert f"{row['bits_per_subpixel']:.4f}" in line
        assert f"{row['jpeg_bits_per_subpixel']:.4f}" in line
        if imagecodecs is not None:
            assert f"{row['jxl_bits_per_subpixel']:.4f}" in line
    assert "mean of 2" in table and "pooled" in table and "skipped " in table
    assert "chunks/s" in captured.err and "ETA" in captured.err
    # The demo's headline reads the same section.
    line = demo.headline({"images": got})
    assert f"{got['jpeg_bits_per_subpixel']:.4f}" in line
    assert f"{got['bits_per_subpixel']:.4f}" in line


def test_baselines_say_why_a_column_is_missing(test_configs):
    """JPEG's column needs block size 8 and whole images; JPEG XL's also needs the JPEG."""
    configs = test_configs()
    cfg = configs["dct_config"]  # block size 4
    notes = evaluation.baselines(cfg)
    assert not notes["jpeg"]["available"] and "block size is 4" in notes["jpeg"]["reason"]
    assert not notes["jxl"]["available"] and "block size is 4" in notes["jxl"]["reason"]
    b8 = test_configs(B8)["dct_config"]
    notes = evaluation.baselines(b8, target_part="chroma")
    assert not notes["jpeg"]["available"] and "target_part='chroma'" in notes["jpeg"]["reason"]
    assert evaluation.baselines(b8)["jpeg"] == {"available": True, "reason": None}


@pytest.mark.slow
def test_the_demo_and_the_command_write_one_schema(run_copy, test_data_dir, tmp_path, monkeypatch):
    """The demo's evaluation step writes what `python -m dct_gen.evaluate` writes for the same
    trained run, split and photos: the same sections, fields and figures. The photos are the
    files the split was built from, so their bits equal the split's held-out evaluation."""
    from dct_gen import demo

    out_dir = os.path.dirname(run_copy)  # the demo's layout: OUT/run, OUT/data, OUT/images/test
    data = os.path.join(out_dir, "data")
    os.symlink(test_data_dir, data)
    folder = os.path.join(out_dir, "images", "test")
    # The file the split "one" was made from (conftest's TEST_SPLITS: one crop, seed 5).
    photos.write_crops(folder, 1, seed=5)
    monkeypatch.setattr(demo, "HELD_OUT_SPLIT", "one")
    assert demo.step_evaluate(out_dir) == [os.path.join(out_dir, "evaluation.json")]
    with open(os.path.join(out_dir, "evaluation.json")) as f:
        from_demo = json.load(f)
    out = str(tmp_path / "command.json")
    args = [f"--model_dir={run_copy}", f"--data_dir={data}", "--split=one", f"--images={folder}"]
    assert evaluate.main([*args, f"--out={out}"]) == 0
    with open(out) as f:
        from_command = json.load(f)

    def shape(value):
        if isinstance(value, dict):
            return {k: shape(v) for k, v in value.items()}
        if isinstance(value, list):
            return [shape(v) for v in value]
        return type(value).__name__

    assert sorted(from_demo) == ["images", "likelihood", "model_dir"]
    assert shape(from_demo) == shape(from_command)
    for section in ("likelihood", "images"):
        from_demo[section].pop("seconds", None)
        from_command[section].pop("seconds", None)
    assert from_demo == from_command
    images, likelihood = from_demo["images"], from_demo["likelihood"]
    assert (images["num_images"], likelihood["sequences"]) == (1, 1)
    for name in ("bits_per_subpixel", *(f"{c}_bits_per_subpixel" for c in COMPONENTS)):
        assert images[name] == pytest.approx(likelihood[name], rel=1e-5), name


def test_images_bad_input_is_one_line(test_configs, tmp_path, capsys):
    """No file, an empty folder, no image among the files: one line naming the flag or the
    file, before the model loads."""
    model_dir = _random_run(tmp_path / "run", test_configs, checkpoint=False)
    run = f"--model_dir={model_dir}"
    status, err = _main(capsys, run, f"--images={tmp_path}/none*.png")
    assert status == 1 and f"--images={tmp_path}/none*.png: matches no files" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    status, err = _main(capsys, run, f"--images={empty}")
    assert status == 1 and f"--images={empty}: the directory holds no files" in err
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.jpg").write_bytes(b"")
    (junk / "b.png").write_bytes(b"not an image")
    # Refused before the model loads: this run has no checkpoint, which would be named then.
    status, err = _main(capsys, run, f"--images={junk}/*")
    assert status == 1 and f"no image to score: {junk}/a.jpg: " in err
    assert "(and 1 other files)" in err
    status, err = _main(capsys, run)
    assert status == 2 and "nothing to evaluate" in err and "--images" in err
    assert not os.path.exists(os.path.join(model_dir, evaluation.DEFAULT_OUT))


def test_evaluation_does_not_write_into_a_run_that_a_training_holds(
    test_configs, test_data_dir, tmp_path, capsys
):
    """While another live process holds the run's lock, an evaluation that would write into the
    run (its default --out, TensorBoard scalars) stops with one line naming the holder, before
    anything loads; one that writes elsewhere may run."""
    import subprocess
    import sys

    model_dir = _random_run(tmp_path / "run", test_configs, checkpoint=False)
    folder = _photo_dir(tmp_path / "photos", IMAGE_PHOTOS[:1], junk=False)
    holder = (
        "import sys, time\nfrom dct_gen import run_dir\n"
        "with run_dir.RunLock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n"
    )
    env = dict(os.environ, PYTHONPATH=ROOT)
    child = subprocess.Popen(
        [sys.executable, "-c", holder, model_dir], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout.readline().strip() == "held"
        run, images = f"--model_dir={model_dir}", f"--images={folder}"
        status, err = _main(capsys, run, images)
        assert status == 1 and f"pid {child.pid}" in err
        assert f"evaluation would write {evaluation.DEFAULT_OUT} there" in err
        elsewhere = str(tmp_path / "out.json")
        status, err = _main(capsys, run, f"--out={elsewhere}", f"--data_dir={test_data_dir}")
        assert status == 1 and f"pid {child.pid}" in err
        assert f"TensorBoard scalars under {evaluation.SUMMARY_DIR}/" in err
        inside = os.path.join(model_dir, "sub", "x.json")
        status, err = _main(capsys, run, images, f"--out={inside}")
        assert status == 1 and "evaluation would write sub/x.json there" in err
        # Image files scored into a JSON elsewhere write nothing into the run: allowed.
        evaluation.check_unlocked(model_dir, out=elsewhere, summaries=False)
        assert sorted(os.listdir(model_dir)) == [run_dir.LOCK_FILE, run_dir.RUN_CONFIG_FILE]
    finally:
        child.kill()
        child.wait()


def test_score_sequences_refuses_a_sequence_the_codec_cannot_write():
    """The Python log_prob path names the sequence, the triple and the rule, as
    representation.check_sequence does, before the model is touched."""
    from types import SimpleNamespace

    cfg = rep.DCTConfig(block_size=8, quality=75, resolution=32, clip=200)
    good = rep.encode(np.full((32, 32, 3), 120, np.uint8), cfg)
    values = good.values.copy()
    values[0] = 0
    bad = rep.DCTSequence(good.channels, good.positions, values, good.height, good.width)
    with pytest.raises(ValueError) as want:
        rep.check_sequence(bad.channels, bad.positions, bad.values, cfg, bad.height, bad.width)
    run = SimpleNamespace(model_config=SimpleNamespace(dct=cfg))  # nothing else is reached
    with pytest.raises(InputError) as e:
        evaluation.score_sequences(run, [good, bad])
    assert str(e.value) == f"sequence 1: {want.value}"


# --images --label: a class-conditional model scores every image given a class.


def _conditional_random_run(model_dir, test_configs, label_dropout):
    model_dir = _random_run(
        model_dir,
        test_configs,
        "model_config.num_classes = 3",
        f"train_config.label_dropout = {label_dropout}",
    )
    path = os.path.join(model_dir, run_dir.RUN_CONFIG_FILE)
    with open(path) as f:
        raw = json.load(f)
    raw["label_names"] = ["sky", "sea", "sand"]
    with open(path, "w") as f:
        json.dump(raw, f)
    return model_dir


def test_images_are_scored_given_a_label_by_name_or_index(test_configs, tmp_path, capsys):
    model_dir = _conditional_random_run(tmp_path / "run", test_configs, 0.1)
    folder = _photo_dir(tmp_path / "photos", names=("chelsea.png",), junk=False)
    sections = {}
    for label in (None, "sea", "2"):
        out = tmp_path / f"{label}.json"
        extra = [] if label is None else [f"--label={label}"]
        args = [f"--model_dir={model_dir}", f"--images={folder}", f"--out={out}", "--quiet"]
        status, err = _main(capsys, *args, *extra)
        assert status == 0, err
        with open(out) as f:
            sections[label] = json.load(f)["images"]
    assert [sections[k]["label"] for k in (None, "sea", "2")] == [-1, 1, 2]
    bits = {k: v["bits_per_subpixel"] for k, v in sections.items()}
    assert len(set(bits.values())) == 3, bits  # each class (and none) gives other bits
    # The library path, one label per sequence, agrees with the command's.
    run = run_dir.load_run(model_dir, log=lambda _: None)
    encoded, _, _ = evaluation.encode_images(folder, run.model_config.dct, log=None)
    seqs = [e["sequence"] for e in encoded] * 2
    nats = [s["nats"] for s in evaluation.score_sequences(run, seqs, labels=[1, 2])]
    subpixels = rep.num_subpixels(seqs[0].height, seqs[0].width)
    assert nats[0] / subpixels / np.log(2) == pytest.approx(bits["sea"], rel=1e-5)
    assert nats[1] / subpixels / np.log(2) == pytest.approx(bits["2"], rel=1e-5)


def test_bad_labels_for_images_are_named(test_configs, tmp_path, capsys):
    trained = _conditional_random_run(tmp_path / "trained", test_configs, 0.1)
    untrained = _conditional_random_run(tmp_path / "untrained", test_configs, 0)
    folder = _photo_dir(tmp_path / "photos", names=("chelsea.png",), junk=False)
    status, err = _main(capsys, f"--model_dir={trained}", f"--images={folder}", "--label=cat")
    assert (
        status == 2 and err.startswith("dct_gen.evaluate: error: --label=cat: ") and "sand" in err
    )
    status, err = _main(capsys, f"--model_dir={trained}", f"--data_dir={tmp_path}", "--label=1")
    assert status == 2 and "--label applies to --images only" in err
    status, err = _main(capsys, f"--model_dir={untrained}", f"--images={folder}")
    assert status == 2 and "--label is not given: " in err and "label_dropout = 0" in err
    assert "0..2: sky, sea, sand" in err
    run = run_dir.load_run(untrained, log=lambda _: None)
    encoded, _, _ = evaluation.encode_images(folder, run.model_config.dct, log=None)
    with pytest.raises(UsageError, match="label=-1: "):
        evaluation.score_sequences(run, [encoded[0]["sequence"]])
