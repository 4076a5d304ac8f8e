"""The command-line convention, checked on every entry point as a user runs it (a fresh
process): `--help` answers promptly with exit status 0, and a user error is one line
`<prog>: error: ...` naming the flag, with exit status 2 for a bad flag and 1 for bad input,
and no traceback."""

import os
import subprocess
import sys
import time

import pytest

from dct_gen import cli
from dct_gen.errors import InputError, UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY_POINTS = (
    "beam_jobs.build_dataset",
    "dct_gen.train",
    "dct_gen.sample",
    "dct_gen.evaluate",
    "dct_gen.export",
    "dct_gen.codec",
    "dct_gen.demo",
)
HELP_SECONDS = 2.0


def _run(*args: str, cwd: str = ROOT, timeout: float = 120) -> tuple[int, str, str, float]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    return result.returncode, result.stdout, result.stderr, time.perf_counter() - start


def _one_error_line(stderr: str, prog: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    errors = [line for line in lines if line.startswith(f"{prog}: error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.mark.parametrize("prog", ENTRY_POINTS)
def test_help_answers_promptly(prog):
    status, out, err, seconds = _run(prog, "--help")
    assert status == 0, err
    assert "flags:" in out and "--" in out, out
    # Twice the allowance on a loaded machine would still be a regression worth seeing.
    assert seconds < HELP_SECONDS, f"{prog} --help took {seconds:.2f} s"


@pytest.mark.parametrize("prog", ENTRY_POINTS)
def test_an_entry_point_imports_no_heavy_library(prog):
    """What makes --help prompt: the libraries load after the flags parse."""
    code = (
        f"import sys, {prog}\n"
        "heavy = ('tensorflow', 'keras', 'numpy', 'apache_beam', 'matplotlib')\n"
        "loaded = sorted(m for m in heavy if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("prog", ENTRY_POINTS)
def test_an_unknown_flag_is_one_line_and_status_2(prog):
    status, _, err, _ = _run(prog, "--no_such_flag=1")
    assert status == 2
    assert "no_such_flag" in _one_error_line(err, prog)


def test_train_without_data_dir_names_it(tmp_path):
    status, _, err, _ = _run(
        "dct_gen.train", "--gin_file=experiments/tiny.gin", f"--model_dir={tmp_path}/run"
    )
    assert status == 2
    assert "--data_dir" in _one_error_line(err, "dct_gen.train")


def test_train_on_a_missing_data_dir_names_it(tmp_path):
    missing = str(tmp_path / "no_such_data")
    status, _, err, _ = _run(
        "dct_gen.train",
        "--gin_file=experiments/tiny.gin",
        f"--data_dir={missing}",
        f"--model_dir={tmp_path}/run",
    )
    assert status == 1
    line = _one_error_line(err, "dct_gen.train")
    assert "--data_dir" in line and missing in line
    assert not os.path.exists(tmp_path / "run"), "nothing is written for a refused run"


def test_abbreviated_flags_are_refused():
    status, _, err, _ = _run("dct_gen.train", "--gin_fil=experiments/tiny.gin", "--dry_run")
    assert status == 2
    assert "gin_fil" in _one_error_line(err, "dct_gen.train")


def test_dry_run_from_another_directory(tmp_path):
    """The gin folder and the includes inside gin files resolve wherever the user stands."""
    status, out, err, _ = _run(
        "dct_gen.train", "--gin_file=experiments/tiny.gin", "--dry_run", cwd=str(tmp_path)
    )
    assert status == 0, err
    assert '"parameters"' in out


# ----------------------------------------------------------------------------------------------
# cli.run in-process: what each kind of failure becomes.


def _flags():
    from absl import flags

    fv = cli.flag_values()
    flags.DEFINE_integer("steps", 1, "steps", flag_values=fv)
    flags.DEFINE_string("data_dir", None, "data", flag_values=fv)
    return fv


def test_run_maps_user_errors_to_one_line_and_their_status(capsys):
    def bad_input(args):
        raise InputError("--data_dir /x: no such directory")

    def bad_usage(args):
        raise UsageError("--steps and --data_dir contradict")

    assert cli.run(bad_input, _flags(), [], prog="tool") == 1
    assert capsys.readouterr().err == "tool: error: --data_dir /x: no such directory\n"
    assert cli.run(bad_usage, _flags(), [], prog="tool") == 2
    assert cli.run(lambda a: None, _flags(), ["--steps=x"], prog="tool") == 2
    assert "--steps" in capsys.readouterr().err
    assert cli.run(lambda a: 7, _flags(), ["--steps=3"], prog="tool") == 7


def test_run_lets_bugs_through():
    def bug(args):
        raise KeyError("a bug keeps its traceback")

    with pytest.raises(KeyError):
        cli.run(bug, _flags(), [], prog="tool")


def test_parse_gives_positional_arguments_and_flag_values():
    fv = _flags()
    rest = cli.parse(fv, ["upsample", "--steps", "4", "a.png"], "tool")
    assert rest == ["upsample", "a.png"] and fv.steps == 4
    cli.parse(fv, [], "tool")
    assert fv.steps == 1, "a second parse starts from the defaults"


def test_gin_files_resolve_against_the_gin_folder(tmp_path):
    assert cli.resolve_gin_file("experiments/tiny.gin") == os.path.join(
        cli.gin_dir(), "experiments", "tiny.gin"
    )
    local = tmp_path / "mine.gin"
    local.write_text("include 'models/tiny.gin'\n")
    assert cli.resolve_gin_file(str(local)) == str(local)
    with pytest.raises(InputError, match="nope.gin"):
        cli.resolve_gin_file("nope.gin")
