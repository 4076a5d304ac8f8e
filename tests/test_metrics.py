"""Sample metrics with known answers: the Frechet distance against closed forms and scipy's
matrix square root, precision and recall against brute force and hand-checked cases, the
Inception-v3 wiring (2048 pool and 2023 sFID features, weights loaded from files) without the
real weights, the path from images through a small stand-in network to the metrics, the cache of
reference statistics, and the error that says how to get the weights."""

import json
import os

import h5py
import keras
import numpy as np
import pytest
import scipy.linalg

from dct_gen import metrics
from dct_gen.metrics import Moments


def small_extractor(seed: int = 0, name: str | None = "test-convnet"):
    """A random two-layer conv net standing in for Inception: 16 pool and 192 spatial
    features from 16 x 16 images."""
    init = lambda i: keras.initializers.GlorotUniform(seed=seed + i)
    images = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, 2, "same", activation="relu", kernel_initializer=init(0))(images)
    spatial = x[..., :3]  # (b, 8, 8, 3)
    x = keras.layers.Conv2D(16, 3, 2, "same", activation="relu", kernel_initializer=init(1))(x)
    pool = keras.layers.GlobalAveragePooling2D()(x)  # (b, 16)
    model = keras.Model(images, {"pool": pool, "spatial": spatial})
    return metrics.KerasFeatureExtractor(model, image_size=(16, 16), name=name)


def random_spd(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / d


def random_rotation(rng, d):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


# ----------------------------------------------------------------------------------------------
# Frechet distance.


def closed_form(mu1, mu2, var1, var2):
    """The distance for commuting covariances with eigenvalues var1, var2 in a shared basis."""
    return float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2))


def test_frechet_distance_matches_the_closed_form_for_diagonal_and_commuting_covariances():
    rng = np.random.default_rng(0)
    d = 12
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    var1, var2 = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    var1[:3] = 0.0  # singular: three directions without variance
    want = closed_form(mu1, mu2, var1, var2)
    diagonal = metrics.frechet_distance(
        Moments(mu1, np.diag(var1), 100), Moments(mu2, np.diag(var2), 100)
    )
    assert diagonal == pytest.approx(want, rel=1e-10)
    q = random_rotation(rng, d)
    rotated = metrics.frechet_distance(
        Moments(q @ mu1, q @ np.diag(var1) @ q.T, 100),
        Moments(q @ mu2, q @ np.diag(var2) @ q.T, 100),
    )
    assert rotated == pytest.approx(want, rel=1e-8)


def test_trace_of_the_square_root_matches_scipy_sqrtm():
    rng = np.random.default_rng(1)
    for d in (2, 7, 64):
        s1, s2 = random_spd(rng, d), random_spd(rng, d)
        want = np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
        assert metrics.trace_sqrt_product(s1, s2) == pytest.approx(want, rel=1e-9)
        assert metrics.trace_sqrt_product(s2, s1) == pytest.approx(want, rel=1e-9)


def test_fid_of_a_set_against_itself_is_zero_even_with_singular_covariance():
    rng = np.random.default_rng(2)
    for n, d in ((500, 32), (20, 64)):  # the second: rank 19 covariance in 64 dimensions
        x = rng.normal(size=(n, d)).astype(np.float32) * rng.uniform(0.1, 2.0, d)
        assert metrics.fid_from_features(x, x) == pytest.approx(0.0, abs=1e-8)
        s = metrics.feature_moments(x)
        np.testing.assert_allclose(s.cov, np.cov(x.astype(np.float64), rowvar=False), atol=1e-10)
    # A feature set of rank 3 in 16 dimensions against another such set: agrees with the
    # moments-level computation on the same (singular) covariances, and is finite.
    a = rng.normal(size=(400, 3)) @ rng.normal(size=(3, 16))
    b = rng.normal(size=(400, 3)) @ rng.normal(size=(3, 16)) + 0.5
    value = metrics.fid_from_features(a, b)
    assert np.isfinite(value) and value > 0


def test_fid_of_samples_from_two_gaussians_approaches_the_closed_form():
    rng = np.random.default_rng(3)
    n, d = 200_000, 4
    mu1, mu2 = np.array([0.0, 1.0, 0.0, -1.0]), np.array([0.5, 1.0, -0.5, 0.0])
    var1, var2 = np.array([1.0, 2.0, 0.5, 1.0]), np.array([0.5, 2.0, 1.0, 3.0])
    q = random_rotation(rng, d)  # correlated features: the shared basis is rotated
    x = (rng.normal(size=(n, d)) * np.sqrt(var1) + mu1) @ q.T
    y = (rng.normal(size=(n, d)) * np.sqrt(var2) + mu2) @ q.T
    want = closed_form(mu1, mu2, var1, var2)
    assert metrics.fid_from_features(x.astype(np.float32), y.astype(np.float32)) == pytest.approx(
        want, abs=0.03
    )


def test_frechet_distance_refuses_mismatched_sizes():
    a = Moments(np.zeros(3), np.eye(3), 10)
    b = Moments(np.zeros(4), np.eye(4), 10)
    with pytest.raises(ValueError, match="feature sizes differ"):
        metrics.frechet_distance(a, b)


# ----------------------------------------------------------------------------------------------
# Precision and recall.


def test_knn_radii_match_brute_force_in_any_batching():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(57, 5)).astype(np.float32)
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    for k in (1, 3):
        want = np.sort(d, axis=1)[:, k]  # column 0 is the vector itself
        for batch_size in (8, 1024):
            np.testing.assert_allclose(metrics.knn_radii(x, k, batch_size), want, rtol=1e-4)


def test_precision_and_recall_identical_and_disjoint_sets():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, 16)).astype(np.float32)
    assert metrics.precision_recall(x, x) == (1.0, 1.0)
    assert metrics.precision_recall(x, x + 100.0) == (0.0, 0.0)


def test_precision_and_recall_by_hand():
    """One dimension, k = 1 (radius: the distance to the nearest other point).

    Reference {0, 1, 3}: radii 1, 1, 2. Samples {0.5, 2.5, 6, -2, -1.5}: radii 2, 2, 3.5, 0.5,
    0.5. Precision: 0.5 (0.5 from 0, radius 1) and 2.5 (0.5 from 3, radius 2) are inside; 6
    (3 from 3), -2 (2 from 0) and -1.5 (1.5 from 0) are not: 2/5. Recall: 0 and 1 are 0.5 from
    the sample 0.5 (radius 2), 3 is 0.5 from 2.5 (radius 2): 3/3.

    Samples {-2, -1.5, 3.5, 5.5}: radii 0.5, 0.5, 2, 2. Precision: only 3.5 (0.5 from 3): 1/4.
    Recall: only 3 (0.5 from 3.5); 0 is 1.5 from -1.5 (radius 0.5), 1 is 2.5 from 3.5 and from
    -1.5: 1/3.
    """
    reference = np.array([[0.0], [1.0], [3.0]], np.float32)
    samples = np.array([[0.5], [2.5], [6.0], [-2.0], [-1.5]], np.float32)
    np.testing.assert_allclose(metrics.knn_radii(reference, 1), [1, 1, 2], rtol=1e-6)
    np.testing.assert_allclose(metrics.knn_radii(samples, 1), [2, 2, 3.5, 0.5, 0.5], rtol=1e-6)
    precision, recall = metrics.precision_recall(reference, samples, k=1)
    assert (precision, recall) == (pytest.approx(2 / 5), pytest.approx(1.0))
    samples = np.array([[-2.0], [-1.5], [3.5], [5.5]], np.float32)
    np.testing.assert_allclose(metrics.knn_radii(samples, 1), [0.5, 0.5, 2, 2], rtol=1e-6)
    precision, recall = metrics.precision_recall(reference, samples, k=1)
    assert (precision, recall) == (pytest.approx(1 / 4), pytest.approx(1 / 3))


def test_precision_recall_needs_more_vectors_than_k():
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match="k=3"):
        metrics.precision_recall(x, x, k=3)


# ----------------------------------------------------------------------------------------------
# Feature extractors.


def _images(seed=6):
    rng = np.random.default_rng(seed)
    return [
        rng.integers(0, 256, (40, 70, 3), np.uint8),
        rng.integers(0, 256, (64, 64, 3), np.uint8),
    ]


def test_inception_wiring_gives_2048_pool_and_2023_sfid_features():
    """Random weights (the real ones are not needed): the feature sizes and the sFID tensor's
    place in the network."""
    keras.utils.set_random_seed(0)
    extractor = metrics.inception_v3(random_weights=True)
    assert extractor.image_size == (299, 299) and extractor.name is None
    # Reports say what this is: not the graph published FIDs use.
    assert metrics.feature_network(extractor) == {
        "feature_network": "keras_inception_v3 (not comparable with published FIDs)",
        "inception_graph": None,
        "inception_graph_md5": None,
    }
    images = _images()
    features = metrics.extract_features(images, extractor, batch_size=2, log=None)
    assert features.pool.shape == (2, 2048) and features.spatial.shape == (2, 17 * 17 * 7)
    assert features.spatial.shape[1] == 2023

    # The spatial features: the first 7 channels, flattened (row, column, channel), of the ReLU
    # after the batch norm after the 1x1 convolution (192 filters) that reads mixed5 and feeds
    # the mixed6 concatenation (mixed_6/conv of the TF graph).
    base_layers = {layer.name: layer for layer in extractor.model.layers}
    branch = base_layers["mixed6"]._inbound_nodes[0].input_tensors[0]
    relu = branch._keras_history.operation
    bn = relu._inbound_nodes[0].input_tensors[0]._keras_history.operation
    conv = bn._inbound_nodes[0].input_tensors[0]._keras_history.operation
    source = conv._inbound_nodes[0].input_tensors[0]._keras_history.operation
    assert isinstance(relu, keras.layers.Activation) and relu.get_config()["activation"] == "relu"
    assert isinstance(bn, keras.layers.BatchNormalization)
    assert isinstance(conv, keras.layers.Conv2D)
    assert conv.filters == 192 and tuple(conv.kernel_size) == (1, 1)
    assert source.name == "mixed5" and tuple(branch.shape[1:]) == (17, 17, 192)
    probe = keras.Model(extractor.model.input, branch)
    x = metrics._resize(images, (299, 299)) / 127.5 - 1.0
    np.testing.assert_allclose(
        features.spatial, np.asarray(probe(x))[..., :7].reshape(2, -1), rtol=1e-4, atol=1e-5
    )


def write_legacy_h5_weights(path: str, model) -> None:
    """Writes a model's weights in the legacy Keras HDF5 layout that Keras' downloaded
    Inception-v3 files use: the root lists the layer names; one group per layer lists its
    weights' names (trainable first, as that format orders them) and holds one dataset each."""

    def names(values):
        return np.array([v.encode("utf8") for v in values])

    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = names([layer.name for layer in model.layers])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = keras.__version__.encode("utf8")
        for layer in model.layers:
            group = f.create_group(layer.name)
            weights = list(layer.trainable_weights) + list(layer.non_trainable_weights)
            group.attrs["weight_names"] = names([w.path for w in weights])
            for w in weights:
                group.create_dataset(w.path, data=np.asarray(w.numpy()))


@pytest.mark.slow
def test_inception_weights_load_from_a_legacy_h5_file(tmp_path):
    """The format Keras downloads (legacy .h5, notop): saved from a randomly initialised
    network, loaded into the two-output model, the same features come out."""
    keras.utils.set_random_seed(1)
    extractor = metrics.inception_v3(random_weights=True)
    images = _images()
    want = metrics.extract_features(images, extractor, batch_size=2, log=None)
    base_layers = {layer.name: layer for layer in extractor.model.layers}
    base = keras.Model(extractor.model.input, base_layers["mixed10"].output)
    path = str(tmp_path / metrics.INCEPTION_WEIGHTS_FILE)
    write_legacy_h5_weights(path, base)
    loaded = metrics.inception_v3(path)
    assert loaded.name.startswith("keras_inception_v3:sha256=")
    got = metrics.extract_features(images, loaded, batch_size=2, log=None)
    np.testing.assert_allclose(got.pool, want.pool, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.spatial, want.spatial, rtol=1e-5, atol=1e-6)

    # The full network's file (with the classifier) loads too: its convolutions are used.
    full = keras.applications.InceptionV3(include_top=True, weights=None)
    full_path = str(tmp_path / "inception_v3_full.h5")
    write_legacy_h5_weights(full_path, full)
    from_full = metrics.inception_v3(full_path)
    pool = keras.layers.GlobalAveragePooling2D()(full.get_layer("mixed10").output)
    reference = keras.Model(full.input, pool)
    x = metrics._resize(images, (299, 299)) / 127.5 - 1.0
    got = metrics.extract_features(images, from_full, batch_size=2, log=None)
    np.testing.assert_allclose(got.pool, np.asarray(reference(x)), rtol=1e-4, atol=1e-5)


def test_missing_weights_say_how_to_get_them(tmp_path, monkeypatch):
    missing = str(tmp_path / "nowhere.h5")
    with pytest.raises(metrics.InceptionWeightsError) as info:
        metrics.inception_v3(missing)
    message = str(info.value)
    for part in ("--inception_weights", missing, metrics.INCEPTION_WEIGHTS_URL, "does not exist"):
        assert part in message

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: no network")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(metrics.InceptionWeightsError) as info:
        metrics.inception_v3()
    message = str(info.value)
    assert "download failed (URL fetch failure" in message
    assert "--inception_weights" in message and metrics.INCEPTION_WEIGHTS_FILE in message
    with pytest.raises(metrics.InceptionWeightsError, match="no --inception_weights given"):
        metrics.inception_weights_path(None, download=False)

    not_weights = tmp_path / "not_weights.h5"
    with h5py.File(not_weights, "w") as f:
        f.attrs["layer_names"] = [b"dense"]
    with pytest.raises(metrics.InceptionWeightsError, match="does not hold Inception-v3 weights"):
        metrics.inception_v3(str(not_weights))


# ----------------------------------------------------------------------------------------------
# Images -> stand-in features -> metrics.


def _crops(photos, count, side, seed):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        image = photos[i % len(photos)]
        y = rng.integers(0, image.shape[0] - side)
        x = rng.integers(0, image.shape[1] - side)
        out.append(image[y : y + side, x : x + side])
    return out


def test_images_through_a_stand_in_extractor_to_the_metrics(color_photos):
    photos = list(color_photos.values())
    reference = _crops(photos, 40, 48, seed=0)
    samples = _crops(photos, 30, 40, seed=1) + [np.zeros((20, 30, 3), np.uint8)] * 5
    extractor = small_extractor()
    label = metrics.feature_network(extractor)["feature_network"]
    assert label == "test-convnet (not comparable with published FIDs)"

    ref = metrics.image_statistics(reference, extractor, batch_size=16, log=None)
    assert ref.count == 40 and ref.pool.shape == (40, 16)
    assert ref.spatial_moments.mean.shape == (8 * 8 * 3,)
    # Batching and padding do not change the features.
    one_batch = metrics.extract_features(reference, extractor, batch_size=64, log=None)
    np.testing.assert_allclose(one_batch.pool, ref.pool, rtol=1e-5, atol=1e-6)

    same = metrics.compute_metrics(ref, ref)
    assert same["fid"] == pytest.approx(0.0, abs=1e-6)
    assert same["sfid"] == pytest.approx(0.0, abs=1e-6)
    assert (same["precision"], same["recall"]) == (1.0, 1.0)

    result = metrics.compute_metrics(
        metrics.image_statistics(samples, extractor, num_images=35, batch_size=16, log=None), ref
    )
    assert set(result) == {
        "fid",
        "sfid",
        "precision",
        "recall",
        "k",
        "num_samples",
        "num_reference",
    }
    assert (result["num_samples"], result["num_reference"], result["k"]) == (35, 40, 3)
    assert result["fid"] > 0 and result["sfid"] > 0
    assert 0.0 <= result["precision"] <= 1.0 and 0.0 <= result["recall"] <= 1.0
    # Reference images among the samples lie on the reference manifold.
    subset = metrics.image_statistics(reference[:25], extractor, log=None)
    assert metrics.compute_metrics(subset, ref)["precision"] == 1.0
    json.dumps(result)  # plain numbers

    with pytest.raises(ValueError, match="only 35 images"):
        metrics.extract_features(samples, extractor, num_images=36, log=None)


def test_a_plain_callable_extractor_and_images_of_one_size():
    calls = []

    def extractor(batch):
        calls.append(batch.shape)
        return {"pool": batch.mean(axis=(1, 2)), "spatial": batch[:, ::4, ::4, 0]}

    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, (8, 8, 3), np.uint8) for _ in range(5)]
    features = metrics.extract_features(images, extractor, batch_size=4, log=None)
    assert calls == [(4, 8, 8, 3), (4, 8, 8, 3)]  # the last batch padded to 4
    assert features.pool.shape == (5, 3) and features.spatial.shape == (5, 4)
    np.testing.assert_allclose(features.pool[4], images[4].mean(axis=(0, 1)), rtol=1e-6)
    with pytest.raises(ValueError, match="image_size"):
        metrics.extract_features(images + [np.zeros((9, 9, 3), np.uint8)], extractor, log=None)


# ----------------------------------------------------------------------------------------------
# The cache.


def test_cached_statistics_are_reused_and_recomputed_when_the_description_changes(tmp_path):
    rng = np.random.default_rng(8)
    calls = []

    def compute(n=30):
        calls.append(n)
        return metrics.Statistics.from_features(
            metrics.Features(rng.normal(size=(n, 4)), rng.normal(size=(n, 6)))
        )

    path = str(tmp_path / "cache" / "reference.npz")
    lines = []
    described = {"data_dir": "/data", "split": "train", "num_images": 30, "extractor": "x"}
    first = metrics.cached_statistics(path, described, compute, lines.append)
    second = metrics.cached_statistics(path, described, compute, lines.append)
    assert calls == [30] and os.path.exists(path)
    np.testing.assert_array_equal(first.pool, second.pool)
    np.testing.assert_array_equal(first.spatial_moments.cov, second.spatial_moments.cov)
    assert second.spatial_moments.count == 30
    assert "reusing" in lines[-1]

    stale = dict(described, num_images=20)
    third = metrics.cached_statistics(path, stale, lambda: compute(20), lines.append)
    assert calls == [30, 20] and third.count == 20
    assert "computed for something else (num_images: 30 -> 20)" in lines[-2]
    stored, _ = metrics.load_statistics(path)
    assert stored["num_images"] == 20

    with open(path, "wb") as f:
        f.write(b"not an npz")
    metrics.cached_statistics(path, stale, lambda: compute(20), lines.append)
    assert calls == [30, 20, 20] and "cannot be read" in lines[-2]

    with pytest.raises(ValueError, match="no name"):
        metrics.reference_description(
            small_extractor(name=None), data_dir="/data", split="train", num_images=3
        )


# ----------------------------------------------------------------------------------------------
# The 2015 frozen Inception graph, through a small stand-in GraphDef with its tensor names.

STAND_IN_CHANNELS = 12  # mixed_6/conv's channels in the stand-in (the real graph: 192)
BN_EPSILON = 0.001


def stand_in_weights(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "pool": rng.normal(size=(3, 2048)).astype(np.float32),
        "spatial": rng.normal(size=(3, STAND_IN_CHANNELS)).astype(np.float32),
        "mean": rng.normal(size=STAND_IN_CHANNELS).astype(np.float32),
        "variance": rng.uniform(0.5, 2.0, STAND_IN_CHANNELS).astype(np.float32),
        "beta": rng.normal(size=STAND_IN_CHANNELS).astype(np.float32),
        "gamma": rng.uniform(0.5, 2.0, STAND_IN_CHANNELS).astype(np.float32),
    }


def stand_in_graph_def(w):
    """A GraphDef laid out like classify_image_graph_def.pb, with its node names and op types
    where it matters, and tiny in between:

    DecodeJpeg/contents -> DecodeJpeg -> Cast -> ExpandDims (1, h, w, 3) -> ResizeBilinear
    (299 x 299) -> Sub (128) -> Mul (1/128), then
    - pool_3 (n, 1, 1, 2048): the spatial mean of Mul, times a fixed (3, 2048) matrix;
    - mixed_6/conv (n, 17, 17, C): Mul resized to 17 x 17, a fixed 1x1 convolution, the
      deprecated BatchNormWithGlobalNormalization of the 2015 file (so GraphDef producer 8,
      as an old file has) and a ReLU;
    - pool_3/_reshape, fixed at batch 1, and a softmax after it, as in the file.
    Shapes are recorded (`_output_shapes`) with batch 1, as an export of the one-JPEG graph
    records them."""
    import tensorflow as tf

    raw = tf.raw_ops
    g = tf.Graph()
    with g.as_default():
        const = lambda value, name: tf.constant(value, name=name)  # noqa: E731
        contents = tf.compat.v1.placeholder(tf.string, [], name="DecodeJpeg/contents")
        decoded = raw.DecodeJpeg(contents=contents, channels=3, name="DecodeJpeg")
        cast = raw.Cast(x=decoded, DstT=tf.float32, name="Cast")
        expand = raw.ExpandDims(input=cast, axis=const(0, "ExpandDims/dim"), name="ExpandDims")
        resized = raw.ResizeBilinear(
            images=expand, size=const([299, 299], "ResizeBilinear/size"), name="ResizeBilinear"
        )
        sub = raw.Sub(x=resized, y=const(128.0, "Sub/y"), name="Sub")
        mul = raw.Mul(x=sub, y=const(1 / 128, "Mul/y"), name="Mul")
        mean = raw.Mean(input=mul, axis=const([1, 2], "pool_3/axes"), keep_dims=True, name="m")
        pool_conv = raw.Conv2D(
            input=mean,
            filter=const(w["pool"][None, None], "pool_3/weights"),
            strides=[1, 1, 1, 1],
            padding="VALID",
            name="pool_3/conv",
        )
        pool = raw.AvgPool(
            value=pool_conv,
            ksize=[1, 1, 1, 1],
            strides=[1, 1, 1, 1],
            padding="VALID",
            name="pool_3",
        )
        reshaped = raw.Reshape(
            tensor=pool, shape=const([1, 2048], "pool_3/_reshape/shape"), name="pool_3/_reshape"
        )
        raw.Softmax(logits=reshaped, name="softmax")
        small = raw.ResizeBilinear(
            images=mul, size=const([17, 17], "mixed_6/size"), name="mixed_6/resize"
        )
        conv = raw.Conv2D(
            input=small,
            filter=const(w["spatial"][None, None], "mixed_6/conv/conv2d_params"),
            strides=[1, 1, 1, 1],
            padding="VALID",
            name="mixed_6/conv/Conv2D",
        )
        for key in ("mean", "variance", "beta", "gamma"):
            const(w[key], f"mixed_6/conv/{key}")
        # An Identity now, the old batch norm below: a current graph cannot hold that op.
        normed = raw.Identity(input=conv, name="mixed_6/conv/batchnorm")
        raw.Relu(features=normed, name="mixed_6/conv")
    graph_def = g.as_graph_def(add_shapes=True)
    node = next(n for n in graph_def.node if n.name == "mixed_6/conv/batchnorm")
    shapes = node.attr["_output_shapes"]
    node.Clear()
    node.name, node.op = "mixed_6/conv/batchnorm", "BatchNormWithGlobalNormalization"
    node.input.extend(
        ["mixed_6/conv/Conv2D"]
        + [f"mixed_6/conv/{k}" for k in ("mean", "variance", "beta", "gamma")]
    )
    node.attr["T"].type = tf.float32.as_datatype_enum
    node.attr["variance_epsilon"].f = BN_EPSILON
    node.attr["scale_after_normalization"].b = True
    node.attr["_output_shapes"].CopyFrom(shapes)
    graph_def.versions.producer = 8  # before the op's removal (version 9)
    return graph_def


def write_stand_in(path, seed=0):
    """The stand-in graph written to path; returns its weights."""
    w = stand_in_weights(seed)
    with open(path, "wb") as f:
        f.write(stand_in_graph_def(w).SerializeToString())
    return w


def legacy_bilinear(x, height, width):
    """TF's ResizeBilinear without align_corners or half-pixel centres (the 2015 graph's): the
    source of output pixel i is i * in / out (scale in float32, as the kernel computes it),
    interpolated between its floor and the next pixel (clamped to the edge)."""

    def taps(size_in, size_out):
        source = np.arange(size_out, dtype=np.float32) * (np.float32(size_in) / size_out)
        low = np.floor(source).astype(int)
        return low, np.minimum(low + 1, size_in - 1), (source - low).astype(np.float64)

    x = np.asarray(x, np.float64)
    y0, y1, fy = taps(x.shape[1], height)
    x0, x1, fx = taps(x.shape[2], width)
    rows = x[:, y0] + (x[:, y1] - x[:, y0]) * fy[None, :, None, None]
    return rows[:, :, x0] + (rows[:, :, x1] - rows[:, :, x0]) * fx[None, None, :, None]


def stand_in_features(images, w):
    """The stand-in's pool_3 and whole mixed_6/conv for a batch of one size, in numpy."""
    x = (legacy_bilinear(np.stack(images), 299, 299) - 128.0) / 128.0
    pool = x.mean(axis=(1, 2)) @ w["pool"]
    conv = legacy_bilinear(x, 17, 17) @ w["spatial"]
    normed = (conv - w["mean"]) / np.sqrt(w["variance"] + BN_EPSILON) * w["gamma"] + w["beta"]
    return pool, np.maximum(normed, 0.0)


def _uint8_images(shapes, seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, np.uint8) for shape in shapes]


def test_the_graph_gives_pool_3_and_the_first_7_channels_of_mixed_6_conv(tmp_path):
    """Fed at their own size in [0, 255], batches of 3 and of 1 (the file records batch 1 and
    fixes pool_3/_reshape at 1), the features equal a numpy computation of the stand-in's ops."""
    import hashlib

    path = str(tmp_path / metrics.INCEPTION_GRAPH_FILE)
    w = write_stand_in(path)
    recorded = next(n for n in stand_in_graph_def(w).node if n.name == "ExpandDims")
    assert recorded.attr["_output_shapes"].list.shape[0].dim[0].size == 1
    extractor = metrics.inception_graph(path)
    with open(path, "rb") as f:
        md5 = hashlib.md5(f.read()).hexdigest()
    assert (extractor.md5, extractor.path) == (md5, path)
    assert extractor.name == f"inception_2015_12_05_graph:md5={md5}"
    assert extractor.image_size is None and extractor.takes_any_size
    # The recorded batch of 1 is dropped: shapes follow the batch fed.
    assert extractor._pool.shape.as_list() == [None, 1, 1, 2048]
    assert extractor._spatial.shape.as_list() == [None, 17, 17, STAND_IN_CHANNELS]

    images = _uint8_images([(40, 70, 3)] * 3, seed=0)
    got = extractor(np.stack(images).astype(np.float32))
    assert got["pool"].shape == (3, 2048)
    assert got["spatial"].shape == (3, 2023) and 2023 == 17 * 17 * 7
    pool, conv = stand_in_features(images, w)
    np.testing.assert_allclose(got["pool"], pool, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got["spatial"], conv[..., :7].reshape(3, -1), rtol=1e-4, atol=1e-4)
    # Another 7 channels would differ: the test tells the first 7 from the rest.
    assert not np.allclose(got["spatial"], conv[..., 1:8].reshape(3, -1), atol=1e-2)

    one = extractor(np.stack(images[1:2]).astype(np.float32))
    np.testing.assert_allclose(one["pool"], got["pool"][1:2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(one["spatial"], got["spatial"][1:2], rtol=1e-5, atol=1e-5)

    described = metrics.feature_network(extractor)
    assert described == {
        "feature_network": "inception_2015_12_05_graph",
        "inception_graph": path,
        "inception_graph_md5": md5,
    }


def test_images_of_several_sizes_go_through_the_graph_by_size_in_their_order(tmp_path):
    """The graph resizes a batch to 299 x 299 itself (bilinear, legacy centres): each size goes
    in as its own call, unresized, and every image gets the features it gets alone; a 299 x 299
    image is not resized at all."""
    path = str(tmp_path / "graph.pb")
    w = write_stand_in(path, seed=1)
    extractor = metrics.inception_graph(path)
    shapes = [(40, 70, 3), (64, 64, 3), (40, 70, 3), (299, 299, 3), (64, 64, 3)]
    images = _uint8_images(shapes, seed=2)
    calls = []

    class Spy:
        image_size, takes_any_size = None, True

        def __call__(self, x):
            calls.append(x.shape)
            return extractor(x)

    features = metrics.extract_features(images, Spy(), batch_size=3, log=None)
    assert calls == [(2, 40, 70, 3), (1, 64, 64, 3), (1, 299, 299, 3), (1, 64, 64, 3)]
    for i, image in enumerate(images):
        pool, conv = stand_in_features([image], w)
        np.testing.assert_allclose(features.pool[i], pool[0], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(
            features.spatial[i], conv[0, ..., :7].ravel(), rtol=1e-4, atol=1e-4
        )
    alone = metrics.extract_features(images, extractor, batch_size=1, log=None)
    np.testing.assert_allclose(alone.pool, features.pool, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(alone.spatial, features.spatial, rtol=1e-5, atol=1e-5)


def test_a_graph_file_through_tf_io_gfile(tmp_path):
    """Paths go through tf.io.gfile (gs:// works the same way): here TensorFlow's ram://."""
    import tensorflow as tf

    w = stand_in_weights(3)
    path = "ram://inception_test/classify_image_graph_def.pb"
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(stand_in_graph_def(w).SerializeToString())
    extractor = metrics.inception_graph(path)
    image = _uint8_images([(32, 32, 3)], seed=4)
    pool, _ = stand_in_features(image, w)
    got = extractor(np.stack(image).astype(np.float32))
    np.testing.assert_allclose(got["pool"], pool, rtol=1e-4, atol=1e-4)


def test_bad_graph_files_are_one_line_errors_naming_the_file(tmp_path):
    import gzip

    import tensorflow as tf

    def error(path):
        with pytest.raises(metrics.InputError) as info:
            metrics.inception_graph(str(path))
        message = str(info.value)
        assert message.startswith(f"{path}: ") and "\n" not in message, message
        assert metrics.INCEPTION_GRAPH_URL in message
        return message

    assert "no such file" in error(tmp_path / "missing.pb")
    assert "a directory" in error(tmp_path)
    text = tmp_path / "notes.pb"
    text.write_bytes(b"not a graph at all")
    assert "not a TensorFlow GraphDef" in error(text)
    empty = tmp_path / "empty.pb"
    empty.write_bytes(b"")
    assert "not a TensorFlow GraphDef (no nodes)" in error(empty)
    archive = tmp_path / "inception-2015-12-05.tgz"
    archive.write_bytes(gzip.compress(b"a tar of the graph"))
    assert "gzip archive" in error(archive)
    other = tf.Graph()
    with other.as_default():
        tf.constant(1.0, name="pool_3")
    wrong = tmp_path / "other.pb"
    wrong.write_bytes(other.as_graph_def().SerializeToString())
    message = error(wrong)
    assert "no tensor ExpandDims:0, mixed_6/conv:0" in message
