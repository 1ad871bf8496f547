"""The concurrency proof, against SeaweedFS: pushers (guarded by core/gc_guard.guard_commit)
and repeated gc passes run at the same time for a bounded time; afterwards every surviving
version is pulled and compared bit for bit.

The pushers draw their sources from a small pool whose members share most chunks, in random
order, so that a push often deduplicates against chunks that a deleted version left behind and
gc is condemning or sweeping at that very moment -- the race the protocol exists for; some
pushes also pause before committing (slower than a gc pass).  gc runs with grace_period 0s and
a sweep window of 2 s, so every pass condemns and sweeps at once.

Each pusher owns one artifact and the policy keeps its two newest versions, so a pusher's new
version cannot be deleted until that pusher pushes twice more: it pulls and checks every
version it committed right away, and at the end every survivor is checked again.  (With the
guard replaced by a plain commit this test fails: versions lose swept chunks.)

A reader pulls every version as soon as a listing shows it, while its push may still be in
its guard: with pins (gc_guard) a version is whole from the moment it is listed.  (Before pins
the guard restored swept chunks only after the commit, and such pulls failed with a missing
chunk: 29 in one run of the adversarial race of docs/format.md, "Residual risks".)

gc runs with its per-chunk digest sets spilled to disk after a few digests (SPILL_AT), the path
a lake of millions of chunks takes; the in-memory path races in test_gc_acceptance's CLI runs.
"""
from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from ckptlake.core import catalog, clock
from ckptlake.core import gc as gcmod
from ckptlake.core import push as pushmod
from ckptlake.core.gc import execute, plan_gc
from ckptlake.core.gc_guard import guard_commit
from ckptlake.core.scan import scan
from ckptlake.errors import IntegrityError, NotFound
from ckptlake.core.lakeheader import ensure_header
from ckptlake.format.manifest import Manifest
from ckptlake.lake import Lake
from ckptlake.policy.retention import RetentionPolicy, Rule
from ckptlake.store import open_store
from ckptlake.transfer.progress import NullProgress

pytestmark = pytest.mark.seaweedfs

MiB = 1 << 20
RUN_SECONDS = 20.0
PUSHERS = 4
GCS = 2
SOURCES = 10
POLICY = RetentionPolicy(rules=(Rule(match="race/*/ckpt", keep_last=2),),
                         grace_period=0, sweep_window=2, record_retention=4)


def make_sources(root: Path, count: int) -> list[Path]:
    rng = random.Random(11)
    base = rng.randbytes(2 * MiB)  # two chunks every source shares
    out = []
    for i in range(count):
        src = root / f"src{i}"
        src.mkdir(parents=True)
        (src / "base.bin").write_bytes(base)
        (src / "variant.bin").write_bytes(rng.randbytes(MiB + i))  # own chunks
        (src / "config.json").write_bytes(b'{"i": %d}' % i)  # own pack
        out.append(src)
    return out


def guarded_push(store, src: Path, artifact: str, step: int, stats: dict,
                 pause: float) -> Manifest:
    """core.push.push with the commit wrapped in guard_commit (the wiring the lead adds), and
    a pause between the uploads and the commit: a push slower than the gc, whose deduplicated
    chunks a gc pass condemns and sweeps before it commits."""
    started, started_wall = clock.now(), time.time()  # as core.push does
    header = ensure_header(store, chunk_size=MiB)
    files, up = pushmod.upload_tree(store, scan(src), algo=header.hash, chunk_size=MiB,
                                    concurrency=4, progress=NullProgress())
    time.sleep(pause)
    draft = Manifest(artifact=artifact, version=0, kind="dir", hash=header.hash, files=files,
                     step=step)

    def reupload(digests: set[str]) -> None:
        with stats["lock"]:
            stats["restored"] += len(digests)
        up.reupload(digests)

    return guard_commit(store, referenced=draft.chunk_digests(),
                        commit=lambda: pushmod.commit_version(store, draft),
                        reupload=reupload, started=started, started_wall=started_wall)


def check(lake: Lake, artifact: str, version: int, src: Path, dest: Path) -> None:
    lake.pull(f"{artifact}@v{version}", dest)
    for f in src.iterdir():
        assert (dest / f.name).read_bytes() == f.read_bytes(), f"{artifact}@v{version}/{f.name}"


def test_pushes_and_gc_passes_race_and_every_survivor_is_whole(
        s3_lake_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "gc-scratch"
    scratch.mkdir()
    monkeypatch.setattr(gcmod, "SPILL_AT", 8)
    monkeypatch.setattr(gcmod, "SCRATCH_DIR", str(scratch))
    sources = make_sources(tmp_path / "sources", SOURCES)
    store = open_store(s3_lake_url, max_connections=32)
    deadline = time.monotonic() + RUN_SECONDS
    pushed: dict[tuple[str, int], int] = {}  # (artifact, version) -> source index
    stats = {"lock": threading.Lock(), "restored": 0, "pushes": 0, "gc_passes": 0,
             "deleted": 0, "swept": 0, "rescued": 0}
    steps = iter(range(1, 1 << 30))
    errors: list[BaseException] = []

    def pusher(seed: int) -> None:
        rng = random.Random(seed)
        artifact = f"race/p{seed}/ckpt"
        lake = Lake(store)
        try:
            while time.monotonic() < deadline:
                i = rng.randrange(len(sources))
                with stats["lock"]:
                    step = next(steps)
                m = guarded_push(store, sources[i], artifact, step, stats,
                                 pause=rng.choice([0.0, 0.0, 0.5, 1.5]))
                with stats["lock"]:
                    pushed[(artifact, m.version)] = i
                    stats["pushes"] += 1
                check(lake, artifact, m.version, sources[i],
                      tmp_path / "checked" / f"{seed}-{m.version}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def collector() -> None:
        try:
            while time.monotonic() < deadline:
                r = execute(store, plan_gc(store, POLICY))
                with stats["lock"]:
                    stats["gc_passes"] += 1
                    stats["deleted"] += len(r.versions_deleted)
                    stats["swept"] += r.chunks_swept
                    stats["rescued"] += r.chunks_rescued
                time.sleep(0.05)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    early: dict[str, int] = {"pulled": 0, "gone": 0}
    early_failures: list[str] = []

    def reader() -> None:
        """Pulls each version the moment a listing shows it (its push may be in its guard)."""
        lake = Lake(store)
        seen: set[tuple[str, int]] = set()
        try:
            while time.monotonic() < deadline:
                for seed in range(PUSHERS):
                    artifact = f"race/p{seed}/ckpt"
                    for n in catalog.version_numbers(store, artifact):
                        if (artifact, n) in seen:
                            continue
                        seen.add((artifact, n))
                        try:
                            lake.pull(f"{artifact}@v{n}", tmp_path / "early" / f"{seed}-{n}")
                            early["pulled"] += 1
                        except (NotFound, IntegrityError) as exc:
                            try:  # deleted by retention meanwhile: not a failure
                                catalog.load_manifest(store, artifact, n)
                            except NotFound:
                                early["gone"] += 1
                                continue
                            early_failures.append(f"{artifact}@v{n}: {exc}")
                time.sleep(0.01)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=pusher, args=(n,)) for n in range(PUSHERS)]
    threads += [threading.Thread(target=collector) for _ in range(GCS)]
    threads.append(threading.Thread(target=reader))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=RUN_SECONDS + 120)
    assert not errors, errors
    print(f"\nconcurrency run: {stats['pushes']} pushes, {stats['gc_passes']} gc passes, "
          f"{stats['deleted']} versions deleted, {stats['swept']} chunks swept, "
          f"{stats['rescued']} rescued by a fresh mark, {stats['restored']} restored by the "
          f"push guard; {early['pulled']} versions pulled as soon as listed "
          f"({early['gone']} deleted first)")
    assert early_failures == [], early_failures
    assert early["pulled"] >= 8
    # The run must have exercised the protocol, or it proves nothing.
    assert stats["pushes"] >= 8 and stats["gc_passes"] >= 4
    assert stats["deleted"] >= 3 and stats["swept"] >= 3

    execute(store, plan_gc(store, POLICY))  # a last pass, with nobody pushing
    lake = Lake(store)
    survivors = [(f"race/p{seed}/ckpt", n) for seed in range(PUSHERS)
                 for n in catalog.version_numbers(store, f"race/p{seed}/ckpt")]
    assert len(survivors) == 2 * PUSHERS
    for artifact, n in survivors:
        check(lake, artifact, n, sources[pushed[(artifact, n)]],
              tmp_path / "pulled" / artifact.replace("/", "_") / str(n))
    for artifact, n in set(pushed) - set(survivors):  # the others were deleted on purpose
        with pytest.raises(NotFound, match="deleted by gc"):
            catalog.load_manifest(store, artifact, n)
    store.close()
    assert list(scratch.iterdir()) == [], "gc removed its temporary files"
