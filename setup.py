"""Packaging for dct-gen: DCTransformer (Nash et al., ICML 2021) in TensorFlow 2 / Keras 3.

The core install pins the stack verified in the project's STACK notes. It depends on
`tensorflow-cpu`; the `accelerator` extra is for GPU/TPU hosts and must be installed into an
environment that does not already hold `tensorflow-cpu` (both wheels share one folder), e.g.
`pip install --no-deps -e . && pip install -e .[accelerator]` after `pip uninstall tensorflow-cpu`.
Dataflow workers install this package through `--setup_file ./setup.py`.
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

setup(
    name="dct-gen",
    version="0.1.0",
    description="DCTransformer: generating images with sparse DCT representations",
    long_description=open(os.path.join(os.path.dirname(__file__), "README.md")).read()
    if os.path.exists(os.path.join(os.path.dirname(__file__), "README.md"))
    else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["dct_gen", "dct_gen.*", "beam_jobs", "beam_jobs.*"]),
    install_requires=CORE,
    extras_require=EXTRAS,
    include_package_data=True,
    license="Apache-2.0",
)
