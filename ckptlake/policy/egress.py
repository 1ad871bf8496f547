"""Egress guard: what a download will cost in transfer fees, worked out before anything is fetched.

Two commands download data chunks, and both are guarded: `pull`, and `diff --values` (ranged
reads of the changed tensors).  `lineage`, `show`, `ls` and a `diff` without `--values` read only
listings, manifests and small JSON records, and have no guard.

The estimate has three parts:

* **bytes**: what will really be downloaded.  For a pull, the chunk objects behind the files
  that are not already present and verified at the destination (the same rule the pull applies:
  a file whose bytes hash to the manifest's is kept, not fetched; a pack chunk is fetched whole).
  For `diff --values`, the byte ranges of the changed tensors, both versions' (core/diff.py);
* **route**: ``same_region``, ``inter_region`` or ``internet``, from the lake's region
  (``egress.lake_region``, else the bucket's own answer to HeadBucket) and the client's
  (``egress.client_region``, else ``$AWS_REGION`` / ``$AWS_DEFAULT_REGION``).  ``client_region:
  internet`` says the client is outside the cloud.  If either region is unknown the route is
  ``unknown`` and the estimate uses the highest configured price: an upper bound, said as
  such.  Nothing here ever asks the EC2 metadata service or any other network address;
* **cost**: bytes / 2^30 (GB as cloud providers bill it) x the route's price.

Above ``warn_above_usd`` the CLI prints one warning line; above ``confirm_above_usd`` the
command needs ``--yes`` (or a "yes" on a terminal) and otherwise stops with the policy exit code,
having downloaded nothing.  Local lakes have no egress.
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from ..errors import ConfigError
from ..units import finite_number

__all__ = ["EgressEstimate", "EgressPolicy", "ROUTES", "client_region", "estimate",
           "load_egress", "near_miss", "route_between", "usd_text"]

GB = 1 << 30
ROUTES = ("same_region", "inter_region", "internet")
# AWS S3 data transfer out, us-east-1 (first 10 TB/month to the internet), per GB.
DEFAULT_PRICES = {"same_region": 0.0, "inter_region": 0.02, "internet": 0.09}
DEFAULT_WARN_ABOVE_USD = 1.0
EGRESS_KEYS = ("lake_region", "client_region", "price_per_gb", "warn_above_usd",
               "confirm_above_usd")
INTERNET = "internet"


@dataclass(frozen=True)
class EgressPolicy:
    lake_region: str | None = None
    client_region: str | None = None
    price_per_gb: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    warn_above_usd: float | None = DEFAULT_WARN_ABOVE_USD
    confirm_above_usd: float | None = None  # off unless configured
    source: str | None = None
    # class -> USD per GB read, when the retention policy tiers (a rule has `tier`): then the
    # estimate asks each chunk's storage class (a HEAD each).  None: the lake is not tiered by
    # ckptlake, no class is asked.
    retrieval_per_gb: Mapping[str, float] | None = None


def usd_text(amount: float, above: float | None = None) -> str:
    """An amount of USD for the egress lines: cents, or under a cent its first two
    significant digits ("0.00018").  At cents only, a threshold of 0 fired on a pull
    printed as "$0.00, above egress.confirm_above_usd (0.00)".

    above: the threshold `amount` exceeds, printed beside it.  A cost of $1.004 against a
    threshold of 1.00 would read "$1.00, above ... (1.00)": more digits until the two differ."""
    import math

    if amount <= 0 or amount >= 0.01:
        text = f"{amount:.2f}"
    elif amount < 1e-6:  # below what an estimate rounds to: a configured threshold only
        text = f"{amount:.2g}"
    else:
        text = f"{amount:.{1 - math.floor(math.log10(amount))}f}".rstrip("0")
    if above is None or not amount > above or text != usd_text(above):
        return text
    return f"{amount:.{_digits_apart(amount, above)}f}"


def _digits_apart(amount: float, above: float) -> int:
    """The fewest decimals (3 or more) at which `amount` and `above` print differently."""
    for digits in range(3, 10):
        if f"{amount:.{digits}f}" != f"{above:.{digits}f}":
            return digits
    return 17


def threshold_text(threshold: float, cost: float) -> str:
    """A threshold printed beside the cost that exceeds it (usd_text(cost, above=threshold)):
    with as many decimals as the cost got, so "$2.000, above ... (2.00)" reads "(1.999)"."""
    if cost > threshold and usd_text(cost) == usd_text(threshold):
        return f"{threshold:.{_digits_apart(cost, threshold)}f}"
    return usd_text(threshold)


def _describe(value: Any) -> str:
    if isinstance(value, str):
        from .config import describe_value

        return describe_value(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return repr(value)


def load_egress(config: Any) -> EgressPolicy:
    """Validate `config.egress`; errors name the file, the line and the key."""
    import dataclasses

    return dataclasses.replace(_load_egress(config), retrieval_per_gb=_retrieval(config))


def _retrieval(config: Any) -> dict[str, float] | None:
    """Retrieval prices by storage class if the retention section tiers, else None.  A
    retention section that does not validate is gc's to report: defaults then."""
    raw = getattr(config, "retention", None)
    rules = raw.get("rules") if isinstance(raw, dict) else None
    if not isinstance(rules, list) or not any(isinstance(r, dict) and r.get("tier")
                                              for r in rules):
        return None
    from .retention import DEFAULT_CLASS_PRICES, load_retention

    try:
        prices = load_retention(config).class_prices
    except ConfigError:
        prices = DEFAULT_CLASS_PRICES
    return {cls: p.retrieval_per_gb for cls, p in prices.items() if p.retrieval_per_gb > 0}


def _load_egress(config: Any) -> EgressPolicy:
    raw = getattr(config, "egress", None)
    source = getattr(config, "source", None)
    line_of = getattr(config, "line_of", lambda key: None)

    def fail(message: str, key: str, hint: str | None = None) -> ConfigError:
        return ConfigError(message, path=source, line=line_of(key), key=key, hint=hint)

    if raw is None:
        return EgressPolicy(source=source)
    if not isinstance(raw, dict):
        raise fail(f"must be a mapping of settings, got {_describe(raw)}", "egress")
    _unknown(raw, EGRESS_KEYS, "egress", fail)

    def region(key: str) -> str | None:
        value = raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
            raise fail(f"must be a region name such as us-east-1, got {_describe(value)}",
                       f"egress.{key}")
        value = value.strip()
        near = near_miss(value)
        if near is not None:
            # a typo never equals the replica's region nor the bucket's: every pull would
            # silently pay the crossing (replicas[].region refuses the same typo)
            raise fail(f"unknown region {value!r}", f"egress.{key}", f"did you mean {near}?")
        return value

    def usd(value: Any, key: str) -> float:
        if not finite_number(value) or value < 0:
            raise fail(f"must be an amount in USD >= 0, got {_describe(value)}", key)
        return float(value)

    prices = dict(DEFAULT_PRICES)
    price_raw = raw.get("price_per_gb")
    if price_raw is not None:
        if not isinstance(price_raw, dict):
            raise fail(f"must be a mapping of route -> USD per GB, got {_describe(price_raw)}",
                       "egress.price_per_gb",
                       "e.g. {same_region: 0.0, inter_region: 0.02, internet: 0.09}")
        _unknown(price_raw, ROUTES, "egress.price_per_gb", fail)
        for route, value in price_raw.items():
            if value is not None:
                prices[route] = usd(value, f"egress.price_per_gb.{route}")
    warn = raw.get("warn_above_usd", DEFAULT_WARN_ABOVE_USD)
    confirm = raw.get("confirm_above_usd")
    warn_v = None if warn is None else usd(warn, "egress.warn_above_usd")
    confirm_v = None if confirm is None else usd(confirm, "egress.confirm_above_usd")
    return EgressPolicy(lake_region=region("lake_region"), client_region=region("client_region"),
                        price_per_gb=prices, warn_above_usd=warn_v, confirm_above_usd=confirm_v,
                        source=source)


def _unknown(raw: Mapping[Any, Any], known: tuple[str, ...], path: str, fail: Any) -> None:
    import difflib

    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f"did you mean `{close[0]}`?" if close else "valid keys: " + ", ".join(known)
            raise fail("unknown key", f"{path}.{key}", hint)


# Other clouds' names that sit near an AWS one without being a typo of it: GCP's regions
# (us-east1, europe-west4) are one dash away from AWS's, and a client there is no mistake.
_GCP_REGION = re.compile(r"(us|europe|asia|australia|northamerica|southamerica|me|africa)"
                         r"-[a-z]+[1-9][0-9]?")
# An AWS-shaped name the known list lacks is taken for a region newer than the list
# (eu-west-4), not for a typo of its neighbour.
_AWS_REGION = re.compile(r"[a-z]{2}(-gov|-iso[a-z]?)?-(north|south|east|west|central|northeast|"
                         r"northwest|southeast|southwest)-[1-9][0-9]?")


def near_miss(region: str) -> str | None:
    """The known region `region` is a typo of, else None: one that differs from it by case or
    by one character inserted, dropped or changed (eu-west1, eu-wset-1 is two).  Anything
    further is taken as written: other providers name their regions as they like (B2's
    us-west-004, Linode's us-iad-1, Azure's uksouth), and a refusal here fails every pull."""
    from .replicas import KNOWN_REGIONS

    if region in KNOWN_REGIONS or _AWS_REGION.fullmatch(region) \
            or _GCP_REGION.fullmatch(region):
        return None
    lower = region.lower()
    # (EU-WEST-1 too: regions are compared as written, so it would never match eu-west-1)
    return next((known for known in sorted(KNOWN_REGIONS) if _one_edit(lower, known)), None)


def _one_edit(a: str, b: str) -> bool:
    """Whether a and b are equal or one insertion, deletion or substitution apart."""
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i + (len(a) == len(b)):] == b[i + 1:]


def client_region(policy: EgressPolicy, environ: Mapping[str, str] | None = None
                  ) -> tuple[str | None, str]:
    """(region, where it came from).  Never probes the network."""
    env = os.environ if environ is None else environ
    if policy.client_region:
        return policy.client_region, "egress.client_region"
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if env.get(name, "").strip():
            return env[name].strip(), f"${name}"
    return None, "unknown"


def route_between(lake_region: str | None, client: str | None) -> str:
    if client == INTERNET:
        return "internet"
    if not lake_region or not client:
        return "unknown"
    return "same_region" if lake_region == client else "inter_region"


@dataclass(frozen=True)
class EgressEstimate:
    """What a pull (or a `diff --values`) will transfer and cost; `to_dict` is the core of the
    `pull --estimate --json` and `diff --estimate --json` documents.

    For a diff, `artifact`/`version` are version B and `base` is version A ("artifact@vN")."""

    artifact: str
    version: int
    bytes_total: int  # pull: size of the version's files; diff: of both versions' files
    # pull: bytes it will not download: verified at the destination, or staged by an
    # interrupted pull of the same version (its journal)
    bytes_present: int
    bytes_to_download: int  # chunk-object bytes (pull) or tensor byte ranges (diff) to fetch
    route: str  # same_region | inter_region | internet | unknown | local
    lake_region: str | None
    lake_region_origin: str
    client_region: str | None
    client_region_origin: str
    price_per_gb: float
    cost_usd: float
    cost_is_upper_bound: bool  # the route is unknown: priced at the highest price_per_gb
    warn_above_usd: float | None
    confirm_above_usd: float | None
    operation: str = "pull"  # what downloads: "pull", "cat", "cp" or "diff" (diff --values)
    base: str | None = None  # diff: version A, "artifact@vN"
    # Pulls through a replica: [{"source": "replica eu" | "origin", "region", "bytes", "route",
    # "price_per_gb", "cost_usd"}]; cost_usd is their sum.  Empty: every byte from the lake.
    sources: list[dict[str, Any]] = field(default_factory=list)
    # Bytes in storage classes that charge per GB read (tiered by gc): [{"class", "bytes",
    # "price_per_gb", "cost_usd"}]; included in cost_usd.
    retrieval: list[dict[str, Any]] = field(default_factory=list)
    # Pulls through a replica that is not used (another lake's, unreachable): why the bytes
    # are priced from the lake; the pull says the same when it runs.
    warnings: list[str] = field(default_factory=list)

    @property
    def warn(self) -> bool:
        return self.warn_above_usd is not None and self.cost_usd > self.warn_above_usd

    @property
    def needs_confirmation(self) -> bool:
        return self.confirm_above_usd is not None and self.cost_usd > self.confirm_above_usd

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "warn": self.warn, "needs_confirmation": self.needs_confirmation}

    def subject(self) -> str:
        """"pull of a@v3", "diff --values of a@v1 -> a@v3": what the estimate is for."""
        ref = f"{self.artifact}@v{self.version}"
        if self.operation == "diff":
            return f"diff --values of {self.base} -> {ref}"
        return f"{self.operation} of {ref}"

    def route_text(self) -> str:
        if self.route == "local":
            return "a local lake (no egress)"
        lake = self.lake_region or "an unknown region"
        client = self.client_region or "an unknown region"
        names = {"same_region": "same region", "inter_region": "inter-region",
                 "internet": "internet", "unknown": "route unknown"}
        text = f"{lake} -> {client} ({names[self.route]})"
        if self.route == "unknown":
            missing = []
            if not self.lake_region:
                missing.append("egress.lake_region")
            if not self.client_region:
                missing.append("egress.client_region or $AWS_REGION")
            text += f"; set {' and '.join(missing)} to know"
        return text

    def cost_text(self, above: float | None = None) -> str:
        """above: the threshold the cost is compared with on the same line (usd_text)."""
        bound = "up to " if self.cost_is_upper_bound else ""
        return f"{bound}${usd_text(self.cost_usd, above)}"

    def retrieval_text(self) -> str:
        """"incl. $0.03 retrieval of 1.00 GiB in GLACIER_IR"; empty when nothing is cold."""
        from ..units import format_bytes

        if not self.retrieval:
            return ""
        return "incl. " + ", ".join(f"${usd_text(r['cost_usd'])} retrieval of "
                                    f"{format_bytes(r['bytes'])} in {r['class']}"
                                    for r in self.retrieval)

    def sources_text(self) -> str:
        """"1.90 GiB from replica eu (eu-west-1), $0.00; 0.10 GiB through from us-east-1,
        $0.01" -- where the bytes of a pull through a replica come from."""
        from ..units import format_bytes

        parts = []
        for s in self.sources:
            if s["source"] == "origin":
                where = s.get("region") or "the lake (region unknown)"
                parts.append(f"{format_bytes(s['bytes'])} through from {where}, "
                             f"${usd_text(s['cost_usd'])}")
                continue
            parts.append(f"{format_bytes(s['bytes'])} from {s['source']} "
                         f"({s.get('region') or 'an unknown region'}), ${usd_text(s['cost_usd'])}")
        return "; ".join(parts)


def route_price(policy: EgressPolicy, route: str) -> float:
    """USD per GB over `route`; an unknown route at the highest configured price, so that the
    estimate is an upper bound whatever the prices (at `internet`'s, a configured inter-region
    price above it let an expensive pull through unasked)."""
    if route == "unknown":
        return max(policy.price_per_gb.values(), default=0.0)
    return policy.price_per_gb[route]


def estimate(policy: EgressPolicy, *, artifact: str, version: int, bytes_total: int,
             bytes_present: int, bytes_to_download: int, local: bool,
             lake_region: str | None, lake_region_origin: str,
             environ: Mapping[str, str] | None = None, operation: str = "pull",
             base: str | None = None) -> EgressEstimate:
    """Price a download (pure: the caller measured the bytes and looked up the lake's region)."""
    if local:
        client, client_origin = None, "n/a"
        route, price = "local", 0.0
    else:
        client, client_origin = client_region(policy, environ)
        route = route_between(lake_region, client)
        price = route_price(policy, route)
    cost = bytes_to_download / GB * price
    return EgressEstimate(
        artifact=artifact, version=version, bytes_total=bytes_total, bytes_present=bytes_present,
        bytes_to_download=bytes_to_download, route=route, lake_region=lake_region,
        lake_region_origin=lake_region_origin, client_region=client,
        client_region_origin=client_origin, price_per_gb=price, cost_usd=round(cost, 6),
        cost_is_upper_bound=route == "unknown", warn_above_usd=policy.warn_above_usd,
        confirm_above_usd=policy.confirm_above_usd, operation=operation, base=base)
