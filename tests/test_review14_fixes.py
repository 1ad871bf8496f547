"""What the second review of this session's changes found: cp priced without the retrieval fee of
tiered chunks, a refusal through a replica that said "a local lake (no egress)", listing summaries
read without their metadata redacted, two metadata keys merged by redaction, cp --estimate giving
numbers for copies cp refuses, and a secret-named switch masking the flag after it."""
from __future__ import annotations

from pathlib import Path

import pytest

import ckptlake
from ckptlake.core.replicas import ReplicaSet
from ckptlake.errors import PolicyRefusal, UsageError
from ckptlake.format import layout
from ckptlake.lake import Lake
from ckptlake.policy.egress import EgressPolicy
from ckptlake.policy.replicas import ReplicaSpec
from ckptlake.redact import redact, redact_argv
from ckptlake.store import open_store

from test_catalog_mutants import forge_summary
from test_egress import FakeBucket
from test_egress_mutants import STEEP, S3Replica, src_tree

MiB = 1 << 20


def test_cp_prices_the_retrieval_fee_of_tiered_chunks(tmp_path: Path) -> None:
    """1 TB in GLACIER_IR costs ~$30 to read even in the same region: cp said $0 and went on."""
    store = FakeBucket("us-east-1", classes=True)
    a = Lake(store, chunk_size=MiB)
    a.push(src_tree(tmp_path / "src"), "m")
    for o in list(store.list("chunks/")):
        store.set_storage_class(o.key, "GLACIER_IR")
    b = ckptlake.open("file://" + (tmp_path / "b").as_posix())
    policy = EgressPolicy(lake_region="us-east-1", client_region="us-east-1",
                          retrieval_per_gb={"GLACIER_IR": 1000.0}, warn_above_usd=None,
                          confirm_above_usd=1)
    est = a.estimate_copy("m", b, egress=policy)
    assert est.retrieval and est.retrieval[0]["class"] == "GLACIER_IR"
    assert est.cost_usd > 2.5 and est.needs_confirmation
    with pytest.raises(PolicyRefusal):
        a.copy("m", b, egress=policy)
    assert not (tmp_path / "b").exists()


def test_a_refusal_through_an_s3_replica_names_its_route(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    replica = S3Replica()
    monkeypatch.setattr(ReplicaSet, "open_store", lambda self, spec: replica)
    spec = ReplicaSpec(name="us", url=replica.url, region="us-west-2")
    lake = Lake(open_store((tmp_path / "lake").as_uri()), chunk_size=MiB,
                replicas=ReplicaSet([spec], client_region="eu-west-1", default="us"))
    lake.push(src_tree(tmp_path / "src"), "p")
    lake.replicate("p", "us")
    policy = EgressPolicy(client_region="eu-west-1", price_per_gb=STEEP, warn_above_usd=None,
                          confirm_above_usd=1)
    with pytest.raises(PolicyRefusal) as e:
        lake.pull("p", tmp_path / "out", egress=policy)
    assert "no egress" not in e.value.message and "replica us" in e.value.message


def test_a_listing_summarys_metadata_is_redacted_when_read(tmp_path: Path) -> None:
    """A summary written before keys were redacted holds a URL's password in a key: ls read it
    as it was (show, from the manifest, masked it, and verify called the two different)."""
    from ckptlake.store.memory import MemoryStore

    lake = Lake(MemoryStore(), chunk_size=MiB)
    lake.push(src_tree(tmp_path / "src", size=1000), "m", metadata={"cfg": "x"})
    forge_summary(lake.store, "m", 1,
                  lambda doc: doc.__setitem__("d", {"https://u:hunter2pw@host/ds": "v1"}))
    (v,) = lake.versions("m")
    assert "hunter2pw" not in repr(v.metadata) and "https://host/ds" in v.metadata


def test_metadata_keys_that_redact_to_one_are_refused(tmp_path: Path) -> None:
    lake = ckptlake.open("file://" + (tmp_path / "lake").as_posix())
    with pytest.raises(UsageError, match="same key"):
        lake.push(src_tree(tmp_path / "src", size=100), "m",
                  metadata={"https://u:pw@h/x": "a", "https://h/x": "b"})
    assert not (tmp_path / "lake" / layout.version_key("m", 1)).exists()


def test_cp_estimate_refuses_what_cp_refuses(tmp_path: Path) -> None:
    a = ckptlake.open("file://" + (tmp_path / "a").as_posix())
    a.push(src_tree(tmp_path / "src", size=100), "m")
    with pytest.raises(UsageError, match="inside the other"):
        a.estimate_copy("m", ckptlake.open(a.url + "/sub"), egress=EgressPolicy())
    (tmp_path / "afile").write_text("x")
    with pytest.raises(Exception) as e:
        a.estimate_copy("m", ckptlake.open("file://" + (tmp_path / "afile").as_posix()),
                        egress=EgressPolicy())
    assert getattr(e.value, "exit_code", 1) in (2, 3) and "afile" in str(e.value)


def test_a_switch_named_like_a_secret_does_not_mask_the_flag_after_it() -> None:
    assert redact_argv(["--use-auth-token", "-v", "x"]) == ["--use-auth-token", "-v", "x"]
    assert redact_argv(["--password-file", "-"]) == ["--password-file", "-"]
    assert redact_argv(["--password", "-Xy9SeCrEt"]) == ["--password", "***"]
    assert redact("--use-auth-token -v") == "--use-auth-token -v"
    assert "SeCrEt" not in redact("--password -Xy9SeCrEt")


def test_an_archived_object_says_restore_it_not_check_credentials(moto_store: object) -> None:
    """A chunk someone moved to GLACIER answers a GET with 403 InvalidObjectState: the error
    said "permission or credentials" (exit 4, configure AWS credentials), which no credential
    fixes."""
    from ckptlake.errors import AccessDenied, TransferError

    store = moto_store
    store.put("chunks/aa/x", b"hello")  # type: ignore[attr-defined]
    store.set_storage_class("chunks/aa/x", "GLACIER")  # type: ignore[attr-defined]
    with pytest.raises(TransferError) as e:
        store.get("chunks/aa/x")  # type: ignore[attr-defined]
    assert not isinstance(e.value, AccessDenied)
    assert "archived" in e.value.message and "restore" in (e.value.hint or "")


def test_numbers_of_thousands_of_digits_are_usage_errors() -> None:
    """Python's int() refuses strings of over 4,300 digits with a ValueError: a selector padded
    with zeros and a size of 5,000 digits were internal errors (exit 1, a traceback's words)
    (mutation review of format/refs.py and units)."""
    from ckptlake.format.refs import parse_ref
    from ckptlake.policy.config import parse_size

    assert parse_ref("a/b@v" + "0" * 5000 + "1").value == 1
    assert parse_ref("a/b@step=" + "0" * 5000).value == 0
    for text in ("1" * 5000, "0." + "1" * 5000, "1" * 5000 + "MiB"):
        with pytest.raises(UsageError, match="not a size"):
            parse_size(text)
    assert parse_size("16MiB") == 16 * MiB and parse_size("1.5KiB") == 1536
