r"""Builds, prints and runs the Dataflow command that converts one dataset split to DCT records.

    python launch/dataflow.py --project my-project --region us-central1 --bucket my-bucket \
        --dataset imagenet --tfds_name imagenet2012 --split train \
        --machine_type n2-standard-8 --num_workers 32 --dry_run -- --resolution 64 --num_shards 1024

Everything after `--` goes to `beam_jobs.build_dataset` unchanged (representation flags,
--num_shards, --max_failed_fraction, ...). The command runs from the repository root, so that
`--setup_file ./setup.py` makes every Dataflow worker install this package (and with it the
codec, the record format and the Beam transforms). The printed command is checked against the
job's own flag parser first, so a typo fails here and not on Dataflow.

Without --dry_run the command is executed; that needs the GCP extra of Beam in this environment
(pip install 'apache-beam[gcp]==2.77.0') and credentials for the project.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--project", required=True, help="GCP project that runs the job.")
    p.add_argument("--region", required=True, help="Dataflow region, e.g. us-central1.")
    p.add_argument("--bucket", required=True, help="GCS bucket (name, no gs://) for all files.")
    p.add_argument("--dataset", required=True, help="Short name: output folder and job name.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--tfds_name", help="Prepared TFDS dataset NAME[:VERSION].")
    source.add_argument("--image_glob", help="gs:// glob of image files.")
    p.add_argument("--split", default="train", help="Split to convert (default train).")
    p.add_argument(
        "--tfds_data_dir",
        help="TFDS data_dir (default gs://BUCKET/tensorflow_datasets).",
    )
    p.add_argument("--labels_from_dirs", action="store_true", help="With --image_glob.")
    p.add_argument("--output_dir", help="Output directory (default gs://BUCKET/dct_gen/DATASET).")
    p.add_argument("--machine_type", default="n2-standard-8", help="Worker machine type.")
    p.add_argument("--num_workers", type=int, default=16, help="Initial number of workers.")
    p.add_argument(
        "--max_num_workers", type=int, help="Autoscaling limit (default: --num_workers)."
    )
    p.add_argument("--disk_size_gb", type=int, default=50, help="Worker boot disk size.")
    p.add_argument("--job_name", help="Dataflow job name (default dct-gen-DATASET-SPLIT).")
    p.add_argument(
        "--python",
        default=sys.executable,
        help="Interpreter that runs the job (default: this one, with this environment).",
    )
    p.add_argument("--dry_run", action="store_true", help="Print the command, do not run it.")
    return p


def job_name(dataset: str, split: str) -> str:
    """A Dataflow job name: lowercase letters, digits and '-', starting with a letter."""
    name = re.sub(r"[^a-z0-9-]+", "-", f"dct-gen-{dataset}-{split}".lower()).strip("-")
    return name[:63].rstrip("-")


def build_command(args: argparse.Namespace, job_args: list[str]) -> list[str]:
    """The full argv of the Dataflow job."""
    bucket = args.bucket.removeprefix("gs://").strip("/")
    if not bucket or "/" in bucket:
        raise ValueError(f"--bucket={args.bucket}: give a bucket name, e.g. my-bucket")
    if args.num_workers < 1:
        raise ValueError(f"--num_workers={args.num_workers}: must be >= 1")
    max_workers = args.max_num_workers or args.num_workers
    if max_workers < args.num_workers:
        raise ValueError(f"--max_num_workers={max_workers} is below --num_workers")
    if args.image_glob and not args.image_glob.startswith("gs://"):
        raise ValueError(f"--image_glob={args.image_glob}: Dataflow workers read gs:// paths")
    output_dir = args.output_dir or f"gs://{bucket}/dct_gen/{args.dataset}"
    if not output_dir.startswith("gs://"):
        raise ValueError(f"--output_dir={output_dir}: Dataflow workers write gs:// paths")
    cmd = [args.python, "-m", "beam_jobs.build_dataset"]
    if args.tfds_name:
        data_dir = args.tfds_data_dir or f"gs://{bucket}/tensorflow_datasets"
        cmd += [f"--tfds_name={args.tfds_name}", f"--tfds_data_dir={data_dir}"]
    else:
        cmd += [f"--image_glob={args.image_glob}"]
        if args.labels_from_dirs:
            cmd += ["--labels_from_dirs"]
    cmd += [f"--split={args.split}", f"--output_dir={output_dir}"]
    cmd += list(job_args)
    cmd += [
        "--runner=DataflowRunner",
        f"--project={args.project}",
        f"--region={args.region}",
        f"--job_name={args.job_name or job_name(args.dataset, args.split)}",
        f"--temp_location=gs://{bucket}/dct_gen/tmp",
        f"--staging_location=gs://{bucket}/dct_gen/staging",
        "--setup_file=./setup.py",
        f"--machine_type={args.machine_type}",
        f"--num_workers={args.num_workers}",
        f"--max_num_workers={max_workers}",
        f"--disk_size_gb={args.disk_size_gb}",
    ]
    return cmd


def check_command(cmd: list[str]) -> None:
    """Parses the command with the job's own parser: unknown or contradictory flags raise."""
    sys.path.insert(0, REPO)
    from beam_jobs import build_dataset

    build_dataset.parse_args(["build_dataset"] + cmd[3:])


def format_command(cmd: list[str]) -> str:
    """One flag (with its value) per line, shell-quoted, ready to paste or pipe into sh."""
    lines = [" ".join(shlex.quote(a) for a in cmd[:3])]
    for arg in cmd[3:]:
        if lines[-1].startswith("--") and "=" not in lines[-1] and not arg.startswith("-"):
            lines[-1] += " " + shlex.quote(arg)  # the value of a space-separated flag
        else:
            lines.append(shlex.quote(arg))
    return " \\\n    ".join(lines)


def _gcp_extra_missing() -> str | None:
    try:
        import apache_beam.io.gcp.gcsio  # noqa: F401
        from google.cloud import storage  # noqa: F401
    except ImportError as e:
        return str(e)
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        cut = argv.index("--")
        own, job_args = argv[:cut], argv[cut + 1 :]
    else:
        own, job_args = argv, []
    args = _parser().parse_args(own)
    try:
        cmd = build_command(args, job_args)
        check_command(cmd)
    except ValueError as e:
        print(f"dataflow.py: error: {e}", file=sys.stderr)
        return 2
    print(f"cd {shlex.quote(REPO)} && \\")
    print(format_command(cmd))
    if args.dry_run:
        return 0
    missing = _gcp_extra_missing()
    if missing:
        print(
            f"dataflow.py: error: the GCP extra of Beam is missing ({missing}); install it with "
            "pip install 'apache-beam[gcp]==2.77.0', or use --dry_run",
            file=sys.stderr,
        )
        return 2
    sys.stdout.flush()
    return subprocess.call(cmd, cwd=REPO)


if __name__ == "__main__":
    sys.exit(main())
