"""Sample metrics: FID, sFID, precision and recall on Inception-v3 features (paper section 4).

Features come from a feature extractor, a callable that takes a float32 batch of images
(n, height, width, 3) with values in [0, 255] and returns {"pool": (n, d_pool), "spatial":
(n, d_spatial)}. `inception_graph(path)` gives the one published FIDs use and `inception_v3()`
Keras' stand-in for it; anything with the same contract (a small Keras network in the tests)
stands in. `extract_features` resizes every image to the extractor's `image_size` (bilinear)
before batching, unless the extractor takes any size (`takes_any_size`, the graph).

- The 2015 Inception graph (`inception_graph`): `classify_image_graph_def.pb` from
  inception-2015-12-05.tgz (`INCEPTION_GRAPH_URL`), the frozen GraphDef that TF-GAN, the TTUR
  FID code and the guided-diffusion evaluator load, so FIDs computed on it can be set beside
  published ones. It is fed as those evaluators feed it: a float32 batch in [0, 255], at the
  images' own size, into `ExpandDims:0` (in the file the batch of one decoded JPEG); the graph
  itself resizes to 299 x 299 (its `ResizeBilinear` node) and scales to [-1, 1) ((x - 128) /
  128, its `Sub` and `Mul` nodes). A batch holds images of one size, so images of several sizes
  go through in groups of one size each, which gives every image the features it gets alone.
  - `pool`: `pool_3:0` (n, 1, 1, 2048), flattened to 2048 per image.
  - `spatial`: the first 7 channels of `mixed_6/conv:0` (n, 17, 17, 192), flattened in
    (row, column, channel) order: 17 x 17 x 7 = 2023 per image.
  - Batches: the file was exported for one image at a time, and where it records shapes
    (`_output_shapes`) the batch dimension is 1, which import would keep as the static shape.
    Those records are dropped before import, so shapes follow from the batch fed, and only the
    tensors between the input and the two outputs run (`pool_3/_reshape`, fixed at batch 1,
    and the classifier after it are never evaluated).
  - It runs in a TF1 session on a graph of its own: the file uses BatchNormWithGlobalNormalization,
    an op GraphDefs of producer version 9 and later may not hold. A graph keeps the file's old
    producer version and runs it; a tf.function (wrap_function) would carry the current version
    and refuse the op.
  - The file's md5 is part of the extractor's name (reference caches) and of every report.

- Keras' Inception-v3 (`inception_v3`): `keras.applications.InceptionV3` without its top, one model
  with two outputs. Images are resized to 299 x 299 and scaled to [-1, 1].
  - `pool`: the global average of the last mixed block (Keras `mixed10`, 8 x 8 x 2048), the
    pool_3 features of TF-GAN and the paper: 2048 per image.
  - `spatial`: the first 7 channels of `mixed_6/conv`, flattened (17 x 17 x 7 = 2023 per
    image). In the TF 2015 Inception graph that TF-GAN and the paper's evaluation use, the
    blocks at 17 x 17 are mixed_3 (the reduction) then mixed_4 .. mixed_7; Keras names the
    same blocks `mixed3` .. `mixed7`, so `mixed_6` is the block whose concatenation Keras calls
    `mixed6` (Szegedy et al.'s Mixed_6d). Its `conv` is the 1x1 branch, conv -> batch norm
    -> ReLU, 192 channels; the graph's tensor `mixed_6/conv:0` is that ReLU's output. Keras
    auto-numbers that branch's layers (`conv2d_N`, `activation_N`, N depending on what else the
    process built), so the tensor is found by structure: the first input of the `mixed6`
    concatenation (`SPATIAL_BLOCK`).
  - Weights: a local file (`weights_path`, the command's --inception_weights: Keras' notop or
    full .h5, or a .weights.h5 saved from this architecture), else Keras' own download into its
    cache folder (~/.keras/models). When neither works, `InceptionWeightsError` says which file
    to fetch on a machine with network and which flag takes it.
  - Keras ships the weights of the TF-slim Inception-v3 checkpoint, not the 2015 frozen graph
    that TF-GAN loads, and resizes with half-pixel centres; figures computed here therefore
    rank models consistently but are not numerically the paper's: reports label them
    `KERAS_NETWORK`, "not comparable with published FIDs" (`feature_network`).
- FID and sFID (`frechet_distance`): the Frechet distance between Gaussians fitted to two
  feature sets, ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), in float64. Only the trace of
  the square root is needed: S1 S2 is similar to the symmetric positive semi-definite
  S1^(1/2) S2 S1^(1/2), so Tr((S1 S2)^(1/2)) is the sum of the square roots of that matrix's
  eigenvalues (`trace_sqrt_product`). Two symmetric eigendecompositions replace a general
  matrix square root (scipy.linalg.sqrtm): no imaginary parts arise, eigenvalues that round-off
  pushes below zero are set to zero, and singular covariances (fewer images than feature
  dimensions) need no added diagonal offset. A distance that rounds below 0 is reported as 0.
- Precision and recall (Kynkaanniemi et al. 2019, `precision_recall`): each feature vector of
  a set gets a radius, the distance to its k-th nearest neighbour in its own set (k = 3, itself
  excluded). Precision is the fraction of sample vectors within the radius of at least one
  reference vector; recall the fraction of reference vectors within the radius of at least one
  sample vector. Pairwise distances are computed in TensorFlow in row batches, so 50k x 50k
  never sits in memory at once.
- Reference statistics (`reference_statistics`, `cached_statistics`): the features of the
  training set, decoded from a beam_jobs dataset (`dataset_images`: records ->
  `representation.decode`) or from any iterable of images, saved to an .npz together with a
  description of what they are (dataset directory and a fingerprint of its info.json and shard
  sizes, split, number of images, extractor identity). A later call with the same description
  reuses the file; any difference recomputes and overwrites it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import itertools
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from dct_gen.errors import InputError

POOL, SPATIAL = "pool", "spatial"
INCEPTION_IMAGE_SIZE = (299, 299)
POOL_BLOCK = "mixed10"
SPATIAL_BLOCK = "mixed6"
SPATIAL_CHANNELS = 7
NEAREST_K = 3

# Keras' own download of the notop Inception-v3 weights (keras.applications.inception_v3).
INCEPTION_WEIGHTS_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
INCEPTION_WEIGHTS_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"
    + INCEPTION_WEIGHTS_FILE
)
INCEPTION_WEIGHTS_MD5 = "bcbd6486424b2319ff4ef7d526e38f63"
DOWNLOAD_TIMEOUT_S = 60.0

# The 2015 frozen Inception graph that published FIDs use (TF-GAN, TTUR, guided-diffusion).
INCEPTION_GRAPH_URL = (
    "http://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz"
)
INCEPTION_GRAPH_FILE = "classify_image_graph_def.pb"
GRAPH_INPUT = "ExpandDims:0"  # float32 (batch, height, width, 3) in [0, 255], any size
GRAPH_POOL = "pool_3:0"  # (batch, 1, 1, 2048)
GRAPH_SPATIAL = "mixed_6/conv:0"  # (batch, 17, 17, 192); its first SPATIAL_CHANNELS are used

# What reports call each feature network (`feature_network`).
GRAPH_NETWORK = "inception_2015_12_05_graph"
KERAS_NETWORK = "keras_inception_v3 (not comparable with published FIDs)"

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CACHE_VERSION = 1


class InceptionWeightsError(InputError, FileNotFoundError):
    """The Inception-v3 weights are neither at the given path nor downloadable (bad input: the
    command line prints the message, which says where to get the file, and exits 1)."""


# ----------------------------------------------------------------------------------------------
# Frechet distance (FID on pool features, sFID on spatial features).


@dataclasses.dataclass(frozen=True)
class Moments:
    """Mean (d,) and unbiased covariance (d, d) of `count` feature vectors, float64."""

    mean: np.ndarray
    cov: np.ndarray
    count: int


def feature_moments(features: np.ndarray, batch_size: int = 8192) -> Moments:
    """Mean and covariance (divided by n - 1) of (n, d) features, accumulated in float64.

    Two passes over row batches: float32 features of 50k images are never copied whole to
    float64, and centring before the products avoids the cancellation of E[x x^T] - mu mu^T.
    """
    x = np.asarray(features)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features of shape {x.shape}: need (n, d) with n >= 2")
    n, d = x.shape
    mean = np.zeros(d)
    for start in range(0, n, batch_size):
        mean += x[start : start + batch_size].sum(axis=0, dtype=np.float64)
    mean /= n
    cov = np.zeros((d, d))
    for start in range(0, n, batch_size):
        centred = x[start : start + batch_size].astype(np.float64) - mean
        cov += centred.T @ centred
    cov /= n - 1
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(cov))):
        raise ValueError("features hold NaN or infinite values")
    return Moments(mean=mean, cov=cov, count=n)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix."""
    w, v = np.linalg.eigh((matrix + matrix.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(cov1: np.ndarray, cov2: np.ndarray) -> float:
    """Tr((cov1 cov2)^(1/2)) for symmetric positive semi-definite cov1, cov2.

    cov1 cov2 = R (R cov2) with R = cov1^(1/2), and R (R cov2) has the eigenvalues of
    (R cov2) R = R cov2 R, which is symmetric positive semi-definite: the trace is the sum of
    the square roots of its eigenvalues (those below zero by round-off count as zero).
    """
    root = _psd_sqrt(np.asarray(cov1, dtype=np.float64))
    inner = root @ np.asarray(cov2, dtype=np.float64) @ root
    eigenvalues = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())


def frechet_distance(a: Moments, b: Moments) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) (Heusel et al. 2017), float64."""
    if a.mean.shape != b.mean.shape or a.cov.shape != b.cov.shape:
        raise ValueError(f"feature sizes differ: {a.mean.shape} vs {b.mean.shape}")
    diff = a.mean - b.mean
    value = float(diff @ diff) + float(np.trace(a.cov) + np.trace(b.cov))
    value -= 2.0 * trace_sqrt_product(a.cov, b.cov)
    return max(value, 0.0)


def fid_from_features(x: np.ndarray, y: np.ndarray) -> float:
    """The Frechet distance between Gaussians fitted to two (n, d) feature sets."""
    return frechet_distance(feature_moments(x), feature_moments(y))


# ----------------------------------------------------------------------------------------------
# Precision and recall (Kynkaanniemi et al. 2019).


def _distance_fns():
    """tf.functions over row batches: squared k-th neighbour distances, and coverage."""
    import tensorflow as tf

    def squared_distances(rows, columns):
        # |a|^2 - 2 a.b + |b|^2; callers centre the data first, which keeps the cancellation
        # small, and round-off below zero is clamped.
        rr = tf.reduce_sum(tf.square(rows), axis=1, keepdims=True)
        cc = tf.reduce_sum(tf.square(columns), axis=1)[None, :]
        return tf.maximum(rr - 2.0 * tf.matmul(rows, columns, transpose_b=True) + cc, 0.0)

    @tf.function(reduce_retracing=True)
    def kth_distance(rows, row_start, points, k):
        d2 = squared_distances(rows, points)  # (batch, n)
        row_ids = row_start + tf.range(tf.shape(rows)[0])
        is_self = tf.equal(row_ids[:, None], tf.range(tf.shape(points)[0])[None, :])
        d2 = tf.where(is_self, -1.0, d2)  # itself first, whatever the round-off
        smallest = -tf.math.top_k(-d2, k=k + 1, sorted=True).values  # ascending
        return tf.maximum(smallest[:, k], 0.0)  # squared

    @tf.function(reduce_retracing=True)
    def covered(rows, points, squared_radii):
        d2 = squared_distances(rows, points)  # (batch, n)
        return tf.reduce_any(d2 <= squared_radii[None, :], axis=1)

    return kth_distance, covered


def _centred(*sets: np.ndarray) -> list[np.ndarray]:
    x = [np.asarray(s, dtype=np.float32) for s in sets]
    for s in x:
        if s.ndim != 2 or s.shape[1] != x[0].shape[1]:
            raise ValueError(f"feature sets of shapes {[t.shape for t in x]}: need (n, d) each")
    mean = np.mean(np.concatenate(x, axis=0), axis=0, dtype=np.float64).astype(np.float32)
    return [s - mean for s in x]


def _squared_radii(x: np.ndarray, k: int, batch_size: int) -> np.ndarray:
    import tensorflow as tf

    if not 1 <= k < x.shape[0]:
        raise ValueError(f"k={k}: needs 1 <= k < the number of vectors ({x.shape[0]})")
    kth_distance, _ = _distance_fns()
    points = tf.constant(x)
    out = [
        kth_distance(points[s : s + batch_size], tf.constant(s), points, k).numpy()
        for s in range(0, x.shape[0], batch_size)
    ]
    return np.concatenate(out)


def knn_radii(features: np.ndarray, k: int = NEAREST_K, batch_size: int = 1024) -> np.ndarray:
    """(n,) distance from each vector to its k-th nearest neighbour in the set, itself excluded
    (duplicates of a vector count as neighbours at distance 0)."""
    (x,) = _centred(features)
    return np.sqrt(_squared_radii(x, k, batch_size))


def _coverage(rows, points, squared_radii, batch_size: int) -> np.ndarray:
    import tensorflow as tf

    _, covered = _distance_fns()
    points = tf.constant(points)
    squared_radii = tf.constant(squared_radii)
    out = [
        covered(tf.constant(rows[s : s + batch_size]), points, squared_radii).numpy()
        for s in range(0, rows.shape[0], batch_size)
    ]
    return np.concatenate(out)


def precision_recall(
    reference: np.ndarray, samples: np.ndarray, k: int = NEAREST_K, batch_size: int = 1024
) -> tuple[float, float]:
    """Improved precision and recall of samples against reference features.

    Args:
      reference: (n, d) features of real images (the training set).
      samples: (m, d) features of generated images.
      k: the neighbour that sets each vector's radius (the paper: 3).
      batch_size: rows per batch of pairwise distances (memory: batch_size x max(n, m)).

    Returns:
      (precision, recall): the fraction of samples inside the reference manifold, and of
      reference vectors inside the sample manifold (each manifold the union of its vectors'
      k-th-neighbour balls, boundaries included).
    """
    real, fake = _centred(reference, samples)
    real_radii = _squared_radii(real, k, batch_size)
    fake_radii = _squared_radii(fake, k, batch_size)
    precision = float(np.mean(_coverage(fake, real, real_radii, batch_size)))
    recall = float(np.mean(_coverage(real, fake, fake_radii, batch_size)))
    return precision, recall


# ----------------------------------------------------------------------------------------------
# Feature extractors.


class KerasFeatureExtractor:
    """A Keras model with outputs {"pool", "spatial"} as a feature extractor.

    Called on float32 images (n, height, width, 3) in [0, 255]; the images are scaled to
    [-1, 1] (Inception-v3's input range) and run through the model (inference mode) in one
    traced function. Outputs are flattened to (n, features).

    Attributes:
      image_size: (height, width) that `extract_features` resizes images to.
      name: the extractor's identity in reference caches (None: never cached).
      feature_network: what reports call the network (None: `feature_network` makes a label
        from the name that says it is not comparable with published FIDs).
    """

    def __init__(
        self,
        model,
        *,
        image_size: tuple[int, int],
        name: str | None,
        feature_network: str | None = None,
    ):
        import tensorflow as tf

        self.model = model
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.name = name
        self.feature_network = feature_network

        @tf.function(reduce_retracing=True)
        def features(images):
            out = model(images / 127.5 - 1.0, training=False)
            return {key: tf.reshape(out[key], [tf.shape(images)[0], -1]) for key in (POOL, SPATIAL)}

        self._features = features

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        import tensorflow as tf

        out = self._features(tf.convert_to_tensor(images, dtype=tf.float32))
        return {key: value.numpy() for key, value in out.items()}


def _weights_help(reason: str) -> str:
    return (
        f"Inception-v3 weights unavailable: {reason}. On a machine with network access, "
        f"download {INCEPTION_WEIGHTS_URL} (md5 {INCEPTION_WEIGHTS_MD5}), e.g. `curl -O "
        f"{INCEPTION_WEIGHTS_URL}`, copy it to this machine and pass --inception_weights "
        f"PATH/{INCEPTION_WEIGHTS_FILE}, or put it in Keras' cache folder (~/.keras/models/, "
        "or $KERAS_HOME/models/), where Keras looks before downloading."
    )


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    # Keras' download has no timeout of its own: without one a host that drops packets hangs.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def inception_weights_path(weights_path: str | None = None, *, download: bool = True) -> str:
    """A local path of the Inception-v3 weights: `weights_path` when given (gs:// is copied to
    a temporary file), else Keras' cached download, fetched now when it is missing.

    Raises:
      InceptionWeightsError: the path does not exist, or there is no path and the download is
        off or fails; the message says where to get the file and which flag takes it.
    """
    import tensorflow as tf

    if weights_path:
        if not tf.io.gfile.exists(weights_path):
            raise InceptionWeightsError(
                _weights_help(f"--inception_weights {weights_path} does not exist")
            )
        if "://" in weights_path:
            local = os.path.join(tempfile.mkdtemp(), os.path.basename(weights_path))
            tf.io.gfile.copy(weights_path, local)
            return local
        return weights_path
    if not download:
        raise InceptionWeightsError(_weights_help("no --inception_weights given"))
    import keras

    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            return keras.utils.get_file(
                INCEPTION_WEIGHTS_FILE,
                INCEPTION_WEIGHTS_URL,
                cache_subdir="models",
                file_hash=INCEPTION_WEIGHTS_MD5,
            )
    except Exception as e:  # get_file raises plain Exception for network failures
        message = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise InceptionWeightsError(
            _weights_help(f"no --inception_weights given and the download failed ({message})")
        ) from e


def _file_digest(path: str) -> str:
    import tensorflow as tf

    digest = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def inception_feature_model(base):
    """The two-output feature model over a Keras InceptionV3 (any weights, 299 x 299 input).

    Returns a keras.Model: images in [-1, 1] -> {"pool": (n, 2048), "spatial": (n, 17, 17, 7)}.
    """
    import keras

    block = base.get_layer(SPATIAL_BLOCK)
    branches = block.input if isinstance(block.input, (list, tuple)) else [block.input]
    spatial = branches[0][..., :SPATIAL_CHANNELS]  # mixed_6/conv: the 1x1 branch after ReLU
    pool = keras.layers.GlobalAveragePooling2D(name="pool_3")(base.get_layer(POOL_BLOCK).output)
    return keras.Model(base.input, {POOL: pool, SPATIAL: spatial}, name="inception_features")


def inception_v3(
    weights_path: str | None = None, *, download: bool = True, random_weights: bool = False
) -> KerasFeatureExtractor:
    """The Inception-v3 extractor (pool_3, 2048; mixed_6/conv first 7 channels, 2023).

    Args:
      weights_path: an .h5 (Keras' notop or full InceptionV3 weights) or .weights.h5 file;
        None: Keras' cached or downloaded notop weights (`inception_weights_path`).
      download: allow that download when weights_path is None.
      random_weights: random initialisation, no file (tests of the wiring); never cached.

    Raises:
      InceptionWeightsError: no weights (see `inception_weights_path`), or a file that does
        not hold Inception-v3 weights.
    """
    import keras

    shape = (*INCEPTION_IMAGE_SIZE, 3)
    if random_weights:
        base = keras.applications.InceptionV3(include_top=False, weights=None, input_shape=shape)
        return KerasFeatureExtractor(
            inception_feature_model(base),
            image_size=INCEPTION_IMAGE_SIZE,
            name=None,
            feature_network=KERAS_NETWORK,
        )
    path = inception_weights_path(weights_path, download=download)
    base = keras.applications.InceptionV3(include_top=False, weights=None, input_shape=shape)
    try:
        base.load_weights(path)
    except Exception as notop_error:  # noqa: BLE001 - maybe the full model's file: try that
        full = keras.applications.InceptionV3(include_top=True, weights=None)
        try:
            full.load_weights(path)
        except Exception:  # noqa: BLE001
            raise InceptionWeightsError(
                _weights_help(f"{path} does not hold Inception-v3 weights ({notop_error})")
            ) from notop_error
        base = keras.Model(full.input, full.get_layer(POOL_BLOCK).output)
    name = f"keras_inception_v3:sha256={_file_digest(path)[:16]}"
    return KerasFeatureExtractor(
        inception_feature_model(base),
        image_size=INCEPTION_IMAGE_SIZE,
        name=name,
        feature_network=KERAS_NETWORK,
    )


# ----------------------------------------------------------------------------------------------
# The 2015 frozen Inception graph (the features published FIDs use).


def _graph_help(path: str, problem: str) -> str:
    return (
        f"{path}: {problem}; the Inception graph is {INCEPTION_GRAPH_FILE} inside "
        f"{INCEPTION_GRAPH_URL} (tar xzf inception-2015-12-05.tgz {INCEPTION_GRAPH_FILE})"
    )


def read_inception_graph(path: str):
    """Reads and checks a frozen GraphDef file (local or gs://): (GraphDef, md5 of the file).

    Raises:
      InputError: no such file, a file that is not a GraphDef, or a graph without the input
        and output tensors (`GRAPH_INPUT`, `GRAPH_POOL`, `GRAPH_SPATIAL`); one line naming the
        path.
    """
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    if not tf.io.gfile.exists(path):
        raise InputError(_graph_help(path, "no such file"))
    if tf.io.gfile.isdir(path):
        raise InputError(_graph_help(path, "a directory, not a GraphDef file"))
    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if data[:2] == b"\x1f\x8b":  # the .tgz itself rather than the file inside it
        raise InputError(_graph_help(path, "a gzip archive, not a GraphDef: extract the .pb"))
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise InputError(_graph_help(path, f"not a TensorFlow GraphDef ({reason})")) from None
    if not graph_def.node:
        # An empty file, and some non-protobuf bytes, parse as a GraphDef without nodes.
        raise InputError(_graph_help(path, "not a TensorFlow GraphDef (no nodes)"))
    names = {node.name for node in graph_def.node}
    missing = [t for t in (GRAPH_INPUT, GRAPH_POOL, GRAPH_SPATIAL) if t.split(":")[0] not in names]
    if missing:
        raise InputError(
            _graph_help(path, f"the graph has no tensor {', '.join(missing)} (not that graph?)")
        )
    return graph_def, md5


class GraphFeatureExtractor:
    """The 2015 Inception graph (or any GraphDef with its tensor names) as a feature extractor.

    Called on float32 images (n, height, width, 3) in [0, 255], all of one size (any size: the
    graph resizes them itself); returns {"pool": (n, d_pool), "spatial": (n, 17 * 17 * 7)} as
    numpy arrays. See the module docstring for how the graph is fed.

    Attributes:
      image_size: None: `extract_features` does not resize (`takes_any_size`).
      takes_any_size: True: batches of any height and width, one size per call.
      name: the identity in reference caches ('inception_2015_12_05_graph:md5=...').
      feature_network: `GRAPH_NETWORK`, what reports call it.
      path, md5: the GraphDef file and its md5.
    """

    image_size = None
    takes_any_size = True
    feature_network = GRAPH_NETWORK

    def __init__(self, graph_def, *, path: str, md5: str):
        import tensorflow as tf

        self.path = path
        self.md5 = md5
        self.name = f"{GRAPH_NETWORK}:md5={md5}"
        graph_def = _without_recorded_shapes(graph_def)
        graph = tf.Graph()
        with graph.as_default():
            self._images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], "images")
            try:
                self._pool, self._spatial = tf.graph_util.import_graph_def(
                    graph_def,
                    input_map={GRAPH_INPUT: self._images},
                    return_elements=[GRAPH_POOL, GRAPH_SPATIAL],
                    name="inception",
                )
            except (ValueError, TypeError, tf.errors.OpError) as e:
                reason = " ".join(str(e).split())[:300]
                raise InputError(
                    _graph_help(path, f"the graph cannot be imported ({reason})")
                ) from None
        self._check_static_shapes()
        # Soft placement: ops without a kernel on the accelerator run on the CPU.
        config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
        config.gpu_options.allow_growth = True
        self._session = tf.compat.v1.Session(graph=graph, config=config)

    def _check_static_shapes(self) -> None:
        pool, spatial = self._pool.shape, self._spatial.shape
        if pool.rank is not None and (pool.rank != 4 or any(d not in (1, None) for d in pool[1:3])):
            raise InputError(
                _graph_help(self.path, f"{GRAPH_POOL} has shape {pool}, not (batch, 1, 1, d)")
            )
        if spatial.rank is not None and (
            spatial.rank != 4 or (spatial[3] is not None and spatial[3] < SPATIAL_CHANNELS)
        ):
            raise InputError(
                _graph_help(
                    self.path,
                    f"{GRAPH_SPATIAL} has shape {spatial}, not (batch, height, width, "
                    f">= {SPATIAL_CHANNELS} channels)",
                )
            )

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        x = np.asarray(images, dtype=np.float32)
        if x.ndim != 4 or x.shape[3] != 3:
            raise ValueError(f"images of shape {x.shape}: need (n, height, width, 3)")
        pool, spatial = self._session.run([self._pool, self._spatial], {self._images: x})
        n = x.shape[0]
        return {
            POOL: pool.reshape(n, -1),
            SPATIAL: spatial[..., :SPATIAL_CHANNELS].reshape(n, -1),
        }

    def close(self) -> None:
        """Frees the session (the extractor cannot be called afterwards)."""
        self._session.close()


def _without_recorded_shapes(graph_def):
    """A copy of graph_def without `_output_shapes` records: the importer would take their
    batch dimension (1 in the 2015 file, exported for one JPEG) as the static shape."""
    import tensorflow as tf

    out = tf.compat.v1.GraphDef()
    out.CopyFrom(graph_def)
    for node in out.node:
        if "_output_shapes" in node.attr:
            del node.attr["_output_shapes"]
    return out


def inception_graph(path: str) -> GraphFeatureExtractor:
    """The extractor of published FIDs: the 2015 frozen Inception graph from a file (local or
    gs://), `classify_image_graph_def.pb` of `INCEPTION_GRAPH_URL`.

    pool_3 (2048 per image) and the first 7 channels of mixed_6/conv (17 x 17 x 7 = 2023);
    images are fed in [0, 255] at their own size and the graph resizes them to 299 x 299.

    Raises:
      InputError: no such file, not a GraphDef, a graph without ExpandDims, pool_3 or
        mixed_6/conv, or one that does not import; one line naming the path.
    """
    graph_def, md5 = read_inception_graph(path)
    return GraphFeatureExtractor(graph_def, path=path, md5=md5)


def feature_network(extractor) -> dict[str, Any]:
    """What reports say about an extractor: {"feature_network": label, "inception_graph":
    path or None, "inception_graph_md5": md5 or None}.

    The 2015 graph is `GRAPH_NETWORK`; Keras' Inception-v3 is `KERAS_NETWORK`, which says it
    is not comparable with published FIDs; any other extractor is labelled by its name, saying
    the same.
    """
    label = getattr(extractor, "feature_network", None)
    if not label:
        name = getattr(extractor, "name", None) or type(extractor).__name__
        label = f"{name} (not comparable with published FIDs)"
    graph = label == GRAPH_NETWORK
    return {
        "feature_network": label,
        "inception_graph": getattr(extractor, "path", None) if graph else None,
        "inception_graph_md5": getattr(extractor, "md5", None) if graph else None,
    }


# ----------------------------------------------------------------------------------------------
# Images -> features.


@dataclasses.dataclass
class Features:
    """Features of a set of images: pool (n, d_pool), spatial (n, d_spatial), float32."""

    pool: np.ndarray
    spatial: np.ndarray

    def __len__(self) -> int:
        return int(self.pool.shape[0])


def _as_rgb(image) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3:
        return a
    from dct_gen import images

    return images.image_from_array(a)


def _resize(batch: list[np.ndarray], size: tuple[int, int] | None) -> np.ndarray:
    """uint8 images -> float32 (n, height, width, 3) at `size` (bilinear); None: as they are."""
    import tensorflow as tf

    shapes = {im.shape for im in batch}
    if size is None:
        if len(shapes) > 1:
            raise ValueError(
                f"images of several sizes {sorted(shapes)[:3]} and an extractor without an "
                "image_size: give one so that they can be resized"
            )
        return np.stack(batch).astype(np.float32)
    if len(shapes) == 1:
        stacked = np.stack(batch).astype(np.float32)
        if stacked.shape[1:3] == tuple(size):
            return stacked
        return tf.image.resize(stacked, size, method="bilinear").numpy()
    return np.stack(
        [tf.image.resize(im.astype(np.float32), size, method="bilinear").numpy() for im in batch]
    )


def extract_features(
    images: Iterable,
    extractor: Callable[[np.ndarray], Mapping[str, np.ndarray]],
    *,
    num_images: int | None = None,
    batch_size: int = 50,
    image_size: tuple[int, int] | None = None,
    log: Callable[[str], None] | None = print,
) -> Features:
    """Runs the extractor over images (uint8 HxWx3 arrays, or anything
    `dct_gen.images.image_from_array` takes), in batches.

    Args:
      images: an iterable of images; only the first num_images are read.
      extractor: the feature extractor (see the module docstring).
      num_images: how many images to use (None: all); fewer raise ValueError.
      batch_size: images per extractor call (the last batch is padded, so the traced function
        sees one shape). An extractor that takes any size (`takes_any_size`, and no
        image_size given) gets each batch's images grouped by size, one call per size, unpadded.
      image_size: (height, width) to resize to; None: `extractor.image_size`, else no resizing.
      log: progress lines (None: silent).

    Returns:
      Features, in the order of the images.
    """
    size = image_size or getattr(extractor, "image_size", None)
    any_size = size is None and getattr(extractor, "takes_any_size", False)
    stream = images if num_images is None else itertools.islice(images, num_images)
    pool, spatial = [], []
    done, start, last_log = 0, time.perf_counter(), time.perf_counter()
    batch: list[np.ndarray] = []

    def checked(out, n):
        for key in (POOL, SPATIAL):
            if key not in out:
                raise ValueError(f"the feature extractor returned {sorted(out)}, not {key!r}")
        return [np.asarray(out[key], dtype=np.float32).reshape(n, -1) for key in (POOL, SPATIAL)]

    def run_by_size(batch):
        # The graph resizes a whole batch to one size, so a batch holds images of one size: each
        # size goes through on its own and the rows are put back in the images' order.
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, im in enumerate(batch):
            groups.setdefault(im.shape, []).append(i)
        rows: list[list[np.ndarray]] = [[], []]
        order: list[int] = []
        for members in groups.values():
            x = np.stack([batch[i] for i in members]).astype(np.float32)
            for into, value in zip(rows, checked(extractor(x), len(members)), strict=True):
                into.append(value)
            order.extend(members)
        back = np.argsort(np.array(order))
        pool.append(np.concatenate(rows[0])[back])
        spatial.append(np.concatenate(rows[1])[back])

    def run(batch):
        if any_size:
            run_by_size(batch)
            return
        x = _resize(batch, size)
        n = x.shape[0]
        if n < batch_size:
            x = np.concatenate([x, np.zeros((batch_size - n, *x.shape[1:]), x.dtype)])
        for into, value in zip((pool, spatial), checked(extractor(x), x.shape[0]), strict=True):
            into.append(value[:n])

    for image in stream:
        batch.append(_as_rgb(image))
        if len(batch) == batch_size:
            run(batch)
            done += len(batch)
            batch = []
            if log is not None and time.perf_counter() - last_log > 30:
                rate = done / (time.perf_counter() - start)
                log(f"features: {done} images ({rate:.1f} images/s)")
                last_log = time.perf_counter()
    if batch:
        run(batch)
        done += len(batch)
    if num_images is not None and done < num_images:
        raise ValueError(f"only {done} images to extract features from, {num_images} asked for")
    if not done:
        raise ValueError("no images to extract features from")
    return Features(pool=np.concatenate(pool), spatial=np.concatenate(spatial))


# ----------------------------------------------------------------------------------------------
# Statistics of an image set, and the metrics between two.


@dataclasses.dataclass
class Statistics:
    """What the metrics need of one image set: pool features (precision and recall) and the
    moments of the pool and spatial features (FID, sFID)."""

    pool: np.ndarray
    pool_moments: Moments
    spatial_moments: Moments

    @property
    def count(self) -> int:
        return int(self.pool.shape[0])

    @classmethod
    def from_features(cls, features: Features) -> Statistics:
        return cls(
            pool=np.asarray(features.pool, dtype=np.float32),
            pool_moments=feature_moments(features.pool),
            spatial_moments=feature_moments(features.spatial),
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "pool": self.pool,
            "pool_mean": self.pool_moments.mean,
            "pool_cov": self.pool_moments.cov,
            "spatial_mean": self.spatial_moments.mean,
            "spatial_cov": self.spatial_moments.cov,
            "spatial_count": np.array(self.spatial_moments.count),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Statistics:
        pool = np.asarray(arrays["pool"], dtype=np.float32)
        return cls(
            pool=pool,
            pool_moments=Moments(
                np.asarray(arrays["pool_mean"]), np.asarray(arrays["pool_cov"]), len(pool)
            ),
            spatial_moments=Moments(
                np.asarray(arrays["spatial_mean"]),
                np.asarray(arrays["spatial_cov"]),
                int(arrays["spatial_count"]),
            ),
        )


def image_statistics(
    images: Iterable,
    extractor: Callable[[np.ndarray], Mapping[str, np.ndarray]],
    *,
    num_images: int | None = None,
    batch_size: int = 50,
    log: Callable[[str], None] | None = print,
) -> Statistics:
    """Features of images through the extractor, summarised for the metrics."""
    features = extract_features(
        images, extractor, num_images=num_images, batch_size=batch_size, log=log
    )
    return Statistics.from_features(features)


def compute_metrics(
    samples: Statistics, reference: Statistics, *, k: int = NEAREST_K, batch_size: int = 1024
) -> dict[str, float]:
    """FID, sFID, precision and recall of samples against reference (the training set)."""
    precision, recall = precision_recall(reference.pool, samples.pool, k=k, batch_size=batch_size)
    return {
        "fid": frechet_distance(samples.pool_moments, reference.pool_moments),
        "sfid": frechet_distance(samples.spatial_moments, reference.spatial_moments),
        "precision": precision,
        "recall": recall,
        "k": k,
        "num_samples": samples.count,
        "num_reference": reference.count,
    }


# ----------------------------------------------------------------------------------------------
# Image sources: folders of files, beam_jobs datasets.


def image_files(folder: str) -> list[str]:
    """The image files directly inside a folder (by suffix), sorted by name."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder} is not a folder")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_SUFFIXES))
    return [os.path.join(folder, n) for n in names]


def read_images(paths: Iterable[str]) -> Iterator[np.ndarray]:
    """Reads image files as uint8 RGB arrays (`dct_gen.images.read_image`), lazily."""
    from dct_gen import images

    for path in paths:
        yield images.read_image(path)


def dataset_images(data_dir: str, split: str) -> Iterator[np.ndarray]:
    """The images of a beam_jobs dataset split, decoded from their records, in shard order.

    Each record's triples go through `representation.decode` with the dataset's representation
    (info.json): the quantized image the model learns, at its stored height and width.
    """
    import tensorflow as tf

    from dct_gen import data, records, representation

    cfg = records.representation_from_info(records.read_info(data_dir))
    paths = records.split_files(data_dir, split)
    ds = tf.data.TFRecordDataset(paths).map(records.parse_example).prefetch(tf.data.AUTOTUNE)
    for ex in data.iterate(ds, paths):
        seq = representation.DCTSequence(
            channels=ex["channels"].numpy(),
            positions=ex["positions"].numpy(),
            values=ex["values"].numpy(),
            height=int(ex["height"]),
            width=int(ex["width"]),
        )
        yield representation.decode(seq, cfg)


def dataset_size(data_dir: str, split: str) -> int | None:
    """Records written for a split, from info.json (None when it does not say)."""
    from dct_gen import records

    info = records.read_info(data_dir)
    if split not in info["splits"]:
        raise FileNotFoundError(
            f"{records.join(data_dir, records.INFO_FILENAME)} has no split {split!r}"
        )
    written = info["splits"][split].get("counts", {}).get("written")
    return None if written is None else int(written)


def dataset_fingerprint(data_dir: str, split: str) -> dict[str, Any]:
    """What identifies a split's contents cheaply: info.json's digest and the shard sizes."""
    import tensorflow as tf

    from dct_gen import records

    paths = records.split_files(data_dir, split)
    return {
        "info_sha256": _file_digest(records.join(data_dir, records.INFO_FILENAME)),
        "shards": [[os.path.basename(p), int(tf.io.gfile.stat(p).length)] for p in paths],
    }


# ----------------------------------------------------------------------------------------------
# Cached statistics.


def _describe_difference(stored: Mapping, wanted: Mapping) -> str:
    keys = sorted(set(stored) | set(wanted))
    diff = [k for k in keys if stored.get(k) != wanted.get(k)]
    return ", ".join(f"{k}: {stored.get(k)!r} -> {wanted.get(k)!r}"[:200] for k in diff)


def load_statistics(path: str) -> tuple[dict, Statistics]:
    """Reads an .npz written by `save_statistics`: (description, statistics)."""
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as f:
        with np.load(io.BytesIO(f.read()), allow_pickle=False) as arrays:
            description = json.loads(str(arrays["description"]))
            return description, Statistics.from_arrays(arrays)


def save_statistics(path: str, description: Mapping, stats: Statistics) -> None:
    """Writes statistics and their description to an .npz (written aside, then renamed)."""
    import tensorflow as tf

    buffer = io.BytesIO()
    np.savez(
        buffer, description=np.array(json.dumps(description, sort_keys=True)), **stats.to_arrays()
    )
    parent = os.path.dirname(path)
    if parent:
        tf.io.gfile.makedirs(parent)
    partial = f"{path}.partial"
    with tf.io.gfile.GFile(partial, "wb") as f:
        f.write(buffer.getvalue())
    tf.io.gfile.rename(partial, path, overwrite=True)


def cached_statistics(
    cache_path: str | None,
    description: Mapping[str, Any],
    compute: Callable[[], Statistics],
    log: Callable[[str], None] | None = print,
) -> Statistics:
    """Statistics from cache_path when it was written for exactly this description, else
    `compute()`, saved there (a cache for another description is overwritten, never used).

    The description must be JSON-serialisable; it names everything the statistics depend on.
    """
    import tensorflow as tf

    log = log or (lambda _: None)
    wanted = json.loads(json.dumps(dict(description), sort_keys=True))
    if cache_path and tf.io.gfile.exists(cache_path):
        try:
            stored, stats = load_statistics(cache_path)
        except Exception as e:  # noqa: BLE001 - a damaged or foreign file is recomputed
            log(f"{cache_path} cannot be read ({type(e).__name__}: {e}); recomputing")
        else:
            if stored == wanted:
                log(f"reusing the statistics cached in {cache_path}")
                return stats
            log(
                f"{cache_path} was computed for something else "
                f"({_describe_difference(stored, wanted)}); recomputing"
            )
    stats = compute()
    if cache_path:
        save_statistics(cache_path, wanted, stats)
        log(f"cached the statistics of {stats.count} images in {cache_path}")
    return stats


def reference_description(
    extractor, *, data_dir: str, split: str, num_images: int
) -> dict[str, Any]:
    """The cache key of a dataset split's statistics (see `reference_statistics`)."""
    name = getattr(extractor, "name", None)
    if not name:
        raise ValueError(
            "the feature extractor has no name (e.g. random weights), so its features cannot "
            "be cached: give it a name or pass cache_path=None"
        )
    size = getattr(extractor, "image_size", None)
    return {
        "kind": "dct_gen.metrics reference statistics",
        "version": CACHE_VERSION,
        "data_dir": data_dir if "://" in data_dir else os.path.abspath(data_dir),
        "split": split,
        "num_images": int(num_images),
        "extractor": name,
        "image_size": None if size is None else list(size),
        "dataset": dataset_fingerprint(data_dir, split),
    }


def reference_statistics(
    extractor,
    *,
    data_dir: str,
    split: str,
    num_images: int,
    cache_path: str | None = None,
    batch_size: int = 50,
    log: Callable[[str], None] | None = print,
) -> Statistics:
    """Statistics of the first num_images images of a beam_jobs dataset split (decoded from
    their records), cached in cache_path (None: not cached).

    Raises:
      ValueError: the split holds fewer than num_images images.
      FileNotFoundError: no such dataset or split.
    """
    available = dataset_size(data_dir, split)
    if available is not None and available < num_images:
        raise ValueError(
            f"split {split!r} of {data_dir} holds {available} images, fewer than the "
            f"{num_images} asked for"
        )
    description = (
        reference_description(extractor, data_dir=data_dir, split=split, num_images=num_images)
        if cache_path
        else {}
    )

    def compute():
        return image_statistics(
            dataset_images(data_dir, split),
            extractor,
            num_images=num_images,
            batch_size=batch_size,
            log=log,
        )

    return cached_statistics(cache_path, description, compute, log)
