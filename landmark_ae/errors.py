"""Expected failures: shown to the user as one or two lines, never as a traceback."""

from __future__ import annotations

import difflib
import errno


class UserError(Exception):
    """Something the user can fix (a path, a config value, a missing step); exit code 2."""

    exit_code = 2


# Resource errors a user fixes outside the program (space, permissions): one line, exit code 1.
_RESOURCE = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def describe_os_error(exc: BaseException, resume_hint: str = "", where: object = None) -> str | None:
    """One line for an OSError caused by the machine (disk full, read-only, no permission), naming the
    path and what to do; None for any other error (a bug keeps its traceback)."""
    if not isinstance(exc, OSError):
        return None
    what = _RESOURCE.get(exc.errno or -1)
    if what is None and "free space" in str(exc):  # numpy's own message for a full disk
        what = "no space left on device"
    if what is None:
        return None
    path = exc.filename or (f"a file in {where}" if where else "a file")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        todo = ("choose a writable output dir with LANDMARK_AE_OUTPUTS=<dir> or paths.output_dir=<dir>, "
                "or fix the permissions")
    else:
        todo = "free some space"
    return f"{what} while writing {path}: {todo}" + (f", then {resume_hint}" if resume_hint else "")


def unknown_key_message(key: str, known: list[str], command: str = "") -> str:
    """`train has no key 'epoch'; did you mean 'epochs'?` (difflib over the keys at that level)."""
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, known, n=1, cutoff=0.6)
    parent = key.rsplit(".", 1)[0] + "." if "." in key else ""
    hint = f"; did you mean '{parent}{close[0]}'?" if close else f"; its keys here: {', '.join(sorted(known))}"
    return f"{command or 'this command'} has no key '{key}'{hint}"
