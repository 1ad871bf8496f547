"""The one place that decides what a secret looks like, so nothing stores or prints one.

Lakes are shared and CLI output lands in CI logs: a presigned URL, a password in a URL or an API
token passed on a trainer's command line must not end up in a manifest everyone can read or in
a log line.  Everything that is stored (inputs, metadata, the provenance command line) or
printed (results, errors, --debug tracebacks) goes through this module first.  Pure and without
dependencies, so every layer can import it.

Rules (docs/format.md, "Lineage", repeats them for a second implementation):
- URL user info is removed (`scheme://user:password@host/p` -> `scheme://host/p`).  The
  password may hold `/`, `:`, `+`, `=` (AWS secret keys do) and even `@`, so once a URL has
  user info it runs to the LAST `@` of the URL (before a next `scheme://`): where that is more
  than a client would take as user info (`https://u:p@ss/word@host/x`), more is removed rather
  than a piece of the password kept.  A URL has user info when an `@` comes before its first
  `/`, `?` or `#`, or when what comes before that is `x:y` and plainly not `host:port`
  (`s3://bucket/x@v1` and `http://h.example:9000/a/@v/1` have none: that `@` is in a path).
- A URL's query string, and anything after it, becomes `?...` (presigned URLs carry their
  signature, credential and token there).
- A `name=value` pair anywhere (a fragment `#access_token=...`, `--meta token=...`), a
  `"name": value` pair as JSON or a Python repr writes it, a `name: value` line as YAML or an
  HTTP header writes it, and `--name=value` or `--name value` on a command line, whose name
  names a secret (token, secret, password, credential, api key, auth, signature, ...:
  `is_secret_name`) keeps its name; its value becomes `***` (`"***"` after a quoted name).
- A provider token is masked by its form wherever it stands (`ghp_...`, `AKIA...`, `hf_...`,
  a JWT; the list is `_BARE_TOKEN`).
- Secret values the process knows to be in use (`remember_secrets`: a store's secret key and
  session token) are masked wherever they appear.
"""
from __future__ import annotations

import functools
import os
import re
import threading
from typing import Any, Iterable, Sequence

MASK = "***"

# Repetitions are bounded, and each URL is scanned once, so that printing a hostile manifest's
# 1 MB metadata value cannot take minutes.
_SCHEME_RE = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]{0,31}://")
# A URL runs to whitespace or a quote/bracket that usually delimits it in messages and reprs.
_URL = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]{0,31}://[^\s'\"<>(){}`\x1b]*")
_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]*\]|localhost|[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+)"
                        r":\d{1,5}(?:[/?#]|$)", re.IGNORECASE)
_AUTHORITY_END = re.compile(r"[/?#]")
_NAME_EQ = re.compile(r"(?<![A-Za-z0-9_.\-])([A-Za-z0-9_.\-]{0,127}[A-Za-z0-9_])=")
_VALUE_END = re.compile(r"[\s&;,'\"\x1b]")
# `"name": value` (JSON, a Python repr; a quote may be escaped, as in JSON inside JSON), or
# `name: value` (YAML, an HTTP header; a space must follow the colon, so `s3://` and
# `input:s3://...` are no pairs).  A bare name right after `/`, `:` or `@` is a path segment
# (`s3://b/p/my-token: not found`), not a label.
_NAME_COLON = re.compile(r"(?<![A-Za-z0-9_.\-\\])(\\?[\"'])([A-Za-z0-9_.\- ]{1,128})\1[ \t]*:[ \t]*"
                         r"|(?<![A-Za-z0-9_.\-\\/:@])([A-Za-z0-9_.\-]{0,127}[A-Za-z0-9_]):[ \t]+")
# After a quoted name a value is a quoted string, or one scalar (`1234`, `true`); after a bare
# name it is the rest of the line (a YAML passphrase has spaces; so has `Basic dXNlcjpw`), up to
# what ends a flow-style or repr'd mapping entry.
_SCALAR_END = re.compile(r"[\s,;&'\"}\]\x1b]")
_LINE_END = re.compile(r"[\r\n,'\"}\]\x1b]")
# Not secrets whatever their name, and telling: `"use_auth": false`.
_LITERALS = frozenset({"true", "false", "null", "none", "~"})
# `SomeAuthError: message` in a traceback labels an exception, not a value.
_EXCEPTION_NAME = re.compile(r"(?:Error|Exception|Warning|Exit)$")
# A masked value never runs further than this: each secret name's search for where its value
# ends is bounded, so a hostile 1 MB manifest value costs linear time however it is built.
# (No real credential comes near it.)
_MAX_VALUE = 65536
# Words that name a secret when they are a whole part of a key (`db.password`), wherever.
_SECRET_PARTS = frozenset({
    "secret", "password", "passwd", "passphrase", "credential", "credentials",
    "authorization", "apikey", "signature", "cookie", "bearer", "privatekey", "accesskey",
    "secretkey", "sessiontoken", "securitytoken",
})
# Words that name a secret, with any suffix (`hf_token`, `HF_TOKEN_ORG`, `token_v2`,
# `GITHUB_TOKEN2`, `db_pass`, `SMTP_PASS_1`, `pass_phrase`, `x-auth`), except before a word that
# says what is measured or set about them: metrics and hyperparameters (`pass_rate`,
# `token_acc`, `auth_f1`, `token_dropout`, `token_budget`) showed as `***`, and since masking
# happens when a manifest is written, their values were lost.  A secret stored in clear is the
# worse mistake, so an unknown suffix keeps the secret.
_WEAK_PARTS = frozenset({"token", "pass", "pwd", "auth", "sig", "sas"})
_NOT_SECRET_AFTER = frozenset({
    "acc", "accuracy", "rate", "at", "count", "counts", "f1", "score", "len", "length", "id",
    "ids", "type", "num", "per", "limit", "usage", "loss", "ratio", "frac", "fraction", "pct",
    "percent", "total", "avg", "mean", "max", "min", "time", "expiry", "expires", "ttl", "url",
    "uri", "endpoint", "file", "path", "dir", "name", "kind", "mode", "method", "enabled",
    "required", "level", "k", "n", "precision", "recall", "error", "errors", "dropout",
    "budget", "embedding", "embeddings", "emb", "merging", "merge", "label", "labels", "weight",
    "weights", "classification", "cls", "drop", "keep", "pruning", "prune", "entropy",
    "threshold", "digits", "figs", "through", "hash", "position", "positions", "pos",
    "mixing", "mixer", "shift", "dim", "size", "scale", "norm", "prob", "probs", "logits",
    "select", "selection", "sampling", "routing", "importance", "seen", "used", "processed",
})
# `pass@1`, `humaneval_pass_1`, `mbpp/pass_10`: the pass@k metric -- lower-case, and not after
# a word that holds credentials (`db_pass_2`, `SMTP_PASS_1` are passwords)
_CREDENTIAL_HOLDERS = frozenset({
    "db", "database", "smtp", "mail", "email", "redis", "mysql", "postgres", "pg", "mongo",
    "mongodb", "admin", "root", "user", "ftp", "sftp", "ssh", "ldap", "proxy", "vault", "api",
    "app", "service", "account", "login", "wifi", "vpn", "rabbitmq", "amqp", "kafka",
})
# Tokenizer and processor settings, not secrets (`pad_token: "<pad>"` in a --meta-file), and
# metrics per token (`loss_per_token`, `time_to_first_token`)
_SPECIAL_TOKENS = frozenset({"pad", "eos", "bos", "unk", "sep", "cls", "mask", "start", "end",
                             "special", "image", "video", "audio", "eot", "im", "boi", "eoi",
                             "per", "first", "last", "output", "input", "new"})
# `key` alone is too common (`sort_key`); these before it make it a secret (`api_key`).
_KEY_QUALIFIERS = frozenset({"api", "access", "secret", "private", "auth", "signing",
                             "encryption", "client", "master", "account", "session", "x",
                             # a provider's or a service's key (`KAGGLE_KEY`,
                             # `AZURE_STORAGE_KEY`, `--wandb-key`)
                             "kaggle", "storage", "wandb", "openai", "anthropic", "hf",
                             "huggingface", "comet", "neptune", "github", "gitlab", "slack",
                             "stripe", "sendgrid", "azure", "gcp", "google", "aws", "ssh",
                             "gpg", "pgp", "license", "hmac", "jwt", "webhook", "deploy",
                             "service", "consumer", "subscription", "shared", "sas"})


# `tokens` is a count far more often than a secret (`max_tokens`, `user_tokens`, `app_tokens`);
# after these words, which say what kind of credential, it is a list of them (`API_TOKENS`,
# `REFRESH_TOKENS`, `SLACK_BOT_TOKENS`).
_TOKENS_HOLDERS = frozenset({
    "api", "access", "auth", "session", "refresh", "bot", "id", "bearer", "oauth", "jwt",
    "secret", "private", "personal", "deploy", "vault", "github", "gitlab", "hf", "huggingface",
    "slack", "discord", "telegram", "openai", "anthropic", "wandb", "npm", "pypi", "kaggle",
    "azure", "gcp", "google", "aws", "sas", "webhook"})


# Every name `is_secret_name` accepts holds one of these (letters and digits only, any case);
# most names hold none, and redaction asks about every `name=` in a text.
_SECRET_HINT = re.compile(r"token|secret|pass|pwd|credential|auth|key|sig|cookie|bearer|sas")
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")


@functools.lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """Does `name` (an option, a metadata key, a query key) name a secret?"""
    if not _SECRET_HINT.search(_NOT_ALNUM.sub("", str(name).lower())):
        return False
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name).lstrip("-"))
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if p]
    if not parts:
        return False
    upper = str(name).lstrip("-").upper() == str(name).lstrip("-")  # an env var's style
    for i, part in enumerate(parts):
        if part in _SECRET_PARTS or part.endswith(("secret", "password", "passwd", "apikey",
                                                    "credential", "credentials")):
            return True
        word = part.rstrip("0123456789") or part  # `token2`, `pass2`
        if word in _WEAK_PARTS or word.endswith("token"):
            after = parts[i + 1] if i + 1 < len(parts) else None
            before = parts[i - 1] if i > 0 else None
            if after in _NOT_SECRET_AFTER:
                continue
            if word == "pass" and not upper and before not in _CREDENTIAL_HOLDERS and \
                    ("pass@" in str(name).lower() or (after is not None and after.isdigit())):
                continue  # the pass@k metric
            if word == "token" and after is None and before in _SPECIAL_TOKENS:
                continue  # pad_token, image_token, loss_per_token
            return True
        if part == "key" and (len(parts) == 1 or (i > 0 and parts[i - 1] in _KEY_QUALIFIERS)):
            return True
        if word.endswith("tokens") and i > 0 and parts[i - 1] in _TOKENS_HOLDERS and \
                (i + 1 == len(parts) or parts[i + 1] not in _NOT_SECRET_AFTER):
            return True  # API_TOKENS, HF_TOKENS; not max_tokens, num_tokens, image_tokens
    joined = "".join(parts)
    return any(w in joined for w in ("secret", "passw", "credential", "apikey", "accesskey",
                                      "privatekey"))


def _without_userinfo(url: str) -> str:
    """`url` (one scheme://... token, which may hold further URLs) without user info.

    To the last `@`, not the first: a client splits user info from the host at the last `@`
    of the authority, so a password holding `@` lost only its first piece; and past the
    authority, since a password may hold `/` too (where it does, more than the user info may
    go: better than a piece of the password staying).
    """
    starts = [m.start() for m in _SCHEME_RE.finditer(url)]
    out, prev = [], 0
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(url)
        host = url.index("://", start) + 3
        at = url.rfind("@", host, end)
        if at == -1:
            continue
        cut = _AUTHORITY_END.search(url, host, end)
        first = url[host:cut.start() if cut else end]
        if "@" not in first and (":" not in first or _HOST_PORT.match(url, host, end)):
            continue  # `host[:port]/path@...`: every `@` is in the path
        out.append(url[prev:host])
        prev = at + 1
    out.append(url[prev:])
    return "".join(out)


def _clean_url(m: re.Match[str]) -> str:
    head, qmark, _rest = _without_userinfo(m.group(0)).partition("?")
    return head + "?..." if qmark else head


def _value_end(ends: re.Pattern[str], text: str, start: int) -> int:
    """Where a value starting at `start` ends: at the first of `ends`, and never further than
    _MAX_VALUE on (the search is what must stay bounded)."""
    limit = min(len(text), start + _MAX_VALUE)
    m = ends.search(text, start, limit)
    return m.start() if m else limit


# A quoted value: to its closing quote (escapes skipped), else to the end of the line.
_QUOTED = {
    '"': re.compile(r'"(?:[^"\\\r\n]|\\[^\r\n])*"?'),
    "'": re.compile(r"'(?:[^'\\\r\n]|\\[^\r\n])*'?"),
    '\\"': re.compile(r'\\"[^\r\n]*?(?:\\"|(?=[\r\n])|$)'),
    "\\'": re.compile(r"\\'[^\r\n]*?(?:\\'|(?=[\r\n])|$)"),
}


def _quoted_end(text: str, start: int, quote: str) -> int:
    """The end (after the closing quote) of the string opening with `quote` at `start`."""
    m = _QUOTED[quote].match(text, start, min(len(text), start + _MAX_VALUE))
    return m.end() if m else start + len(quote)


def _secret_pairs(text: str) -> str:
    """Mask the value of every `name=value` whose name names a secret.  Names are found one
    `=` at a time, so `--meta=token=X` reaches `token`; a masked value (which may itself hold
    `=`) runs to whitespace, `&`, `;`, `,` or a quote.  Where a value ends is looked for only
    after a secret name, and the value is then consumed: each character is scanned a bounded
    number of times (`a=a=a=...` took minutes for a megabyte)."""
    out, pos = [], 0
    while (m := _NAME_EQ.search(text, pos)) is not None:
        start = m.end()
        if is_secret_name(m.group(1)):
            end = _value_end(_VALUE_END, text, start)
            if end > start and text[start:end] != MASK:
                out.append(text[pos:start] + MASK)
                pos = end
                continue
        out.append(text[pos:start])
        pos = start
    out.append(text[pos:])
    return "".join(out)


def _secret_colon_pairs(text: str) -> str:
    """Mask the value of every `"name": value` and `name: value` whose name names a secret:
    a structure stored as JSON text (a metadata value `[{"api_key": "..."}]`), a dict in an
    exception message, a YAML line, an HTTP header.  A quoted value keeps its quotes, so JSON
    stays JSON; any other value after a quoted name becomes `"***"`."""
    out, pos = [], 0
    while (m := _NAME_COLON.search(text, pos)) is not None:
        start = m.end()
        quote, name = (m.group(1), m.group(2)) if m.group(2) is not None else (None, m.group(3))
        if is_secret_name(name) and not _EXCEPTION_NAME.search(name):
            if text.startswith(("'", '"', "\\'", '\\"'), start):
                q = text[start:start + 2] if text[start] == "\\" else text[start]
                end = _quoted_end(text, start, q)
                value, masked = text[start + len(q):end].removesuffix(q), q + MASK + q
            else:
                end = _value_end(_SCALAR_END if quote else _LINE_END, text, start)
                value = text[start:end].rstrip()
                end = start + len(value)
                masked = '"***"' if quote else MASK
                if value.startswith(("{", "[")):  # a nested value: its own keys tell
                    value = ""
            if value and value != MASK and value.lower() not in _LITERALS:
                out.append(text[pos:start] + masked)
                pos = end
                continue
        out.append(text[pos:start])
        pos = start
    out.append(text[pos:])
    return "".join(out)


def redact_url(text: str) -> str:
    """`text` with URL user info and query strings removed (and nothing else changed): where it
    differs from `text`, a URL held credentials or a signature."""
    text = str(text)
    return _URL.sub(_clean_url, text) if "://" in text else text


# In free text (an rm --reason, an error message): `--hf-token VALUE`, `Bearer VALUE`
# (a value may start with one `-`: a random token does, one time in 64; `--x`, `-x` and `-` are
# taken for the next option, or stdin)
_OPTION_VALUE = re.compile(r"(?<![A-Za-z0-9_.\-])(--?[A-Za-z][A-Za-z0-9_\-]*)([ \t]+)"
                           r"(?!--|-[A-Za-z]?(?![^\s'\"]))([^\s'\"]+)")
# an argument after a secret-named option that is no value: the next option or stdin
_NOT_A_VALUE = re.compile(r"--.*|-[A-Za-z]?", re.DOTALL)
_BEARER = re.compile(r"(?<![A-Za-z0-9])(bearer[ \t]+)([A-Za-z0-9._~+/=\-]{6,})", re.IGNORECASE)
# Tokens that say what they are by their shape, whatever precedes them: `--reason 'pushed with
# ghp_... in it'` names no secret, yet the token is one.  Only forms a provider documents with a
# fixed prefix, long enough and (where the prefix alone is a common word piece) mixed enough that
# no path or word is taken for one.  Bare 40-hex keys (W&B) are left: a git commit looks the same.
_BARE_TOKEN = re.compile(
    r"(?<![A-Za-z0-9_\-])(?:"
    r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}"          # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{36,255}"               # GitHub tokens
    r"|github_pat_[A-Za-z0-9_]{22,255}"             # GitHub fine-grained token
    r"|glpat-[A-Za-z0-9_\-]{20,255}"                # GitLab personal token
    r"|hf_[A-Za-z0-9]{30,255}"                      # Hugging Face
    r"|xox[abprs]-[A-Za-z0-9\-]{10,255}"            # Slack
    r"|AIza[0-9A-Za-z_\-]{35}"                      # Google API key
    r"|sk-(?:[a-z]{2,8}-)?[A-Za-z0-9_\-]{32,255}"    # OpenAI, Anthropic
    r"|eyJ[A-Za-z0-9_\-]{8,4096}\.eyJ[A-Za-z0-9_\-]{8,8192}\.[A-Za-z0-9_\-]{0,1024}"  # a JWT
    r")(?![A-Za-z0-9_\-])")
# each form's fixed part: most text holds none, and is not scanned
_BARE_HINT = ("AKIA", "ASIA", "ABIA", "ACCA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_",
              "github_pat_", "glpat-", "hf_", "xox", "AIza", "sk-", "eyJ")


def _bare_token(m: re.Match[str]) -> str:
    token = m.group(0)
    body = token[3:] if token.startswith(("sk-", "hf_")) else token[4:]
    mixed = any(c.isupper() for c in body) and any(c.islower() for c in body)
    digit = any(c.isdigit() for c in body)
    # `sk-` begins ordinary names (`sk-learn-...`): a key has digits and both cases; a Hugging
    # Face token is 34 letters of both cases (no digit needed); 20 capitals all of A, C, G, T
    # are a DNA sequence (`ACCAGTTAGC...`, a CRISPR guide), not an AWS key id
    if (token.startswith("sk-") and not (digit and mixed)) or \
            (token.startswith("hf_") and not mixed) or not token.strip("ACGT"):
        return token
    return MASK


# A file path inside a version is lake content the user put there, not a credential that
# leaked into the output: a Hive-style `key=2026/part.parquet` showed as `key=***`, in --json
# too, where a script pulls by the paths it reads.  Output marks such spans with `verbatim`;
# the opening mark holds a per-process random part, so no text from outside (a file name, a
# metadata value) can open a span and carry a secret past `redact`.
_KEEP_OPEN = "\ue000" + os.urandom(8).hex() + "\ue001"
_KEEP_CLOSE = "\ue002"


def verbatim(text: str) -> str:
    """`text` marked for `redact` to leave alone (only the process's known secrets are masked
    in it); `redact` removes the marks.  A text that holds a closing mark is not marked."""
    text = str(text)
    return text if _KEEP_CLOSE in text else f"{_KEEP_OPEN}{text}{_KEEP_CLOSE}"


def kept_spans(text: str) -> list[tuple[str, bool]]:
    """`text` cut into (piece, marked by `verbatim`) pairs, the marks removed."""
    first, *rest = text.split(_KEEP_OPEN)
    out = [(first, False)] if first else []
    for piece in rest:
        kept, closed, after = piece.partition(_KEEP_CLOSE)
        if not closed:  # an opening mark without its end: nothing in it is vouched for
            out.append((kept, False))
            continue
        out.append((kept, True))
        if after:
            out.append((after, False))
    return out


def redact(text: str) -> str:
    """`text` with every URL credential, query value, secret-named `key=value`, `"key": value`
    and `key: value` and known secret value masked, the value after a secret-named option
    (`--hf-token X`) or `Bearer`, and a provider token recognisable by its form (`ghp_...`);
    spans marked by `verbatim` are kept as they are (but for known secret values)."""
    text = str(text)
    if _KEEP_OPEN in text:
        return "".join(_known_masked(piece) if kept else _redact(piece)
                       for piece, kept in kept_spans(text))
    return _redact(text)


def _known_masked(text: str) -> str:
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _redact(text: str) -> str:
    text = redact_url(_known_masked(text))
    if "=" in text:
        text = _secret_pairs(text)
    if ":" in text:
        text = _secret_colon_pairs(text)
    if "-" in text:
        text = _OPTION_VALUE.sub(lambda m: m.group(1) + m.group(2) + MASK
                                 if is_secret_name(m.group(1)) else m.group(0), text)
    if "earer" in text or "EARER" in text:
        text = _BEARER.sub(lambda m: m.group(1) + MASK, text)
    if any(h in text for h in _BARE_HINT):
        text = _BARE_TOKEN.sub(_bare_token, text)
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
        # the parser takes the next argument as the value even when it starts with `-` (a
        # random token does, one time in 64): only `--name`, a one-letter `-x` (a flag after
        # a secret-named switch such as --use-auth-token) and `-` are left as they are
        if hide_next and not _NOT_A_VALUE.fullmatch(arg):
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
    other values go through `redact` (a URL in a value loses its credentials), and so do the
    keys (`--meta "https://u:pw@host/ds=v1"` made the URL the key)."""
    return {(redact(k) if isinstance(k, str) else k):
            (MASK if is_secret_name(k) and v else redact(v)) if isinstance(v, str) else v
            for k, v in metadata.items()}


def redact_tree(value: Any) -> Any:
    """A parsed document (a --meta-file) as it may be stored: at any depth the value of a
    secret-named key is masked whole, and every other string goes through `redact`.

    Key by key, before the document is turned into text: a list of dicts (`callbacks: [{type:
    wandb, api_key: ...}]`) is stored as one JSON string, where no `name=value` shows the
    secret.  None, booleans and empty values are kept (`use_auth: false` is no secret).
    """
    active: set[int] = set()

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return redact(v)
        if not isinstance(v, (dict, list, tuple)):
            return v
        if id(v) in active:  # a YAML alias of its own ancestor
            raise ValueError("the document refers to itself (a recursive YAML alias)")
        active.add(id(v))
        try:
            if isinstance(v, dict):
                return {(redact(k) if isinstance(k, str) else k):
                        MASK if _maskable(x) and is_secret_name(str(k)) else walk(x)
                        for k, x in v.items()}
            return [walk(x) for x in v]
        finally:
            active.discard(id(v))

    return walk(value)


def _maskable(value: Any) -> bool:
    return value is not None and not isinstance(value, bool) and value not in ("", [], {})


# Secret values known to be in use (a store's secret key and session token): text no pattern
# recognises (a botocore message, a --debug traceback of a failed request) may quote them.
# Longest first, so that a secret holding another is masked whole; a tuple replaced whole, so
# that redact() reads it without the lock.
_known_secrets: tuple[str, ...] = ()
_known_recent: list[str] = []  # oldest first
_known_lock = threading.Lock()
_MIN_KNOWN = 8  # shorter values would blank innocent words; real secrets are long
_MAX_KNOWN = 64  # refreshed session tokens must not grow the list without end


def remember_secrets(values: Iterable[str | None]) -> None:
    """Mask these values (and their URL-encoded forms) in everything redacted from now on."""
    from urllib.parse import quote

    global _known_secrets
    new = []
    for v in values:
        if isinstance(v, str) and len(v) >= _MIN_KNOWN:
            new += [v, quote(v, safe="")]
    if not new:
        return
    with _known_lock:
        recent = [s for s in _known_recent if s not in new] + list(dict.fromkeys(new))
        _known_recent[:] = recent[-_MAX_KNOWN:]
        _known_secrets = tuple(sorted(_known_recent, key=len, reverse=True))
