"""launch/tpu.py: the dry run prints every command (create, ship, install, train) and runs none;
training is one client on worker 0 (the slice by name on a multi-host type); bad flags fail
before anything runs, with an error that names the flag."""

import importlib.util
import os
import shlex
import subprocess
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("launch_tpu", os.path.join(ROOT, "launch", "tpu.py"))
tpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tpu)

BASE = [
    "--project=proj-1",
    "--zone=us-central2-b",
    "--data_dir=gs://my-bucket/dct/lsun_384",
    "--model_dir=gs://my-bucket/runs/lsun",
]


@pytest.fixture
def no_execution(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a dry run must not execute anything")

    monkeypatch.setattr(subprocess, "call", fail)


def printed_steps(out: str) -> list[tuple[str, list[str]]]:
    """(comment, argv) pairs: each command is one shell line after a '# i/n: what' line."""
    lines = out.strip().splitlines()
    assert len(lines) % 2 == 0, out
    return [(lines[i], shlex.split(lines[i + 1])) for i in range(0, len(lines), 2)]


def remote_command(argv: list[str]) -> str:
    [command] = [a for a in argv if a.startswith("--command=")]
    return command.removeprefix("--command=")


POD = ["--accelerator_type=v4-32", "--runtime_version=tpu-vm-tf-2.17.0-pod-pjrt"]


def train_argv(argv: list[str]) -> list[str]:
    """The training step's remote command as the VM's shell splits it, after `cd dct-gen &&`."""
    script = remote_command(argv)
    assert script.startswith("cd dct-gen && "), script
    return shlex.split(script.removeprefix("cd dct-gen && "))


def test_dry_run_prints_create_copy_install_and_train(capsys, no_execution):
    code = tpu.main(
        BASE
        + ["--experiment=lsun_bedroom", "--accelerator_type=v4-8", "--max_steps=100"]
        + ["--gin_param=model_config.dropout = 0.0", "--runtime_version=tpu-ubuntu2204-base"]
        + ["--dry_run"]
    )
    assert code == 0
    steps = printed_steps(capsys.readouterr().out)
    assert [c for c, _ in steps] == [
        "# 1/5: create the TPU VM",
        "# 2/5: pack the working tree",
        "# 3/5: copy it to every worker",
        "# 4/5: install the package on every worker",
        "# 5/5: train on worker 0",
    ]
    create, tar, scp, install, train = [argv for _, argv in steps]
    where = ["--project=proj-1", "--zone=us-central2-b"]
    assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "dct-gen-lsun-bedroom"]
    for flag in where + ["--accelerator-type=v4-8", "--version=tpu-ubuntu2204-base"]:
        assert flag in create, flag
    archive = os.path.join(tempfile.gettempdir(), "dct-gen-lsun-bedroom.tar.gz")
    assert tar[:3] == ["tar", "-czf", archive] and tar[-3:] == ["-C", ROOT, "."]
    assert "--exclude=.git" in tar and "--exclude=.venv" in tar
    assert scp[4:7] == ["scp", archive, "dct-gen-lsun-bedroom:dct-gen.tar.gz"]
    for argv in (scp, install, train):
        assert argv[:4] == ["gcloud", "compute", "tpus", "tpu-vm"]
        assert all(flag in argv for flag in where)
    # Copy and install on every worker; one trainer, on worker 0, with the VM's own chips.
    workers = [a for a in scp + install + train if a.startswith("--worker=")]
    assert workers == ["--worker=all", "--worker=all", "--worker=0"]
    script = remote_command(install)
    assert "tar -xzf dct-gen.tar.gz -C dct-gen" in script
    assert "DCT_GEN_TF_WHEEL=tensorflow-tpu python3 -m pip install -e ." in script
    # The training command as the VM's shell will split it: no environment prefix.
    assert train_argv(train) == [
        "python3", "-m", "dct_gen.train",
        "--gin_file", "gin/experiments/lsun_bedroom.gin",
        "--gin_param", "model_config.dropout = 0.0",
        "--data_dir", "gs://my-bucket/dct/lsun_384",
        "--model_dir", "gs://my-bucket/runs/lsun",
        "--max_steps", "100",
        "--tpu", "local",
    ]  # fmt: skip
    # The experiment file the command names is in the tarball (the repository's gin/).
    assert os.path.isfile(os.path.join(ROOT, "gin", "experiments", "lsun_bedroom.gin"))


def test_dry_run_git_source_gin_files_detach_and_delete(capsys, no_execution):
    code = tpu.main(
        BASE
        + ["--gin_file=experiments/tiny.gin", "--gin_file=gin/models/test.gin", "--name=my-vm"]
        + ["--source=git", "--git_url=https://example.org/dct-gen.git", "--git_ref=v1"]
        + ["--skip_create", "--spot", "--pip_extra=libtpu", "--delete_after", "--dry_run"]
    )
    assert code == 0
    steps = printed_steps(capsys.readouterr().out)
    assert [c.split(": ", 1)[1] for c, _ in steps] == [
        "install the package on every worker",
        "train on worker 0",
        "delete the TPU VM",
    ]
    install, train, delete = [argv for _, argv in steps]
    assert "git clone --depth 1 --branch v1 https://example.org/dct-gen.git dct-gen" in (
        remote_command(install)
    )
    assert remote_command(install).endswith("pip install -e . libtpu")
    args = shlex.split(remote_command(train).removeprefix("cd dct-gen && "))
    assert args[args.index("--gin_file") + 1] == "gin/experiments/tiny.gin"
    assert args[args.index("--gin_file", args.index("--gin_file") + 1) + 1] == "gin/models/test.gin"
    assert "--max_steps" not in args
    assert delete[4:6] == ["delete", "my-vm"] and "--quiet" in delete

    assert tpu.main(BASE + ["--experiment=tiny", "--detach", "--dry_run"]) == 0
    train = printed_steps(capsys.readouterr().out)[-1][1]
    assert remote_command(train).startswith("cd dct-gen && nohup python3 -m dct_gen.train ")
    assert remote_command(train).endswith("> ~/dct-gen-train.log 2>&1 < /dev/null &")


def test_pod_slice_trains_one_client_on_worker_0_by_the_slice_name(capsys, no_execution):
    code = tpu.main(BASE + ["--experiment=lsun_bedroom", "--max_steps=100"] + POD + ["--dry_run"])
    assert code == 0
    steps = printed_steps(capsys.readouterr().out)
    assert [c for c, _ in steps] == [
        "# 1/5: create the TPU VM",
        "# 2/5: pack the working tree",
        "# 3/5: copy it to every worker",
        "# 4/5: install the package on every worker",
        "# 5/5: train on worker 0 (one client drives every host of the v4-32 slice)",
    ]
    create, _, scp, install, train = [argv for _, argv in steps]
    assert "--accelerator-type=v4-32" in create
    assert "--version=tpu-vm-tf-2.17.0-pod-pjrt" in create
    # Every host gets the package; only worker 0 runs the trainer.
    assert "--worker=all" in scp and "--worker=all" in install
    assert "--worker=0" in train and "--worker=all" not in train
    assert "DCT_GEN_TF_WHEEL=tensorflow-tpu python3 -m pip install -e ." in remote_command(install)
    assert train_argv(train) == [
        "TPU_LOAD_LIBRARY=0",
        "python3", "-m", "dct_gen.train",
        "--gin_file", "gin/experiments/lsun_bedroom.gin",
        "--data_dir", "gs://my-bucket/dct/lsun_384",
        "--model_dir", "gs://my-bucket/runs/lsun",
        "--max_steps", "100",
        "--tpu", "dct-gen-lsun-bedroom",
    ]  # fmt: skip


def test_pod_slice_keeps_an_explicit_tpu_and_detaches_on_worker_0(capsys, no_execution):
    common = BASE + ["--experiment=tiny", "--name=my-pod"] + POD + ["--dry_run"]
    assert tpu.main(common + ["--tpu=other-slice"]) == 0
    train = printed_steps(capsys.readouterr().out)[-1][1]
    args = train_argv(train)
    assert "--worker=0" in train and args[0] == "TPU_LOAD_LIBRARY=0"
    assert args[-2:] == ["--tpu", "other-slice"] and "my-pod" not in args

    # --tpu local on a pod is taken as asked: the local chips, so libtpu must load.
    assert tpu.main(common + ["--tpu=local"]) == 0
    args = train_argv(printed_steps(capsys.readouterr().out)[-1][1])
    assert args[0] == "python3" and args[-2:] == ["--tpu", "local"]

    assert tpu.main(common + ["--detach"]) == 0
    train = printed_steps(capsys.readouterr().out)[-1][1]
    assert "--worker=0" in train
    script = remote_command(train)
    assert script.startswith("cd dct-gen && TPU_LOAD_LIBRARY=0 nohup python3 -m dct_gen.train ")
    assert script.endswith(" --tpu my-pod > ~/dct-gen-train.log 2>&1 < /dev/null &")

    # An existing VM: its runtime version is not ours to check.
    base_runtime = BASE + ["--experiment=tiny", "--name=my-pod", "--accelerator_type=v4-32"]
    assert tpu.main(base_runtime + ["--skip_create", "--dry_run"]) == 0
    assert train_argv(printed_steps(capsys.readouterr().out)[-1][1])[-2:] == ["--tpu", "my-pod"]


@pytest.mark.parametrize(
    "accelerator_type, multi_host",
    [
        # The number counts TensorCores on v2/v3/v4/v5p and chips on v5e/v6e; one host holds 8.
        *[(t, False) for t in ("v2-8", "v3-8", "v4-8", "v5p-8", "v5litepod-8", "v6e-8")],
        *[(t, False) for t in ("v5litepod-1", "v5litepod-4", "v6e-4")],
        *[(t, True) for t in ("v4-16", "v5p-16", "v5litepod-16", "v6e-16", "v3-32", "v2-32")],
        *[(t, True) for t in ("v4-32", "v5p-128", "v6e-256")],
    ],
)
def test_host_count_rule(accelerator_type, multi_host):
    assert tpu.is_multi_host(accelerator_type) is multi_host


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--experiment=lsun_kitchen"], "--experiment=lsun_kitchen: no gin/experiments/"),
        (["--gin_file=experiments/nope.gin"], "--gin_file=experiments/nope.gin: no such gin"),
        ([], "--experiment or --gin_file"),
        (["--experiment=tiny", "--model_dir=/tmp/run"], "--model_dir=/tmp/run: must be a gs://"),
        (["--experiment=tiny", "--data_dir=data/tiny"], "--data_dir=data/tiny: must be a gs://"),
        (["--experiment=tiny", "--max_steps=0"], "--max_steps=0"),
        (["--experiment=tiny", "--accelerator_type=tpu8"], "--accelerator_type=tpu8"),
        (["--experiment=tiny", "--zone=uscentral"], "--zone=uscentral"),
        (["--experiment=tiny", "--name=My_VM"], "--name=My_VM"),
        (["--experiment=tiny", "--source=git"], "--git_url: required"),
        (["--experiment=tiny", "--gin_param=model_config.dropout"], "--gin_param="),
        (["--experiment=tiny", "--detach", "--delete_after"], "--delete_after"),
        (
            ["--experiment=tiny", "--accelerator_type=v4-32"],
            "--runtime_version=tpu-ubuntu2204-base",
        ),
        (["--experiment=tiny", "--tpu="], "--tpu: empty"),
    ],
)
def test_bad_arguments_fail_naming_the_flag(capsys, no_execution, extra, message):
    assert tpu.main(BASE + extra + ["--dry_run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tpu.py: error: ") and message in err


def test_missing_required_flag_exits():
    with pytest.raises(SystemExit):
        tpu.main(["--project=p", "--zone=us-central2-b", "--experiment=tiny"])  # no data_dir


def test_without_dry_run_runs_each_step_and_stops_at_a_failure(monkeypatch, capsys):
    monkeypatch.setattr(tpu.shutil, "which", lambda name: "/usr/bin/gcloud")
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd, cwd: calls.append(cmd) or 0)
    assert tpu.main(BASE + ["--experiment=tiny"]) == 0
    printed = [argv for _, argv in printed_steps(capsys.readouterr().out)]
    assert calls == printed and len(calls) == 5

    calls.clear()
    monkeypatch.setattr(subprocess, "call", lambda cmd, cwd: calls.append(cmd) or 7)
    assert tpu.main(BASE + ["--experiment=tiny"]) == 7
    assert len(calls) == 1
    assert "step 1 (create the TPU VM) exited with 7" in capsys.readouterr().err

    monkeypatch.setattr(tpu.shutil, "which", lambda name: None)
    assert tpu.main(BASE + ["--experiment=tiny"]) == 2
    assert "gcloud CLI is not on PATH" in capsys.readouterr().err
