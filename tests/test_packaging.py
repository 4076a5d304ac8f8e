"""A regular (non-editable) install works away from the source: the wheel carries the gin
configs as dct_gen/gin and the LICENSE, and after installing it into a fresh virtual environment
the entry points run from any directory, gin `include` lines included.

Nothing is downloaded: the wheel is built with this environment's setuptools (no build
isolation) and installed without dependencies; a .pth file makes this environment's
site-packages (the dependencies) importable in the fresh one. Python processes the .pth files
of site directories only, so this environment's editable install of dct_gen (its own .pth and
import finder) does not leak in: the test checks that dct_gen is imported from the fresh
environment.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ("dct_gen", "beam_jobs", "gin")
TOP_FILES = ("setup.py", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in")


def _run(cmd, cwd, timeout=300):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    return done


def _ok(done) -> str:
    assert done.returncode == 0, f"{done.args}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(wheel path, sdist path), built from a copy of the sources (the checkout stays clean)."""
    tmp = tmp_path_factory.mktemp("packaging")
    src, dist = tmp / "src", tmp / "dist"
    for name in SOURCES:
        shutil.copytree(
            os.path.join(ROOT, name), src / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    for name in TOP_FILES:
        if os.path.exists(os.path.join(ROOT, name)):
            shutil.copy(os.path.join(ROOT, name), src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _ok(
        _run(
            [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist, src], tmp
        )
    )
    _ok(_run([sys.executable, "setup.py", "-q", "sdist", "-d", dist], src))
    (wheel,) = [dist / f for f in os.listdir(dist) if f.endswith(".whl")]
    (sdist,) = [dist / f for f in os.listdir(dist) if f.endswith(".tar.gz")]
    return wheel, sdist


@pytest.fixture(scope="module")
def fresh_env(built, tmp_path_factory):
    """The python of a fresh virtual environment with the wheel installed (and the
    dependencies of this environment importable)."""
    wheel, _ = built
    env = tmp_path_factory.mktemp("venv") / "env"
    _ok(_run([sys.executable, "-m", "venv", "--without-pip", env], env.parent))
    python = str(env / "bin" / "python")
    uv = os.path.join(os.path.dirname(sys.executable), "uv")
    if os.path.exists(uv):
        install = [uv, "pip", "install", "--python", python, "--offline"]
    else:
        install = [sys.executable, "-m", "pip", "--python", python, "install", "--no-index"]
    _ok(_run([*install, "--no-deps", wheel], env.parent))
    site = _ok(
        _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env)
    )
    deps = sysconfig.get_paths()["purelib"]
    with open(os.path.join(site.strip(), "dct_gen_test_dependencies.pth"), "w") as f:
        f.write(deps + "\n")
    return python, site.strip()


@pytest.mark.slow
def test_wheel_and_sdist_carry_the_gin_configs_and_the_license(built):
    wheel, sdist = built
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = z.read(metadata).decode()
    for gin_file in os.listdir(os.path.join(ROOT, "gin", "experiments")):
        assert f"dct_gen/gin/experiments/{gin_file}" in names, gin_file
    assert "dct_gen/gin/models/dctransformer.gin" in names
    assert "dct_gen/gin/data/tiny.gin" in names
    assert any(n.endswith(".dist-info/LICENSE") for n in names)
    assert "License: Apache-2.0" in meta and "License-File: LICENSE" in meta
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n]
    with tarfile.open(sdist) as t:
        members = {m.name.split("/", 1)[1] for m in t.getmembers() if "/" in m.name}
    assert {"LICENSE", "setup.py", "gin/experiments/tiny.gin", "gin/data/tiny.gin"} <= members


@pytest.mark.slow
def test_installed_entry_points_run_from_any_directory(fresh_env, tmp_path):
    python, site = fresh_env
    where = _ok(
        _run(
            [
                python,
                "-c",
                "import beam_jobs, dct_gen, dct_gen.cli as c; "
                "print(dct_gen.__file__); print(beam_jobs.__file__); print(c.gin_dir())",
            ],
            tmp_path,
        )
    ).split()
    assert [os.path.commonpath([site, p]) for p in where] == [site] * 3, (site, where)
    assert where[2] == os.path.join(site, "dct_gen", "gin")

    # Training's dry run: experiments/tiny.gin includes models/ and data/ files.
    out = _ok(
        _run(
            [python, "-m", "dct_gen.train", "--gin_file", "experiments/tiny.gin", "--dry_run"],
            tmp_path,
        )
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert result["parameters"] > 0

    help_text = _ok(_run([python, "-m", "beam_jobs.build_dataset", "--help"], tmp_path))
    assert "--gin_file" in help_text
    # The dataset job reads the same installed gin files: they parse, and the job stops at
    # the input, which does not exist.
    done = _run(
        [
            python,
            "-m",
            "beam_jobs.build_dataset",
            "--gin_file=experiments/tiny.gin",
            f"--output_dir={tmp_path / 'out'}",
            f"--image_glob={tmp_path / 'none' / '*.png'}",
        ],
        tmp_path,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].endswith("matches no file"), done.stderr[-2000:]
