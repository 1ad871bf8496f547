"""The egress guard in the CLI, shared by the commands that download data chunks: `pull` and
`diff --values` (`lineage` reads only manifests and records, and has none).

The estimate itself, and whether it refuses, are the library's (core/egress.py); here: the
config's policy, the one-line summary, the warning and the question on a terminal.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .options import CommonOptions
from .output import Output, isatty

if TYPE_CHECKING:
    from ..policy.egress import EgressEstimate, EgressPolicy


def egress_policy(common: CommonOptions) -> "EgressPolicy":
    """The config's egress: section, validated before the lake is opened (exit 2 on errors)."""
    from ..policy.config import load_config
    from ..policy.egress import load_egress

    return load_egress(load_config(str(common.config) if common.config else None))


def estimate_summary(e: "EgressEstimate", above: float | None = None) -> str:
    """pull: "a@v3: would download 1.20 GiB of 2.00 GiB (0.80 GiB already at the destination);
    us-east-1 -> eu-west-1 (inter-region); $0.02 at $0.02/GB".  diff: "diff --values a@v1 ->
    a@v3: would download 64.00 MiB of changed tensors (2.00 GiB in the two versions); ..."."""
    from .output import format_bytes

    tail = f"; {e.route_text()}; {e.cost_text(above)} at ${e.price_per_gb:g}/GB"
    if getattr(e, "sources", None):
        tail = f"; {e.sources_text()}; {e.cost_text(above)} in all"
    if getattr(e, "retrieval", None):
        tail += f" ({e.retrieval_text()})"
    if e.operation == "diff":
        return (f"diff --values {e.base} -> {e.artifact}@v{e.version}: would download "
                f"{format_bytes(e.bytes_to_download)} of changed tensors "
                f"({format_bytes(e.bytes_total)} in the two versions){tail}")
    if e.operation == "cat":
        return (f"cat of {e.artifact}@v{e.version}: would download "
                f"{format_bytes(e.bytes_to_download)} for a file of "
                f"{format_bytes(e.bytes_total)}{tail}")
    if e.operation == "cp":
        have = f" ({format_bytes(e.bytes_present)} already in the destination lake)" \
            if e.bytes_present else ""
        return (f"cp of {e.artifact}@v{e.version}: would read {format_bytes(e.bytes_to_download)}"
                f" of {format_bytes(e.bytes_total)} stored{have}{tail}")
    have = f" ({format_bytes(e.bytes_present)} already at the destination)" \
        if e.bytes_present else ""
    return (f"{e.artifact}@v{e.version}: would download {format_bytes(e.bytes_to_download)} of "
            f"{format_bytes(e.bytes_total)}{have}{tail}")


def warn_egress(out: Output, e: "EgressEstimate", yes: bool) -> None:
    """One line on stderr above warn_above_usd (a confirmation, if needed, says it instead);
    with --json, one of the result document's "warnings": the cost is what a script that
    pulls with --yes most needs to know about."""
    if e.warn and (yes or not e.needs_confirmation):
        from ..policy.egress import threshold_text

        out.warn(f"egress: {estimate_summary(e, e.warn_above_usd)} (above "
                 f"egress.warn_above_usd "
                 f"{threshold_text(e.warn_above_usd, e.cost_usd)})", document=True)


def confirm_egress(out: Output) -> "Callable[[EgressEstimate], bool] | None":
    """On a terminal, ask; elsewhere (CI, pipes, --json) there is nobody to ask."""
    import sys

    if out.json or not (isatty(sys.stdin) and isatty(sys.stderr)):
        return None

    def ask(e: "EgressEstimate") -> bool:
        from ..policy.egress import threshold_text
        from .ask import confirm

        return confirm(f"egress: {estimate_summary(e, e.confirm_above_usd)}, above "
                       f"egress.confirm_above_usd "
                       f"{threshold_text(e.confirm_above_usd, e.cost_usd)}.  Download anyway?",
                       e.operation,
                       undone="nothing was downloaded")

    return ask
