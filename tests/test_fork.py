"""A lake and a Checkpointer in a process that forks (DataLoader workers, multiprocessing pools,
launchers): the child gets copies of their thread pools, locks and connections but not their
threads.  A review found: S3 requests of parent and child mixed on shared keep-alive sockets
(an object stored with another process's request as its body, false "corrupt" errors); a
child's read or multipart pull waiting for ever for the parent's pool threads; a child hanging
at exit for the parent's uploads, or removing the parent's snapshots (the parent's checkpoint
then lost); a child that `terminate()` no longer stopped; a save from a signal handler during a
save deadlocking.  Each scenario runs in a fresh interpreter with a timeout: a hang is a
failure, not a stuck suite."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TIMEOUT = 90


# What the checkpointer scenarios start from: a local lake and a small file to save.
MODEL = """\
import json, os, signal, sys, threading
import ckptlake
lake = ckptlake.open("file://" + os.path.abspath("lake"))
os.makedirs("src", exist_ok=True)
with open("src/model.pt", "wb") as f:
    f.write(b"x" * 1000)
"""


def run(script: str, tmp_path: Path, *args: str, model: bool = False
        ) -> subprocess.CompletedProcess[str]:
    """`script` in a fresh interpreter in tmp_path (after MODEL, with `model`)."""
    path = tmp_path / "script.py"
    path.write_text((MODEL if model else "") + textwrap.dedent(script))
    # in a session of its own: on a hang its forked children are killed with it (a child
    # stuck on a lock outlived the script and the test run)
    proc = subprocess.Popen([sys.executable, str(path), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"hung: {out!r} {err!r}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # a child left behind by a finished script
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def last_json(r: subprocess.CompletedProcess[str]) -> dict:
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.seaweedfs
def test_parent_and_children_share_no_s3_connection(s3_lake_url: str, tmp_path: Path) -> None:
    """Four processes (a warmed-up parent and three forked children) put and read objects at
    once through one Lake: every object holds its own bytes, and a child's client is its own."""
    r = run("""
        import json, os, sys
        import ckptlake
        lake = ckptlake.open(sys.argv[1])
        store = lake.store
        while hasattr(store, "inner"):
            store = store.inner
        for i in range(4):  # keep-alive connections in the pool before the fork
            lake.store.put(f"warm/{i}", b"w" * 1000)
            assert lake.store.get(f"warm/{i}") == b"w" * 1000
        parent_client = id(store._client)
        def traffic(name):  # 60 puts and reads of its own objects: the keys that came wrong
            wrong = []
            for i in range(60):
                key, body = f"{name}/{i}", (f"{name}:{i}:".encode() * 500)
                try:
                    lake.store.put(key, body)
                    if lake.store.get(key) != body:
                        wrong.append(key)
                except Exception as exc:
                    wrong.append(f"{key}: {exc}")
            return wrong
        pids = []
        for c in range(3):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                own = id(store._client) != parent_client
                errors = traffic(f"c{c}")
                os.write(w, json.dumps({"own": own, "errors": errors}).encode())
                os._exit(0)
            os.close(w)
            pids.append((pid, r))
        bad = traffic("p")
        children = []
        for pid, r in pids:
            data = b""
            while chunk := os.read(r, 65536):
                data += chunk
            os.waitpid(pid, 0)
            children.append(json.loads(data))
        print(json.dumps({"parent": bad, "children": children,
                          "same": id(store._client) == parent_client}))
    """, tmp_path, s3_lake_url)
    out = last_json(r)
    assert out["parent"] == [] and out["same"]
    assert [c["errors"] for c in out["children"]] == [[], [], []]
    assert all(c["own"] for c in out["children"])


def test_a_forked_child_neither_waits_for_nor_touches_the_parents_uploads(
        tmp_path: Path) -> None:
    """Saves queued and uploading in the parent, then a fork: the child exits at once (it
    waited for ever, with no thread to run them), logs no LOST checkpoint, and removes none of
    the parent's snapshots (with exit_timeout it did: the parent's upload then failed).  A save
    in the child is refused (it never completed), and the parent commits every step."""
    r = run("""
        import json, os, sys, time, threading
        import ckptlake
        from ckptlake.core import push as _push
        lake = ckptlake.open("file://" + os.path.abspath("lake"))
        os.makedirs("src", exist_ok=True)
        ck = lake.checkpointer("a/run", on_busy="queue", exit_timeout=1)
        slow = threading.Event()
        orig = _push.push
        def held(*a, **k):
            slow.wait(30)
            return orig(*a, **k)
        _push.push = held
        for step in (1, 2):
            with open("src/model.pt", "wb") as f:
                f.write(bytes([step]) * 100_000)
            ck.save("src/model.pt", step=step)
        pid = os.fork()
        if pid == 0:
            try:
                ck.save("src/model.pt", step=3)
                refused = None
            except Exception as exc:
                refused = type(exc).__name__ + ": " + str(exc)
            with open("child.json", "w") as f:
                json.dump({"refused": refused, "pending": ck.pending}, f)
            sys.exit(0)  # atexit hooks run: the exit drain
        _, status = os.waitpid(pid, 0)
        slow.set()
        results = ck.close()
        print(json.dumps({"status": status, "steps": [r.step for r in results],
                          "child": json.load(open("child.json"))}))
    """, tmp_path)
    out = last_json(r)
    assert out["status"] == 0
    assert out["steps"] == [1, 2]
    assert "belongs to process" in out["child"]["refused"], out
    assert "LOST" not in r.stderr and "exiting with" not in r.stderr, r.stderr


def test_terminate_stops_a_forked_child_of_a_process_with_on_sigterm(tmp_path: Path) -> None:
    """The parent's SIGTERM handler (on_sigterm="wait") is inherited by a forked child: the
    child waited for the parent's upload instead of dying (`Pool.terminate()`, a DataLoader's
    shutdown)."""
    r = run("""
        import json, os, signal, sys, threading, time
        import ckptlake
        from ckptlake.core import push as _push
        lake = ckptlake.open("file://" + os.path.abspath("lake"))
        os.makedirs("src", exist_ok=True)
        ck = lake.checkpointer("a/run", on_sigterm="wait")
        slow = threading.Event()
        orig = _push.push
        _push.push = lambda *a, **k: (slow.wait(30), orig(*a, **k))[1]
        with open("src/model.pt", "wb") as f:
            f.write(b"x" * 1000)
        ck.save("src/model.pt", step=1)
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        time.sleep(0.5)
        started = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        slow.set()
        ck.close()
        print(json.dumps({"signaled": os.WIFSIGNALED(status),
                          "sig": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None}))
    """, tmp_path)
    out = last_json(r)
    assert out == {"signaled": True, "sig": 15}, (out, r.stderr)


def test_reads_and_multipart_pulls_work_in_a_forked_child(tmp_path: Path) -> None:
    """A LakeFile with its readahead pool started, and a Lake whose shared part pool ran a
    multipart read, before the fork: the child's read and pull waited for ever for the
    parent's threads."""
    r = run("""
        import hashlib, json, os, sys
        import ckptlake
        url = "file://" + os.path.abspath("lake")
        os.makedirs("src", exist_ok=True)
        data = os.urandom(24 << 20)
        with open("src/big.bin", "wb") as f:
            f.write(data)
        lake = ckptlake.open(url, chunk_size=1 << 20)
        lake.push("src", "a/data")
        lake = ckptlake.open(url, multipart_threshold=8 << 20, part_size=5 << 20, concurrency=2)
        lake2 = ckptlake.open(url, multipart_threshold=8 << 20, part_size=5 << 20)
        f = lake.open("a/data", "big.bin")
        f.read(3 << 20)  # sequential: the readahead pool is running
        lake.pull("a/data", "first")
        pid = os.fork()
        if pid == 0:
            ok = f.read() == data[3 << 20:]
            lake.pull("a/data", "second")
            ok = ok and open("second/big.bin", "rb").read() == data
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"status": os.waitstatus_to_exitcode(status)}))
    """, tmp_path)
    assert last_json(r) == {"status": 0}, r.stderr


def test_a_save_from_a_signal_handler_during_a_save_is_skipped(tmp_path: Path) -> None:
    """A "save now" signal handler whose signal arrives while the loop is inside save():
    the handler's save waited for the lock its own thread held, for ever.  It is skipped
    (logged, in `skipped`), and the save it interrupted is committed."""
    r = run("""
        ck = lake.checkpointer("a/run")
        seen = []
        def handler(signum, frame):
            seen.append(ck.save("src/model.pt", step=99))
        signal.signal(signal.SIGUSR2, handler)
        orig = ck._snapshot_files
        def snapshot(*a, **k):
            os.kill(os.getpid(), signal.SIGUSR2)  # delivered inside the save
            return orig(*a, **k)
        ck._snapshot_files = snapshot
        ck.save("src/model.pt", step=1)
        ck._snapshot_files = orig
        results = ck.close()
        print(json.dumps({"seen": seen, "steps": [r.step for r in results],
                          "skipped": ck.skipped}))
    """, tmp_path, model=True)
    out = last_json(r)
    assert out == {"seen": [None], "steps": [1], "skipped": [99]}, r.stderr
    assert "inside another save of this thread" in r.stderr


def test_pickling_a_lake_or_an_open_file_says_what_to_do(local_lake_url: str,
                                                         tmp_path: Path) -> None:
    """For a spawned worker: the error named a `_thread.lock`, not the lake or the remedy."""
    import pickle

    import ckptlake

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"x" * 100)
    lake = ckptlake.open(local_lake_url)
    lake.push(src, "a/b")
    with pytest.raises(TypeError, match=r"cannot be pickled: open it in the worker"):
        pickle.dumps(lake)
    with lake.open("a/b", "a.bin") as f, \
            pytest.raises(TypeError, match=r"a/b@v1:a.bin.*cannot be pickled"):
        pickle.dumps(f)


def test_a_read_through_a_replica_in_a_forked_child_does_not_wait_for_the_parent(
        tmp_path: Path) -> None:
    """A parent thread's read through a replica holds that chunk's single-flight lock across
    its request; forked meanwhile, the child's read of the chunk waited for ever."""
    r = run("""
        import json, os, sys, threading, time
        import ckptlake
        os.makedirs("src", exist_ok=True)
        with open("src/big.bin", "wb") as f:
            f.write(os.urandom(3 << 20))
        with open("cfg.yaml", "w") as f:
            f.write("lake: file://" + os.path.abspath("lake") + "\\nreplicas:\\n"
                    "  - name: eu\\n    url: file://" + os.path.abspath("rep") +
                    "\\n    region: eu-west-1\\n")
        ckptlake.open(config="cfg.yaml").push("src", "f/g")
        lake = ckptlake.open(config="cfg.yaml")
        f = lake.open("f/g", "big.bin", replica="eu")
        origin = f.store.origin
        real_into, real_get = origin.get_into, origin.get
        entered = threading.Event()
        def slow(real):
            def call(*a, **k):
                if "chunks" in str(a[0]):
                    entered.set()
                    time.sleep(3)
                return real(*a, **k)
            return call
        origin.get_into, origin.get = slow(real_into), slow(real_get)
        t = threading.Thread(target=lambda: f.read(100))
        t.start()
        entered.wait(10)
        pid = os.fork()
        if pid == 0:
            origin.get_into, origin.get = real_into, real_get
            f.seek(0)
            ok = f.read(100) == open("src/big.bin", "rb").read(100)
            os._exit(0 if ok else 3)
        t.join()
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"status": os.waitstatus_to_exitcode(status)}))
    """, tmp_path)
    assert last_json(r) == {"status": 0}, r.stderr


def test_a_lake_still_copies_shallowly(local_lake_url: str) -> None:
    """copy.copy worked before pickling was refused with a message (__reduce__ serves both)."""
    import copy

    import ckptlake

    lake = ckptlake.open(local_lake_url)
    other = copy.copy(lake)
    assert other is not lake and other.store is lake.store and other.url == lake.url


def test_a_replicas_verifier_reading_the_header_at_the_fork_does_not_hold_the_child(
        tmp_path: Path) -> None:
    """The verifier of a replica's chunks holds its lock across the read of the lake header:
    held by a parent thread at the fork, it kept the child's reads waiting for ever."""
    r = run("""
        import json, os, threading, time
        from ckptlake.core.replicas import _Verifier
        from ckptlake.store.local import LocalStore
        v = _Verifier(LocalStore(os.path.abspath("lake")))
        v._lock.acquire()  # a parent thread inside the header read
        pid = os.fork()
        if pid == 0:
            v.algo()
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"status": os.waitstatus_to_exitcode(status)}))
    """, tmp_path)
    assert last_json(r) == {"status": 0}, r.stderr


def test_a_handlers_save_between_the_lock_and_its_owner_is_skipped(tmp_path: Path) -> None:
    """The signal may come after the save lock is taken and before the saving thread is
    recorded (or after it is cleared and before the lock is let go): the handler's save then
    waited for the lock its own thread held."""
    r = run("""
        ck = lake.checkpointer("a/run")
        seen = []
        signal.signal(signal.SIGUSR2, lambda *a: seen.append(ck.save("src/model.pt", step=99)))
        class Lock:  # the signal delivered right after the acquire
            def __init__(self):
                self.inner = threading.Lock()
            def __enter__(self):
                self.inner.acquire()
                os.kill(os.getpid(), signal.SIGUSR2)
                return self
            def __exit__(self, *a):
                self.inner.release()
            def locked(self):
                return self.inner.locked()
        ck._save_lock = Lock()
        ck.save("src/model.pt", step=1)
        results = ck.close()
        print(json.dumps({"seen": seen, "steps": [r.step for r in results]}))
    """, tmp_path, model=True)
    assert last_json(r) == {"seen": [None], "steps": [1]}, r.stderr


@pytest.mark.parametrize("when", ["enter", "exit"])
def test_a_sigterm_as_a_save_takes_or_lets_go_of_its_lock_still_takes_the_final_save(
        tmp_path: Path, when: str) -> None:
    """(A review of the signal-handler fix.)  SIGTERM right before a save takes its lock, or
    right after it lets it go: the handler saw no save running and made the final save,
    which the nested-save guard then skipped: exit 143 without the final checkpoint."""
    r = run("""
        when = sys.argv[1]
        ck = lake.checkpointer("run/ck", on_sigterm="save",
                               final_save=lambda: ck.save("src/model.pt", step=99))
        class Lock:
            def __init__(self):
                self.inner = threading.Lock()
            def __enter__(self):
                if when == "enter":
                    os.kill(os.getpid(), signal.SIGTERM)
                self.inner.acquire()
                return self
            def __exit__(self, *a):
                self.inner.release()
                if when == "exit":
                    os.kill(os.getpid(), signal.SIGTERM)
            def locked(self):
                return self.inner.locked()
        ck._save_lock = Lock()
        ck.save("src/model.pt", step=1)
        print("not terminated")
    """, tmp_path, when, model=True)
    assert r.returncode == 143, r.stdout + r.stderr
    import ckptlake

    steps = [v.step for v in ckptlake.open(f"file://{tmp_path / 'lake'}").versions("run/ck")]
    assert 99 in steps, (steps, r.stderr)
