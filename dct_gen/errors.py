"""The errors a user can cause, as opposed to bugs: each entry point prints them as one line.

Library modules raise these (or subclasses) for bad input; `dct_gen.cli` turns them into
`<prog>: error: <message>` and an exit status. Anything else that escapes is a bug and keeps
its traceback. This module imports nothing, so every layer may raise these.
"""


class UserError(Exception):
    """Something the user can fix; the message names the flag, file or field."""

    exit_code = 1


class UsageError(UserError, ValueError):
    """A bad flag or a bad combination of flags (exit status 2)."""

    exit_code = 2


class InputError(UserError, ValueError):
    """Bad input or data: a missing or malformed file, a config that contradicts the data
    (exit status 1)."""

    exit_code = 1
