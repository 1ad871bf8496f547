"""`ckptlake rm` (Lake.delete) and `alias --delete` (Lake.remove_alias).

rm deletes one version (or, with --all, every version) by gc's own deleter (tombstone, aliases
read again, manifest), never an aliased one, and leaves its chunks to gc's sweep; a push numbers
above every tombstone, so a deleted latest number is never handed out again; alias removal swaps the record
for an empty one (no alias) and leaves it, so a concurrent move is removed too or stands
(docs/format.md, "Deleting one version by hand (rm)" and "Alias record")."""
from __future__ import annotations

import json
import os
import threading
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.core import catalog, shards
from ckptlake.core import tombstones as tombs
from ckptlake.core.identity import utcnow
from ckptlake.errors import CkptlakeError, IntegrityError, NotFound, PolicyRefusal, UsageError
from ckptlake.format import layout
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore
from test_shards_gc import die_before_committed, rank_dir

ART = "p/ckpt"


def cli(*args: Any, input: str | None = None) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], input=input,
                              catch_exceptions=False)


def push(lake: Lake, tmp_path: Path, artifact: str = ART, n: int = 3, **kw: Any) -> list[int]:
    """n versions of distinct random content (each its own chunk)."""
    out = []
    for i in range(n):
        src = tmp_path / f"src-{artifact.replace('/', '_')}-{i}-{os.urandom(3).hex()}"
        src.mkdir()
        (src / "w.bin").write_bytes(os.urandom(200 + i))
        out.append(lake.push(src, artifact, **kw).version)
    return out


def keys(store: Any, prefix: str = "") -> set[str]:
    return {o.key for o in store.list(prefix)}


class Hooked(MemoryStore):
    """Runs a one-shot hook at a chosen point of a deleter's or a remover's sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.before_tomb_put: Callable[[], None] | None = None
        self.before_manifest_delete: Callable[[], None] | None = None
        self.after_alias_read: Callable[[], None] | None = None
        self.after_empty_alias_put: Callable[[], None] | None = None
        self.after_alias_get: Callable[[], None] | None = None
        self.alias_written = threading.Event()
        self.alias_deletes: list[str] = []

    @staticmethod
    def _fire(hook: Callable[[], None] | None) -> None:
        if hook is not None:
            hook()

    def put(self, key, data, **kw):  # type: ignore[no-untyped-def]
        if layout.parse_tombstone_key(key) and self.before_tomb_put:
            hook, self.before_tomb_put = self.before_tomb_put, None
            hook()
        etag = super().put(key, data, **kw)
        if layout.parse_alias_key(key):
            if data:
                self.alias_written.set()
            elif self.after_empty_alias_put:
                hook, self.after_empty_alias_put = self.after_empty_alias_put, None
                hook()
        return etag

    def get(self, key):  # type: ignore[no-untyped-def]
        got = super().get(key)
        if layout.parse_alias_key(key) and self.after_alias_get:
            hook, self.after_alias_get = self.after_alias_get, None
            hook()
        return got

    def get_with_etag(self, key):  # type: ignore[no-untyped-def]
        got = super().get_with_etag(key)
        if layout.parse_alias_key(key) and self.after_alias_read:
            hook, self.after_alias_read = self.after_alias_read, None
            hook()
        return got

    def delete(self, keys):  # type: ignore[no-untyped-def]
        keys = list(keys)
        self.alias_deletes += [k for k in keys if layout.parse_alias_key(k)]
        if any(layout.parse_version_key(k) for k in keys) and self.before_manifest_delete:
            hook, self.before_manifest_delete = self.before_manifest_delete, None
            hook()
        return super().delete(keys)


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    lake = Lake(Hooked(), chunk_size=1 << 20)
    push(lake, tmp_path)
    return lake


# ---- the library ---------------------------------------------------------------------------

def test_rm_leaves_a_tombstone_lineage_and_the_chunks(local_lake_url: str, tmp_path: Path
                                                      ) -> None:
    with ckptlake.open(local_lake_url) as lake:
        push(lake, tmp_path)
        push(lake, tmp_path, "q/ft", n=1, parents=[f"{ART}@v2"])
        chunks = keys(lake.store, "chunks/")
        r = lake.delete(f"{ART}@v2", reason="pushed with\nan API token in it")
        assert (r.ref, r.deleted, r.dry_run, r.rule) == (f"{ART}@v2", True, False, "ckptlake rm")
        assert r.reason == "pushed with an API token in it"  # one line
        assert [v.version for v in lake.versions(ART)] == [1, 3]
        (t,) = lake.expired(ART)
        assert (t.version, t.rule, t.reason) == (2, "ckptlake rm", r.reason)
        node = lake.lineage("q/ft@v1").node(f"{ART}@v2")
        assert node.status == "expired" and node.deleted
        for read in (lambda: lake.show(f"{ART}@v2"), lambda: lake.pull(f"{ART}@v2", tmp_path / "o"),
                     lambda: lake.delete(f"{ART}@v2")):
            with pytest.raises(NotFound, match=r"p/ckpt@v2 was deleted with ckptlake rm on .* by "
                                               r".*API token in it; list what is left") as err:
                read()
            assert err.value.exit_code == 3
        assert keys(lake.store, "chunks/") == chunks  # left to gc's sweep


def test_rm_refuses_a_bare_artifact_aliased_missing_and_bad_input(lake: Lake) -> None:
    lake.alias(f"{ART}@v1", "prod")
    before = keys(lake.store)
    for ref, pattern in ((f"{ART}@prod", r"p/ckpt@v1 is aliased \(prod\)"),
                         (f"{ART}@v1", "alias --delete p/ckpt prod")):
        with pytest.raises(PolicyRefusal, match=pattern) as err:
            lake.delete(ref)
        assert err.value.exit_code == 7
    # ARTIFACT alone reads like the whole artifact: name the version, or use delete_artifact
    for dry in (True, False):
        with pytest.raises(UsageError, match="rm deletes one version: name it, e.g. "
                                             "p/ckpt@latest") as err:
            lake.delete(ART, dry_run=dry)
        assert "ckptlake rm p/ckpt --all" in str(err.value)
    with pytest.raises(NotFound, match="p/ckpt@v9 does not exist"):
        lake.delete(f"{ART}@v9")
    for bad in ({"reason": ""}, {"reason": "x" * 501}, {"reason": 3}, {"reason": "a\x00b"},
                {"dry_run": "no"}):
        with pytest.raises(UsageError):
            lake.delete(f"{ART}@v2", **bad)
    with pytest.raises(UsageError):
        lake.delete(f"{ART}@v2@x")
    r = lake.delete(f"{ART}@v2", dry_run=True)
    assert (r.version, r.deleted, r.dry_run) == (2, False, True)
    assert r.reason.startswith("deleted by hand by ")
    assert keys(lake.store) == before  # refusals and the dry run wrote nothing


def test_an_alias_set_while_rm_runs_spares_the_version(lake: Lake) -> None:
    """Between rm's first read of the aliases and its tombstone: the second read sees it."""
    store = lake.store
    store.before_tomb_put = lambda: lake.alias(f"{ART}@v2", "prod")
    with pytest.raises(PolicyRefusal, match=r"p/ckpt@v2 is aliased \(prod\)"):
        lake.delete(f"{ART}@v2")
    assert store.exists(layout.version_key(ART, 2))
    assert not store.exists(layout.tombstone_key(ART, 2))  # its new tombstone went again
    assert catalog.aliases(store, ART) == {"prod": 2}


def test_an_alias_landing_right_before_rms_delete_is_undone(lake: Lake,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """After rm's last read of the aliases: the alias side sees the tombstone, waits, finds the
    manifest gone and removes its record, so no alias names a deleted version."""
    monkeypatch.setattr(catalog, "_SETTLE_POLL", 0.01)
    store = lake.store
    errors: list[BaseException] = []

    def set_alias() -> None:
        try:
            lake.alias(f"{ART}@v2", "prod")
        except BaseException as exc:  # noqa: BLE001 - checked below
            errors.append(exc)

    thread = threading.Thread(target=set_alias)

    def alias_lands_now() -> None:
        thread.start()
        assert store.alias_written.wait(10)

    store.before_manifest_delete = alias_lands_now
    assert lake.delete(f"{ART}@v2").deleted
    thread.join(30)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], NotFound)
    assert "p/ckpt@v2 was deleted by ckptlake rm while the alias was being set; p/ckpt@prod " \
           "was removed again" in str(errors[0])
    assert catalog.aliases(store, ART) == {}
    assert not store.exists(layout.version_key(ART, 2))


def test_rm_racing_alias_never_deletes_an_aliased_version(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """Free-running threads: whoever wins, no alias is left on a deleted version."""
    monkeypatch.setattr(catalog, "_SETTLE_POLL", 0.001)
    outcomes = set()
    for i in range(12):
        lake = Lake(MemoryStore(), chunk_size=1 << 20)
        (tmp_path / str(i)).mkdir()
        push(lake, tmp_path / str(i), n=3)
        barrier = threading.Barrier(2)
        got: dict[str, Any] = {}

        def run(name: str, fn: Callable[[], Any]) -> None:
            barrier.wait()
            try:
                got[name] = fn()
            except CkptlakeError as exc:
                got[name] = exc

        threads = [threading.Thread(target=run, args=("rm", lambda: lake.delete(f"{ART}@v2"))),
                   threading.Thread(target=run, args=("alias",
                                                      lambda: lake.alias(f"{ART}@v2", "prod")))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        alive = lake.store.exists(layout.version_key(ART, 2))
        aliased = catalog.aliases(lake.store, ART).get("prod") == 2
        assert alive or not aliased, got
        assert alive == (not getattr(got["rm"], "deleted", False)), got
        outcomes.add((alive, aliased))
    assert outcomes <= {(True, True), (False, False)}


def test_rm_of_a_manifest_no_reader_accepts(lake: Lake) -> None:
    """Such a manifest stops gc; deleting it by number is the way out."""
    key = layout.version_key(ART, 1)
    lake.store.put(key, b'{"not": "a manifest"}')
    with pytest.raises(IntegrityError):
        lake.show(f"{ART}@v1")
    r = lake.delete(f"{ART}@v1", reason="corrupt")
    assert r.deleted and r.files == 0
    assert not lake.store.exists(key)
    assert [t.version for t in lake.expired(ART)] == [1]


def _gc_tomb(lake: Lake, number: int, age: timedelta) -> tombs.Tombstone:
    m = catalog.load_manifest(lake.store, ART, number)
    return tombs.from_manifest(m, deleted=utcnow() - age, rule="rules[0] (match 'p/*')",
                               reason="not among the newest 1")


def test_rm_replaces_an_interrupted_deleters_tombstone(lake: Lake) -> None:
    """A gc killed after its tombstone left one next to the live manifest: rm's replaces it,
    so the lake records the reason and time rm reports."""
    assert tombs.write(lake.store, _gc_tomb(lake, 2, timedelta(days=30)))
    r = lake.delete(f"{ART}@v2", reason="pushed with a secret")
    assert r.deleted
    t = tombs.load(lake.store, ART, 2)
    assert (t.rule, t.reason, t.deleted) == ("ckptlake rm", "pushed with a secret",
                                             r.deleted_at)
    assert not lake.store.exists(layout.version_key(ART, 2))


def test_rm_reports_a_deletion_another_deleter_is_making(lake: Lake) -> None:
    """A young tombstone is a deleter at work: rm reports its deletion and writes nothing."""
    assert tombs.write(lake.store, _gc_tomb(lake, 2, timedelta(seconds=1)))
    before = {k: lake.store.get(k) for k in keys(lake.store)}
    with pytest.raises(NotFound, match=r"p/ckpt@v2 is being deleted by another deleter \(its "
                                       r"tombstone: deleted by gc on .*run the same rm again"
                       ) as err:
        lake.delete(f"{ART}@v2", reason="mine")
    assert err.value.exit_code == 3
    assert {k: lake.store.get(k) for k in keys(lake.store)} == before


def test_rm_never_claims_a_deletion_whose_tombstone_another_wrote(lake: Lake) -> None:
    """A concurrent gc's tombstone lands right before rm's: the manifest goes (both wanted
    that), and rm reports what the lake records, gc's deletion, not its own."""
    lake.store.before_tomb_put = lambda: tombs.write(lake.store,
                                                     _gc_tomb(lake, 2, timedelta(0)))
    with pytest.raises(NotFound, match=r"p/ckpt@v2 was deleted by gc on .* meanwhile \(reason: "
                                       r"not among the newest 1; list what is left"):
        lake.delete(f"{ART}@v2", reason="mine")
    assert not lake.store.exists(layout.version_key(ART, 2))
    assert tombs.load(lake.store, ART, 2).rule == "rules[0] (match 'p/*')"


def test_rm_refuses_a_manifest_a_newer_ckptlake_wrote(lake: Lake) -> None:
    key = layout.version_key(ART, 1)
    newer = json.dumps({"ckptlake_manifest": 2, "artifact": ART, "version": 1}).encode()
    lake.store.put(key, newer)
    with pytest.raises(PolicyRefusal, match=r"p/ckpt@v1 was written by a newer ckptlake .*"
                                            r"upgrade ckptlake, then run the same rm") as err:
        lake.delete(f"{ART}@v1")
    assert err.value.exit_code == 7
    assert lake.store.get(key) == newer and not lake.expired(ART)
    # a damaged one goes, and its tombstone keeps the metadata (a shard step's commit id)
    lake.store.put(key, b'{"ckptlake_manifest": 1, "metadata": {"ckptlake.shard_commit": "c1"}}')
    assert lake.delete(f"{ART}@v1").deleted
    assert tombs.load(lake.store, ART, 1).metadata == {"ckptlake.shard_commit": "c1"}


def _sharded(lake: Lake, tmp_path: Path, art: str, step: int, ranks: range) -> None:
    for r in ranks:
        d = tmp_path / f"{art.replace('/', '_')}-{step}-{r}"
        d.mkdir()
        (d / f"__{r}_0.distcp").write_bytes(os.urandom(1000))
        lake.push_shard(d, art, step=step, rank=r, world=2)


def test_gc_sweeps_a_deleted_step_whose_claim_stayed_committing(tmp_path: Path) -> None:
    """The committer died between the manifest and the claim's last swap; rm deleted the
    version: its records are no roots (the tombstone carries the claim's commit id), and gc
    sweeps its chunks.  A step still committing (its intent N free, or another version there)
    keeps its chunks."""
    from ckptlake.policy.retention import RetentionPolicy

    lake = Lake(MemoryStore(), chunk_size=1 << 20)
    art = "sh/c"
    base = keys(lake.store, "chunks/")
    _sharded(lake, tmp_path, art, 10, range(2))  # v1
    done_chunks = keys(lake.store, "chunks/") - base
    push(lake, tmp_path, art, n=2)  # v2, v3
    claim_key = layout.shard_claim_key(art, 10)
    claim = json.loads(lake.store.get(claim_key))
    lake.store.put(claim_key, json.dumps({**claim, "state": "committing"}).encode())
    # step 20: only rank 0 arrived; a claim (written by hand) says committing with intent v2,
    # which a foreign version holds; step 30: intent v9, nothing there
    before = keys(lake.store, "chunks/")
    _sharded(lake, tmp_path, art, 20, range(1))
    _sharded(lake, tmp_path, art, 30, range(1))
    pending_chunks = keys(lake.store, "chunks/") - before
    for step, n in ((20, 2), (30, 9)):
        lake.store.put(layout.shard_claim_key(art, step), json.dumps(
            {**claim, "step": step, "version": n, "state": "committing",
             "commit_id": f"other{step}"}).encode())
    assert lake.delete(f"{art}@v1").deleted
    lake.gc(lake.gc_plan(RetentionPolicy(grace_period=0.0)))
    left = keys(lake.store, "chunks/")
    assert not done_chunks & left  # swept
    assert pending_chunks and pending_chunks <= left  # still roots


def _step_committed_then_deleted(lake: Lake, tmp_path: Path, art: str,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Step 1 of `art` committed as v1 by an owner that died before recording it (its claim
    stays `committing`), then v1 deleted by rm (v2 pushed on top)."""
    die_before_committed(lake, [rank_dir(tmp_path, r, 1000) for r in range(2)], art,
                         monkeypatch)
    push(lake, tmp_path, art, n=1)
    assert lake.delete(f"{art}@v1").deleted


def _age_claim(lake: Lake, art: str) -> None:
    """Make step 1's `committing` claim stale, so the next rank's push takes it over."""
    key = layout.shard_claim_key(art, 1)
    claim = shards.decode_claim(lake.store.get(key), key=key)
    assert claim.state == "committing"
    lake.store.put(key, replace(claim, updated=utcnow() - timedelta(hours=1)).encode())


def test_a_shard_step_rm_deleted_is_never_committed_again(local_lake_url: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """As after gc (tests/test_shards_gc.py): the owner died after writing the manifest; rm
    deleted it; a takeover finds rm's tombstone with its commit_id and stops."""

    art = "res/ck"
    with ckptlake.open(local_lake_url) as lake:
        _step_committed_then_deleted(lake, tmp_path, art, monkeypatch)
        _age_claim(lake, art)
        with pytest.raises(NotFound, match=r"res/ck step 1 was committed as v1, which was "
                                           r"deleted with ckptlake rm on "):
            lake.push_shard(tmp_path / "rank1", art, step=1, rank=1, world=2, stale_after=60)
        assert not lake.store.exists(layout.version_key(art, 1))
        assert [v.version for v in lake.versions(art)] == [2]


# ---- alias removal ---------------------------------------------------------------------------

def test_remove_alias(lake: Lake) -> None:
    lake.alias(f"{ART}@v1", "prod")
    lake.alias(f"{ART}@v2", "best")
    r = lake.remove_alias(ART, "prod")
    assert r.to_dict() == {"artifact": ART, "alias": "prod", "previous": 1, "removed": True}
    # the empty record stays (no alias to every reader): nothing is deleted unconditionally
    assert lake.store.get(layout.alias_key(ART, "prod")) == b""
    assert lake.store.alias_deletes == []
    with pytest.raises(NotFound, match=r"p/ckpt has no alias 'prod' \(aliases: best\)") as err:
        lake.remove_alias(ART, "prod")
    assert err.value.exit_code == 3
    for bad in ((ART, "latest"), (ART, 3), (None, "prod"), ("a@b", "prod")):
        with pytest.raises(UsageError):
            lake.remove_alias(*bad)
    # the version is free again: rm may take it now
    assert lake.delete(f"{ART}@v1").deleted
    # a malformed record is removed all the same; an empty one is no alias
    lake.store.put(layout.alias_key(ART, "bad"), b"{")
    assert lake.remove_alias(ART, "bad").previous is None
    lake.store.put(layout.alias_key(ART, "cut"), b"")
    with pytest.raises(NotFound, match=r"no alias 'cut' \(aliases: best\)"):
        lake.remove_alias(ART, "cut")
    assert lake.artifacts()[0].aliases == ["best"]  # the empty record is not listed
    lake.store.put(layout.alias_key(ART, "worse"), b"[]")  # malformed: still named
    with pytest.raises(NotFound, match=r"no alias 'cut' \(aliases: best, worse\)"):
        lake.remove_alias(ART, "cut")


def test_a_move_before_the_removal_is_removed_with_it(lake: Lake) -> None:
    lake.alias(f"{ART}@v1", "prod")
    lake.store.after_alias_read = lambda: catalog.set_alias(lake.store, ART, "prod", 3)
    assert lake.remove_alias(ART, "prod").previous == 3  # what it named when it went
    assert catalog.aliases(lake.store, ART) == {}


def test_a_move_after_the_removal_stands(lake: Lake) -> None:
    lake.alias(f"{ART}@v1", "prod")
    lake.store.after_empty_alias_put = lambda: catalog.set_alias(lake.store, ART, "prod", 3)
    assert lake.remove_alias(ART, "prod").previous == 1
    assert catalog.aliases(lake.store, ART) == {"prod": 3}


def test_a_move_right_after_the_removal_is_never_deleted(lake: Lake) -> None:
    """The removal ends with its swap to empty: a move that lands right after the swap, while
    the removal is still running (where a removal that went on to delete the empty record
    would do so), stands: the remover deletes no alias record, so it never drops a move that
    already reported success."""
    lake.alias(f"{ART}@v1", "prod")
    moved: list[bool] = []

    def move() -> None:
        catalog.set_alias(lake.store, ART, "prod", 3)
        moved.append(True)

    lake.store.after_empty_alias_put = move  # fires when the removal's swap returns
    assert lake.remove_alias(ART, "prod").previous == 1
    assert moved, "the move landed during the removal"
    assert catalog.aliases(lake.store, ART) == {"prod": 3}
    assert lake.store.alias_deletes == []


def test_verify_takes_an_empty_alias_record_for_no_alias(lake: Lake,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """What every removal leaves: verify agrees with show (not found, exit 3) and finds no
    problem in the artifact, nor warns of the record (it is the expected leftover)."""
    lake.alias(f"{ART}@v1", "prod")
    lake.alias(f"{ART}@v2", "best")
    lake.remove_alias(ART, "prod")
    for read in (lambda: lake.show(f"{ART}@prod"), lambda: lake.verify(f"{ART}@prod")):
        with pytest.raises(NotFound, match=r"p/ckpt has no alias 'prod' \(aliases: best\)") \
                as err:
            read()
        assert err.value.exit_code == 3
    for scope in (ART, None):
        res = lake.verify(scope)
        assert res.ok and not res.problems, res.problems
        assert not [w for w in res.warnings if "@alias/prod" in w], res.warnings
    # emptied between verify's listing and its read of the record: no alias either
    lake.alias(f"{ART}@v1", "gone")
    real_get = lake.store.get
    monkeypatch.setattr(lake.store, "get", lambda key: b"" if key == layout.alias_key(
        ART, "gone") else real_get(key))
    res = lake.verify(ART)
    assert res.ok and not res.problems, res.problems


def test_alias_names_complete_from_the_lake(lake: Lake, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from ckptlake.cli import complete

    root = tmp_path / "lk"
    with ckptlake.open("file://" + str(root)) as local:
        push(local, tmp_path, n=2)
        local.alias(f"{ART}@v1", "prod")
        local.alias(f"{ART}@v1", "prev")
        local.store.put(layout.alias_key(ART, "pcut"), b"")  # no alias
    monkeypatch.setenv("CKPTLAKE_LAKE", "file://" + str(root))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    words = ["ckptlake", "alias", "--delete", ART, "p"]
    assert complete.candidates("alias", "p", words, ref=ART) == ["prev", "prod"]
    assert complete.candidates("alias", "", words, ref=f"{ART}@v2") == ["prev", "prod"]
    assert complete.main(["alias", "pr"]) == 2  # no REF
    # the bash script asks for them at alias's NAME, with the artifact of its first argument
    import shutil
    import sys

    from test_completion_dynamic import ROOT, _bash_function

    if shutil.which("bash") is None:
        pytest.skip("no bash")
    exe = tmp_path / "bin" / "ckptlake"
    exe.parent.mkdir()
    exe.write_text(f"#!/bin/sh\nexec '{sys.executable}' -m ckptlake \"$@\"\n")
    exe.chmod(0o755)
    env = {**os.environ, "PATH": f"{exe.parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    assert _bash_function(f"ckptlake alias --delete {ART} p", env) == ["prev", "prod"]
    assert _bash_function(f"ckptlake alias {ART}@v2 pro", env) == ["prod"]


# ---- the CLI ---------------------------------------------------------------------------------

@pytest.fixture
def cli_lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lake:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CKPTLAKE_LAKE", "file://" + str(tmp_path / "lake"))
    lake = ckptlake.open("file://" + str(tmp_path / "lake"))
    push(lake, tmp_path)
    lake.alias(f"{ART}@v1", "prod")
    return lake


def test_cli_rm_asks_or_needs_yes(cli_lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    before = keys(cli_lake.store)
    r = cli("rm", f"{ART}@v2", "--dry-run")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("would delete p/ckpt@v2 (") and "reason: deleted by hand by" \
        in r.stdout
    assert "ckptlake gc --yes" in r.stdout and "grace_period" in r.stdout
    doc = json.loads(cli("rm", f"{ART}@v2", "--dry-run", "--json").stdout)
    assert (doc["version"], doc["dry_run"], doc["deleted"], doc["rule"]) == (
        2, True, False, "ckptlake rm")
    r = cli("rm", f"{ART}@v2")  # no terminal, no --yes
    assert r.exit_code == 7 and "--yes" in r.stderr
    r = cli("rm", f"{ART}@v2", "--json")
    assert r.exit_code == 7 and json.loads(r.stdout)["error"]["type"] == "PolicyRefusal"
    monkeypatch.setattr("ckptlake.cli.rm.isatty", lambda stream: True)
    r = cli("rm", f"{ART}@v2", input="n\n")
    assert r.exit_code == 7 and "rm cancelled; nothing was changed" in r.stderr
    assert "p/ckpt@v2 (" in r.stderr and "Delete p/ckpt@v2 from" in r.stderr
    assert keys(cli_lake.store) == before
    r = cli("rm", f"{ART}@v2", "--reason", "bad data", input="y\n")
    assert r.exit_code == 0, r.stderr
    # stdout holds the result only: the prompt went to stderr whole (typer's put its last
    # character, a space, on stdout: in front of the bytes for `cat`)
    assert r.stdout.startswith("deleted p/ckpt@v2 (") and "reason: bad data" in r.stdout
    assert "unreadable at once" in r.stdout
    r = cli("rm", "--yes", f"{ART}@v2")
    assert r.exit_code == 3 and "was deleted with ckptlake rm" in r.stderr


def test_cli_eof_or_ctrl_c_at_the_prompt(cli_lake: Lake, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Not "internal error: Abort": EOF is a refusal (exit 7), Ctrl-C an interruption."""
    monkeypatch.setattr("ckptlake.cli.rm.isatty", lambda stream: True)
    monkeypatch.setattr("ckptlake.cli.gc.isatty", lambda stream: True)
    (tmp_path / "keep1.yaml").write_text(
        "retention:\n  rules:\n    - match: 'p/*'\n      keep_last: 1\n")
    before = keys(cli_lake.store)
    gc = ("gc", "--policy", tmp_path / "keep1.yaml")
    for args in (("rm", f"{ART}@v2"), gc):
        r = cli(*args, input="")  # EOF
        assert r.exit_code == 7, r.stderr
        assert f"{args[0]} cancelled; nothing was changed" in r.stderr and "Abort" not in r.stderr

    def ctrl_c(*a: Any, **kw: Any) -> bool:  # a Ctrl-C while the prompt waits
        raise KeyboardInterrupt

    monkeypatch.setattr("ckptlake.cli.ask._ask", ctrl_c)
    for args in (("rm", f"{ART}@v2"), gc):
        r = cli(*args)
        assert r.exit_code == 130 and "ckptlake: interrupted" in r.stderr, r.stderr
    assert keys(cli_lake.store) == before


def test_reason_redaction_and_option_synonyms(cli_lake: Lake) -> None:
    r = cli_lake.delete(f"{ART}@v2", dry_run=True,
                        reason="pushed with --hf-token hf_abc123 and Bearer eyJhbGciOi.x-y")
    assert r.reason == "pushed with --hf-token *** and Bearer ***"
    for args, hint in ((("alias", "--remove", ART, "prod"), "did you mean --delete?"),
                       (("alias", "--unset", ART, "prod"), "did you mean --delete?"),
                       (("rm", "--force", f"{ART}@v2"), "did you mean --yes?")):
        res = cli(*args)
        assert res.exit_code == 2 and hint in res.stderr, res.stderr


def test_cli_rm_refusals_and_usage(cli_lake: Lake, tmp_path: Path) -> None:
    for ref, code, words in ((ART, 2, "rm deletes one version: name it"),
                             (f"{ART}@v1", 7, "ckptlake alias --delete p/ckpt prod"),
                             (f"{ART}@v7", 3, "does not exist"),
                             (f"{ART}@", 2, ""),
                             ("nope/x@v1", 3, "")):
        r = cli("rm", ref, "--yes")
        assert r.exit_code == code, (ref, r.stderr)
        assert words in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) <= 2  # the lake line, the error
    for bad in ("", " \n ", "bell\x07"):
        r = cli("rm", f"{ART}@v2", "--reason", bad, "--yes")
        assert r.exit_code == 2 and "--reason must be 1 to 500 printable" in r.stderr
    r = cli("rm", f"{ART}@v2", "--yes", "--lake", "file://" + str(tmp_path / "none"))
    assert r.exit_code == 3 and "no lake at" in r.stderr
    r = cli("delete", f"{ART}@v2")
    assert r.exit_code == 2 and "ckptlake calls it 'rm'" in r.stderr


def test_cli_alias_delete(cli_lake: Lake) -> None:
    r = cli("alias", "--delete", f"{ART}@v1", "prod")
    assert r.exit_code == 2 and "alias --delete p/ckpt prod" in r.stderr
    r = cli("alias", "--delete", ART, "nope")
    assert r.exit_code == 3 and "p/ckpt has no alias 'nope' (aliases: prod)" in r.stderr
    r = cli("alias", "-d", ART, "prod")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("removed alias prod of p/ckpt (was v1)")
    assert "gc's retention rules" in r.stdout
    cli("alias", f"{ART}@v2", "best")
    doc = json.loads(cli("alias", "--delete", ART, "best", "--json").stdout)
    assert doc == {"artifact": ART, "alias": "best", "previous": 2, "removed": True}
    assert catalog.aliases(cli_lake.store, ART) == {}


# ---- end to end on a real S3 server ----------------------------------------------------------

def test_rm_end_to_end_on_seaweedfs(s3_lake_url: str, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CKPTLAKE_LAKE", s3_lake_url)
    with ckptlake.open(s3_lake_url) as lake:
        chunks = [keys(lake.store, "chunks/")]
        for _ in range(3):
            push(lake, tmp_path, n=1)
            chunks.append(keys(lake.store, "chunks/"))
    only_v2 = chunks[2] - chunks[1]
    assert only_v2
    assert cli("alias", f"{ART}@v1", "prod").exit_code == 0
    r = cli("rm", f"{ART}@v2")
    assert r.exit_code == 7 and "--yes" in r.stderr  # no terminal
    doc = json.loads(cli("rm", f"{ART}@v2", "--reason", "secret", "--yes", "--json").stdout)
    assert (doc["artifact"], doc["version"], doc["deleted"], doc["reason"]) == (
        ART, 2, True, "secret")
    doc = json.loads(cli("ls", ART, "--all", "--json").stdout)
    assert [(t["version"], t["rule"]) for t in doc["expired"]] == [(2, "ckptlake rm")]
    assert [v["version"] for v in doc["versions"]] == [1, 3]
    r = cli("pull", f"{ART}@v2", tmp_path / "out")
    assert r.exit_code == 3 and "deleted with ckptlake rm on" in r.stderr
    assert not (tmp_path / "out").exists()
    r = cli("rm", f"{ART}@v1", "--yes", "--json")
    assert r.exit_code == 7 and "aliased (prod)" in json.loads(r.stdout)["error"]["message"]
    # gc sweeps what only v2 used (grace_period 0: in one run), and nothing else
    (tmp_path / "now.yaml").write_text("retention:\n  grace_period: 0s\n")
    r = cli("gc", "--policy", tmp_path / "now.yaml", "--yes", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["result"]["chunks_swept"] == len(only_v2)
    with ckptlake.open(s3_lake_url) as lake:
        assert keys(lake.store, "chunks/") == chunks[3] - only_v2
    assert cli("pull", f"{ART}@v1", tmp_path / "v1").exit_code == 0
    doc = json.loads(cli("alias", "--delete", ART, "prod", "--json").stdout)
    assert doc["previous"] == 1
    assert cli("rm", f"{ART}@v1", "--yes").exit_code == 0  # no longer aliased


# ---- deleting the latest version; every version (rm --all) -----------------------------------

class ListHook(MemoryStore):
    """Runs a one-shot hook right after the first listing of `@v/` or `@tomb/` of ART: between
    a pusher's two listings (catalog.next_number)."""

    def __init__(self) -> None:
        super().__init__()
        self.after_number_listing: Callable[[], None] | None = None

    def list(self, prefix: str = "", *, start_after: str | None = None):  # type: ignore[override]
        items = list(super().list(prefix, start_after=start_after))
        if self.after_number_listing and prefix in (layout.versions_prefix(ART),
                                                    layout.tombstones_prefix(ART)):
            hook, self.after_number_listing = self.after_number_listing, None
            hook()
        return iter(items)


def test_a_deleted_latest_number_is_never_handed_out_again(tmp_path: Path) -> None:
    lake = Lake(MemoryStore(), chunk_size=1 << 20)
    push(lake, tmp_path)  # v1-v3
    r = lake.delete(f"{ART}@latest", reason="bad run")
    assert (r.version, r.deleted) == (3, True)
    assert push(lake, tmp_path, n=1) == [4]
    assert lake.delete(f"{ART}@v4").deleted and lake.delete(f"{ART}@v2").deleted
    assert push(lake, tmp_path, n=1) == [5]
    assert [v.version for v in lake.versions(ART)] == [1, 5]
    with pytest.raises(NotFound, match="p/ckpt@v3 was deleted with ckptlake rm"):
        lake.pull(f"{ART}@v3", tmp_path / "out")
    # a tombstone another writer named without padding counts too
    lake.store.put(f"artifacts/{ART}/@tomb/17.json", b"{}")
    assert push(lake, tmp_path, n=1) == [18]


def test_a_latest_deleted_between_the_pushers_two_listings_is_seen(tmp_path: Path) -> None:
    """The pusher lists @v/ before @tomb/: a version deleted in between is in the second
    listing (the deleter wrote its tombstone before deleting the manifest).  Listing them the
    other way round hands v3 out again."""
    store = ListHook()
    lake = Lake(store, chunk_size=1 << 20)
    push(lake, tmp_path)  # v1-v3
    other = Lake(store, chunk_size=1 << 20)
    store.after_number_listing = lambda: other.delete(f"{ART}@v3")
    assert push(lake, tmp_path, n=1) == [4]
    assert store.after_number_listing is None  # the deletion ran between the listings
    assert tombs.load(store, ART, 3) is not None


def test_a_sharded_step_after_the_latest_was_deleted_takes_a_new_number(tmp_path: Path
                                                                        ) -> None:
    lake = Lake(MemoryStore(), chunk_size=1 << 20)
    art = "sh/latest"
    push(lake, tmp_path, art, n=2)
    assert lake.delete(f"{art}@v2").deleted
    _sharded(lake, tmp_path, art, 7, range(2))
    assert [(v.version, v.step) for v in lake.versions(art)] == [(1, None), (3, 7)]


def test_rm_all_deletes_every_version_and_keeps_the_numbers(tmp_path: Path) -> None:
    lake = Lake(MemoryStore(), chunk_size=1 << 20)
    push(lake, tmp_path)
    push(lake, tmp_path, "p/other", n=1)
    lake.alias(f"{ART}@v2", "prod")
    before = keys(lake.store)
    with pytest.raises(PolicyRefusal, match=r"p/ckpt has aliased versions \(prod -> v2\)") \
            as err:
        lake.delete_artifact(ART)
    assert err.value.exit_code == 7 and "ckptlake alias --delete p/ckpt prod" in str(err.value)
    with pytest.raises(PolicyRefusal, match="aliased versions"):
        lake.delete_artifact(ART, dry_run=True)  # the same checks
    assert keys(lake.store) == before
    lake.remove_alias(ART, "prod")
    plan = lake.delete_artifact(ART, dry_run=True, reason="abandoned")
    assert (plan.versions, plan.deleted, plan.dry_run, plan.reason) == (
        [1, 2, 3], [], True, "abandoned")
    assert plan.files == 3 and plan.total_bytes == 200 + 201 + 202
    push(lake, tmp_path, n=1)  # v4: pushed after the plan the user saw
    done = lake.delete_artifact(ART, reason="abandoned", upto=max(plan.versions))
    assert (done.deleted, done.spared, done.gone, done.remaining) == ([1, 2, 3], [], [], [4])
    done = lake.delete_artifact(ART)
    assert (done.versions, done.deleted, done.remaining) == ([4], [4], [])
    assert [t.version for t in lake.expired(ART)] == [1, 2, 3, 4]
    assert {t.reason for t in lake.expired(ART)[:3]} == {"abandoned"}
    assert [v.version for v in lake.versions("p/other")] == [1]  # another artifact untouched
    for call in (lambda: lake.versions(ART), lambda: lake.pull(ART, tmp_path / "o"),
                 lambda: lake.delete_artifact(ART)):
        with pytest.raises(NotFound, match="every version of p/ckpt was deleted"):
            call()
    with pytest.raises(NotFound, match="nope/x has no version"):
        lake.delete_artifact("nope/x")
    for bad in ({"artifact": "a@b"}, {"artifact": 3}, {"artifact": ART, "dry_run": 1},
                {"artifact": ART, "reason": ""}, {"artifact": ART, "upto": "3"}):
        with pytest.raises(UsageError):
            lake.delete_artifact(**bad)  # type: ignore[arg-type]
    assert push(lake, tmp_path, n=1) == [5]


def test_rm_all_spares_a_version_aliased_while_it_runs(tmp_path: Path) -> None:
    store = Hooked()
    lake = Lake(store, chunk_size=1 << 20)
    push(lake, tmp_path)
    store.before_tomb_put = lambda: lake.alias(f"{ART}@v2", "late")  # after the first read
    done = lake.delete_artifact(ART)
    assert (done.deleted, done.spared, done.remaining) == ([1, 3], [2], [2])
    assert [v.version for v in lake.versions(ART)] == [2]
    assert tombs.load(store, ART, 2) is None  # its tombstone was removed again


def test_rm_all_refuses_a_newer_manifest_and_deletes_a_damaged_one(tmp_path: Path) -> None:
    lake = Lake(MemoryStore(), chunk_size=1 << 20)
    push(lake, tmp_path, n=2)
    key = layout.version_key(ART, 1)
    good = lake.store.get(key)
    lake.store.put(key, json.dumps({**json.loads(good), "ckptlake_manifest": 99}).encode())
    before = keys(lake.store)
    with pytest.raises(PolicyRefusal, match="written by a newer ckptlake"):
        lake.delete_artifact(ART)
    assert keys(lake.store) == before
    lake.store.put(key, b'{"damaged": ')
    assert lake.delete_artifact(ART).deleted == [1, 2]


def test_cli_rm_all(cli_lake: Lake, tmp_path: Path) -> None:
    for args, words in (((f"{ART}@v1", "--all"), "REF is ARTIFACT, without @SELECTOR"),
                        ((ART, "--all", "--pending"), "without --pending or --force"),
                        ((ART, "--all", "--force"), "without --pending or --force")):
        r = cli("rm", *args, "--yes")
        assert r.exit_code == 2 and words in r.stderr, r.stderr
    r = cli("rm", ART, "--all", "--yes")
    assert r.exit_code == 7 and "aliased versions (prod -> v1)" in r.stderr
    assert cli("alias", "--delete", ART, "prod").exit_code == 0
    r = cli("rm", ART, "--all")
    assert r.exit_code == 7 and "--yes" in r.stderr  # no terminal: needs --yes
    doc = json.loads(cli("rm", ART, "--all", "--dry-run", "--json").stdout)
    assert (doc["versions"], doc["deleted"], doc["dry_run"]) == ([1, 2, 3], [], True)
    assert [v.version for v in cli_lake.versions(ART)] == [1, 2, 3]
    r = cli("rm", ART, "--all", "--yes", "--reason", "abandoned run")
    assert r.exit_code == 0, r.stderr
    assert "deleted 3 versions of p/ckpt (v1-v3); reason: abandoned run" in r.stdout
    r = cli("ls", ART)
    assert r.exit_code == 3 and "every version of p/ckpt was deleted" in r.stderr
    doc = json.loads(cli("ls", ART, "--all", "--json").stdout)
    assert doc["versions"] == [] and [t["version"] for t in doc["expired"]] == [1, 2, 3]
    doc = json.loads(cli("ls", "--all", "--json").stdout)
    [row] = [a for a in doc["artifacts"] if a["artifact"] == ART]
    assert (row["versions"], row["latest"], row["expired"]) == (0, None, 3)
    assert ART not in cli("ls").stdout  # without --all: live artifacts only


def test_a_gc_planned_before_rm_deleted_the_latest_never_deletes_the_new_latest(
        tmp_path: Path) -> None:
    """gc planned while v3 was the latest (keep_last 1: v1 and v2 go); rm deleted v3 before
    gc ran: the run deleted v1 and v2 too, leaving no version at all.  gc re-lists with its
    last alias read and spares a doomed version that would be the latest."""
    from ckptlake.policy.retention import RetentionPolicy, Rule

    lake = Lake(MemoryStore(), chunk_size=1 << 20)
    push(lake, tmp_path)
    plan = lake.gc_plan(RetentionPolicy(rules=(Rule(match="*", keep_last=1),),
                                        grace_period=3600.0))
    assert [v.version for a in plan.artifacts for v in a.delete] == [1, 2]
    assert lake.delete(f"{ART}@latest").deleted
    result = lake.gc(plan)
    assert result.versions_deleted == [f"{ART}@v1"]
    assert result.versions_kept_latest == [f"{ART}@v2"] and result.versions_spared == []
    assert [v.version for v in lake.versions(ART)] == [2]
    assert tombs.load(lake.store, ART, 2) is None  # its fresh tombstone went again


class AfterTombListing(MemoryStore):
    """Runs a one-shot hook right after a listing of ART's tombstones returns: between a
    pusher's choice of its number (catalog.next_number) and its manifest write."""

    def __init__(self) -> None:
        super().__init__()
        self.hook: Callable[[], None] | None = None

    def list(self, prefix: str = "", *, start_after: str | None = None):  # type: ignore[override]
        items = list(super().list(prefix, start_after=start_after))
        if self.hook and prefix == layout.tombstones_prefix(ART):
            hook, self.hook = self.hook, None
            hook()
        return iter(items)


def test_a_number_committed_and_deleted_before_a_sharded_commit_writes_is_not_taken(
        tmp_path: Path) -> None:
    """Another pusher commits v2 and rm deletes it (the latest) after this sharded commit
    listed (seeing v1) and before its manifest write (its claim is updated in between): the
    key v2 is free again, but the number is not -- its tombstone says so.  (A plain push
    writes right after its listings: that one request is a residual risk, docs/format.md.)"""
    store = AfterTombListing()
    lake = Lake(store, chunk_size=1 << 20)
    push(lake, tmp_path, n=1)
    other = Lake(store, chunk_size=1 << 20)

    def commit_and_delete() -> None:
        assert push(other, tmp_path, n=1) == [2]
        assert other.delete(f"{ART}@v2").deleted

    store.hook = commit_and_delete
    d = tmp_path / "rank0"
    d.mkdir()
    (d / "__0_0.distcp").write_bytes(os.urandom(1000))
    lake.push_shard(d, ART, step=7, rank=0, world=1)
    assert store.hook is None  # it ran
    assert [v.version for v in lake.versions(ART)] == [1, 3]
    assert [t.version for t in lake.expired(ART)] == [2]


def test_rm_all_whose_versions_another_deleter_took_meanwhile_is_not_found(
        tmp_path: Path) -> None:
    """The plan listed v1 and v2, another rm --all deleted both before the plan read their
    manifests: an empty plan (the CLI then took max() of nothing: an internal error, exit 1)."""

    class Racing(MemoryStore):
        hook: Callable[[], None] | None = None

        def get(self, key):  # type: ignore[no-untyped-def]
            if self.hook and layout.parse_version_key(key):
                hook, self.hook = self.hook, None
                hook()
            return super().get(key)

    store = Racing()
    lake = Lake(store, chunk_size=1 << 20)
    push(lake, tmp_path, n=2)
    store.hook = lambda: Lake(store).delete_artifact(ART)
    with pytest.raises(NotFound, match="every version of p/ckpt was deleted already"):
        lake.delete_artifact(ART, dry_run=True)
    with pytest.raises(UsageError):
        lake.delete_artifact(ART, upto=0)


def test_rm_all_replaces_an_interrupted_deleters_tombstone_and_leaves_a_young_one(
        lake: Lake) -> None:
    """As rm of one version: an old tombstone next to a live manifest (a killed gc's) is
    replaced by rm's, so ls --all and lineage tell this deletion; a young one (a deleter at
    work) is its deleter's.  rm --all kept every old one: the versions read as gc's."""
    assert tombs.write(lake.store, _gc_tomb(lake, 2, timedelta(days=30)))
    assert tombs.write(lake.store, _gc_tomb(lake, 3, timedelta(seconds=1)))
    done = lake.delete_artifact(ART, reason="abandoned")
    assert (done.deleted, done.gone, done.remaining) == ([1, 2], [3], [])
    by = {t.version: t for t in lake.expired(ART)}
    assert (by[1].rule, by[1].reason) == ("ckptlake rm", "abandoned")
    assert (by[2].rule, by[2].reason, by[2].deleted) == ("ckptlake rm", "abandoned",
                                                         done.deleted_at)
    assert by[3].rule == "rules[0] (match 'p/*')"


@pytest.mark.parametrize("whose", ["ours", "another"])
def test_a_manifest_write_of_unknown_outcome_never_brings_a_deleted_number_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, whose: str) -> None:
    """The write's answer was lost; before it was read back, the version at N was deleted
    (rm of the latest).  Writing N again, as an absent key was, would bring the number back:
    ours, undoing someone's rm (now: NotFound, saying so); another pusher's, reusing its
    number (now: ours goes above it)."""
    from ckptlake.core import push as push_mod
    from ckptlake.errors import OutcomeUnknown

    lake = Lake(MemoryStore(), chunk_size=1 << 20)
    push(lake, tmp_path, n=1)
    real = push_mod.create_once
    other = Lake(lake.store, chunk_size=1 << 20)
    cut: list[str] = []

    def lost_answer(st, key, body):  # type: ignore[no-untyped-def]
        if "/@v/" in key and not cut:
            cut.append(key)
            if whose == "ours":
                real(st, key, body)  # landed; the answer was lost
                assert other.delete(f"{ART}@v2", reason="bad").deleted
            else:
                assert push(other, tmp_path, n=1) == [2]
                assert other.delete(f"{ART}@v2", reason="bad").deleted
            raise OutcomeUnknown(f"simulated: the answer to {key} was lost")
        return real(st, key, body)

    monkeypatch.setattr(push_mod, "create_once", lost_answer)
    if whose == "ours":
        with pytest.raises(NotFound, match=r"p/ckpt@v2 was committed by this push, then "
                                           r"deleted with ckptlake rm"):
            push(lake, tmp_path, n=1)
        assert [v.version for v in lake.versions(ART)] == [1]
    else:
        assert push(lake, tmp_path, n=1) == [3]
        assert [v.version for v in lake.versions(ART)] == [1, 3]
    assert [t.version for t in lake.expired(ART)] == [2]


def test_a_manifest_write_of_unknown_outcome_stops_at_an_unusable_tombstone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As above (ours, landed, then rm'd), with rm's tombstone damaged: read as "another's"
    it made the push take a later number, committing what rm had deleted again.  Whose
    version N was cannot be told: the push stops (IntegrityError naming the key), nothing
    committed."""
    from ckptlake.core import push as push_mod
    from ckptlake.errors import IntegrityError, OutcomeUnknown

    lake = Lake(MemoryStore(), chunk_size=1 << 20)
    push(lake, tmp_path, n=1)
    real = push_mod.create_once
    other = Lake(lake.store, chunk_size=1 << 20)
    key = layout.tombstone_key(ART, 2)

    def lost_answer(st, k, body):  # type: ignore[no-untyped-def]
        if "/@v/" in k and not other.store.exists(key):
            real(st, k, body)  # landed; the answer was lost
            assert other.delete(f"{ART}@v2", reason="secret").deleted
            st.put(key, b"{damaged")
            raise OutcomeUnknown(f"simulated: the answer to {k} was lost")
        return real(st, k, body)

    monkeypatch.setattr(push_mod, "create_once", lost_answer)
    with pytest.raises(IntegrityError, match=rf"the tombstone of {ART}@v2 \({key}\) is "
                                             r"unusable: it is damaged"):
        push(lake, tmp_path, n=1)
    assert [v.version for v in lake.versions(ART)] == [1]


def test_a_shard_takeover_stops_at_an_unusable_tombstone(local_lake_url: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """The takeover of a step committed as v1 and rm'd since found rm's tombstone damaged,
    took it for another version's, and committed the step again as v3.  Now it stops (exit 5,
    the key named) until the tombstone is put back; then it says the step was deleted."""
    art = "res/damaged"
    with ckptlake.open(local_lake_url) as lake:
        _step_committed_then_deleted(lake, tmp_path, art, monkeypatch)
        key = layout.tombstone_key(art, 1)
        good = lake.store.get(key)
        lake.store.put(key, good[: len(good) // 2])
        _age_claim(lake, art)
        with pytest.raises(IntegrityError, match=rf"the tombstone of {art}@v1 \({key}\) is "
                                                 r"unusable"):
            lake.push_shard(tmp_path / "rank1", art, step=1, rank=1, world=2, stale_after=60)
        assert [v.version for v in lake.versions(art)] == [2]
        # released, as after a storage error: the push the message asks for does not wait out
        # stale_after for the owner that gave up
        claim_key = layout.shard_claim_key(art, 1)
        claim = shards.decode_claim(lake.store.get(claim_key), key=claim_key)
        assert claim.state == "committing" and "released by its owner" in (claim.error or "")
        lake.store.put(key, good)
        with pytest.raises(NotFound, match=rf"{art} step 1 was committed as v1, which was "
                                           r"deleted"):
            lake.push_shard(tmp_path / "rank1", art, step=1, rank=1, world=2, stale_after=3600,
                            wait_seconds=5)
        assert [v.version for v in lake.versions(art)] == [2]


def test_a_gc_deleting_while_rm_deletes_the_latest_keeps_the_next_one(tmp_path: Path,
                                                                       monkeypatch) -> None:
    """The review's race: rm of v3 has written its tombstone and is reading the aliases again
    when gc's deleter (planned with v3 the latest: v1, v2 doomed) lists @v/ -- v3 is still
    there, so it looked like a version that stays, and both went.  A live version with a
    tombstone gc did not write is going: v2 is kept."""
    from ckptlake.core import gc as gcmod
    from ckptlake.policy.retention import RetentionPolicy, Rule

    lake = Lake(MemoryStore(), chunk_size=1 << 20)
    push(lake, tmp_path)
    plan = lake.gc_plan(RetentionPolicy(rules=(Rule(match="*", keep_last=1),),
                                        grace_period=3600.0))
    (ap,) = [a for a in plan.artifacts if a.delete]
    real = gcmod.read_aliases
    calls: list[int] = []
    result = gcmod.GcResult()

    def reads(store, artifact):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 2:  # rm's second read: its tombstone is written, v3 still listed
            gcmod.delete_versions(store, ap, result, deleted=utcnow())
        return real(store, artifact)

    monkeypatch.setattr(gcmod, "read_aliases", reads)
    assert lake.delete(f"{ART}@v3").deleted
    assert result.versions_deleted == [f"{ART}@v1"]
    assert result.versions_kept_latest == [f"{ART}@v2"]
    assert [v.version for v in lake.versions(ART)] == [2]


def test_rm_all_reports_a_version_another_deleter_is_deleting_as_gone(lake: Lake) -> None:
    """A young tombstone (a deleter at work) next to v2: rm --all listed v2 as deleted with
    its own reason while the lake records the other's.  It is the other's deletion: gone."""
    assert tombs.write(lake.store, _gc_tomb(lake, 2, timedelta(seconds=1)))
    done = lake.delete_artifact(ART, reason="wipe")
    assert (done.deleted, done.gone, done.remaining) == ([1, 3], [2], [])
    assert tombs.load(lake.store, ART, 2).rule == "rules[0] (match 'p/*')"


def test_an_unpadded_tombstone_is_read_like_a_padded_one(local_lake_url: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """docs/format.md lets a tombstone's number go unpadded (another writer's).  Readers of
    one number read only the padded key: a shard takeover missed the step's deletion and
    committed it again, and `ls --all` showed a number that had both keys twice."""
    art = "res/unpadded"
    with ckptlake.open(local_lake_url) as lake:
        _step_committed_then_deleted(lake, tmp_path, art, monkeypatch)
        padded = layout.tombstone_key(art, 1)
        unpadded = f"{layout.tombstones_prefix(art)}1.json"
        lake.store.put(unpadded, lake.store.get(padded))  # another writer's key ...
        lake.store.delete([padded])  # ... and only that one
        assert tombs.load(lake.store, art, 1) is not None
        _age_claim(lake, art)
        with pytest.raises(NotFound, match=r"res/unpadded step 1 was committed as v1, which "
                                           r"was deleted"):
            lake.push_shard(tmp_path / "rank1", art, step=1, rank=1, world=2, stale_after=60)
        assert [v.version for v in lake.versions(art)] == [2]
        lake.store.put(padded, lake.store.get(unpadded))  # both keys now
        assert [t.version for t in lake.expired(art)] == [1]


def test_a_tombstone_key_of_another_width_is_no_tombstone(local_lake_url: str,
                                                          tmp_path: Path) -> None:
    """Only the padded (10 digits) and the unpadded number are tombstone keys.  `042.json` was
    parsed as 42 by the numbering (the next push took v43) while every check that reads a
    number's tombstone (ls --all, shard takeover, the alias check) looked only at the two
    keys: counted by one side and unseen by the other."""
    art = "res/width"
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    with ckptlake.open(local_lake_url) as lake:
        lake.push(src, art)
        lake.delete(f"{art}@v1")
        body = lake.store.get(layout.tombstone_key(art, 1))
        for key in ("042.json", "00000000042.json", "0.json", "0000000000.json"):
            lake.store.put(layout.tombstones_prefix(art) + key, body)
            assert layout.parse_tombstone_key(layout.tombstones_prefix(art) + key) is None
        assert lake.push(src, art).version == 2
        assert [t.version for t in lake.expired(art)] == [1]
        lake.store.put(layout.versions_prefix(art) + "3.json", b"{}")  # an unpadded "manifest"
        v0 = layout.versions_prefix(art) + "0000000000.json"  # versions count from 1
        lake.store.put(v0, lake.store.get(layout.version_key(art, 2)))
        assert layout.parse_version_key(v0) is None
        said = [w for w in lake.verify(art).warnings if "name no version" in w]
        assert len(said) == 1 and "6 objects under @v/ or @tomb/" in said[0], said
    for key, number in (("0000000042.json", 42), ("42.json", 42)):
        assert layout.parse_tombstone_key(layout.tombstones_prefix(art) + key) == (art, number)


class AfterDelete(MemoryStore):
    """Runs a one-shot hook right after a delete of the chosen key."""

    def __init__(self) -> None:
        super().__init__()
        self.key = ""
        self.hook: Callable[[], None] | None = None

    def delete(self, keys_):  # type: ignore[no-untyped-def]
        out = super().delete(keys_)
        if self.hook is not None and self.key in keys_:
            hook, self.hook = self.hook, None
            hook()
        return out


@pytest.mark.parametrize("stale", [False, True])
def test_a_spared_version_whose_manifest_another_deleter_took_keeps_a_tombstone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stale: bool) -> None:
    """Two deleters of v2: A (this rm) spares it for an alias that landed during its run and
    removes its tombstone; B found that tombstone in place, saw no alias, and deletes the
    manifest right then.  v2 had neither, its number free for the next push (a ref to p/ckpt@v2
    would then name another version).  A looks again after removing its tombstone and puts one
    back, and says v2 was deleted (it said "aliased, never deleted").  (`stale`: the tombstone A removes is one it replaced, an interrupted gc's.)"""
    store = AfterDelete()
    lake = Lake(store, chunk_size=1 << 20)
    push(lake, tmp_path)
    if stale:
        assert tombs.write(store, _gc_tomb(lake, 2, timedelta(days=30)))
    real_aliases = catalog.aliases
    reads: list[int] = []

    def aliases(st, artifact):  # type: ignore[no-untyped-def]
        reads.append(1)
        return {"late": 2} if len(reads) >= 3 else real_aliases(st, artifact)

    store.key = layout.tombstone_key(ART, 2)
    store.hook = lambda: store.delete([layout.version_key(ART, 2)])  # B's delete, just now
    from ckptlake.core import gc as gcmod

    monkeypatch.setattr(gcmod, "read_aliases", aliases)  # the deleter's two reads
    monkeypatch.setattr(catalog, "aliases", aliases)  # rm's own, before and after
    # not "aliased, not deleted": the other deleter deleted it, which rm says
    with pytest.raises(NotFound, match=r"p/ckpt@v2 was deleted by a deleter \(gc or ckptlake "
                                       r"rm\) around "):
        lake.delete(f"{ART}@v2")
    assert not store.exists(layout.version_key(ART, 2))
    # put back with the deleter unknown: not rm's own record (rm kept it), nor retention's
    # (watch --keep-local would prune the local copy of a step rm'd by hand)
    [tomb] = lake.expired(ART)
    assert (tomb.version, tomb.rule) == (2, tombs.OTHER_RULE)
    assert "while ckptlake rm spared it for an alias" in tomb.reason
    assert tomb.deleted_by == ""  # not this rm's: it kept v2
    assert push(lake, tmp_path, n=1) == [4]  # the number stays taken


def test_a_deleter_that_found_the_tombstone_in_place_puts_it_back_if_it_went(
        tmp_path: Path) -> None:
    """The other side of the race above: this deleter (gc's) found v2's tombstone in place
    (another deleter's), deleted the manifest, and right then the other, sparing v2, removed
    its tombstone.  This one looks after its delete and writes its own."""
    from ckptlake.core import gc as gcmod
    from ckptlake.core.gc import ArtifactPlan, GcResult, VersionPlan

    store = AfterDelete()
    lake = Lake(store, chunk_size=1 << 20)
    push(lake, tmp_path)
    m = catalog.load_manifest(store, ART, 2)
    now = utcnow()
    assert tombs.write(store, tombs.from_manifest(m, deleted=now, rule="ckptlake rm",
                                                  reason="other deleter"))
    store.key = layout.version_key(ART, 2)
    store.hook = lambda: store.delete([layout.tombstone_key(ART, 2)])  # the other spares v2
    plan = VersionPlan(artifact=ART, version=2, step=None, created=m.created, age_seconds=0,
                       total_bytes=m.total_bytes, files=len(m.files), keep=False,
                       rule="rules[0]", reason="not among the newest 1")
    result = GcResult()
    written = gcmod.delete_versions(store, ArtifactPlan(
        artifact=ART, rule="rules[0]", rule_line=None, versions=3, delete=[plan], kept=[],
        kept_by={}), result, deleted=now)
    assert written == set() and result.versions_deleted == [f"{ART}@v2"]
    assert [(t.version, t.rule) for t in lake.expired(ART)] == [(2, "rules[0]")]
    assert push(lake, tmp_path, n=1) == [4]


def test_gc_sparing_a_version_another_deleter_took_reports_it_and_puts_back_a_neutral_tombstone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """gc's side of the race: its last alias read spares v2, and the other deleter deletes the
    manifest as gc removes its tombstone.  gc put back its own record (retention's rule: a
    watch --keep-local would then prune the local copy of a step someone rm'd by hand) and
    reported v2 as spared.  Now: a tombstone saying the deleter is unknown, a warning, and v2
    not among the spared."""
    from ckptlake.core import gc as gcmod
    from ckptlake.core.gc import ArtifactPlan, GcResult, VersionPlan

    store = AfterDelete()
    lake = Lake(store, chunk_size=1 << 20)
    push(lake, tmp_path)
    m = catalog.load_manifest(store, ART, 2)
    reads: list[int] = []
    real = gcmod.read_aliases

    def aliases(st, artifact):  # type: ignore[no-untyped-def]
        reads.append(1)
        return {"late": 2} if len(reads) >= 2 else real(st, artifact)

    monkeypatch.setattr(gcmod, "read_aliases", aliases)
    store.key = layout.tombstone_key(ART, 2)
    store.hook = lambda: store.delete([layout.version_key(ART, 2)])  # the other deleter
    plan = VersionPlan(artifact=ART, version=2, step=None, created=m.created, age_seconds=0,
                       total_bytes=m.total_bytes, files=len(m.files), keep=False,
                       rule="rules[0]", reason="not among the newest 1")
    result = GcResult()
    gcmod.delete_versions(store, ArtifactPlan(
        artifact=ART, rule="rules[0]", rule_line=None, versions=3, delete=[plan], kept=[],
        kept_by={}), result, deleted=utcnow())
    assert result.versions_spared == [] and result.versions_deleted == []
    assert result.warnings == [f"{ART}@v2 was spared, but another deleter deleted it meanwhile"]
    [tomb] = lake.expired(ART)
    assert (tomb.version, tomb.rule) == (2, tombs.OTHER_RULE)
    assert tomb.reason == "deleted by another deleter while gc spared it for an alias"
    assert tomb.deleted_by == ""  # not gc's: gc kept it
