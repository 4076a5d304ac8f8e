"""Packaging for dct-gen: DCTransformer (Nash et al., ICML 2021) in TensorFlow 2 / Keras 3.

The core install pins the stack the project is tested with (TensorFlow 2.21, Keras 3.15, Apache
Beam 2.77, TFDS 4.9, gin-config 0.5). The TensorFlow wheel is chosen when the package is built,
by the environment variable DCT_GEN_TF_WHEEL: `tensorflow-cpu` (the default), `tensorflow` (GPU
and TPU hosts) or `tensorflow[and-cuda]`. A package depends on exactly one of them, because
they install into the same folder:

    pip install .                                  # CPU
    DCT_GEN_TF_WHEEL=tensorflow pip install .      # GPU/TPU

Extras: `dataflow` (Beam's Google Cloud I/O, for the dataset job on Dataflow) and `test`.

The gin configs live in the repository's top-level gin/ folder; they are installed inside the
package as dct_gen/gin, where `dct_gen.cli.gin_dir()` finds them after a regular install (a
source checkout or an editable install reads gin/ itself). Dataflow workers install this
package through `--setup_file ./setup.py`.
"""

import os

from setuptools import find_packages, setup

# The TensorFlow wheel is chosen once, here. DCT_GEN_TF_WHEEL=tensorflow builds a package that
# depends on the full wheel (GPU/TPU hosts); the default is the CPU wheel. Never both.
_TF_WHEEL = os.environ.get("DCT_GEN_TF_WHEEL", "tensorflow-cpu")
if _TF_WHEEL not in ("tensorflow-cpu", "tensorflow", "tensorflow[and-cuda]"):
    raise SystemExit(
        f"DCT_GEN_TF_WHEEL={_TF_WHEEL!r}: expected 'tensorflow-cpu', 'tensorflow' or "
        "'tensorflow[and-cuda]'"
    )

CORE = [
    f"{_TF_WHEEL}==2.21.0",
    "keras>=3.15.1,<3.16",
    "tensorboard==2.21.0",
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
]

EXTRAS = {
    # Running the Beam job on Dataflow (Google Cloud I/O); pulls in no TensorFlow.
    "dataflow": ["apache-beam[gcp]==2.77.0"],
    "test": [
        "pytest",
        "jpeglib",
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
