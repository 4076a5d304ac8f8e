"""Packaging for dct-gen: DCTransformer (Nash et al., ICML 2021) in TensorFlow 2 / Keras 3.

The core install pins the stack the project is tested with (TensorFlow 2.21 or 2.20, Keras 3.15,
Apache Beam 2.77, TFDS 4.9, gin-config 0.5). The TensorFlow wheel is chosen when the package is
built, by the environment variable DCT_GEN_TF_WHEEL: `tensorflow-cpu` (the default),
`tensorflow` (GPU hosts), `tensorflow[and-cuda]` (GPU hosts, CUDA from pip) or `tensorflow-tpu`
(Cloud TPU VMs: TensorFlow's TPU build, whose newest release is 2.20, with its libtpu). A
package depends on exactly one of them, because they install into the same folder.
DCT_GEN_TF_VERSION picks 2.21.0 (the default) or 2.20.0 (the only version of the TPU build),
and TensorBoard follows it:

    pip install .                                     # CPU, TF 2.21
    DCT_GEN_TF_WHEEL=tensorflow pip install .         # GPU, TF 2.21
    DCT_GEN_TF_WHEEL=tensorflow-tpu pip install .     # TPU VM, TF 2.20
    DCT_GEN_TF_VERSION=2.20.0 pip install .           # CPU, TF 2.20 (what `make test-tf220` tests)

Extras: `dataflow` (Beam's Google Cloud I/O, for the dataset job on Dataflow), `jxl` (the JPEG
and JPEG XL baselines of `python -m dct_gen.evaluate --images`) and `test`.

The gin configs live in the repository's top-level gin/ folder; they are installed inside the
package as dct_gen/gin, where `dct_gen.cli.gin_dir()` finds them after a regular install (a
source checkout or an editable install reads gin/ itself). Dataflow workers install this
package through `--setup_file ./setup.py`.
"""

import os

from setuptools import find_packages, setup

# The TensorFlow wheel and version are chosen once, here; the default is the CPU wheel of 2.21.
# Never two wheels: they install into the same folder.
_TF_WHEELS = ("tensorflow-cpu", "tensorflow", "tensorflow[and-cuda]", "tensorflow-tpu")
_TF_VERSIONS = ("2.21.0", "2.20.0")
_TF_WHEEL = os.environ.get("DCT_GEN_TF_WHEEL", "tensorflow-cpu")
if _TF_WHEEL not in _TF_WHEELS:
    raise SystemExit(
        f"DCT_GEN_TF_WHEEL={_TF_WHEEL!r}: expected one of {', '.join(map(repr, _TF_WHEELS))}"
    )
# TensorFlow's TPU build stops at 2.20.0 (there is no 2.21 TPU wheel, and 2.21 has no TPU extra).
_TF_VERSION = os.environ.get(
    "DCT_GEN_TF_VERSION", "2.20.0" if _TF_WHEEL == "tensorflow-tpu" else "2.21.0"
)
if _TF_VERSION not in _TF_VERSIONS:
    raise SystemExit(
        f"DCT_GEN_TF_VERSION={_TF_VERSION!r}: expected one of {', '.join(map(repr, _TF_VERSIONS))}"
    )
if _TF_WHEEL == "tensorflow-tpu" and _TF_VERSION != "2.20.0":
    raise SystemExit(
        f"DCT_GEN_TF_VERSION={_TF_VERSION!r}: tensorflow-tpu exists up to 2.20.0; leave "
        "DCT_GEN_TF_VERSION unset or set it to 2.20.0"
    )
_TF_MINOR = ".".join(_TF_VERSION.split(".")[:2])

CORE = [
    f"{_TF_WHEEL}=={_TF_VERSION}",
    "keras>=3.15.1,<3.16",
    f"tensorboard~={_TF_MINOR}.0",
    "apache-beam==2.77.0",
    "google-crc32c",
    "tensorflow-datasets==4.9.10",
    "importlib_resources",
    "gin-config==0.5.0",
    "absl-py",
    "numpy>=1.26,<2.5",
    "protobuf>=6.31.1,<7",
    "pillow",
    "matplotlib",
] + (
    # The TPU runtime that tensorflow-tpu 2.20 is built against.
    ["libtpu==0.0.14"] if _TF_WHEEL == "tensorflow-tpu" else []
)

EXTRAS = {
    # Running the Beam job on Dataflow (Google Cloud I/O); pulls in no TensorFlow.
    "dataflow": ["apache-beam[gcp]==2.77.0"],
    # The baselines of `python -m dct_gen.evaluate --images`: JPEG's optimized Huffman coding of
    # the model's coefficients (jpeglib) and JPEG XL's lossless recompression of that JPEG.
    "jxl": ["jpeglib", "imagecodecs"],
    "test": [
        "pytest",
        "jpeglib",
        "imagecodecs",
        "scipy",
        "scikit-image",
        "scikit-learn",
        "ruff",
    ],
}

HERE = os.path.dirname(os.path.abspath(__file__))


def _long_description() -> str:
    path = os.path.join(HERE, "README.md")
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8") as f:
        return f.read()


setup(
    name="dct-gen",
    version="0.1.0",
    description="DCTransformer: generating images with sparse DCT representations",
    long_description=_long_description(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # The top-level gin/ folder is installed as the data-only package dct_gen.gin.
    packages=find_packages(include=["dct_gen", "dct_gen.*", "beam_jobs", "beam_jobs.*"])
    + ["dct_gen.gin"],
    package_dir={"dct_gen.gin": "gin"},
    package_data={"dct_gen.gin": ["*.gin", "*/*.gin"]},
    install_requires=CORE,
    extras_require=EXTRAS,
    license="Apache-2.0",
    license_files=["LICENSE"],
)
