"""launch/dataflow.py: the printed Dataflow command is complete, parses with the job's own flags,
and is run from the repository root (so that --setup_file ./setup.py ships the package)."""

import importlib.util
import os
import shlex
import subprocess
import sys

import pytest

from beam_jobs import build_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "launch_dataflow", os.path.join(ROOT, "launch", "dataflow.py")
)
dataflow = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dataflow)

BASE = ["--project=proj-1", "--region=europe-west4", "--bucket=my-bucket", "--dataset=ImageNet64"]


def _printed_argv(out: str) -> list[str]:
    first, rest = out.split("\n", 1)
    assert first == f"cd {shlex.quote(ROOT)} && \\"
    return shlex.split(rest.replace("\\\n", " "))


@pytest.fixture
def no_execution(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a dry run must not execute anything")

    monkeypatch.setattr(subprocess, "call", fail)


def test_dry_run_prints_the_full_tfds_command(capsys, no_execution):
    code = dataflow.main(
        BASE
        + ["--tfds_name=imagenet2012", "--split=validation", "--machine_type=n2-highcpu-16"]
        + ["--num_workers=8", "--max_num_workers=64", "--dry_run", "--"]
        + ["--resolution=64", "--block_size=4", "--num_shards=256"]
    )
    assert code == 0
    argv = _printed_argv(capsys.readouterr().out)
    assert argv[:3] == [sys.executable, "-m", "beam_jobs.build_dataset"]
    for flag in [
        "--tfds_name=imagenet2012",
        "--tfds_data_dir=gs://my-bucket/tensorflow_datasets",
        "--split=validation",
        "--output_dir=gs://my-bucket/dct_gen/ImageNet64",
        "--resolution=64",
        "--block_size=4",
        "--num_shards=256",
        "--runner=DataflowRunner",
        "--project=proj-1",
        "--region=europe-west4",
        "--job_name=dct-gen-imagenet64-validation",
        "--temp_location=gs://my-bucket/dct_gen/tmp",
        "--staging_location=gs://my-bucket/dct_gen/staging",
        "--setup_file=./setup.py",
        "--machine_type=n2-highcpu-16",
        "--num_workers=8",
        "--max_num_workers=64",
    ]:
        assert flag in argv, flag
    # The job's own parser accepts the printed command as it is.
    kwargs, beam_args = build_dataset.parse_args(["build_dataset"] + argv[3:])
    assert kwargs["cfg"].resolution == 64 and kwargs["cfg"].block_size == 4
    assert kwargs["num_shards"] == 256 and kwargs["split"] == "validation"
    assert "--runner=DataflowRunner" in beam_args and "--setup_file=./setup.py" in beam_args
    assert os.path.exists(os.path.join(ROOT, "setup.py"))


def test_dry_run_image_glob_with_labels(capsys, no_execution):
    code = dataflow.main(
        BASE
        + ["--image_glob=gs://my-bucket/photos/*/*.jpg", "--labels_from_dirs"]
        + ["--output_dir=gs://other/out", "--dry_run"]
    )
    assert code == 0
    argv = _printed_argv(capsys.readouterr().out)
    assert "--image_glob=gs://my-bucket/photos/*/*.jpg" in argv
    assert "--labels_from_dirs" in argv and "--output_dir=gs://other/out" in argv
    assert not [a for a in argv if a.startswith("--tfds")]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--tfds_name=x", "--dry_run", "--", "--num_shard=4"], "did you mean --num_shards"),
        (["--tfds_name=x", "--dry_run", "--", "--block_size=12"], "block_size=12"),
        (["--tfds_name=x", "--dry_run", "--", "--labels_from_dirs"], "--image_glob input only"),
        (["--image_glob=/local/*.jpg", "--dry_run"], "gs:// paths"),
        (["--tfds_name=x", "--num_workers=4", "--max_num_workers=2"], "below --num_workers"),
    ],
)
def test_bad_arguments_fail_before_anything_runs(capsys, no_execution, extra, message):
    assert dataflow.main(BASE + extra) == 2
    assert message in capsys.readouterr().err


def test_missing_required_arguments_exit():
    with pytest.raises(SystemExit):
        dataflow.main(["--project=p", "--region=r", "--dataset=d", "--tfds_name=x"])  # no bucket


def test_without_dry_run_runs_the_printed_command_from_the_repo(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(dataflow, "_gcp_extra_missing", lambda: None)
    monkeypatch.setattr(subprocess, "call", lambda cmd, cwd: calls.append((cmd, cwd)) or 0)
    assert dataflow.main(BASE + ["--tfds_name=cifar10"]) == 0
    printed = _printed_argv(capsys.readouterr().out)
    assert calls == [(printed, ROOT)]
    monkeypatch.setattr(dataflow, "_gcp_extra_missing", lambda: "No module named 'google'")
    assert dataflow.main(BASE + ["--tfds_name=cifar10"]) == 2
    assert "apache-beam[gcp]" in capsys.readouterr().err


def test_job_names_are_valid_dataflow_names():
    assert dataflow.job_name("My_Data.Set", "train[:10%]") == "dct-gen-my-data-set-train-10"
    assert len(dataflow.job_name("x" * 100, "train")) <= 63
