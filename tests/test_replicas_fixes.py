"""Replicas: stats of a repaired chunk, the top-level endpoint inherited by a replica, the
offline pull's errors, and replica locations nested in the lake's."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import ckptlake

from ckptlake.core.browse import object_sizes
from ckptlake.core.replicas import ReplicaSet
from ckptlake.errors import EXIT_TRANSFER, EXIT_USAGE, TransferError, UsageError
from ckptlake.policy.replicas import ReplicaSpec, check_not_origin

from test_replicas import FlakyOrigin, _cfg, memory_lake, replica_chunks, write_src


def test_a_repaired_chunk_is_counted_once_as_pulled_through(tmp_path: Path) -> None:
    lake = memory_lake(tmp_path)
    src = write_src(tmp_path / "src")
    lake.push(src, "m/a")
    lake.pull("m/a", tmp_path / "o1")
    m = lake._manifest("m/a")
    sizes = object_sizes(m)
    victim = sorted(p for p in (tmp_path / "eu" / "chunks").rglob("*") if p.is_file())[0]
    victim.write_bytes(b"\0" * victim.stat().st_size)  # same size, wrong bytes
    r = lake.pull("m/a", tmp_path / "o2").replica
    assert (r["chunks_repaired"], r["chunks_pulled_through"]) == (1, 1)
    assert r["chunks_from_replica"] + r["chunks_pulled_through"] == len(sizes)
    assert r["bytes_from_replica"] + r["bytes_pulled_through"] == sum(sizes.values())
    assert r["bytes_pulled_through"] == sizes[victim.name]


def test_a_replica_without_endpoint_url_uses_the_lakes(tmp_path: Path, monkeypatch) -> None:
    import ckptlake.store as store_mod

    opened: list[tuple[str, str | None]] = []

    def fake_open_store(url: str, **kw):  # type: ignore[no-untyped-def]
        opened.append((url, kw.get("endpoint_url")))
        return object()

    monkeypatch.setattr(store_mod, "open_store", fake_open_store)
    ep = "http://127.0.0.1:8333"
    specs = [ReplicaSpec(name="eu", url="s3://rep/eu", region="eu-west-1"),
             ReplicaSpec(name="ap", url="s3://rep/ap", region="ap-south-1",
                         endpoint_url="http://127.0.0.1:9000"),
             ReplicaSpec(name="us", url=(tmp_path / "us").as_uri(), region="us-west-2")]
    rs = ReplicaSet(specs, origin_endpoint=ep)
    for spec in specs:
        rs.open_store(spec)
    assert opened == [("s3://rep/eu", ep), ("s3://rep/ap", "http://127.0.0.1:9000"),
                      ((tmp_path / "us").as_uri(), None)]
    assert ReplicaSet(specs[:1]).endpoint_of(specs[0]) is None  # no lake endpoint: AWS's


def test_config_replica_inherits_the_top_level_endpoint(tmp_path: Path) -> None:
    import ckptlake

    cfg = _cfg(tmp_path, "lake: s3://bkt/lake\nendpoint_url: http://127.0.0.1:8333\n"
                         "replicas:\n  - name: eu\n    url: s3://rep/eu\n"
                         "    region: eu-west-1\n")
    with ckptlake.open(config=str(cfg)) as lake:
        assert lake.replicas.endpoint_of(lake.replicas.by_name("eu")) == \
            "http://127.0.0.1:8333"


def test_offline_pull_says_the_replica_lacks_a_chunk_not_the_lake(tmp_path: Path) -> None:
    origin = FlakyOrigin()
    lake = memory_lake(tmp_path, origin=origin)
    lake.push(write_src(tmp_path / "s1", 1), "m/a", aliases=["candidate"])
    lake.pull("m/a", tmp_path / "o1")  # whole, through the replica: servable offline
    victim = sorted(p for p in (tmp_path / "eu" / "chunks").rglob("*") if p.is_file())[0]
    victim.unlink()
    origin.down = True
    with pytest.raises(TransferError) as err:
        lake.pull("m/a@v1", tmp_path / "o2", offline_replica=True)
    text = str(err.value)
    assert err.value.exit_code == EXIT_TRANSFER
    assert f"chunks/{victim.name[:2]}/{victim.name}" in text
    assert "replica eu" in text and "cannot be reached" in text and "missing from the lake" \
        not in text
    with pytest.raises(TransferError, match="cannot be resolved offline") as err:
        lake.pull("m/a@candidate", tmp_path / "o3", offline_replica=True)
    assert err.value.exit_code == EXIT_TRANSFER and "@v1" in str(err.value)
    assert victim.name not in replica_chunks(tmp_path)


@pytest.mark.parametrize("replica, lake_url", [
    ("s3://bkt/lake/sub", "s3://bkt/lake"),
    ("s3://bkt", "s3://bkt/lake"),
    ("s3://bkt/lake/", "s3://bkt/lake"),
    ("file:///data/lake/replica", "file:///data/lake"),
])
def test_a_replica_inside_the_lake_or_holding_it_is_refused(replica: str,
                                                             lake_url: str) -> None:
    spec = ReplicaSpec(name="eu", url=replica, region="eu-west-1")
    with pytest.raises(UsageError) as err:
        check_not_origin(spec, lake_url, None)
    assert err.value.exit_code == EXIT_USAGE


@pytest.mark.parametrize("replica, lake_url", [
    ("s3://bkt/lake2", "s3://bkt/lake"),
    ("s3://other/lake", "s3://bkt/lake"),
    ("file:///data/lake-eu", "file:///data/lake"),
])
def test_a_sibling_replica_is_fine(replica: str, lake_url: str) -> None:
    check_not_origin(ReplicaSpec(name="eu", url=replica, region="eu-west-1"), lake_url, None)


def test_config_refuses_a_replica_inside_the_lake(tmp_path: Path) -> None:
    from ckptlake.errors import ConfigError
    from ckptlake.policy.config import load_config
    from ckptlake.policy.replicas import load_replicas

    cfg = _cfg(tmp_path, "lake: s3://bkt/lake\nreplicas:\n  - name: eu\n"
                         "    url: s3://bkt/lake/sub\n    region: eu-west-1\n")
    with pytest.raises(ConfigError, match=r"replicas\[0\]\.url: is inside the origin lake"):
        load_replicas(load_config(str(cfg)))
    assert os.path.isfile(cfg)


def test_offline_pull_of_a_version_the_replica_lacks_is_exit_8_not_3(tmp_path: Path) -> None:
    """The version may well exist at the lake: what is missing is the lake.  Exit 3 told a
    script "no such version"."""
    origin = FlakyOrigin()
    lake = memory_lake(tmp_path, origin=origin)
    lake.push(write_src(tmp_path / "s1", 1, size=1 << 16), "m/a", step=10)
    lake.pull("m/a", tmp_path / "o1")  # v1 is servable offline
    lake.push(write_src(tmp_path / "s2", 2, size=1 << 16), "m/a", step=20)  # v2 is not
    lake.push(write_src(tmp_path / "s3", 3, size=1 << 16), "m/b")
    origin.down = True
    for ref in ("m/a@v2", "m/a@step=20", "m/b", "m/a@max:loss"):
        with pytest.raises(TransferError) as err:
            lake.pull(ref, tmp_path / "o2", offline_replica=True)
        text = str(err.value)
        assert err.value.exit_code == EXIT_TRANSFER
        assert f"replica eu holds no copy of {ref}" in text and "cannot be reached" in text
        assert f"ckptlake replicate {ref} --to eu" in text
        assert ("holds is m/a@v1" if ref.startswith("m/a") else "no version of m/b") in text
    assert not (tmp_path / "o2").exists()
    assert lake.pull("m/a@step=10", tmp_path / "o3", offline_replica=True).version == 1


ENDPOINT = "http://127.0.0.1:8333"


def nested_replica_lake(tmp_path: Path, endpoint: str) -> "tuple":  # type: ignore[type-arg]
    """A lake at s3://origin-bucket/lake on a custom endpoint, with a replica under its prefix
    whose own endpoint_url names a server (in-memory stores: nothing is contacted)."""
    from ckptlake.lake import Lake
    from ckptlake.store.memory import MemoryStore
    from test_replicas import S3LikeOrigin

    spec = ReplicaSpec(name="eu", url="s3://origin-bucket/lake/eu", region="eu-west-1",
                       endpoint_url=endpoint)
    origin = S3LikeOrigin()
    origin.url = "s3://origin-bucket/lake"
    lake = Lake(origin, replicas=ReplicaSet([spec], origin_endpoint=ENDPOINT))
    replica = lake._replica_backends["eu"] = MemoryStore("eu")
    lake.push(write_src(tmp_path / "s1", 1, size=1 << 16), "m/a")
    return lake, replica


def test_replicate_and_gc_refuse_a_replica_nested_in_a_lake_on_a_custom_endpoint(
        tmp_path: Path) -> None:
    """With None (AWS) as the lake's endpoint, a replica naming the lake's own server in its
    endpoint_url looked like one on another server: replicate wrote into the lake's prefix,
    and gc swept there with its own records."""
    lake, replica = nested_replica_lake(tmp_path, "HTTP://127.0.0.1:8333/")
    with pytest.raises(UsageError, match=r"replica 'eu' .* is inside the lake") as err:
        lake.replicate("m/a", "eu")
    assert err.value.exit_code == EXIT_USAGE
    lake.push(write_src(tmp_path / "s2", 2, size=1 << 16), "m/a")
    from ckptlake.policy.retention import RetentionPolicy, Rule

    result = lake.gc(lake.gc_plan(RetentionPolicy(rules=(Rule(match="m/*", keep_last=1),),
                                                  grace_period=0, sweep_window=5,
                                                  record_retention=10)))
    assert result.replicas == [] and any("not swept" in w and "is inside the lake" in w
                                         for w in result.warnings)
    assert replica.keys() == []


@pytest.mark.parametrize("name", ["http://localhost:8333", "http://[::1]:8333",
                                  "http://127.0.0.2:8333/"])
def test_this_hosts_loopback_names_are_one_server(tmp_path: Path, name: str) -> None:
    """A lake at 127.0.0.1 and a replica config naming `localhost` (or ::1): one server, so a
    replica inside the lake is refused (it was taken for another server and written into)."""
    lake, replica = nested_replica_lake(tmp_path, name)
    with pytest.raises(UsageError, match=r"replica 'eu' .* is inside the lake"):
        lake.replicate("m/a", "eu")
    assert replica.keys() == []


def test_a_replica_on_another_server_may_share_the_lakes_bucket_name(tmp_path: Path) -> None:
    lake, replica = nested_replica_lake(tmp_path, "http://127.0.0.1:9000")
    assert lake.replicate("m/a", "eu").chunks_copied > 0
    assert any(k.startswith("chunks/") for k in replica.keys())


def test_nesting_uses_the_endpoint_botocore_resolved(tmp_path: Path, monkeypatch) -> None:
    """README: the endpoint may come from AWS_ENDPOINT_URL.  The lake's endpoint was then None
    (AWS) in the check, so a replica naming that server passed even when it is the lake."""
    ep = "http://127.0.0.1:1"  # nothing is contacted: the check runs at open
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"replicas:\n  - name: eu\n    url: s3://bkt/lake\n    region: eu-west-1\n"
                   f"    endpoint_url: {ep}\n")
    monkeypatch.setenv("AWS_ENDPOINT_URL", ep)
    with pytest.raises(UsageError, match="is the lake itself"):
        ckptlake.open("s3://bkt/lake", config=str(cfg), replica="eu")
