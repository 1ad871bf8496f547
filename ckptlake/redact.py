"""The one place that decides what a secret looks like, so nothing stores or prints one.

Lakes are shared and CLI output lands in CI logs: a presigned URL, a password in a URL or an API
token passed on a trainer's command line must not end up in a manifest everyone can read or in
a log line.  Everything that is stored (inputs, metadata, the provenance command line) or
printed (results, errors, --debug tracebacks) goes through this module first.  Pure and without
dependencies, so every layer can import it.

Rules (docs/format.md, "Lineage", repeats them for a second implementation):
- URL user info is removed (`scheme://user:password@host/p` -> `scheme://host/p`).  The
  password may hold `/`, `:`, `+`, `=` (AWS secret keys do), so the user info runs to the first
  `@` after `://`, unless what precedes that `@` is plainly `host:port/path` or `host/path`
  (then the `@` is part of a path, as in `s3://bucket/x@v1`).
- A URL's query string, and anything after it, becomes `?...` (presigned URLs carry their
  signature, credential and token there).
- A `name=value` pair anywhere (a fragment `#access_token=...`, `--meta token=...`), and
  `--name=value` or `--name value` on a command line, whose name names a secret (token,
  secret, password, credential, api key, auth, signature, ...: `is_secret_name`) keeps its
  name; its value becomes `***`.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

MASK = "***"

# Repetitions are bounded, and each URL is scanned once, so that printing a hostile manifest's
# 1 MB metadata value cannot take minutes.
_SCHEME_RE = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]{0,31}://")
# A URL runs to whitespace or a quote/bracket that usually delimits it in messages and reprs.
_URL = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]{0,31}://[^\s'\"<>(){}`\x1b]*")
_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]*\]|localhost|[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+)"
                        r":\d{1,5}(?:[/?#]|$)", re.IGNORECASE)
_NAME_EQ = re.compile(r"(?<![A-Za-z0-9_.\-])([A-Za-z0-9_.\-]{0,127}[A-Za-z0-9_])=")
_VALUE_END = re.compile(r"[\s&;,'\"\x1b]|$")
# Words that name a secret when they are a whole part of a key (`hf_token`, `db.password`).
_SECRET_PARTS = frozenset({
    "token", "secret", "password", "passwd", "pwd", "pass", "passphrase", "credential",
    "credentials", "auth", "authorization", "apikey", "sig", "signature", "cookie", "bearer",
    "sas", "privatekey", "accesskey", "secretkey", "sessiontoken", "securitytoken",
})
# `key` alone is too common (`sort_key`); these before it make it a secret (`api_key`).
_KEY_QUALIFIERS = frozenset({"api", "access", "secret", "private", "auth", "signing",
                             "encryption", "client", "master", "account", "session", "x"})


def is_secret_name(name: str) -> bool:
    """Does `name` (an option, a metadata key, a query key) name a secret?"""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name).lstrip("-"))
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if p]
    if not parts:
        return False
    for i, part in enumerate(parts):
        if part in _SECRET_PARTS or part.endswith(("token", "secret", "password", "passwd",
                                                    "apikey", "credential", "credentials")):
            return True
        if part == "key" and (len(parts) == 1 or (i > 0 and parts[i - 1] in _KEY_QUALIFIERS)):
            return True
    joined = "".join(parts)
    return any(w in joined for w in ("secret", "passw", "credential", "apikey", "accesskey",
                                      "privatekey"))


def _without_userinfo(url: str) -> str:
    """`url` (one scheme://... token, which may hold further URLs) without user info."""
    starts = [m.start() for m in _SCHEME_RE.finditer(url)]
    out, prev = [], 0
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(url)
        host = url.index("://", start) + 3
        at = url.find("@", host, end)
        if at == -1:
            continue
        info = url[host:at]
        if "/" in info and (_HOST_PORT.match(info) or ":" not in info.split("/", 1)[0]):
            continue  # `host:port/path@...` or `host/path@...`: the `@` belongs to a path
        out.append(url[prev:host])
        prev = at + 1
    out.append(url[prev:])
    return "".join(out)


def _clean_url(m: re.Match[str]) -> str:
    head, qmark, _rest = _without_userinfo(m.group(0)).partition("?")
    return head + "?..." if qmark else head


def _secret_pairs(text: str) -> str:
    """Mask the value of every `name=value` whose name names a secret.  Names are found one
    `=` at a time, so `--meta=token=X` reaches `token`; a masked value (which may itself hold
    `=`) runs to whitespace, `&`, `;`, `,` or a quote."""
    out, pos = [], 0
    while (m := _NAME_EQ.search(text, pos)) is not None:
        end = _VALUE_END.search(text, m.end()).start()  # type: ignore[union-attr]
        if is_secret_name(m.group(1)) and end > m.end() and text[m.end():end] != MASK:
            out.append(text[pos:m.end()] + MASK)
            pos = end
        else:
            out.append(text[pos:m.end()])
            pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def redact_url(text: str) -> str:
    """`text` with URL user info and query strings removed (and nothing else changed): where it
    differs from `text`, a URL held credentials or a signature."""
    text = str(text)
    return _URL.sub(_clean_url, text) if "://" in text else text


# In free text (an rm --reason, an error message): `--hf-token VALUE`, `Bearer VALUE`
_OPTION_VALUE = re.compile(r"(?<![A-Za-z0-9_.\-])(--?[A-Za-z][A-Za-z0-9_\-]*)([ \t]+)"
                           r"(?!-)([^\s'\"]+)")
_BEARER = re.compile(r"(?<![A-Za-z0-9])(bearer[ \t]+)([A-Za-z0-9._~+/=\-]{6,})", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with every URL credential, query value and secret-named `key=value` masked, and
    the value after a secret-named option (`--hf-token X`) or `Bearer`."""
    text = redact_url(text)
    if "=" in text:
        text = _secret_pairs(text)
    if "-" in text:
        text = _OPTION_VALUE.sub(lambda m: m.group(1) + m.group(2) + MASK
                                 if is_secret_name(m.group(1)) else m.group(0), text)
    if "earer" in text or "EARER" in text:
        text = _BEARER.sub(lambda m: m.group(1) + MASK, text)
    return text


def _whole_value(arg: str) -> str:
    """One argument is one value: after a secret-named `name=` everything to the end of the
    argument is masked (`--meta "password=correct horse battery"` kept three of its four
    words when the value ran to the first space, as it must in free text)."""
    pos = 0
    while (m := _NAME_EQ.search(arg, pos)) is not None:
        if is_secret_name(m.group(1)) and m.end() < len(arg):
            return arg[:m.end()] + MASK
        pos = m.end()
    return arg


def redact_argv(argv: Sequence[str]) -> list[str]:
    """A command line as it may be stored: `redact` on each argument (the whole rest of an
    argument after a secret-named `name=`), and the value after an option that names a
    secret (`--hf-token X`, `--password X`) masked too."""
    out: list[str] = []
    hide_next = False
    for raw in argv:
        arg = str(raw)
        if hide_next and not arg.startswith("-"):
            out.append(MASK)
            hide_next = False
            continue
        hide_next = False
        if arg.startswith("-") and "=" not in arg and is_secret_name(arg):
            hide_next = True
        out.append(redact(_whole_value(arg)))
    return out


def redact_data(value: Any) -> Any:
    """`redact` on every string (and string key) of a JSON-like value; the rest unchanged."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {(redact(k) if isinstance(k, str) else k): redact_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_data(v) for v in value)
    return value


def redact_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """Metadata as it may be stored: a secret-named key keeps its name, its value is masked;
    other values go through `redact` (a URL in a value loses its credentials)."""
    return {k: (MASK if is_secret_name(k) and v else redact(v)) if isinstance(v, str) else v
            for k, v in metadata.items()}
