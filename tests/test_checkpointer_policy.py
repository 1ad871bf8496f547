"""Checkpointer lineage (parents=/inputs=) and after-commit retention from the policy file
(issue 15, item 5): the same selection and the same deleter as gc."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import pytest

import ckptlake
from ckptlake.errors import NotFound

ART = "run/ckpt"


@pytest.fixture
def lake(local_lake_url: str) -> Iterator[ckptlake.Lake]:
    with ckptlake.open(local_lake_url) as lk:
        yield lk


def write_policy(tmp_path: Path, rules: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text("retention:\n  rules:\n" + rules)
    return path


def save_steps(ck: ckptlake.Checkpointer, src: Path, steps: list[int],
               metrics: dict[int, float] | None = None) -> None:
    src.mkdir(exist_ok=True)
    for step in steps:
        (src / "f.tmp").write_bytes(str(step).encode())
        (src / "f.tmp").replace(src / "f")
        ck.save(src, step=step, metrics={"val_loss": metrics[step]} if metrics else None
                ).result(60)


def test_parents_and_inputs_per_checkpointer_and_per_save(lake, tmp_path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "w").write_bytes(b"base")
    lake.push(tmp_path / "base", "hub/base")
    lake.push(tmp_path / "base", "hub/other")
    with lake.checkpointer(ART, parents=["hub/base:fine-tuned-from"],
                           inputs=["s3://data/wiki#sha256:ab"], retention=False) as ck:
        save_steps(ck, tmp_path / "c", [1])
        (tmp_path / "c" / "f").write_bytes(b"2")
        ck.save(tmp_path / "c", step=2, parents=["hub/other@v1"], inputs=[]).result(60)
        ck.save_state({"x": 1}, step=3).result(60)
    first, second, third = (lake.show(f"{ART}@v{n}") for n in (1, 2, 3))
    assert [(p["artifact"], p["version"], p["relation"]) for p in first.parents] == \
        [("hub/base", 1, "fine-tuned-from")]
    assert first.inputs == [{"uri": "s3://data/wiki", "digest": "sha256:ab"}]
    assert [(p["artifact"], p["relation"]) for p in second.parents] == \
        [("hub/other", "derived-from")]
    assert second.inputs == []
    assert [p["artifact"] for p in third.parents] == ["hub/base"]  # the default again
    children = lake.show("hub/base@v1").children
    assert sorted(c["version"] for c in children) == [1, 3]


def test_missing_parent_fails_when_the_checkpointer_is_made(lake) -> None:
    with pytest.raises(NotFound):
        lake.checkpointer(ART, parents=["hub/none"], retention=False)


def test_policy_rules_apply_after_each_commit(lake, tmp_path) -> None:
    policy = write_policy(tmp_path, '    - match: "run/*"\n      keep_last: 2\n'
                                    '      keep_every_steps: 3\n')
    with lake.checkpointer(ART, retention=str(policy)) as ck:
        save_steps(ck, tmp_path / "c", [1, 2, 3, 4, 5, 6, 7])
    assert ck.retention_errors == []
    assert [v.step for v in lake.versions(ART)] == [3, 6, 7]
    expired = lake.expired(ART)
    assert [t.version for t in expired] == [1, 2, 4, 5]
    assert all("rules[0]" in t.rule for t in expired)


def test_keep_best_rule_and_keep_last_shortcut(lake, tmp_path) -> None:
    policy = write_policy(tmp_path, '    - match: "run/*"\n      keep_last: 5\n'
                                    '      keep_best: {metric: val_loss, mode: min, count: 1}\n')
    losses = {1: 0.9, 2: 0.1, 3: 0.5, 4: 0.7, 5: 0.6, 6: 0.8}
    with lake.checkpointer(ART, retention=policy, keep_last=1) as ck:
        save_steps(ck, tmp_path / "c", [1], losses)
        lake.alias(f"{ART}@v1", "first")
        save_steps(ck, tmp_path / "c", [2, 3, 4, 5, 6], losses)
    # keep_last=1 replaces the rule's 5; keep_best keeps step 2; the alias keeps v1.
    assert [v.step for v in lake.versions(ART)] == [1, 2, 6]


def test_no_rule_and_no_keep_last_deletes_nothing(lake, tmp_path) -> None:
    policy = write_policy(tmp_path, '    - match: "other/*"\n      keep_last: 1\n')
    with lake.checkpointer(ART, retention=policy) as ck:
        save_steps(ck, tmp_path / "c", [1, 2, 3])
    assert len(lake.versions(ART)) == 3


def test_retention_failure_is_logged_never_raised(lake, tmp_path, caplog) -> None:
    policy = write_policy(tmp_path, '    - match: "run/*"\n'
                                    '      keep_best: {metric: typo_loss, mode: min, '
                                    'keep_missing: false}\n')
    with caplog.at_level(logging.ERROR, logger="ckptlake"):
        with lake.checkpointer(ART, retention=policy) as ck:
            save_steps(ck, tmp_path / "c", [1, 2])
    assert len(ck.retention_errors) == 2 and "typo_loss" in str(ck.retention_errors[0])
    assert "retention of run/ckpt" in caplog.text
    assert len(lake.versions(ART)) == 2


def test_a_keep_best_metric_only_a_sibling_has_is_no_error_after_each_commit(
        lake, tmp_path, caplog) -> None:
    """ckptlake.example.yaml's keep_best val_loss rule over a run whose checkpoints record
    `loss`: gc applies it (keep_missing keeps them), the checkpointer logged an error after
    every commit (a new user's review)."""
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "f").write_bytes(b"o")
    lake.push(tmp_path / "o", "run/other", metrics={"val_loss": 1.0})
    policy = write_policy(tmp_path, '    - match: "run/*"\n      keep_last: 5\n'
                                    '      keep_best: {metric: val_loss, mode: min}\n')
    with caplog.at_level(logging.ERROR, logger="ckptlake"):
        with lake.checkpointer(ART, retention=policy, keep_last=2) as ck:
            save_steps(ck, tmp_path / "c", [1, 2, 3, 4])
    assert ck.retention_errors == [] and "retention of" not in caplog.text
    # as gc decides: keep_missing keeps the versions without val_loss
    assert len(lake.versions(ART)) == 4
    plan = lake.gc_plan(policy)
    assert [a.delete for a in plan.artifacts if a.artifact == ART] == [[]]


def test_on_sigterm_arguments_are_checked_and_the_handler_restored(lake) -> None:
    import signal

    from ckptlake.errors import UsageError

    with pytest.raises(UsageError, match="on_sigterm"):
        lake.checkpointer(ART, on_sigterm="later", retention=False)
    with pytest.raises(UsageError, match="final_save"):
        lake.checkpointer(ART, on_sigterm="save", retention=False)
    with pytest.raises(UsageError, match="final_save"):
        lake.checkpointer(ART, final_save=lambda: None, retention=False)
    before = signal.getsignal(signal.SIGTERM)
    with lake.checkpointer(ART, on_sigterm="wait", retention=False) as ck:
        assert signal.getsignal(signal.SIGTERM) == ck._on_sigterm
    assert signal.getsignal(signal.SIGTERM) == before
