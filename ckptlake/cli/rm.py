"""`ckptlake rm REF`: delete one version by hand (a bad checkpoint, one pushed with a secret)."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from .help import epilog
from .options import (CommonOptions, ConfigOpt, DebugOpt, EndpointOpt, JsonOpt, LakeOpt,
                      ProfileOpt, QuietOpt, RegionOpt)
from .output import Output, format_age, format_bytes, isatty, lake_origin, lake_url, \
    open_lake, plural, require_lake

if TYPE_CHECKING:
    from ..results import DeleteResult

HELP = ("Delete one version of an artifact: it cannot be read any more, at once.\n\n"
        "Its chunks stay in storage until gc sweeps the ones no other version uses, after "
        "retention.grace_period.  --dry-run says what would be deleted.  Otherwise rm asks on "
        "a terminal, and elsewhere needs --yes.")
EPILOG = epilog(
    "Example: ckptlake rm gpt2/run-7/ckpt@v12 --reason 'pushed with an API token in it' --yes",
    "Never deletes an artifact's latest version (the next push would take its number again: "
    "push a newer one first) nor an aliased one (ckptlake alias --delete ARTIFACT NAME "
    "first); both exit 7.  The version leaves a tombstone with the reason (ckptlake ls "
    "ARTIFACT --all; lineage shows it as expired).  To get its bytes out of storage (a leaked "
    "secret): ckptlake gc --yes condemns the chunks only it used once they are older than "
    "retention.grace_period, and a gc run a grace period later deletes them (one run, with "
    "grace_period: 0s); docs/format.md, 'Deleting (gc)'.")


def rm(
    ref: Annotated[str, typer.Argument(
        metavar="REF", show_default=False,
        help="The version to delete: ARTIFACT@vN (or any ARTIFACT@SELECTOR naming one).")],
    reason: Annotated[Optional[str], typer.Option(
        "--reason", metavar="TEXT", show_default=False,
        help="Why, kept in the version's tombstone and shown by every later read of it; one "
             "line (default: 'deleted by hand by USER@HOST').  Do not paste the secret: "
             "the reason is stored and shown (obvious token forms are masked).")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Say what would be deleted and change nothing.")] = False,
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", help="Delete without asking.")] = False,
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
    check (latest, aliases, existence) runs before asking; what is deleted is then the vN that
    REF resolved to, so an alias or @min: that moves while the user reads the question does
    not change what goes."""
    common = CommonOptions(lake=lake, endpoint_url=endpoint_url, profile=profile, region=region,
                           config=config, json=json_, quiet=quiet, debug=debug)
    out = Output(common)
    with out.guard():
        from ..core.values import check_reason
        from ..errors import PolicyRefusal
        from ..format.refs import parse_ref

        parsed = parse_ref(ref)
        reason = check_reason(reason, "--reason")  # as Lake.delete does, before the lake opens
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
                if not out.json and isatty(sys.stdin) and isatty(sys.stderr):
                    out.note(f"{describe(plan)}\n{chunks_note(plan)}")
                    if not confirm(f"Delete {plan.ref} from {lake_url(handle)}?", "rm"):
                        raise PolicyRefusal("rm cancelled; nothing was changed")
                else:
                    raise PolicyRefusal(f"rm would delete {plan.ref}; nothing was changed",
                                        hint="see what with --dry-run, delete it with --yes")
            result = handle.delete(plan.ref, reason=reason)
            doc = {**result.to_dict(), "lake": lake_url(handle),
                   "lake_origin": lake_origin(handle)}
            out.result(doc, f"deleted {describe(result)}\n{chunks_note(result)}")
        finally:
            handle.close()


def confirm(question: str, command: str) -> bool:
    """typer.confirm, with its Abort (EOF or Ctrl-C at the prompt) told apart: Ctrl-C is an
    interruption (exit 130), EOF a refusal (exit 7); neither is an internal error."""
    from ..errors import PolicyRefusal

    try:
        return typer.confirm(question, default=False, err=True)
    except typer.Abort as exc:
        typer.echo(err=True)  # end the prompt's line: the error goes on one of its own
        if isinstance(exc.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise PolicyRefusal(f"{command} cancelled; nothing was changed") from None


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
