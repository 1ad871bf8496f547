"""`ckptlake rm REF`: delete one version by hand (a bad checkpoint, one pushed with a secret);
with --pending, discard a sharded step that never committed (a crashed save)."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any, Optional, Sequence

import typer

from .ask import confirm
from .help import epilog, examples
from .options import (CommonOptions, ConfigOpt, DebugOpt, EndpointOpt, JsonOpt, LakeOpt,
                      ProfileOpt, QuietOpt, RegionOpt)
from .output import Output, format_age, format_bytes, isatty, lake_origin, lake_url, \
    open_lake, plural, require_lake

if TYPE_CHECKING:
    from ..format.refs import Ref
    from ..results import DeleteArtifactResult, DeleteResult, DiscardResult

HELP = ("Delete one version of an artifact (or, with --all, every version of it): it cannot "
        "be read any more, at once.\n\n"
        "Its chunks stay in storage until gc sweeps the ones no other version uses, after "
        "retention.grace_period.  --dry-run says what would be deleted.  Otherwise rm asks on "
        "a terminal, and elsewhere needs --yes.\n\n"
        "With --pending, REF is ARTIFACT@step=N and rm discards that sharded step instead: a "
        "save (e.g. torch DCP) that crashed before its commit, whose shard records block a "
        "re-run of the step and keep their chunks from gc.  Refused for a committed step, "
        "for a commit under way that is not stale yet, and (unless --force) while the step's "
        "newest shard record is younger than 5 minutes: a rank of that save still writing "
        "would leave a record that the step's next save commits with its own.")
EPILOG = epilog(
    examples("ckptlake rm gpt2/run-7/ckpt@v12 --reason 'pushed with an API token in it' --yes",
             "ckptlake rm gpt2/run-7/ckpt --all --reason 'abandoned run' --yes  # every version",
             "ckptlake rm gpt2/run-7/ckpt@step=2000 --pending --reason 'rank 3 OOM-killed' "
             "--yes  # a pending step"),
    "A bare ARTIFACT without --all is a usage error (exit 2): name the version, e.g. "
    "ARTIFACT@latest.",
    "Never deletes an aliased version (ckptlake alias --delete ARTIFACT NAME first): exit 7, "
    "and with --all nothing is deleted while any alias names a version.  The latest version "
    "may go: the next push takes the next number, never a deleted one (pushers of ckptlake "
    "before 2026-12-07 do not know that: see docs/format.md).  The version leaves a tombstone with the reason (ckptlake ls "
    "ARTIFACT --all; lineage shows it as expired).  To get its bytes out of storage (a leaked "
    "secret): ckptlake gc --yes condemns the chunks only it used once they are older than "
    "retention.grace_period, and a gc run a grace period later deletes them (one run, with "
    "grace_period: 0s); docs/format.md, 'Deleting (gc)'.",
    "--pending discards a sharded step that never committed (see them with ckptlake ls "
    "ARTIFACT --pending); then save the step again, with any world size.  docs/format.md, "
    "'Discarding a pending step'.")


def rm(
    ref: Annotated[str, typer.Argument(
        metavar="REF", show_default=False,
        help="The version to delete: ARTIFACT@vN (or any ARTIFACT@SELECTOR naming one); "
             "with --all, the ARTIFACT; with --pending, the step to discard: "
             "ARTIFACT@step=N.")],
    reason: Annotated[Optional[str], typer.Option(
        "--reason", metavar="TEXT", show_default=False,
        help="Why, kept in the version's tombstone and shown by every later read of it; one "
             "line (default: 'deleted by hand by USER@HOST').  Do not paste the secret: "
             "the reason is stored and shown (obvious token forms are masked).")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Say what would be deleted and change nothing.")] = False,
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", help="Delete without asking.")] = False,
    all_: Annotated[bool, typer.Option(
        "--all", help="Delete every version of the artifact REF (refused while an alias names "
                      "one of them).")] = False,
    pending: Annotated[bool, typer.Option(
        "--pending", help="Discard the sharded step ARTIFACT@step=N that never committed "
                          "(its shard records and claim), so it can be saved again.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="With --pending: discard even though the step's newest shard record "
                        "is younger than 5 minutes.  Only when every rank of that save has "
                        "stopped.")] = False,
    lake: LakeOpt = None,
    endpoint_url: EndpointOpt = None,
    profile: ProfileOpt = None,
    region: RegionOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """REF and --reason are checked before the lake is opened (exit 2 on a typo).  Every
    check (aliases, existence) runs before asking; what is deleted is then the vN that
    REF resolved to, so an alias or @min: that moves while the user reads the question does
    not change what goes."""
    common = CommonOptions(lake=lake, endpoint_url=endpoint_url, profile=profile, region=region,
                           config=config, json=json_, quiet=quiet, debug=debug)
    out = Output(common)
    with out.guard():
        from ..core.values import check_reason
        from ..errors import UsageError
        from ..format.refs import parse_ref

        parsed = parse_ref(ref)
        reason = check_reason(reason, "--reason")  # as Lake.delete does, before the lake opens
        if all_:
            if pending or force or "@" in ref:
                raise UsageError("--all deletes every version of an artifact: REF is ARTIFACT, "
                                 "without @SELECTOR, and without --pending or --force",
                                 hint=f"ckptlake rm {parsed.artifact} --all --dry-run shows "
                                      "what would go")
            _delete_all(out, common, parsed.artifact, reason=reason, dry_run=dry_run, yes=yes)
            return
        if "@" not in ref and not pending:
            raise UsageError(f"rm deletes one version: name it, e.g. {parsed.artifact}@latest "
                             f"or {parsed.artifact}@v1",
                             hint=f"to delete every version of {parsed.artifact}: ckptlake rm "
                                  f"{parsed.artifact} --all")
        if pending:
            _discard(out, common, step_ref(parsed, ref), reason=reason, dry_run=dry_run,
                     yes=yes, force=force)
            return
        if force:
            # `rm --force` (a peer tool's "do not ask") said "did you mean --yes?" before
            # --force existed here; it still does, and deletes nothing.
            raise UsageError("--force is for rm --pending only (a pending step all of whose "
                             "ranks have stopped); did you mean --yes?",
                             hint="rm deletes a version without asking with --yes")
        handle = open_lake(common)
        try:
            out.lake_line(handle)
            require_lake(handle)
            plan = handle.delete(parsed, reason=reason, dry_run=True)
            doc: dict[str, Any] = {**plan.to_dict(), "lake": lake_url(handle),
                                   "lake_origin": lake_origin(handle)}
            if dry_run:
                out.result(doc, f"would delete {describe(plan)}\n{chunks_note(plan)}")
                return
            if not yes:
                ask_or_refuse(out, f"{describe(plan)}\n{chunks_note(plan)}",
                              f"Delete {plan.ref} from {lake_url(handle)}?",
                              f"delete {plan.ref}", "see what with --dry-run, delete it with --yes")
            result = handle.delete(plan.ref, reason=reason)
            doc = {**result.to_dict(), "lake": lake_url(handle),
                   "lake_origin": lake_origin(handle)}
            out.result(doc, f"deleted {describe(result)}\n{chunks_note(result)}",
                       done=f"deleted {result.ref}")
        finally:
            handle.close()


def _delete_all(out: Output, common: CommonOptions, artifact: str, *, reason: str | None,
                dry_run: bool, yes: bool) -> None:
    """rm --all: plan (every check, nothing written), ask, delete what the plan showed (a
    version pushed while the user reads the question is not deleted unasked: `upto`)."""
    handle = open_lake(common)
    try:
        out.lake_line(handle)
        require_lake(handle)
        plan = handle.delete_artifact(artifact, reason=reason, dry_run=True)
        doc: dict[str, Any] = {**plan.to_dict(), "lake": lake_url(handle),
                               "lake_origin": lake_origin(handle)}
        if dry_run:
            out.result(doc, f"would delete {describe_all(plan)}\n{all_note(plan)}")
            return
        if not yes:
            every = f"every version of {artifact} ({plural(len(plan.versions), 'version')})"
            ask_or_refuse(out, f"{describe_all(plan)}\n{all_note(plan)}",
                          f"Delete {every} from {lake_url(handle)}?", f"delete {every}",
                          "see what with --dry-run, delete them with --yes")
        result = handle.delete_artifact(artifact, reason=reason, upto=max(plan.versions))
        doc = {**result.to_dict(), "lake": lake_url(handle), "lake_origin": lake_origin(handle)}
        if result.spared:
            out.warn(f"{_versions(result.spared)} of {artifact} {_were(result.spared)} aliased "
                     "while rm ran and stay")
        newer = sorted(set(result.remaining) - set(result.spared))
        if newer:
            out.warn(f"{_versions(newer)} of {artifact} {_were(newer)} pushed while rm ran "
                     "and stay")
        recorded = [n for n in result.lost if n in result.deleted]
        out.result(doc, f"deleted {plural(len(result.deleted), 'version')} of {artifact}"
                        f"{' (' + _versions(result.deleted) + ')' if result.deleted else ''}"
                        f"{lost_note(recorded)}; reason: {result.reason}\n{all_note(result)}",
                   done=f"deleted {plural(len(result.deleted), 'version')} of {artifact}")
    finally:
        handle.close()


def _versions(numbers: list[int]) -> str:
    """'v1-v3, v5' (runs shortened)."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(f"v{r[0]}" if len(r) == 1 else f"v{r[0]}-v{r[-1]}" for r in runs)


def _were(numbers: list[int]) -> str:
    return "was" if len(numbers) == 1 else "were"


def describe_all(r: "DeleteArtifactResult") -> str:
    """'every version of a/b: 3 versions (v1-v3), 1.0 GiB in 12 files; reason: ...'."""
    return (f"every version of {r.artifact}: {plural(len(r.versions), 'version')} "
            f"({_versions(r.versions)}), {format_bytes(r.total_bytes)} in "
            f"{plural(r.files, 'file')}{lost_note(r.lost)}; reason: {r.reason}")


def lost_note(lost: list[int]) -> str:
    """Why a version with no manifest is among those deleted: it is lost (see `verify`), and
    its tombstone is what lets gc run again."""
    if not lost:
        return ""
    return (f"; {_versions(lost)} {_were(lost)} lost (manifest gone outside ckptlake): only "
            f"{'its tombstone is' if len(lost) == 1 else 'their tombstones are'} written")


def all_note(r: "DeleteArtifactResult") -> str:
    when = "are" if r.deleted else "will be"
    return (f"the versions {when} unreadable at once, each leaving a tombstone (`ckptlake ls "
            f"{r.artifact} --all`); a later push to {r.artifact} starts after the highest "
            "deleted number; their chunks that no other version uses stay in storage until gc "
            "deletes them (`ckptlake gc --yes`, after retention.grace_period)"
            + (f"\n{_pending_steps(r)}" if r.pending else ""))


def _pending_steps(r: "DeleteArtifactResult") -> str:
    """Steps a sharded save has not committed are no versions: rm leaves them, and the
    commit of one (its last rank, a takeover) makes a new version of the artifact."""
    from ..core.shards import describe_steps

    n = len(r.pending)
    return (f"{r.artifact} also has {plural(n, 'pending sharded step')} "
            f"({describe_steps(r.pending)}), which rm "
            f"leaves: a commit of one makes a new version of it; discard "
            f"{'it' if n == 1 else 'each'} with `ckptlake rm {r.artifact}@step={r.pending[0]} "
            "--pending`")


def step_ref(parsed: "Ref", text: str) -> "Ref":
    """REF of `rm --pending`: a pending step has no version, so only @step=N names it."""
    from ..errors import UsageError

    if parsed.kind != "step":
        raise UsageError(f"--pending discards a step that never committed: REF must be "
                         f"ARTIFACT@step=N, got {text!r}",
                         hint=f"ckptlake ls {parsed.artifact} --pending lists the pending "
                              "steps; without --pending, rm deletes a version")
    return parsed


def _discard(out: Output, common: CommonOptions, ref: "Ref", *, reason: str | None,
             dry_run: bool, yes: bool, force: bool) -> None:
    """rm's flow for a pending step: plan (every check, nothing written), ask, discard.  The
    discard checks everything again, so a commit that starts while the user reads the
    question is refused, not discarded.  A plan that finds the step committed after all
    (LandedCommit) fails as the real run would; with --yes the real run goes first, to record
    the commit in the claim (it deletes nothing and fails the same way)."""
    from ..core.shards import LandedCommit

    artifact, step = ref.artifact, int(ref.value)  # type: ignore[arg-type]
    handle = open_lake(common)
    try:
        out.lake_line(handle)
        require_lake(handle)
        try:
            plan = handle.discard_pending(artifact, step, reason=reason, dry_run=True,
                                          force=force)
        except LandedCommit:
            if dry_run or not yes:
                raise
            plan = None  # the real run records the commit and raises LandedCommit itself
        if dry_run and plan is not None:
            doc: dict[str, Any] = {**plan.to_dict(), "lake": lake_url(handle),
                                   "lake_origin": lake_origin(handle)}
            out.result(doc, f"would discard {describe_pending(plan)}\n{pending_note(plan)}")
            return
        if not yes and plan is not None:
            ask_or_refuse(out, f"{describe_pending(plan)}\n{pending_note(plan)}",
                          f"Discard {plan.ref} from {lake_url(handle)}?",
                          f"discard the pending step {plan.ref}",
                          "see what with --dry-run, discard it with --yes")
        result = handle.discard_pending(artifact, step, reason=reason, force=force)
        doc = {**result.to_dict(), "lake": lake_url(handle),
               "lake_origin": lake_origin(handle)}
        out.result(doc, f"discarded {describe_pending(result)}\n{pending_note(result)}",
                   done=f"discarded the pending step {step} of {artifact}")
    finally:
        handle.close()


def describe_pending(r: "DiscardResult") -> str:
    """'a/b@step=2000 (incomplete: ranks 0, 2 of 4 in, 2 shard records, the last 3h ago);
    reason: ...'."""
    ranks = _ranges(r.ranks) or "none"
    last = ("" if r.newest_record_age_seconds is None else
            f", the last {format_age_seconds(r.newest_record_age_seconds)} ago")
    failed = f"; it failed: {r.error}" if r.error else ""
    return (f"{r.ref} ({r.state}: ranks {ranks} of {r.world} in, "
            f"{plural(r.records, 'shard record')}{last}{failed}); reason: {r.reason}")


def _ranges(numbers: Sequence[int]) -> str:
    """'0-511, 513, 515-1049': a world of 2,000 ranks listed one by one filled the screen."""
    out: list[list[int]] = []
    for n in sorted(set(numbers)):
        if out and out[-1][1] == n - 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in out)


def format_age_seconds(seconds: float) -> str:
    from datetime import datetime, timedelta, timezone

    then = datetime(2000, 1, 1, tzinfo=timezone.utc)
    return format_age(then, then + timedelta(seconds=seconds))


def pending_note(r: "DiscardResult") -> str:
    """What the discard frees and what it does not: the step, not the chunks (gc's job)."""
    when = "can now" if r.discarded else "could then"
    return (f"the step {when} be saved again, as a fresh step of any world size; chunks only "
            "its records used stay in storage until gc deletes them (`ckptlake gc --yes`, "
            "after retention.grace_period)")


def ask_or_refuse(out: Output, shown: str, question: str, would: str, hint: str) -> None:
    """Without --yes: on a terminal, show what goes and ask (no: exit 7); elsewhere (CI,
    pipes, --json) nobody can answer, so refuse (exit 7) and change nothing."""
    from ..errors import PolicyRefusal

    if not out.json and isatty(sys.stdin) and isatty(sys.stderr):
        out.note(shown)
        if not confirm(question, "rm"):
            raise PolicyRefusal("rm cancelled; nothing was changed")
    else:
        raise PolicyRefusal(f"rm would {would}; nothing was changed", hint=hint)


def describe(r: "DeleteResult") -> str:
    """'a/b@v3 (step 2000, 1.0 GiB in 12 files, pushed 3d ago by ci@runner-7): REASON'."""
    step = "" if r.step is None else f"step {r.step}, "
    who = f" by {r.created_by}" if r.created_by else ""
    return (f"{r.ref} ({step}{format_bytes(r.total_bytes)} in {plural(r.files, 'file')}, "
            f"pushed {format_age(r.created)} ago{who}); reason: {r.reason}")


def chunks_note(r: "DeleteResult") -> str:
    """What happens to the bytes, said every time: rm makes the version unreadable, it does
    not take its data out of storage (only gc's sweep may, after the grace period)."""
    when = "is" if r.deleted else "will be"
    return (f"the version {when} unreadable at once; its chunks that no other version uses "
            "stay in storage until gc deletes them: `ckptlake gc --yes` condemns them once "
            "they are older than retention.grace_period, and a gc run a grace period later "
            f"sweeps them (see `ckptlake ls {r.artifact} --all` for the tombstone)")
