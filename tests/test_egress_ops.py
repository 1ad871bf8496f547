"""Ops review of the egress guard: a typo in an egress region, a replica the estimate did not
say it skips, and sub-cent costs printed as $0.00 while a threshold fired."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ckptlake.core.egress import enforce
from ckptlake.errors import ConfigError, PolicyRefusal
from ckptlake.policy.config import load_config
from ckptlake.policy.egress import EgressPolicy, estimate, load_egress

MiB = 1 << 20


@pytest.fixture(autouse=True)
def _no_ambient(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "CKPTLAKE_CACHE", "CKPTLAKE_CACHE_SIZE",
                 "CKPTLAKE_CONFIG", "CKPTLAKE_LAKE"):
        monkeypatch.delenv(name, raising=False)


def egress_from(tmp_path: Path, body: str) -> EgressPolicy:
    path = tmp_path / "ckptlake.yaml"
    path.write_text(body)
    return load_egress(load_config(str(path)))


@pytest.mark.parametrize("key", ["client_region", "lake_region"])
@pytest.mark.parametrize("typo,meant", [("eu-west1", "eu-west-1"), ("us-eest-1", "us-east-1"),
                                        ("US-EAST-1", "us-east-1")])
def test_a_region_typo_is_refused_with_the_region_meant(tmp_path: Path, key: str, typo: str,
                                                        meant: str) -> None:
    with pytest.raises(ConfigError) as info:
        egress_from(tmp_path, f"# egress\negress:\n  {key}: {typo}\n")
    exc = info.value
    assert (exc.line, exc.key) == (3, f"egress.{key}")
    assert f"unknown region {typo!r}" in str(exc) and f"did you mean {meant}?" in str(exc)
    assert str(tmp_path / "ckptlake.yaml") in str(exc)


@pytest.mark.parametrize("region", ["eu-west-1", "ap-southeast-6", "eu-west-4", "us-east1",
                                    "europe-west4", "westeurope", "dc-berlin", "weur",
                                    # Backblaze B2, Linode, Azure, GCP dual-region, Yandex
                                    "us-west-004", "eu-central-003", "us-iad-1", "se-sto-1",
                                    "uksouth", "canadacentral", "nam4", "ru-central1"])
def test_a_well_formed_region_the_list_lacks_is_taken_as_written(tmp_path: Path,
                                                                 region: str) -> None:
    """Newer AWS regions, other clouds' names and a site name are no typos of a known one:
    only a near miss is refused."""
    p = egress_from(tmp_path, f"egress:\n  lake_region: {region}\n  client_region: {region}\n")
    assert (p.lake_region, p.client_region) == (region, region)
    assert egress_from(tmp_path, "egress:\n  client_region: internet\n").client_region == \
        "internet"
    with pytest.raises(ConfigError, match="did you mean"):
        egress_from(tmp_path, f"egress:\n  lake_region: {region}\n  client_region: eu-west1\n")


def test_cli_refuses_the_typo_before_the_estimate(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from ckptlake.cli.app import app

    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "ckptlake.yaml"
    cfg.write_text("egress:\n  client_region: eu-west1\n")
    r = CliRunner().invoke(app, ["pull", "p/ckpt", str(tmp_path / "out"), "--estimate",
                                 "--lake", (tmp_path / "lake").as_uri(), "--config", str(cfg)])
    assert r.exit_code == 2, r.output
    assert "egress.client_region: unknown region 'eu-west1'" in r.stderr
    assert "did you mean eu-west-1?" in r.stderr and "Traceback" not in r.output


def test_estimate_says_the_replica_is_not_used(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A replica the pull refuses (here: a copy of another lake) was skipped by the estimate
    without a word, pricing every byte from the lake; the pull itself warns."""
    from ckptlake.cli.app import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "w.bin").write_bytes(os.urandom(5000))
    lake = (tmp_path / "lake").as_uri()
    r = CliRunner().invoke(app, ["push", str(tmp_path / "src"), "p/ckpt", "--lake", lake, "-q"])
    assert r.exit_code == 0, r.output
    shutil.copytree(tmp_path / "lake", tmp_path / "other")  # a lake, not a replica
    cfg = tmp_path / "ckptlake.yaml"
    cfg.write_text(f"replicas:\n  - name: eu\n    url: {(tmp_path / 'other').as_uri()}\n"
                   "    region: eu-west-1\negress:\n  client_region: eu-west-1\n")
    common = ["--lake", lake, "--config", str(cfg)]
    r = CliRunner().invoke(app, ["pull", "p/ckpt", str(tmp_path / "out"), "--estimate",
                                 "--json", *common])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["sources"] == [] and len(doc["warnings"]) == 1
    assert doc["warnings"][0].startswith("replica eu is not used: ")
    assert not (tmp_path / "out").exists()
    r = CliRunner().invoke(app, ["pull", "p/ckpt", str(tmp_path / "out"), "--estimate",
                                 *common])
    assert r.exit_code == 0 and "warning: replica eu is not used: " in r.stderr, r.output
    assert r.stderr.count("replica eu is not used") == 1

    import ckptlake

    with ckptlake.open(lake, config=str(cfg)) as lk:
        est = lk.estimate_pull("p/ckpt", tmp_path / "out", replica="eu",
                               egress=EgressPolicy(client_region="eu-west-1"))
    assert [w.split(":")[0] for w in est.warnings] == ["replica eu is not used"]
    # a lake without replicas: nothing to say
    (tmp_path / "plain.yaml").write_text("egress:\n  client_region: eu-west-1\n")
    r = CliRunner().invoke(app, ["pull", "p/ckpt", str(tmp_path / "out"), "--estimate",
                                 "--json", "--lake", lake, "--config",
                                 str(tmp_path / "plain.yaml")])
    assert json.loads(r.stdout)["warnings"] == []


def small_pull(**policy: float) -> object:
    """A 1.9 MiB inter-region pull at $0.02/GB: about $0.000037."""
    return estimate(EgressPolicy(client_region="eu-west-1", **policy), artifact="p/ckpt",
                    version=1, bytes_total=int(1.9 * MiB), bytes_present=0,
                    bytes_to_download=int(1.9 * MiB), local=False, lake_region="us-east-1",
                    lake_region_origin="egress.lake_region")


def test_a_sub_cent_refusal_prints_a_nonzero_cost() -> None:
    est = small_pull(confirm_above_usd=0.0)
    assert est.needs_confirmation and 0 < est.cost_usd < 0.005
    with pytest.raises(PolicyRefusal) as info:
        enforce(est, yes=False, confirm=None)
    text = str(info.value)
    assert "$0.000037, above egress.confirm_above_usd (0.00)" in text, text
    assert "$0.00," not in text


def test_a_sub_cent_warning_prints_a_nonzero_cost_and_threshold() -> None:
    from ckptlake.cli.egress import warn_egress
    from ckptlake.cli.options import CommonOptions
    from ckptlake.cli.output import Output

    out = Output(CommonOptions(json=True))
    warn_egress(out, small_pull(warn_above_usd=0.00001), yes=True)
    (line,) = out._with_warnings({})["warnings"]
    assert "$0.000037 at $0.02/GB (above egress.warn_above_usd 0.00001)" in line, line
    # cents stay cents
    assert small_pull().cost_text() == "$0.000037"
    big = estimate(EgressPolicy(client_region="eu-west-1"), artifact="a", version=1,
                   bytes_total=1 << 30, bytes_present=0, bytes_to_download=1 << 30,
                   local=False, lake_region="us-east-1", lake_region_origin="bucket")
    assert big.cost_text() == "$0.02"


def test_a_cost_just_above_its_threshold_never_prints_equal_to_it() -> None:
    """$1.004 against 1.00 read "$1.00, above ... (1.00)": the reader sees no reason."""
    from ckptlake.cli.egress import warn_egress
    from ckptlake.cli.options import CommonOptions
    from ckptlake.cli.output import Output
    from ckptlake.policy.egress import usd_text

    n = int(50.2 * (1 << 30))  # 50.2 GB (GiB, as the price counts) at $0.02/GB: $1.004
    est = estimate(EgressPolicy(client_region="eu-west-1", warn_above_usd=1.0,
                                confirm_above_usd=1.0), artifact="a", version=1,
                   bytes_total=n, bytes_present=0, bytes_to_download=n,
                   local=False, lake_region="us-east-1", lake_region_origin="bucket")
    assert usd_text(est.cost_usd) == "1.00"
    assert est.warn and est.needs_confirmation
    with pytest.raises(PolicyRefusal) as info:
        enforce(est, yes=False, confirm=None)
    assert "$1.004, above egress.confirm_above_usd (1.000)" in str(info.value), str(info.value)
    out = Output(CommonOptions(json=True))
    warn_egress(out, est, yes=True)
    (line,) = out._with_warnings({})["warnings"]
    assert "$1.004 at $0.02/GB (above egress.warn_above_usd 1.000)" in line, line
    # more digits only where needed: apart at cents, below its threshold, no threshold
    assert usd_text(1.5, above=1.0) == "1.50"
    assert usd_text(1.004, above=1.004) == "1.00"
    assert usd_text(1.004) == "1.00"
    assert usd_text(1.0000004, above=1.0) == "1.0000004"
    from ckptlake.policy.egress import threshold_text

    assert (usd_text(2.0, above=1.999), threshold_text(1.999, 2.0)) == ("2.000", "1.999")
    assert threshold_text(1.0, 1.5) == "1.00" and threshold_text(1.0, 0.5) == "1.00"
