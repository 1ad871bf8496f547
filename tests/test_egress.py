"""The egress guard: config validation, routes and prices, what a pull would really download,
and warn / refuse / proceed -- without any network (a MemoryStore posing as a bucket)."""
from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ckptlake.core.egress import bytes_to_fetch
from ckptlake.errors import ConfigError, PolicyRefusal
from ckptlake.lake import Lake
from ckptlake.policy.config import load_config
from ckptlake.policy.egress import (EgressPolicy, client_region, estimate, load_egress,
                                    route_between)
from ckptlake.store.memory import MemoryStore

MiB, GiB = 1 << 20, 1 << 30


def egress_from(tmp_path: Path, text: str) -> EgressPolicy:
    path = tmp_path / "ckptlake.yaml"
    path.write_text(textwrap.dedent(text))
    return load_egress(load_config(str(path)))


def test_issue_config_loads(tmp_path: Path) -> None:
    p = egress_from(tmp_path, """\
        egress:
          lake_region: us-east-1
          client_region: eu-west-1
          price_per_gb: {same_region: 0.0, inter_region: 0.02, internet: 0.09}
          warn_above_usd: 1.00
          confirm_above_usd: 25.00
        """)
    assert (p.lake_region, p.client_region) == ("us-east-1", "eu-west-1")
    assert p.price_per_gb == {"same_region": 0.0, "inter_region": 0.02, "internet": 0.09}
    assert (p.warn_above_usd, p.confirm_above_usd) == (1.0, 25.0)


def test_defaults_warn_but_never_ask() -> None:
    p = load_egress(load_config(None))
    assert p.warn_above_usd == 1.0 and p.confirm_above_usd is None


@pytest.mark.parametrize("text,line,key,words", [
    ("egress:\n  lake_regoin: x\n", 2, "egress.lake_regoin", "lake_region"),
    ("egress:\n  price_per_gb: {inter_regoin: 1}\n", 2, "egress.price_per_gb.inter_regoin",
     "inter_region"),
    ("egress:\n  price_per_gb:\n    internet: -1\n", 3, "egress.price_per_gb.internet", ">= 0"),
    ("egress:\n  warn_above_usd: lots\n", 2, "egress.warn_above_usd", "USD"),
    ("egress:\n  client_region: eu west\n", 2, "egress.client_region", "region name"),
    ("egress:\n  price_per_gb: 0.09\n", 2, "egress.price_per_gb", "mapping"),
])
def test_errors_name_file_line_key(tmp_path: Path, text: str, line: int, key: str,
                                   words: str) -> None:
    with pytest.raises(ConfigError) as info:
        egress_from(tmp_path, text)
    assert (info.value.line, info.value.key) == (line, key) and words in str(info.value)


def test_client_region_sources_and_routes() -> None:
    p = EgressPolicy()
    assert client_region(p, {}) == (None, "unknown")
    assert client_region(p, {"AWS_DEFAULT_REGION": "us-west-2"}) == ("us-west-2",
                                                                    "$AWS_DEFAULT_REGION")
    assert client_region(p, {"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "x"})[0] == \
        "eu-west-1"
    assert client_region(EgressPolicy(client_region="ap-south-1"), {"AWS_REGION": "x"}) == \
        ("ap-south-1", "egress.client_region")
    assert route_between("us-east-1", "us-east-1") == "same_region"
    assert route_between("us-east-1", "eu-west-1") == "inter_region"
    assert route_between("us-east-1", "internet") == "internet"
    assert route_between(None, "eu-west-1") == route_between("us-east-1", None) == "unknown"


def test_estimate_prices_the_route() -> None:
    p = EgressPolicy(lake_region="us-east-1", client_region="eu-west-1", warn_above_usd=1,
                     confirm_above_usd=25)
    e = estimate(p, artifact="a", version=1, bytes_total=100 * GiB, bytes_present=0,
                 bytes_to_download=100 * GiB, local=False, lake_region="us-east-1",
                 lake_region_origin="egress.lake_region", environ={})
    assert (e.route, e.cost_usd, e.warn, e.needs_confirmation) == ("inter_region", 2.0, True,
                                                                     False)
    unknown = estimate(EgressPolicy(), artifact="a", version=1, bytes_total=GiB,
                       bytes_present=0, bytes_to_download=GiB, local=False, lake_region=None,
                       lake_region_origin="unknown", environ={})
    assert unknown.route == "unknown" and unknown.cost_is_upper_bound
    assert unknown.cost_usd == 0.09 and "up to $0.09" == unknown.cost_text()
    assert "set egress.lake_region and egress.client_region" in unknown.route_text()
    # an upper bound whatever the prices: at the highest, not at `internet`'s (an inter-region
    # price above it let a costly pull through unasked)
    steep = EgressPolicy(price_per_gb={"same_region": 0.0, "inter_region": 1000.0,
                                       "internet": 0.09}, confirm_above_usd=1)
    unknown = estimate(steep, artifact="a", version=1, bytes_total=GiB, bytes_present=0,
                       bytes_to_download=GiB, local=False, lake_region=None,
                       lake_region_origin="unknown", environ={})
    assert (unknown.price_per_gb, unknown.needs_confirmation) == (1000.0, True)
    local = estimate(p, artifact="a", version=1, bytes_total=GiB, bytes_present=0,
                     bytes_to_download=GiB, local=True, lake_region=None,
                     lake_region_origin="n/a")
    assert (local.route, local.cost_usd, local.warn) == ("local", 0.0, False)


# ---- against a lake ------------------------------------------------------------------------

class FakeBucket(MemoryStore):
    """A MemoryStore that looks like an S3 lake in another region (no network involved); with
    `classes`, it keeps storage classes as S3 does."""

    def __init__(self, region: str | None, classes: bool = False) -> None:
        super().__init__(storage_classes=classes)
        self.url = "s3://fake-bucket/lake"
        self.region = region
        self.region_asked = 0

    def bucket_region(self) -> str | None:
        self.region_asked += 1
        return self.region


@pytest.fixture
def bucket_lake(tmp_path: Path) -> tuple[Lake, Path]:
    lake = Lake(FakeBucket("us-east-1"), chunk_size=MiB)
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(3 * MiB + 5))
    (src / "a.txt").write_bytes(os.urandom(1000))
    (src / "b.txt").write_bytes(os.urandom(3000))
    lake.push(src, "p/ckpt")
    return lake, src


def test_bytes_to_fetch_subtracts_what_is_already_there(bucket_lake, tmp_path: Path) -> None:
    lake, src = bucket_lake
    m = __import__("ckptlake.core.catalog", fromlist=["x"]).resolve(lake.store, "p/ckpt")
    dest = tmp_path / "dest"
    assert bytes_to_fetch(m, str(dest)) == (3 * MiB + 5 + 4000, 0)
    dest.mkdir()
    (dest / "big.bin").write_bytes((src / "big.bin").read_bytes())
    (dest / "a.txt").write_bytes(b"different")
    # big.bin is present and verified; the pack holding a.txt and b.txt is fetched whole
    assert bytes_to_fetch(m, str(dest)) == (4000, 3 * MiB + 5)
    (dest / "a.txt").write_bytes((src / "a.txt").read_bytes())
    (dest / "b.txt").write_bytes((src / "b.txt").read_bytes())
    assert bytes_to_fetch(m, str(dest)) == (0, 3 * MiB + 5 + 4000)
    assert not (tmp_path / "nothing").exists()
    bytes_to_fetch(m, str(tmp_path / "nothing" / "deeper"))
    assert not (tmp_path / "nothing").exists(), "estimating creates nothing"


def test_estimate_after_an_interrupted_pull_counts_only_what_is_left(
        bucket_lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The chunks an interrupted pull journaled are reused by the re-run, so the estimate (and
    with it the egress warning or question) leaves them out."""
    lake, _ = bucket_lake
    store = lake.store
    dest = tmp_path / "dest"
    real = store.get_into
    fetched: list[str] = []

    def flaky(key: str, buffer: bytearray):  # the connection dies after two chunk GETs
        if len(fetched) == 2:
            raise KeyboardInterrupt
        fetched.append(key)
        return real(key, buffer)

    monkeypatch.setattr(store, "get_into", flaky)
    lake.concurrency = 1  # deterministic: exactly two chunks land before the interruption
    with pytest.raises(KeyboardInterrupt):
        lake.pull("p/ckpt", dest)
    est = lake.estimate_pull("p/ckpt", dest, egress=EgressPolicy())
    assert not dest.exists()
    total = 3 * MiB + 5 + 4000
    sizes = {k.rsplit("/", 1)[-1]: len(store.get(k)) for k in fetched}
    assert est.bytes_to_download == total - sum(sizes.values())
    assert est.bytes_present == sum(sizes.values())
    monkeypatch.setattr(store, "get_into", real)
    result = lake.pull("p/ckpt", dest)
    assert result.bytes_downloaded == est.bytes_to_download


def test_pull_warns_refuses_and_proceeds_with_yes(bucket_lake, tmp_path: Path) -> None:
    lake, src = bucket_lake
    price = {"same_region": 0.0, "inter_region": 1000.0, "internet": 2000.0}
    # ~3 MiB at $1000/GB: about $2.93
    warn_only = EgressPolicy(client_region="eu-west-1", price_per_gb=price, warn_above_usd=1)
    seen = []
    lake.pull("p/ckpt", tmp_path / "d1", egress=warn_only, on_estimate=seen.append)
    assert seen[0].warn and not seen[0].needs_confirmation
    assert seen[0].lake_region == "us-east-1" and seen[0].lake_region_origin == "bucket"
    assert 2.9 < seen[0].cost_usd < 3.0

    strict = EgressPolicy(client_region="eu-west-1", price_per_gb=price, warn_above_usd=1,
                          confirm_above_usd=2)
    before = lake.store.bytes_out
    with pytest.raises(PolicyRefusal, match="above egress.confirm_above_usd"):
        lake.pull("p/ckpt", tmp_path / "d2", egress=strict)
    assert not (tmp_path / "d2").exists()
    assert lake.store.bytes_out - before < 10_000, "only the manifest was read"
    asked = []
    with pytest.raises(PolicyRefusal):
        lake.pull("p/ckpt", tmp_path / "d2", egress=strict,
                  confirm=lambda e: asked.append(e) or False)
    assert len(asked) == 1
    lake.pull("p/ckpt", tmp_path / "d3", egress=strict, confirm=lambda e: True)
    lake.pull("p/ckpt", tmp_path / "d4", egress=strict, yes=True)
    assert (tmp_path / "d4" / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    # Already there: nothing to download, nothing to pay, no confirmation needed.
    lake.pull("p/ckpt", tmp_path / "d4", egress=strict)
    same = EgressPolicy(client_region="us-east-1", price_per_gb=price, confirm_above_usd=0)
    lake.pull("p/ckpt", tmp_path / "d5", egress=same)


def test_configured_lake_region_is_not_probed(bucket_lake, tmp_path: Path) -> None:
    lake, _ = bucket_lake
    e = lake.estimate_pull("p/ckpt", tmp_path / "x",
                           egress=EgressPolicy(lake_region="eu-west-1",
                                               client_region="eu-west-1"))
    assert e.route == "same_region" and lake.store.region_asked == 0
    e = lake.estimate_pull("p/ckpt", tmp_path / "x", egress=EgressPolicy(client_region="x"))
    assert e.lake_region == "us-east-1" and lake.store.region_asked == 1


def test_cli_estimate_on_a_local_lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ckptlake.cli.app import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "w.bin").write_bytes(os.urandom(5000))
    lake = f"file://{tmp_path}/lake"
    CliRunner().invoke(app, ["push", str(tmp_path / "src"), "p/ckpt", "--lake", lake, "-q"])
    r = CliRunner().invoke(app, ["pull", "p/ckpt", str(tmp_path / "out"), "--lake", lake,
                                 "--estimate", "--json"])
    doc = json.loads(r.stdout)
    assert doc["route"] == "local" and doc["bytes_to_download"] == 5000 and doc["cost_usd"] == 0
    assert not (tmp_path / "out").exists()
    r = CliRunner().invoke(app, ["pull", "p/ckpt", str(tmp_path / "out"), "--lake", lake,
                                 "--estimate"])
    assert "would download 4.88 KiB of 4.88 KiB; a local lake (no egress)" in r.stdout


def test_cat_has_the_pull_egress_guard(bucket_lake, tmp_path: Path) -> None:
    """cat read a file's bytes across regions with no estimate, warning or confirmation: a
    `cat model.safetensors > x` of a large checkpoint paid the egress a pull would have asked
    about.  The estimate is this file's bytes (a pack counted whole: an upper bound)."""
    lake, src = bucket_lake
    price = {"same_region": 0.0, "inter_region": 1000.0, "internet": 2000.0}
    strict = EgressPolicy(client_region="eu-west-1", price_per_gb=price, warn_above_usd=1,
                          confirm_above_usd=2)
    before = lake.store.bytes_out
    with pytest.raises(PolicyRefusal, match=r"cat of p/ckpt@v1 would download 3\.00 MiB.*"
                                            r"above egress\.confirm_above_usd"):
        lake.cat("p/ckpt", "big.bin", egress=strict)
    assert lake.store.bytes_out - before < 10_000, "only the manifest was read"
    seen: list = []
    data = b"".join(lake.cat("p/ckpt", "big.bin", egress=strict, yes=True,
                             on_estimate=seen.append))
    assert data == (src / "big.bin").read_bytes()
    assert seen[0].operation == "cat" and seen[0].bytes_total == 3 * MiB + 5
    assert seen[0].bytes_to_download >= 3 * MiB and seen[0].needs_confirmation
    # a small packed file stays under both thresholds: no question
    small = []
    assert b"".join(lake.cat("p/ckpt", "a.txt", egress=strict, on_estimate=small.append)) == \
        (src / "a.txt").read_bytes()
    assert not small[0].warn and small[0].bytes_total == 1000


def costly_lake(s3_lake_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                artifact: str, *, warn: bool = False) -> tuple[list[str], bytes]:
    """`artifact`@v1 (one 2 MiB file, w.bin) on an S3 lake whose download costs about $2 by
    the config in tmp_path (inter-region, above confirm_above_usd 1.0; with `warn`, above
    warn_above_usd 0.5 too): (the lake and config options, the file's bytes)."""
    from ckptlake.cli.app import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    body = os.urandom(2 * MiB)
    (tmp_path / "src" / "w.bin").write_bytes(body)
    (tmp_path / "ckptlake.yaml").write_text(textwrap.dedent("""\
        egress:
          lake_region: us-east-1
          client_region: eu-west-1
          price_per_gb: {same_region: 0.0, inter_region: 1000.0, internet: 2000.0}
          confirm_above_usd: 1.0
        """) + ("  warn_above_usd: 0.5\n" if warn else ""))
    os.chmod(tmp_path / "ckptlake.yaml", 0o600)
    common = ["--lake", s3_lake_url, "--config", str(tmp_path / "ckptlake.yaml")]
    r = CliRunner().invoke(app, ["push", str(tmp_path / "src"), artifact, "-q", *common])
    assert r.exit_code == 0, r.output
    return common, body


def test_cli_cat_refuses_an_expensive_read_without_yes(s3_lake_url: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from ckptlake.cli.app import app

    common, body = costly_lake(s3_lake_url, tmp_path, monkeypatch, "p/cat", warn=True)
    r = CliRunner().invoke(app, ["cat", "p/cat", "w.bin", *common])
    assert r.exit_code == 7 and r.stdout == ""
    assert "cat of p/cat@v1 would download 2.00 MiB" in r.stderr and "--yes" in r.stderr
    r = CliRunner().invoke(app, ["cat", "p/cat", "w.bin", "--yes", *common])
    assert r.exit_code == 0 and r.stdout_bytes == body
    assert "warning: egress: cat of p/cat@v1: would download 2.00 MiB for a file of " \
           "2.00 MiB; us-east-1 -> eu-west-1 (inter-region)" in r.stderr
    # A pull that filled the chunk cache does not make cat free: cat reads no cache (the
    # estimate subtracted cached chunks, and the guard let the read through unasked).
    monkeypatch.setenv("CKPTLAKE_CACHE", str(tmp_path / "cache"))
    r = CliRunner().invoke(app, ["pull", "p/cat", str(tmp_path / "out"), "--yes", *common])
    assert r.exit_code == 0, r.stderr
    assert any((tmp_path / "cache").rglob("*")), "the pull filled the cache"
    r = CliRunner().invoke(app, ["cat", "p/cat", "w.bin", *common])
    assert r.exit_code == 7 and r.stdout == ""


@pytest.mark.parametrize("command", ["pull", "cat"])
def test_eof_at_the_egress_question_is_a_refusal(s3_lake_url: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 command: str) -> None:
    """Ctrl-D at "Download anyway?" on a terminal said "internal error: Abort", exit 1: the
    egress question called typer.confirm itself, not the helper rm's and gc's questions go
    through.  EOF is a refusal (exit 7, nothing downloaded); "y" downloads."""
    from ckptlake.cli.app import app

    common, body = costly_lake(s3_lake_url, tmp_path, monkeypatch, "p/eof")
    monkeypatch.setattr("ckptlake.cli.egress.isatty", lambda stream: True)  # a terminal
    dest = tmp_path / "dest"
    args = ["pull", "p/eof", str(dest)] if command == "pull" else ["cat", "p/eof", "w.bin"]
    r = CliRunner().invoke(app, [*args, *common], input="")  # EOF at the question
    assert r.exit_code == 7, r.output
    assert "Download anyway?" in r.stderr and "internal error" not in r.stderr
    assert f"{command} cancelled; nothing was downloaded" in r.stderr
    assert not dest.exists() and r.stdout.strip() == ""  # (CliRunner echoes the input there)
    r = CliRunner().invoke(app, [*args, *common], input="y\n")
    assert r.exit_code == 0, r.output
    if command == "pull":
        assert (dest / "w.bin").read_bytes() == body
    else:
        assert r.stdout_bytes.endswith(body)
