"""Checks of the retention policy and the replicas config that a mutation review found
unexercised: a replica reached through a symlink to the lake, credentials in a replica's
endpoint, keep_every_steps: 0 beside another keep rule, and a keep_best metric that only older
versions have."""
from __future__ import annotations

from pathlib import Path

import pytest

from ckptlake.errors import ConfigError
from ckptlake.policy.config import load_config
from ckptlake.policy.replicas import overlap
from ckptlake.policy.retention import check_metrics

from test_replicas import _cfg
from test_retention import config_error, facts, policy_from


def test_a_replica_that_is_the_lake_through_a_symlink_is_refused(tmp_path: Path) -> None:
    """Pull-through would read and write inside the lake's own directory."""
    from ckptlake.policy.replicas import load_replicas

    (tmp_path / "lake").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "lake")
    lake, alias = (tmp_path / "lake").as_uri(), (tmp_path / "alias").as_uri()
    assert overlap(alias, None, lake, None) == "same"
    assert overlap(alias + "/sub", None, lake, None) == "inside"
    path = _cfg(tmp_path, f"lake: {lake}\nreplicas:\n  - name: eu\n    url: {alias}/sub\n"
                          "    region: eu-west-1\n")
    with pytest.raises(ConfigError) as info:
        load_replicas(load_config(str(path)))
    assert info.value.key == "replicas[0].url"


def test_credentials_in_a_replicas_endpoint_are_refused_unshown(tmp_path: Path) -> None:
    from ckptlake.policy.replicas import load_replicas

    path = _cfg(tmp_path, "replicas:\n  - name: eu\n    url: s3://bkt-eu/eu\n"
                          "    region: eu-west-1\n"
                          "    endpoint_url: http://AKIA:s3cr3tpw@localhost:9000\n")
    with pytest.raises(ConfigError) as info:
        load_replicas(load_config(str(path)))
    assert info.value.key == "replicas[0].endpoint_url"
    assert "s3cr3tpw" not in str(info.value)


def test_keep_every_steps_zero_is_refused_beside_another_keep_rule(tmp_path: Path) -> None:
    """Alone it keeps nothing (refused as such); beside keep_last it loaded, and gc's selection
    then divided by zero: a traceback in the middle of gc."""
    err = config_error(tmp_path, "retention:\n  rules:\n    - match: a\n      keep_last: 1\n"
                                 "      keep_every_steps: 0\n")
    assert err.key == "retention.rules[0].keep_every_steps" and ">= 1" in str(err)


def test_a_metric_only_older_versions_have_is_no_missing_metric(tmp_path: Path) -> None:
    """The newest checkpoint of a run preempted mid-epoch may lack val_loss: gc must not call
    the policy's keep_best metric unknown because the last version looked at lacks it."""
    policy = policy_from(tmp_path, "retention:\n  rules:\n    - match: '*'\n"
                                   "      keep_best: {metric: val_loss}\n")
    check_metrics(policy, [facts(1), facts(2, metrics={})])
    check_metrics(policy, [facts(1, metrics={}), facts(2)])
