"""The command-line convention every entry point follows, and the gin files' search path.

Every entry point (`python -m dct_gen.<tool>`, `python -m beam_jobs.build_dataset`) is

    FLAGS = cli.flag_values()
    flags.DEFINE_string("model_dir", None, "...", flag_values=FLAGS)
    ...
    def main(argv=None) -> int:
        return cli.run(_main, FLAGS, argv, doc=__doc__)

- absl flags, defined on the entry point's own FlagValues (not the process-global FLAGS), so
  several entry points can be imported into one process and tests can call `main(argv)`.
- Heavy imports (TensorFlow, Keras, Beam) happen inside `_main`, after parsing, so `--help`
  answers at once.
- `--help` prints the module docstring and the flags and exits 0.
- A user error prints one line, `<prog>: error: <message>`, and exits 2 for a bad flag
  (`dct_gen.errors.UsageError`, or a flag absl cannot parse) and 1 for bad input or data
  (`dct_gen.errors.InputError`). No traceback: a traceback means a bug.

This module imports neither TensorFlow nor gin at module level.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence

from absl import flags

from dct_gen.errors import InputError, UsageError, UserError

HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "--helpfull", "-?")


def flag_values() -> flags.FlagValues:
    """A fresh set of flags for one entry point."""
    return flags.FlagValues()


def error_line(prog: str, message: str) -> str:
    """The one line a user error prints."""
    first = " ".join(str(message).strip().split("\n")) or "failed"
    return f"{prog}: error: {first}"


def _usage(prog: str, flag_values: flags.FlagValues, doc: str | None) -> str:
    text = (doc or f"python -m {prog} [flags]").strip() + "\n"
    # absl heads each module's flags with the module's file path; one module defines them all.
    help_text = "\n".join(
        line
        for line in flag_values.get_help(include_special_flags=False).splitlines()
        if not (line.endswith(":") and not line.startswith(" "))
    )
    if help_text.strip():
        text += "\nflags:\n" + help_text.rstrip() + "\n"
    return text


def parse(flag_values: flags.FlagValues, argv: Sequence[str], prog: str) -> list[str]:
    """Parses argv (without the program name) into flag_values; returns the positional
    arguments.

    Raises:
      UsageError: a flag absl cannot parse (unknown, bad value); the message names it.
    """
    # Every flag back to its default (a parse in the same process, even one that failed half
    # way, leaves values behind). Flag by flag rather than unparse_flags(), which logs through
    # the root logger: that first log call would install Python's default stderr handler in
    # every entry point, and library warnings would then print as `WARNING:name:msg`.
    for name in list(flag_values):
        flag_values[name].unparse()
    try:
        rest = flag_values([prog, *argv])
    except flags.Error as e:
        raise UsageError(str(e)) from None
    return list(rest[1:])


def run(
    body: Callable[[list[str]], int | None],
    flag_values: flags.FlagValues,
    argv: Sequence[str] | None = None,
    *,
    prog: str,
    doc: str | None = None,
) -> int:
    """Parses flags, calls body(positional_args) and turns user errors into one line.

    Args:
      body: the entry point's work; returns an exit status (None: 0).
      flag_values: the entry point's flags.
      argv: the arguments without the program name; None: sys.argv[1:].
      prog: the name in error lines, e.g. 'dct_gen.train'.
      doc: the usage text printed by --help (the entry module's docstring).

    Returns:
      The exit status: 0, 1 (bad input or data), 2 (bad flag), or body's own.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    head = argv[: argv.index("--")] if "--" in argv else argv
    if any(a in HELP_FLAGS for a in head):
        sys.stdout.write(_usage(prog, flag_values, doc))
        sys.stdout.flush()
        return 0
    # TensorFlow's native start-up lines would stand above a one-line error; warnings stay.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    try:
        positional = parse(flag_values, argv, prog)
        status = body(positional)
    except UserError as e:
        sys.stdout.flush()
        print(error_line(prog, str(e)), file=sys.stderr, flush=True)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return 130
    return int(status or 0)


def require(flag_values: flags.FlagValues, *names: str, unless: str | None = None) -> None:
    """Raises UsageError naming the first of `names` that was not given."""
    for name in names:
        if flag_values[name].value in (None, "", []):
            suffix = f" (unless --{unless})" if unless else ""
            raise UsageError(f"--{name} is required{suffix}")


def no_positional(args: Sequence[str]) -> None:
    """Raises UsageError when an entry point that takes none gets positional arguments."""
    if args:
        raise UsageError(f"unexpected arguments: {' '.join(args)}")


def existing_dir(flag: str, path: str, what: str = "directory") -> str:
    """path if it is an existing directory, else InputError naming the flag."""
    if not os.path.isdir(path):
        raise InputError(f"--{flag}={path}: no such {what}")
    return path


# ----------------------------------------------------------------------------------------------
# Gin files: the repository's gin/ folder, also installed inside the package as dct_gen/gin.


def gin_dir() -> str:
    """The folder of the project's gin files.

    A source checkout or editable install uses the repository's top-level gin/; a regular
    install (a wheel) carries the same files as the package data folder dct_gen/gin.
    """
    package = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(os.path.dirname(package), "gin"), os.path.join(package, "gin")):
        if os.path.isdir(os.path.join(candidate, "experiments")):
            return candidate
    raise InputError(
        f"the gin configs are missing (looked in {os.path.dirname(package)}/gin "
        f"and {package}/gin): reinstall dct-gen"
    )


def resolve_gin_file(path: str) -> str:
    """An existing path as given, else the path relative to the gin folder
    (e.g. 'experiments/tiny.gin').

    Raises:
      InputError: neither exists (the message names the file and the folder searched).
    """
    if os.path.isfile(path):
        return os.path.abspath(path)
    relative = path[len("gin/") :] if path.startswith("gin/") else path  # gin/data/x.gin anywhere
    packaged = os.path.join(gin_dir(), relative)
    if os.path.isfile(packaged):
        return packaged
    raise InputError(f"--gin_file {path}: no such file (nor under {gin_dir()})")


_search_paths: set[str] = set()  # folders already on gin's search path


def parse_gin(gin_files: Sequence[str] = (), gin_params: Sequence[str] = ()) -> None:
    """Clears gin and parses files (paths, or relative to the gin folder) and bindings; a
    file's `include` lines are resolved against the gin folder too.

    Raises:
      InputError: a missing file, or a file or binding gin refuses (the message names it).
    """
    import gin

    # Import every module whose configurables gin files bind, before parsing.
    from dct_gen import configs  # noqa: F401

    folder = gin_dir()
    if folder not in _search_paths:
        gin.add_config_file_search_path(folder)
        _search_paths.add(folder)
    files = [resolve_gin_file(f) for f in gin_files]
    gin.clear_config()
    # An include is looked up under each search path in turn; gin's package-resource reader
    # logs an error for every miss before the gin folder finds the file.
    root = logging.getLogger()
    root.addFilter(_quiet_include_misses)
    try:
        gin.parse_config_files_and_bindings(files, list(gin_params))
    except (OSError, ValueError, SyntaxError, KeyError, TypeError) as e:
        gin.clear_config()
        raise InputError(f"gin: {e}") from None
    finally:
        root.removeFilter(_quiet_include_misses)


def _quiet_include_misses(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Path not found:")
