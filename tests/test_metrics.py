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
