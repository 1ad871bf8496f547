"""One error tree for the library.

Every error carries the data a caller needs to act on it, and knows the process exit code the
CLI maps it to, so the CLI never inspects messages and scripts can branch on the code.  Messages
are one line and say what to do next; they never contain credentials or presigned URLs.
"""
from __future__ import annotations

from typing import Any

# Exit codes (documented in README.md; scripts rely on them).
EXIT_OK = 0
EXIT_ERROR = 1  # unexpected failure (a bug, or an error we could not classify)
EXIT_USAGE = 2  # bad command line or bad input (also Typer's own usage errors)
EXIT_NOT_FOUND = 3  # artifact, version, alias, lake, bucket or local path missing
EXIT_ACCESS = 4  # credentials missing or refused, permission denied
EXIT_INTEGRITY = 5  # data read back does not match its hash, malformed/unsafe manifest
EXIT_CONFLICT = 6  # destination holds other files, source changed during push, lost CAS race
EXIT_POLICY = 7  # refused by policy (confirmation needed, retention, egress)
EXIT_TRANSFER = 8  # storage unreachable or failing after all retries
EXIT_INTERRUPTED = 130  # Ctrl-C, SIGTERM, SIGHUP (cli/main.py takes them as one); watch's SIGTERM exits 0


class CkptlakeError(Exception):
    """Base of every error the library raises on purpose."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        # Members the CLI's --json error document carries beside type, message and exit_code,
        # for the few errors a script must act on without parsing the message (the version a
        # push committed before its alias failed); empty for most.
        self.fields: dict[str, Any] = {}
        # Texts in the message that are a version's own paths (or a destination's), which the
        # CLI prints as they are: `key=2026/x.txt` is content, not a credential to mask.
        self.exact: tuple[str, ...] = ()

    def __str__(self) -> str:  # one line: message, then what to do
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(CkptlakeError):
    """Input that can never work as given: a bad reference, option value or config file."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A config or policy file is wrong; names the file, the key and the line."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 key: str | None = None, hint: str | None = None) -> None:
        where = path or "<config>"
        if line is not None:
            where += f":{line}"
        if key:
            from .redact import is_secret_name

            # `token: unknown key` is a secret-named pair to the redaction every message goes
            # through, which ate the words that said what was wrong
            where += f" (key {key})" if is_secret_name(key) else f": {key}"
        super().__init__(f"{where}: {message}", hint=hint)
        self.path, self.line, self.key = path, line, key


class NotFound(CkptlakeError):
    """Something named does not exist (object, artifact, version, alias, local path)."""

    exit_code = EXIT_NOT_FOUND


class AccessDenied(CkptlakeError):
    """Credentials are missing, invalid or lack permission."""

    exit_code = EXIT_ACCESS


class IntegrityError(CkptlakeError):
    """Bytes or metadata read from the lake are not what the lake's records promise."""

    exit_code = EXIT_INTEGRITY


class MissingChunk(IntegrityError):
    """A chunk a version references is not in the lake.  Raised by readers, which know only
    the chunk; the library API asks whether the version itself was deleted meanwhile (a
    pull racing gc or `ckptlake rm`), which is no integrity failure (catalog.deleted_meanwhile)."""


class NewerEncoding(IntegrityError):
    """A chunk is stored in an encoding this ckptlake does not know (a codec id or frame flag
    of a newer writer): upgrade ckptlake to read it.  Exit code 5 still, as for a corrupt
    chunk: this reader cannot vouch for the bytes either way."""


class UnsafeManifest(IntegrityError):
    """A manifest would write outside the destination (absolute path, `..`, symlink escape)."""


class Conflict(CkptlakeError):
    """The operation would clobber or race with something else; nothing was changed."""

    exit_code = EXIT_CONFLICT


class PreconditionFailed(Conflict):
    """A conditional write lost: the object exists (If-None-Match) or changed (If-Match)."""


class SourceChanged(Conflict):
    """A file changed while it was being pushed; the push committed nothing."""


class PolicyRefusal(CkptlakeError):
    """A policy (confirmation, egress, retention) refused the operation."""

    exit_code = EXIT_POLICY


class TransferError(CkptlakeError):
    """Storage failed after every retry; names the object, the attempts and the cause."""

    exit_code = EXIT_TRANSFER


class StorageClassUnsupported(TransferError):
    """The server refused to change an object's storage class (it has no classes, or not
    that one); the object is unchanged."""


class NoRoom(TransferError):
    """The local lake's file system refuses a write for a reason no retry fixes (full, over
    quota, a loop of symbolic links): exit 2, as a pull's full destination, with what to do.
    Still a TransferError, so whatever releases, stops or backs off after a failed write
    (a sharded commit's claim, `replicate`, `watch`) does so here too."""

    exit_code = EXIT_USAGE


class OutcomeUnknown(TransferError):
    """A conditional write (a version's manifest, an alias) ran out of attempts, and an attempt
    may have landed although no answer came back: the object may hold what was sent.  The
    message says what to check before rerunning (a rerun may duplicate a version)."""


class TransientError(TransferError):
    """A failure worth retrying (5xx, SlowDown, timeouts, connection resets).

    Backends raise it; the retry wrapper retries it and, when attempts run out, re-raises a
    plain TransferError naming the attempts.  `throttled`: the server asked to slow down
    (SlowDown, 429): backed off longer, and told as such when attempts run out.
    """

    throttled = False


class Interrupted(CkptlakeError):
    exit_code = EXIT_INTERRUPTED
