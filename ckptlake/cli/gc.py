"""`ckptlake gc`: apply the retention policy and collect unreferenced chunks (plan, then act)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, Sequence

import typer

from .help import epilog, examples
from .options import (CommonOptions, ConfigOpt, DebugOpt, EndpointOpt, JsonOpt, LakeOpt,
                      ProfileOpt, QuietOpt, RegionOpt)
from .output import Output, format_age, format_bytes, isatty, lake_origin, lake_url, \
    open_lake, plain_table, plural, require_lake, write_stdout
from .text import no_controls

if TYPE_CHECKING:
    from ..core.gc import ArtifactPlan, GcPlan, GcResult

HELP = ("Delete the versions the retention policy no longer keeps, and the chunks nothing "
        "references any more.\n\n"
        "Prints the plan first: per artifact, each version to delete with its step, age, size "
        "and reason, the bytes freed and the monthly cost saved; with a `tier:` rule, the "
        "storage-class moves with $/month before and after.  --dry-run stops there.  "
        "Otherwise gc asks on a terminal, and elsewhere needs --yes.")
EPILOG = epilog(
    examples("ckptlake gc --dry-run", "ckptlake gc --match 'gpt2/*' --yes"),
    "The policy is the retention: section of ckptlake.yaml (or of --policy FILE); see "
    "ckptlake.example.yaml.  Aliased versions and each artifact's latest version are always "
    "kept; an artifact no rule matches is kept whole.  Deleted versions leave a tombstone "
    "(ckptlake ls ARTIFACT --all).  Chunks are swept only after retention.grace_period, and "
    "gc is safe to run while others push (docs/format.md, 'Deleting (gc)').  Objects under "
    "the lake's prefix that are not the lake's are reported, never deleted.")

DELETE_HEADERS = ("VERSION", "STEP", "AGE", "SIZE", "REASON")


def gc(
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the plan and change nothing.")] = False,
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", help="Carry the plan out without asking.")] = False,
    policy: Annotated[Optional[Path], typer.Option(
        "--policy", metavar="FILE", dir_okay=False, show_default=False,
        help="Read the retention: section from FILE instead of the config file.")] = None,
    match: Annotated[Optional[str], typer.Option(
        "--match", metavar="GLOB", show_default=False,
        help="Consider only artifacts matching GLOB (fnmatch, e.g. 'gpt2/*'); chunk "
             "collection is lake-wide.")] = None,
    lake: LakeOpt = None,
    endpoint_url: EndpointOpt = None,
    profile: ProfileOpt = None,
    region: RegionOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """The policy is validated before the lake is opened: a bad key, duration or rule fails in
    milliseconds with exit 2, naming the file, the line and the key."""
    common = CommonOptions(lake=lake, endpoint_url=endpoint_url, profile=profile, region=region,
                           config=config, json=json_, quiet=quiet, debug=debug)
    out = Output(common)
    with out.guard():
        from ..errors import PolicyRefusal, UsageError
        from ..policy.config import load_config
        from ..policy.retention import load_retention

        if match is not None and not match.strip():
            raise UsageError("--match is empty", hint="give a glob such as 'gpt2/*'")
        if policy is not None:
            # quoted, '~' reaches us unexpanded; --config and --lake expand it, so this does too
            policy = Path(os.path.expanduser(policy))  # (~nosuchuser stays, as in a shell)
            if not policy.exists():  # a missing local path (exit 3); a bad policy is exit 2
                from ..errors import NotFound

                raise NotFound(f"policy file not found: {policy} (from --policy)",
                               hint="fix the path")
            config = load_config(str(policy), origin="--policy")
            if getattr(config, "retention", None) is None:
                from ..policy.retention import no_section_error

                raise no_section_error(config)
            if (ignored := ignored_sections(config)) and not _is_the_config(policy, common):
                out.warn(f"--policy {policy}: gc reads only retention: (and lake:) from it; "
                         f"ignored: {ignored}: those belong in ckptlake.yaml (or --config FILE)",
                         document=True)
        else:
            config = load_config(str(common.config) if common.config else None)
        retention = load_retention(config)
        handle = open_lake(common)
        try:
            out.lake_line(handle)
            if policy is not None:
                check_policy_lake(config, policy, handle)
            require_lake(handle)
            if not retention.rules:
                out.note(f"no retention rules in {retention.source or 'any config file'}: "
                         "every artifact is kept whole; gc only collects unreferenced chunks")
            plan = handle.gc_plan(retention, match=match)
            notes = idle_rules(plan)
            doc: dict[str, Any] = {"lake": lake_url(handle), "lake_origin": lake_origin(handle),
                                   "dry_run": dry_run, "plan": plan.to_dict()}
            replicas = getattr(handle, "replicas", None)
            if replicas is not None and replicas.specs:
                check_replicas(handle)
                out.note("after the lake, gc sweeps its replicas with the same protocol: "
                         + ", ".join(f"{s.name} ({s.url})" for s in replicas.specs))
            if dry_run:
                show_plan(out, plan, notes)
                out.result(doc, None)
                return
            if plan.has_work and not yes:
                if not out.json and isatty(sys.stdin) and isatty(sys.stderr):
                    show_plan(out, plan, notes)
                    from .ask import confirm

                    if not confirm(f"Carry this out on {lake_url(handle)}?", "gc"):
                        raise PolicyRefusal("gc cancelled; nothing was changed")
                else:
                    raise PolicyRefusal(
                        f"gc would delete {plan.versions_deleted} "
                        f"version{'s' if plan.versions_deleted != 1 else ''} and sweep "
                        f"{format_bytes(plan.bytes_freed)}"
                        + (f", and move {len(plan.tiering.todo)} chunks to colder storage "
                           "classes" if plan.tiering is not None and plan.tiering.todo else "")
                        + "; nothing was changed",
                        hint="see the plan with --dry-run, carry it out with --yes")
            else:
                show_plan(out, plan, notes)
            result = handle.gc(plan)
            doc["result"] = result.to_dict()
            for warning in result.warnings:
                out.warn(warning)
            out.result(doc, result_summary(plan, result), done=_done(result))
        finally:
            handle.close()


def check_replicas(handle: Any) -> None:
    """Refuse (exit 2) before anything is deleted, in the lake or a replica, if a replica is
    another lake's or is a lake: its sweep would delete that lake's manifests and chunks
    (core/replicas.bind_replica).  The library's gc skips such a replica with a warning
    after the lake's gc; the command says so first, and changes nothing.  A replica that
    cannot be asked now is left to the sweep, which warns."""
    from ..core.replicas import bind_replica
    from ..errors import CkptlakeError, UsageError

    for spec in handle.replicas.specs:
        try:
            backend = handle._replica_backend(spec)
        except CkptlakeError:  # (a missing AWS profile is a ConfigError: a UsageError too)
            continue
        try:
            bind_replica(handle.store, backend, spec, create=False, records=True)
        except UsageError:
            raise
        except CkptlakeError:
            pass


# ---- rendering -------------------------------------------------------------------------------

def _versions_text(numbers: list[int]) -> str:
    """[24, 25, 26, 30] -> 'v24..v26, v30'."""
    out, run = [], []
    for n in sorted(set(numbers)):
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            out.append(f"v{run[0]}" if len(run) == 1 else f"v{run[0]}..v{run[-1]}")
        run = [n]
    if run:
        out.append(f"v{run[0]}" if len(run) == 1 else f"v{run[0]}..v{run[-1]}")
    return ", ".join(out)


def artifact_heading(ap: "ArtifactPlan") -> str:
    if ap.rule is None:
        return (f"{ap.artifact}: kept whole ({plural(ap.versions, 'version')}): no retention "
                "rule matches")
    where = f", line {ap.rule_line}" if ap.rule_line else ""
    if not ap.delete:
        return (f"{ap.artifact}: nothing to delete ({plural(ap.versions, 'version')}) under "
                f"{ap.rule}{where}")
    return (f"{ap.artifact}: delete {len(ap.delete)} of {ap.versions} versions under "
            f"{ap.rule}{where}; frees {format_bytes(ap.bytes_freed)}")


def kept_line(ap: "ArtifactPlan") -> str:
    parts = [f"{clause} -> {_versions_text(numbers)}" for clause, numbers in ap.kept_by.items()
             if clause != "no retention rule matches this artifact"]
    return "  kept: " + "; ".join(parts) if parts else ""


def delete_rows(ap: "ArtifactPlan") -> list[list[str]]:
    return [[f"v{v.version}", "-" if v.step is None else str(v.step),
             "?" if v.created is None else format_age(v.created),
             format_bytes(v.total_bytes), v.reason] for v in ap.delete]


def _tally(t: Any) -> str:
    return f"{t.objects} ({format_bytes(t.bytes)})"


def summary_lines(plan: "GcPlan") -> list[str]:
    from ..policy.retention import format_duration

    grace = format_duration(plan.grace_period)
    lines = [
        f"chunks: {_tally(plan.chunks)}; only in deleted versions: "
        f"{_tally(plan.freed_by_versions)}; unreferenced (older than {grace}): "
        f"{_tally(plan.garbage)}; condemned earlier, sweepable now: {_tally(plan.condemned_ripe)}"
        f", not yet: {_tally(plan.condemned_waiting)}; unreferenced but younger than {grace} "
        f"(left alone): {_tally(plan.young_garbage)}",
    ]
    if plan.multipart:
        lines.append(f"incomplete multipart uploads older than {grace} to abort: "
                     f"{len(plan.multipart)}")
    if plan.unreadable_records:
        lines.append(f"malformed gc records (left alone): {', '.join(plan.unreadable_records)}")
    if plan.pins or plan.pins_expired:
        lines.append(f"pins of pushes committing now (their chunks are kept): {plan.pins}"
                     + (f"; expired (left by pushes that died), removed by this run: "
                        f"{plan.pins_expired}" if plan.pins_expired else ""))
    if plan.unreadable_pins:
        lines.append(f"unreadable pins (gc deletes nothing until they are fixed or expire): "
                     f"{', '.join(plan.unreadable_pins[:5])}")
    if plan.foreign.objects:
        shown = ", ".join(plan.foreign_keys[:5])
        more = f" and {plan.foreign.objects - 5} more" if plan.foreign.objects > 5 else ""
        lines.append(f"not the lake's (reported, never deleted): {_tally(plan.foreign)}: "
                     f"{shown}{more}")
    when = "by this run" if plan.freed_after is None \
        or plan.bytes_freed == plan.bytes_freed_now else \
        f"{format_bytes(plan.bytes_freed_now)} by this run, the rest by the first gc run after " \
        f"{plan.freed_after.strftime('%Y-%m-%d %H:%M')}Z (grace_period {grace})"
    lines.append(
        f"footprint: {format_bytes(plan.footprint_before.bytes)} -> "
        f"{format_bytes(plan.footprint_after.bytes)}; frees {format_bytes(plan.bytes_freed)} "
        f"({when}), saving ${plan.monthly_saving_usd:.2f}/month at "
        f"${plan.storage_price_per_gb_month:g}/GB-month")
    return lines


TIER_HEADERS = ("CLASS", "BEFORE", "AFTER", "$/MONTH BEFORE", "$/MONTH AFTER")


def tiering_rows(plan: "GcPlan") -> list[list[str]]:
    t = plan.tiering
    assert t is not None
    rows = []
    for cls in sorted(set(t.before) | set(t.after)):
        b, a = t.before.get(cls), t.after.get(cls)
        rows.append([cls, _tally(b) if b else "0", _tally(a) if a else "0",
                     f"{b.usd_month:.2f}" if b else "0.00", f"{a.usd_month:.2f}" if a else "0.00"])
    return rows


def tiering_lines(plan: "GcPlan") -> list[str]:
    """The tiering plan's words (the per-class table is tiering_rows)."""
    t = plan.tiering
    if t is None:
        return []
    moves = "; ".join(f"{_tally(u)} to {cls}" for cls, u in sorted(t.moves.items())) \
        or "nothing"
    lines = [f"tiering ({'; '.join(t.rules)}): {plural(t.versions_cold, 'cold version')}, "
             f"{t.versions_hot} hot; moves {moves}"]
    pay = "" if t.payback_days is None else f", paid back in {t.payback_days:g} days"
    # a plan can cost more than it saves (INTELLIGENT_TIERING's per-object fee on small chunks)
    cost = -t.usd_month_saved
    saves = f"saves {t.usd_month_saved:.2f}" if cost <= 0 else \
        f"COSTS {cost:.2f} MORE" if cost >= 0.005 else f"COSTS {cost:.4f} MORE"
    lines.append(f"  $/month {t.usd_month_before:.2f} -> {t.usd_month_after:.2f}, {saves}"
                 f"; one-time: ${t.copy_requests_usd:.2f} of copy "
                 f"requests{pay}; minimum storage duration: ${t.min_duration_usd:.2f} billed "
                 "for the moved chunks even if gc deletes them sooner")
    left = [f"{label}: {_tally(u)}" for label, u in (
        ("shared with hot versions", t.shared_hot), ("below 128 KiB", t.too_small),
        ("already cold but read by hot versions (each read pays retrieval)", t.cold_but_hot),
        ("above 5 GiB (CopyObject's limit)", t.too_large))
        if u.objects]
    if left:
        lines.append("  left in place: " + "; ".join(left))
    if t.early_deletion.objects:
        lines.append(f"  early deletion: gc deletes {_tally(t.early_deletion)} of cold chunks "
                     "before their class's minimum storage duration: "
                     f"${t.early_deletion_usd:.2f} billed for the rest of it")
    lines.append("  " + t.note)
    return lines


def idle_rules(plan: "GcPlan") -> list[str]:
    """The plan's notes on rules that decide nothing (GcPlan.idle_rules), as lines: a typo in
    a glob ('gtp2/*') otherwise looks exactly like a rule that keeps everything it sees."""
    return [f"{note['rule']} {note['why']}" + (f" (line {note['line']})" if note["line"] else "")
            for note in plan.idle_rules]


def _is_the_config(policy: Path, common: Any) -> bool:
    """Whether the --policy file is also the config file in use: its other sections are read
    then, as the config's, and "those belong in ckptlake.yaml" would send the user back to it."""
    from ..errors import CkptlakeError
    from ..policy.config import find_config

    try:
        found = find_config(str(common.config) if common.config else None)
        return found is not None and os.path.samefile(found, policy)
    except (CkptlakeError, OSError):
        return False


def ignored_sections(config: Any) -> str:
    """The top-level keys of a --policy file that gc does not read, with their lines
    ("chunk_size (line 1), egress (line 6)"): a whole ckptlake.yaml given as the policy is
    fine, but settings written into a policy file meant for them would silently do nothing."""
    keys = sorted((line, key) for key, line in (getattr(config, "lines", None) or {}).items()
                  if "." not in key and "[" not in key and key not in ("retention", "lake"))
    return ", ".join(f"{key} (line {line})" for line, key in keys)


def plan_text(plan: "GcPlan", notes: Sequence[str] = ()) -> str:
    """The plan as plain text (pipes, logs); `notes` (idle_rules) before the summary."""
    blocks = []
    for ap in plan.artifacts:
        block = [artifact_heading(ap)]
        if ap.rule is not None and (kept := kept_line(ap)):
            block.append(kept)
        if ap.delete:
            block.append(_indent(plain_table(DELETE_HEADERS, delete_rows(ap))))
        blocks.append("\n".join(block))
    if not plan.artifacts:
        blocks.append("no versions to consider" + (f" matching {plan.match!r}" if plan.match
                                                   else ""))
    blocks.append("\n".join([*notes, *summary_lines(plan)]))
    if plan.tiering is not None:
        lines = tiering_lines(plan)
        blocks.append("\n".join([lines[0], _indent(plain_table(TIER_HEADERS,
                                                                tiering_rows(plan))),
                                 *lines[1:]]))
    return "\n\n".join(blocks)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def show_plan(out: Output, plan: "GcPlan", notes: Sequence[str] = ()) -> None:
    """The plan on stdout: rich tables on a terminal, plain text otherwise (not with --json
    or --quiet)."""
    if not out.human:
        return
    if not isatty(sys.stdout):
        write_stdout(no_controls(plan_text(plan, notes)))
        return
    from rich.console import Console

    from .output import rich_table

    console = Console(highlight=False, markup=False)
    for ap in plan.artifacts:
        console.print(no_controls(artifact_heading(ap)), style="bold")
        if ap.rule is not None and (kept := kept_line(ap)):
            console.print(no_controls(kept))
        if ap.delete:
            console.print(rich_table(DELETE_HEADERS, delete_rows(ap)))
        console.print()
    for line in [*notes, *summary_lines(plan)]:
        console.print(no_controls(line))
    if plan.tiering is not None:
        lines = tiering_lines(plan)
        console.print()
        console.print(no_controls(lines[0]), style="bold")
        console.print(rich_table(TIER_HEADERS, tiering_rows(plan)))
        for line in lines[1:]:
            console.print(no_controls(line))


def check_policy_lake(config: Any, policy: Path, handle: Any) -> None:
    """A --policy file that names a lake (a whole ckptlake.yaml given as the policy) is meant
    for that lake: applied to another one (gc run from the wrong directory, or with another
    --lake), its retention deletes versions there.  Refused before the plan."""
    from ..errors import UsageError
    from ..policy.config import named_lake, same_location

    named = named_lake(config)
    if named is None or same_location(named, lake_url(handle)):
        return
    raise UsageError(f"--policy {policy} names the lake {named} (lake: on line "
                     f"{config.line_of('lake')}), but gc would run on {lake_url(handle)} "
                     f"({lake_origin(handle)})",
                     hint=f"run it with --lake {named}, or remove lake: from the policy file "
                          "to apply its retention to any lake")


def result_summary(plan: "GcPlan", r: "GcResult") -> str:
    spared = f" ({len(r.versions_spared)} aliased meanwhile, kept)" if r.versions_spared else ""
    if r.versions_kept_latest:  # an rm deleted the latest after the plan: the next one stays
        spared += (f" ({', '.join(r.versions_kept_latest)} kept: the latest since an rm deleted "
                   "the one above it)")
    def copies(n: int) -> str:
        return f"{n} manifest cop{'y' if n == 1 else 'ies'}"

    return (f"gc: deleted {plural(len(r.versions_deleted), 'version')}{spared}, condemned "
            f"{plural(r.chunks_condemned, 'chunk')}, swept {plural(r.chunks_swept, 'chunk')} "
            f"({format_bytes(r.bytes_swept)}), aborted {plural(r.multipart_aborted, 'upload')} "
            f"in {r.seconds:.1f} s"
            + "".join(f"; replica {x['replica']}: condemned {x['chunks_condemned']}, swept "
                      f"{plural(x['chunks_swept'], 'chunk')} ({format_bytes(x['bytes_swept'])})"
                      + (f", dropped {copies(x['manifests_dropped'])}"
                         if x.get("manifests_dropped") else "")
                      for x in getattr(r, "replicas", ()))
            + (f"; tiered {plural(r.tiering['chunks_moved'], 'chunk')} "
               f"({format_bytes(r.tiering['bytes_moved'])})" if r.tiering else ""))


def _done(result: Any) -> str | None:
    """What a gc run changed, for the line said when its result cannot be written; None when
    it changed nothing ("gc deleted 0 versions" then read as done work)."""
    moved = (result.tiering or {}).get("chunks_moved", 0)
    parts = [f"{what} {plural(n, noun)}" for what, n, noun in (
        ("deleted", len(result.versions_deleted), "version"),
        ("condemned", result.chunks_condemned, "chunk"),
        ("swept", result.chunks_swept, "chunk"),
        ("aborted", result.multipart_aborted, "incomplete upload"),
        ("removed", result.records_removed + result.pins_removed, "stale record"),
        ("moved", moved, "chunk to a colder storage class"))
        if n]
    changed = [r for r in result.replicas  # (each replica's run is listed, changes or none)
               if any(r.get(k) for k in ("chunks_condemned", "chunks_swept", "records_removed",
                                          "pins_removed", "multipart_aborted",
                                          "manifests_dropped"))]
    if changed:
        parts.append(f"swept {plural(len(changed), 'replica')}")
    return "gc " + ", ".join(parts) if parts else None
