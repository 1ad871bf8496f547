"""References: ARTIFACT[@SELECTOR].

ARTIFACT is a '/'-separated path of one or more segments made of [A-Za-z0-9._-] (a segment may
not be '.' or '..', so an artifact path can never climb out of its place in the lake).
SELECTOR is one of:

  latest      the highest version number (the default when '@...' is omitted)
  vN          version number N (1 <= N <= 9999999999, layout.MAX_NUMBER)
  step=N      the newest version whose step is N (0 <= N <= 9999999999)
  NAME        an alias, [A-Za-z][A-Za-z0-9._-]*, at most 128 characters (not 'latest', not
              of the form vN, in any case: a new alias `V2` is refused; one set before reads)
  min:METRIC  the live version with the lowest value of METRIC (ties: the newest)
  max:METRIC  the live version with the highest value of METRIC (ties: the newest)

An alias starts with a letter and cannot contain ':', so `min:x` can never be an alias.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UsageError
from .layout import MAX_NUMBER, NUMBER_DIGITS, check_step, check_version

_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
# Each artifact segment is a directory name in a local lake (artifacts/<a>/<b>/@v/...), so it
# must fit NAME_MAX (255 bytes): a longer one would fail only when the manifest is written,
# after every chunk was uploaded.
MAX_SEGMENT = 255
# Named in the usage error: a longer name that fits the pattern read as a wrong pattern.
MAX_ALIAS = 128
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,%d}" % (MAX_ALIAS - 1))
_VERSION = re.compile(r"v([0-9]+)")
_STEP = re.compile(r"step=(-?[0-9]+)")
_BEST = re.compile(r"(min|max):(.*)", re.S)
# Metric names as `ls --where` shows them; '/' too, for W&B-style names (train/loss).
METRIC_NAME = re.compile(r"[A-Za-z0-9._/-]{1,128}")
# What a sharded save's identity may look like: what a job scheduler's ids combine into
# ("$SLURM_JOB_ID.$SLURM_RESTART_COUNT", "run-7:3"), and nothing a shell or JSON mangles.
_SAVE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+=@-]{0,127}")

GRAMMAR = (
    "ARTIFACT[@SELECTOR]: ARTIFACT is a/b/c with segments of [A-Za-z0-9._-]; "
    "SELECTOR is latest (default), vN, step=N, an alias name, or min:METRIC / max:METRIC "
    "(the version with the lowest / highest value of a metric)"
)
# What a lake location looks like where an artifact name was expected: s3://bkt/lake (as
# s5cmd and aws take it), /data/lake, ~/lake, ./lake.
_LOCATION = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://|[/~]|\.\.?/")


def _name_hint(artifact: str) -> str:
    """Why a location read as a name: users of s5cmd and aws give the lake where ckptlake takes
    the artifact, and the grammar alone does not say where the lake goes instead."""
    if _LOCATION.match(artifact):
        return f"lake locations go in --lake (or CKPTLAKE_LAKE): ckptlake ls --lake {artifact}"
    return GRAMMAR


def validate_artifact(artifact: str) -> str:
    """Return artifact unchanged, or raise UsageError saying what is wrong with it."""
    if not isinstance(artifact, str):
        raise UsageError(f"an artifact name is a string, got {artifact!r}", hint=GRAMMAR)
    if not artifact:
        raise UsageError("empty artifact name", hint=GRAMMAR)
    if len(artifact) > 512:
        raise UsageError(f"artifact name longer than 512 characters: {artifact[:40]}...")
    if "@" in artifact:  # a reference where a name is wanted (`push DIR x/y@v2`)
        name = artifact.partition("@")[0]
        raise UsageError(f"{artifact!r} is a reference; this takes an artifact name alone",
                         hint=f"use {name!r}: a push always makes the next version"
                         if name else GRAMMAR)
    hint = _name_hint(artifact)
    for seg in artifact.split("/"):
        if not seg:
            raise UsageError(f"artifact {artifact!r} has an empty path segment", hint=hint)
        if seg in (".", ".."):
            raise UsageError(f"artifact {artifact!r} may not contain '.' or '..' segments",
                             hint=hint)
        if not _SEGMENT.fullmatch(seg):
            raise UsageError(f"artifact {artifact!r}: segment {seg!r} has characters outside "
                             "[A-Za-z0-9._-]", hint=hint)
        if len(seg) > MAX_SEGMENT:
            raise UsageError(f"artifact {artifact[:40]}...: segment {seg[:20]}... is "
                             f"{len(seg)} characters long; the limit is {MAX_SEGMENT}",
                             hint=hint)
    return artifact


def validate_alias(name: str, *, existing: bool = False) -> str:
    """Return name unchanged, or raise UsageError.

    A new alias may not be `latest` or `vN` in any case: `@V2` and `@Latest` would read as the
    version selectors to anyone but the parser.  existing=True (removing or checking an alias
    a lake already holds) applies only the older, case-sensitive rule, so an alias set before
    stays removable."""
    reserved = name if existing else name.lower()
    if reserved == "latest" or _VERSION.fullmatch(reserved) or not _ALIAS.fullmatch(name):
        why = (f": {len(name)} characters long, the limit is {MAX_ALIAS}"
               if len(name) > MAX_ALIAS and _ALIAS.fullmatch(name[:MAX_ALIAS]) else "")
        shown = name if len(name) <= 40 else name[:37] + "..."
        raise UsageError(f"invalid alias name {shown!r}{why}",
                         hint=f"aliases match [A-Za-z][A-Za-z0-9._-]*, at most {MAX_ALIAS} "
                              "characters, and may not be 'latest' or look like a version "
                              "(v3), in any case")
    return name


def validate_save_id(save_id: str) -> str:
    if not isinstance(save_id, str) or not _SAVE_ID.fullmatch(save_id):
        raise UsageError(f"invalid save id {save_id!r}",
                         hint="1-128 characters of A-Z a-z 0-9 . _ : + = @ -, starting with a "
                              "letter or digit; the same for every rank of one save, another "
                              "for each attempt (e.g. \"$SLURM_JOB_ID.$SLURM_RESTART_COUNT\")")
    return save_id


@dataclass(frozen=True)
class Ref:
    artifact: str
    kind: str = "latest"  # latest | version | step | alias | min | max (value: the metric)
    value: int | str | None = None

    def __str__(self) -> str:
        if self.kind == "latest":
            return self.artifact
        if self.kind == "version":
            return f"{self.artifact}@v{self.value}"
        if self.kind == "step":
            return f"{self.artifact}@step={self.value}"
        if self.kind in ("min", "max"):
            return f"{self.artifact}@{self.kind}:{self.value}"
        return f"{self.artifact}@{self.value}"


def _number(digits: str, selector: str) -> int:
    """The selector's number; more significant digits than the keys hold is refused here,
    before int() (which refuses strings of over 4,300 digits with a ValueError)."""
    if len(digits.lstrip("0")) > NUMBER_DIGITS:
        shown = selector if len(selector) <= 40 else selector[:37] + "..."
        raise UsageError(f"{shown!r} is out of range: version numbers and steps go up to "
                         f"{MAX_NUMBER} ({NUMBER_DIGITS} digits in the lake's keys)")
    return int(digits.lstrip("0") or "0")  # (leading zeros count towards int()'s limit too)


def parse_ref(text: str) -> Ref:
    """Parse ARTIFACT[@SELECTOR]; raise UsageError with the grammar on anything else."""
    artifact, at, selector = text.strip().partition("@")
    validate_artifact(artifact)
    if at and not selector:
        raise UsageError(f"empty selector after '@' in {text!r}", hint=GRAMMAR)
    if not at or selector == "latest":
        return Ref(artifact)
    if m := _VERSION.fullmatch(selector):
        n = _number(m.group(1), selector)
        if n < 1:
            raise UsageError(f"version numbers start at v1, got {selector!r}")
        return Ref(artifact, "version", check_version(n))
    if m := _STEP.fullmatch(selector):
        # Steps are pushed as integers >= 0 (no push can record another), so step=-1 or a
        # step too long for the keys is a typo, not a version that might exist.
        return Ref(artifact, "step", check_step(_number(m.group(1), selector),
                                                  "step selector"))
    if selector.startswith("step="):
        raise UsageError(f"step selector needs an integer: {selector!r}", hint=GRAMMAR)
    if m := _BEST.fullmatch(selector):
        if not METRIC_NAME.fullmatch(m.group(2)):
            raise UsageError(f"invalid metric name {m.group(2)!r} in {text!r}",
                             hint=f"{m.group(1)}:METRIC, METRIC made of [A-Za-z0-9._/-], "
                                  "e.g. @min:val_loss")
        return Ref(artifact, m.group(1), m.group(2))
    if _ALIAS.fullmatch(selector):
        return Ref(artifact, "alias", selector)
    raise UsageError(f"invalid selector {selector!r} in {text!r}", hint=GRAMMAR)

