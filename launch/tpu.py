r"""Creates a Cloud TPU VM, installs this package on it and trains one gin experiment there.

    python launch/tpu.py --project my-project --zone us-central2-b --accelerator_type v4-8 \
        --experiment lsun_bedroom --data_dir gs://my-bucket/dct/lsun_bedroom_384 \
        --model_dir gs://my-bucket/runs/lsun_bedroom --dry_run

The steps, each a command printed before it runs (--dry_run prints them all and runs nothing):

1. create: `gcloud compute tpus tpu-vm create` with the accelerator type, zone, project and
   runtime version (--skip_create reuses a VM that exists);
2. ship: the working tree as a tarball (without .git, .venv, runs/ and caches), copied to every
   worker with `gcloud compute tpus tpu-vm scp` (--source copy, the default), or nothing here
   when the VM clones a git repository itself (--source git --git_url URL [--git_ref REF]);
3. install: on every worker, unpack or clone, then `pip install -e .` with
   DCT_GEN_TF_WHEEL=tensorflow-tpu, so that the package depends on TensorFlow's TPU build
   (tensorflow-tpu 2.20.0, its TensorBoard and libtpu; setup.py) instead of tensorflow-cpu,
   plus any --pip_extra packages;
4. train: on worker 0 only, `python3 -m dct_gen.train --gin_file gin/experiments/X.gin
   --data_dir gs://... --model_dir gs://... --tpu T`, with --gin_param and --max_steps passed
   on. On a single-host type (N <= 8 in vX-N) T is `local`: the one VM's own chips. On a
   multi-host slice (a pod slice, e.g. v4-32) one TensorFlow client drives every host: it runs
   on worker 0 with T the TPU's name (so TPUClusterResolver finds all the hosts) and
   TPU_LOAD_LIBRARY=0 (so it leaves worker 0's chips to the slice's TPU runtime); a trainer per
   host would be several independent jobs on one --model_dir. A given --tpu is used as is.
   --detach runs it under nohup, logging to ~/dct-gen-train.log on worker 0;
5. delete (only with --delete_after): `gcloud compute tpus tpu-vm delete`.

Arguments are checked before anything runs; an error names the flag. A multi-host slice needs a
TensorFlow pod software version (--runtime_version tpu-vm-tf-X.Y.Z-pod...), whose tpu-runtime
serves the TPUs of every host; the default tpu-ubuntu2204-base has none. Running for real needs
the gcloud CLI, logged in, with the TPU API enabled on the project.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_DIR = os.path.join(REPO, "gin")
REMOTE_DIR = "dct-gen"  # under the home directory of the ssh user on every worker
ARCHIVE = "dct-gen.tar.gz"
LOG = "dct-gen-train.log"
# Left out of the tarball: history, environments, run outputs, caches.
EXCLUDES = (".git", ".venv", "runs", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache")

_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
_ACCELERATOR = re.compile(r"^v[0-9]+[a-z]*-([0-9]+)$")
# The number after the dash in an accelerator type counts TensorCores on v2, v3, v4 and v5p (two
# per chip) and chips on v5litepod (v5e) and v6e (one TensorCore per chip). Either way one TPU VM
# host holds at most 8 of them: 4 chips of 2 cores on v2/v3/v4/v5p (v2-8, v3-8, v4-8, v5p-8 are
# one host; v4-16 and v5p-16 are two, v3-32 four), up to 8 chips on v5e/v6e (v5litepod-8 and
# v6e-8 are one host, v5litepod-16 and v6e-16 several). So N <= 8 is one host, N > 8 several.
MAX_PER_HOST = 8


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--project", required=True, help="GCP project that owns the TPU VM.")
    p.add_argument("--zone", required=True, help="TPU zone, e.g. us-central2-b.")
    p.add_argument(
        "--accelerator_type", default="v4-8", help="TPU type and size, e.g. v4-8, v5p-8."
    )
    p.add_argument(
        "--runtime_version",
        default="tpu-ubuntu2204-base",
        help="TPU VM software version (gcloud --version); default tpu-ubuntu2204-base. A "
        "multi-host slice needs a TensorFlow pod version, tpu-vm-tf-X.Y.Z-pod...",
    )
    p.add_argument("--name", help="TPU VM name (default dct-gen-EXPERIMENT).")
    p.add_argument("--spot", action="store_true", help="Create a Spot TPU VM.")
    p.add_argument(
        "--experiment", help="A gin/experiments/ name, e.g. lsun_bedroom (adds its gin file)."
    )
    p.add_argument(
        "--gin_file",
        action="append",
        default=[],
        help="Gin file in this repository (path, or relative to gin/); repeatable.",
    )
    p.add_argument("--gin_param", action="append", default=[], help="Gin binding; repeatable.")
    p.add_argument("--data_dir", required=True, help="gs:// dataset written by beam_jobs.")
    p.add_argument("--model_dir", required=True, help="gs:// run directory (checkpoints, logs).")
    p.add_argument("--max_steps", type=int, help="Stop after this many steps.")
    p.add_argument(
        "--tpu",
        help="dct_gen.train --tpu (default: local on a single-host type; on a multi-host slice "
        "the TPU VM's name, which the client on worker 0 resolves to every host).",
    )
    p.add_argument(
        "--source",
        choices=("copy", "git"),
        default="copy",
        help="copy: ship this working tree (default); git: clone --git_url on the VM.",
    )
    p.add_argument("--git_url", help="Repository the VM clones (--source git).")
    p.add_argument("--git_ref", default="main", help="Branch or tag to clone (default main).")
    p.add_argument(
        "--pip_extra",
        action="append",
        default=[],
        help="Another requirement to pip install on the VM (e.g. a TPU runtime pin); repeatable.",
    )
    p.add_argument("--python", default="python3", help="Interpreter on the VM (default python3).")
    p.add_argument("--skip_create", action="store_true", help="Use an existing TPU VM.")
    p.add_argument("--detach", action="store_true", help="Train under nohup; return at once.")
    p.add_argument(
        "--delete_after", action="store_true", help="Delete the TPU VM when training ends."
    )
    p.add_argument("--dry_run", action="store_true", help="Print every command, run none.")
    return p


def gin_file_in_repo(path: str, flag: str) -> str:
    """The gin file as a path relative to the repository root (what the VM sees)."""
    for candidate in (path, os.path.join(REPO, path), os.path.join(GIN_DIR, path)):
        if os.path.isfile(candidate):
            full = os.path.realpath(candidate)
            if not full.startswith(os.path.realpath(REPO) + os.sep):
                raise ValueError(f"{flag}={path}: outside the repository, so not on the VM")
            return os.path.relpath(full, os.path.realpath(REPO))
    raise ValueError(f"{flag}={path}: no such gin file (as given, in {REPO} or in {GIN_DIR})")


def experiments() -> list[str]:
    folder = os.path.join(GIN_DIR, "experiments")
    return sorted(f[:-4] for f in os.listdir(folder) if f.endswith(".gin"))


def is_multi_host(accelerator_type: str) -> bool:
    """Whether a (valid) accelerator type, e.g. v4-32, spans several TPU VM hosts."""
    return int(_ACCELERATOR.match(accelerator_type).group(1)) > MAX_PER_HOST


def _check_gs(flag: str, value: str) -> str:
    if not re.match(r"^gs://[a-z0-9][-_.a-z0-9]{1,220}[a-z0-9](/.*)?$", value):
        raise ValueError(
            f"--{flag}={value}: must be a gs:// path (gs://BUCKET/...): the TPU VM reads and "
            "writes Cloud Storage, not this machine's disk"
        )
    return value.rstrip("/")


def check_args(args: argparse.Namespace) -> dict:
    """Validates the flags; returns what the commands need. Raises ValueError naming a flag."""
    gin_files = []
    if args.experiment:
        if args.experiment not in experiments():
            raise ValueError(
                f"--experiment={args.experiment}: no gin/experiments/{args.experiment}.gin; "
                f"known: {', '.join(experiments())}"
            )
        gin_files.append(f"gin/experiments/{args.experiment}.gin")
    gin_files += [gin_file_in_repo(f, "--gin_file") for f in args.gin_file]
    if not gin_files:
        raise ValueError("--experiment or --gin_file: give the experiment to train")
    for param in args.gin_param:
        if "=" not in param:
            raise ValueError(f"--gin_param={param}: expected a binding 'key = value'")
    name = (
        args.name
        or re.sub(r"[^a-z0-9-]+", "-", f"dct-gen-{args.experiment or 'run'}".lower()).strip("-")[
            :63
        ]
    )
    if not _NAME.match(name):
        raise ValueError(
            f"--name={name}: 1-63 lowercase letters, digits or '-', starting with a letter"
        )
    if not _ZONE.match(args.zone):
        raise ValueError(f"--zone={args.zone}: expected a zone such as us-central2-b")
    if not _ACCELERATOR.match(args.accelerator_type):
        raise ValueError(
            f"--accelerator_type={args.accelerator_type}: expected a type such as v4-8, v5p-8, "
            "v5litepod-16 or v6e-8"
        )
    multi_host = is_multi_host(args.accelerator_type)
    if multi_host and not args.skip_create and "-pod" not in args.runtime_version:
        raise ValueError(
            f"--runtime_version={args.runtime_version}: a {args.accelerator_type} slice has "
            "several hosts and needs a TensorFlow pod software version (tpu-vm-tf-X.Y.Z-pod..., "
            "e.g. tpu-vm-tf-2.17.0-pod-pjrt), whose tpu-runtime serves every host's TPUs"
        )
    if args.tpu is not None and not args.tpu.strip():
        raise ValueError("--tpu: empty; give a TPU name or 'local', or leave it out")
    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError(f"--max_steps={args.max_steps}: must be at least 1")
    if args.source == "git" and not args.git_url:
        raise ValueError("--git_url: required with --source git")
    if args.source == "copy" and args.git_url:
        raise ValueError("--git_url: only with --source git")
    if args.detach and args.delete_after:
        raise ValueError("--delete_after: not with --detach (the VM would go while training)")
    return {
        "name": name,
        "multi_host": multi_host,
        # Single host: the VM's own chips. Multi-host: the slice by name, so that the one client
        # finds every host's TPU runtime through the Cloud TPU API.
        "tpu": args.tpu if args.tpu is not None else (name if multi_host else "local"),
        "gin_files": gin_files,
        "data_dir": _check_gs("data_dir", args.data_dir),
        "model_dir": _check_gs("model_dir", args.model_dir),
    }


def train_command(args: argparse.Namespace, checked: dict) -> list[str]:
    """The training argv that worker 0 runs, from the repository's root on the VM."""
    cmd = [args.python, "-m", "dct_gen.train"]
    for f in checked["gin_files"]:
        cmd += ["--gin_file", f]
    for param in args.gin_param:
        cmd += ["--gin_param", param]
    cmd += ["--data_dir", checked["data_dir"], "--model_dir", checked["model_dir"]]
    if args.max_steps is not None:
        cmd += ["--max_steps", str(args.max_steps)]
    return cmd + ["--tpu", checked["tpu"]]


def build_commands(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """(what, argv) for every step, in order; raises ValueError naming a bad flag."""
    checked = check_args(args)
    name = checked["name"]
    archive = os.path.join(tempfile.gettempdir(), f"{name}.tar.gz")  # the local tarball
    where = [f"--project={args.project}", f"--zone={args.zone}"]
    tpu_vm = ["gcloud", "compute", "tpus", "tpu-vm"]

    def ssh(script: str, worker: str = "all") -> list[str]:
        return tpu_vm + ["ssh", name, *where, f"--worker={worker}", f"--command={script}"]

    steps = []
    if not args.skip_create:
        create = tpu_vm + ["create", name, *where]
        create += [f"--accelerator-type={args.accelerator_type}"]
        create += [f"--version={args.runtime_version}"]
        steps.append(("create the TPU VM", create + (["--spot"] if args.spot else [])))

    if args.source == "copy":
        tar = ["tar", "-czf", archive] + [f"--exclude={e}" for e in EXCLUDES] + ["-C", REPO, "."]
        steps.append(("pack the working tree", tar))
        scp = tpu_vm + ["scp", archive, f"{name}:{ARCHIVE}", *where, "--worker=all"]
        steps.append(("copy it to every worker", scp))
        fetch = (
            f"rm -rf {REMOTE_DIR} && mkdir -p {REMOTE_DIR} && tar -xzf {ARCHIVE} -C {REMOTE_DIR}"
        )
    else:
        fetch = f"rm -rf {REMOTE_DIR} && " + shlex.join(
            ["git", "clone", "--depth", "1", "--branch", args.git_ref, args.git_url, REMOTE_DIR]
        )
    pip = [args.python, "-m", "pip", "install"]
    install = (
        f"{fetch} && cd {REMOTE_DIR} && {shlex.join(pip + ['--upgrade', 'pip'])} && "
        f"DCT_GEN_TF_WHEEL=tensorflow-tpu {shlex.join(pip + ['-e', '.'] + args.pip_extra)}"
    )
    steps.append(("install the package on every worker", ssh(install)))

    # One trainer, on worker 0, in both cases. On a single host "all" would be the same VM;
    # naming worker 0 says where the log and the process are. On a multi-host slice a trainer
    # per host would be independent jobs each seeing its own host's chips, all on one model_dir.
    train = shlex.join(train_command(args, checked))
    if args.detach:
        train = f"nohup {train} > ~/{LOG} 2>&1 < /dev/null &"
    if checked["multi_host"] and checked["tpu"] != "local":
        # The client reaches the chips through the slice's TPU runtime on every host, worker 0's
        # included; without this it would load libtpu itself and contend for worker 0's chips.
        train = f"TPU_LOAD_LIBRARY=0 {train}"
        what = (
            f"train on worker 0 (one client drives every host of the {args.accelerator_type} slice)"
        )
    else:
        what = "train on worker 0"
    steps.append((what, ssh(f"cd {REMOTE_DIR} && {train}", worker="0")))
    if args.delete_after:
        steps.append(("delete the TPU VM", tpu_vm + ["delete", name, *where, "--quiet"]))
    return steps


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        steps = build_commands(args)
    except ValueError as e:
        print(f"tpu.py: error: {e}", file=sys.stderr)
        return 2
    if not args.dry_run and shutil.which("gcloud") is None:
        print(
            "tpu.py: error: the gcloud CLI is not on PATH (install the Google Cloud SDK), or "
            "use --dry_run",
            file=sys.stderr,
        )
        return 2
    for i, (what, cmd) in enumerate(steps, 1):
        print(f"# {i}/{len(steps)}: {what}")
        print(shlex.join(cmd), flush=True)
        if args.dry_run:
            continue
        code = subprocess.call(cmd, cwd=REPO)
        if code:
            print(f"tpu.py: error: step {i} ({what}) exited with {code}", file=sys.stderr)
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
