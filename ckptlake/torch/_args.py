"""The argument checks ckptlake.torch's entry points make where they are called.

Why up front: torch and the Trainers use what these take long after (a DCP rank recorded its
files before looking at metrics, metadata, aliases or stale_after, so a bad one failed after
the upload and left the step pending; the Trainer callback's aliases reach a version only at
the first save).  And one string of aliases, iterated, was the aliases b, e, s, t.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.values import check_arg, check_metadata, check_metrics
from ..errors import UsageError
from ..format.refs import validate_alias

if TYPE_CHECKING:
    from ..lake import Lake


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_lake(lake: Any, *, url: bool = False) -> "Lake | str":
    """A Lake (or, where `url`, a lake URL to open): anything else failed with an
    AttributeError deep inside torch's save."""
    from ..lake import Lake

    if isinstance(lake, Lake) or (url and isinstance(lake, str)):
        return lake
    raise UsageError(f"lake must be a Lake{' or a lake URL' if url else ''}, got "
                     f"{_shown(lake)}", hint="open one with ckptlake.open(URL)")


def check_version_fields(metrics: Any, metadata: Any, aliases: Any
                         ) -> tuple[dict[str, float], dict[str, str], tuple[str, ...]]:
    """What a version records, as push checks it: the metrics, metadata and aliases to use."""
    names = check_arg("aliases", aliases, "names")
    for name in names:
        validate_alias(name)
    return check_metrics(metrics), check_metadata(metadata), names
