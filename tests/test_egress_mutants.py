"""Checks of the egress guard (core/egress.py, policy/egress.py) that no test held the code to
(mutation testing): each test fails if the check it names is taken out.  No network: the
"buckets" are MemoryStores posing as S3 (tests/test_egress.py, tests/test_replicas.py)."""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from ckptlake.core.replicas import ReplicaSet
from ckptlake.errors import PolicyRefusal
from ckptlake.lake import Lake
from ckptlake.policy.config import load_config
from ckptlake.policy.egress import EgressPolicy, load_egress
from ckptlake.policy.replicas import ReplicaSpec
from ckptlake.policy.retention import DEFAULT_CLASS_PRICES
from ckptlake.store import open_store
from ckptlake.store.memory import MemoryStore
from test_egress import FakeBucket

MiB, GiB = 1 << 20, 1 << 30
ART = "p/ckpt"
# inter-region and internet cost a fortune, the same region nothing: a 3 MiB pull across
# regions is about $2.93, above confirm_above_usd 1
STEEP = {"same_region": 0.0, "inter_region": 1000.0, "internet": 1000.0}


def src_tree(root: Path, size: int = 3 * MiB, seed: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "w.bin").write_bytes(random.Random(seed).randbytes(size))
    return root


class S3Replica(MemoryStore):
    """An in-memory replica that looks like an S3 one (only its URL says so)."""

    def __init__(self) -> None:
        super().__init__("replica")
        self.url = "s3://replica-bucket/us"


def test_local_lake_with_s3_replica_in_another_region_is_priced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file:// lake read through an S3 replica in us-west-2 from eu-west-1: the replica's
    bytes cross regions and are billed.  Priced as $0 'local' (the lake's route), the pull of
    ~3 MiB at $1000/GB went through unasked past confirm_above_usd: the user pays ~$3 they
    said must be confirmed."""
    replica = S3Replica()
    monkeypatch.setattr(ReplicaSet, "open_store", lambda self, spec: replica)
    spec = ReplicaSpec(name="us", url=replica.url, region="us-west-2")
    lake = Lake(open_store((tmp_path / "lake").as_uri()), chunk_size=MiB,
                replicas=ReplicaSet([spec], client_region="eu-west-1", default="us"))
    lake.push(src_tree(tmp_path / "src"), ART)
    lake.replicate(ART, "us")  # the replica holds every chunk
    assert any(k.startswith("chunks/") for k in replica.keys())
    policy = EgressPolicy(client_region="eu-west-1", price_per_gb=STEEP, warn_above_usd=None,
                          confirm_above_usd=1)
    est = lake.estimate_pull(ART, tmp_path / "new", egress=policy)
    rep, org = est.sources
    assert rep["bytes"] == est.bytes_to_download >= 3 * MiB and org["bytes"] == 0
    assert rep["route"] == "inter_region" and rep["cost_usd"] > 2.5
    assert est.cost_usd > 2.5 and est.needs_confirmation
    with pytest.raises(PolicyRefusal, match="above egress.confirm_above_usd"):
        lake.pull(ART, tmp_path / "out", egress=policy)
    assert not (tmp_path / "out").exists()


def test_symlink_to_an_identical_file_is_downloaded_and_priced(tmp_path: Path) -> None:
    """A symlink at the destination pointing to a file with the right bytes is not 'already
    there': the pull replaces the link with a real file, downloading it.  Counted as present,
    the estimate said 0 bytes and a $3 cross-region pull went through unconfirmed."""
    lake = Lake(FakeBucket("us-east-1"), chunk_size=MiB)
    src = src_tree(tmp_path / "src")
    lake.push(src, ART)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "w.bin").symlink_to(src / "w.bin")
    policy = EgressPolicy(client_region="eu-west-1", price_per_gb=STEEP, warn_above_usd=None,
                          confirm_above_usd=1)
    est = lake.estimate_pull(ART, dest, egress=policy)
    assert est.bytes_to_download == 3 * MiB and est.bytes_present == 0
    assert est.needs_confirmation
    with pytest.raises(PolicyRefusal, match="above egress.confirm_above_usd"):
        lake.pull(ART, dest, force=True, egress=policy)
    assert (dest / "w.bin").is_symlink(), "nothing was downloaded or replaced"


def test_free_same_region_pull_is_not_refused(tmp_path: Path) -> None:
    """A pull in the lake's own region costs $0: the guard must let it through even though at
    the highest price it would pass confirm_above_usd (but not warn_above_usd).  That bound
    only decides whether to ask the bucket its region; asking it is what shows the pull free.
    Skipping the question when *any* threshold is clear left the route unknown, priced at
    $1000/GB: a free pull refused."""
    store = FakeBucket("us-east-1")
    lake = Lake(store, chunk_size=MiB)
    src = src_tree(tmp_path / "src")
    lake.push(src, ART)
    policy = EgressPolicy(client_region="us-east-1", price_per_gb=STEEP, warn_above_usd=100,
                          confirm_above_usd=1)
    seen: list = []
    lake.pull(ART, tmp_path / "out", egress=policy, on_estimate=seen.append)
    assert (tmp_path / "out" / "w.bin").read_bytes() == (src / "w.bin").read_bytes()
    assert store.region_asked == 1
    assert seen[0].route == "same_region" and seen[0].cost_usd == 0
    assert not seen[0].needs_confirmation


def test_retention_typo_keeps_default_retrieval_prices(tmp_path: Path) -> None:
    """A retention section that tiers but does not validate (a typo in another rule) is gc's
    to report; the pull's estimate still charges the retrieval fees of the cold classes at
    the default prices.  With no prices, a pull of Glacier IR chunks was priced without its
    retrieval fee: an expensive read let through unconfirmed."""
    path = tmp_path / "c.yaml"
    path.write_text("retention:\n  rules:\n"
                    "    - {match: a, keep_all: true, tier: {after: 1d, class: STANDARD_IA}}\n"
                    "    - {match: b, keep_lastt: 3}\n")
    expected = {cls: p.retrieval_per_gb for cls, p in DEFAULT_CLASS_PRICES.items()
                if p.retrieval_per_gb > 0}
    assert expected
    assert load_egress(load_config(str(path))).retrieval_per_gb == expected


def test_compressible_chunks_are_estimated_at_their_stored_size(tmp_path: Path) -> None:
    """What crosses the wire is the encoded chunk, at the size the manifest records: the
    estimate matches what the pull downloads.  At the logical size, compressible weights were
    priced several times over: a cheap pull refused or warned about."""
    lake = Lake(FakeBucket("us-east-1"), chunk_size=MiB)
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"abc" * (1 << 20))
    lake.push(src, ART)
    est = lake.estimate_pull(ART, tmp_path / "out", egress=EgressPolicy())
    result = lake.pull(ART, tmp_path / "out", egress=EgressPolicy())
    assert est.bytes_to_download == result.bytes_downloaded < 3 * MiB


def test_local_lake_with_local_replica_costs_nothing(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A file:// lake with a file:// replica: no byte crosses a cloud border, so nothing is
    billed and even confirm_above_usd 0 asks nothing.  Priced on regions (the client's is
    unknown here: the highest price), a free local pull was refused."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    spec = ReplicaSpec(name="eu", url=(tmp_path / "eu").as_uri(), region="eu-west-1")
    lake = Lake(open_store((tmp_path / "lake").as_uri()), chunk_size=MiB,
                replicas=ReplicaSet([spec], default="eu"))
    src = src_tree(tmp_path / "src")
    lake.push(src, ART)
    lake.replicate(ART, "eu")
    policy = EgressPolicy(price_per_gb=STEEP, warn_above_usd=None, confirm_above_usd=0)
    seen: list = []
    lake.pull(ART, tmp_path / "out", egress=policy, on_estimate=seen.append)
    assert (tmp_path / "out" / "w.bin").read_bytes() == (src / "w.bin").read_bytes()
    est = seen[0]
    assert est.sources and all(s["cost_usd"] == 0 for s in est.sources)
    assert est.sources[0]["bytes"] == est.bytes_to_download > 0
    assert est.cost_usd == 0 and not est.needs_confirmation


def test_free_pull_with_warn_at_zero_does_not_warn(tmp_path: Path) -> None:
    """warn_above_usd 0 means 'warn about any cost', not 'warn about every pull': a $0 pull in
    the lake's region prints no warning (a warning on every free pull teaches users to ignore
    the one that costs money)."""
    lake = Lake(FakeBucket("us-east-1"), chunk_size=MiB)
    lake.push(src_tree(tmp_path / "src", size=1000), ART)
    est = lake.estimate_pull(ART, tmp_path / "out",
                             egress=EgressPolicy(client_region="us-east-1", price_per_gb=STEEP,
                                                 warn_above_usd=0))
    assert est.cost_usd == 0 and est.bytes_to_download > 0
    assert not est.warn
