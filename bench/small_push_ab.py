"""The latency of a small push (one 1 KiB file, a fresh process each), another checkout's
package against this one, interleaved, against one SeaweedFS on loopback: what a change to the
commit protocol (e.g. the gc pin's PUT and DELETE) costs where requests, not bytes, dominate.

    git archive REV ckptlake | tar -x -C /tmp/base
    .venv/bin/python bench/small_push_ab.py /tmp/base 30
"""
import os, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from server import SeaweedFS  # noqa: E402
root = Path(tempfile.mkdtemp(prefix="ckptlake-small-push-"))
w = SeaweedFS(HERE.parent / ".venv" / "bin" / "weed", root / 'weed').start()
try:
    w.create_bucket('pinb')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CKPTLAKE_", "PYTHON"))}
    env.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": w.endpoint,
                "AWS_EC2_METADATA_DISABLED": "true", "XDG_CONFIG_HOME": str(root / "xdg")})
    variants = {"base": str(Path(sys.argv[1]).resolve()), "this": str(HERE.parent)}
    times = {k: [] for k in variants}
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    for rep in range(reps):
        for name, path in (variants.items() if rep % 2 == 0 else reversed(variants.items())):
            src = root / 'src' / f'{name}-{rep}'
            src.mkdir(parents=True, exist_ok=True)
            (src / 'f.bin').write_bytes(os.urandom(1024))
            e = dict(env, PYTHONPATH=path)
            t = time.perf_counter()
            r = subprocess.run([sys.executable, '-m', 'ckptlake', 'push', str(src), f'{name}/small',
                                '--lake', 's3://pinb/lake', '-q'], env=e, cwd=root,
                               capture_output=True, text=True)
            times[name].append(time.perf_counter() - t)
            assert r.returncode == 0, r.stderr
    for name, ts in times.items():
        print(f"{name}: median {statistics.median(ts)*1000:.1f} ms, min {min(ts)*1000:.1f}, max {max(ts)*1000:.1f} ({len(ts)} pushes)")
finally:
    w.stop()
    shutil.rmtree(root, ignore_errors=True)
