"""The lineage story of issue 5, end to end through the CLI as a subprocess, against SeaweedFS.

base model -> fine-tune checkpoints (the run crashes, the restarted run's checkpoint is
resumed-from the last committed one) -> final model derived-from the last checkpoint -> eval
results evaluated-from the model.  Then lineage up and down, show, ls queries and a tensor diff
of two real safetensors checkpoints (3 of 20 tensors changed, one reshaped).
"""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ckptlake.errors import EXIT_OK

np = pytest.importorskip("numpy")
st = pytest.importorskip("safetensors.numpy")
pytestmark = pytest.mark.seaweedfs

DATASET = "s3://datasets/wiki-2024#sha256:9f2c4e"
CHANGED = ["blocks.04.attn.weight", "blocks.11.mlp.weight", "blocks.16.attn.weight"]
RESHAPED = "blocks.09.mlp.weight"


def run(env: dict, lake: str, *args: str, check: int | None = EXIT_OK,
        **kw: Any) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "ckptlake", *args, "--lake", lake], env=env,
                       capture_output=True, text=True, timeout=300, **kw)
    if check is not None:
        assert p.returncode == check, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p


def run_json(env: dict, lake: str, *args: str) -> Any:
    return json.loads(run(env, lake, *args, "--json").stdout)


def tensors(seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(20):
        kind = "attn" if i % 2 == 0 else "mlp"
        out[f"blocks.{i:02d}.{kind}.weight"] = rng.standard_normal((96, 96)).astype(np.float32)
    return out


def save(directory: Path, weights: dict[str, Any], **extra: str) -> Path:
    directory.mkdir(parents=True)
    st.save_file(weights, str(directory / "model.safetensors"))
    for name, text in extra.items():
        (directory / name).write_text(text)
    return directory


def test_lineage_story(seaweedfs, s3_lake_url: str, tmp_path: Path) -> None:
    env, lake = seaweedfs.env, s3_lake_url
    w0 = tensors()
    base = save(tmp_path / "base", w0, **{"config.json": '{"d": 96}'})
    (tmp_path / "params.yaml").write_text("lr: 1.0e-4\nschedule:\n  warmup: 100\n")

    # -- the base model, then the fine-tune run --------------------------------------------
    assert run_json(env, lake, "push", str(base), "story/base", "--step", "0",
                    "--metric", "loss=3.2")["version"] == 1
    w1 = {k: v + np.float32(0.001) for k, v in w0.items()}
    ck1 = save(tmp_path / "ck1", w1)
    run(env, lake, "push", str(ck1), "story/ft/ckpt", "--step", "100", "--metric", "loss=2.9",
        "--metric", "val_loss=3.0", "--parent", "story/base@latest:fine-tuned-from",
        "--input", DATASET, "--meta-file", str(tmp_path / "params.yaml"))
    w2 = dict(w1)
    for name in CHANGED:
        w2[name] = w1[name] * np.float32(0.9)
    w2[RESHAPED] = w1[RESHAPED].reshape(48, 192)
    ck2 = save(tmp_path / "ck2", w2)
    run(env, lake, "push", str(ck2), "story/ft/ckpt", "--step", "200", "--metric", "loss=2.5",
        "--metric", "val_loss=2.6", "--parent", "story/ft/ckpt@latest",
        "--relation", "resumed-from")

    # -- the crash: a push killed half-way (kill -9) commits nothing ---------------------------
    big = tmp_path / "ck3-partial"
    big.mkdir()
    (big / "model.safetensors").write_bytes(np.random.default_rng(5).bytes(64 << 20))
    s3, prefix = seaweedfs.client(), lake.split("/", 3)[3] + "/chunks/"
    chunks_before = s3.list_objects_v2(Bucket=seaweedfs.bucket, Prefix=prefix)["KeyCount"]
    p = subprocess.Popen([sys.executable, "-m", "ckptlake", "push", str(big), "story/ft/ckpt",
                          "--step", "300", "--chunk-size", "1MiB", "--concurrency", "1",
                          "--lake", lake], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # some of its 64 chunks are stored: kill it
        got = s3.list_objects_v2(Bucket=seaweedfs.bucket, Prefix=prefix)["KeyCount"]
        if got > chunks_before:
            break
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    versions = run_json(env, lake, "ls", "story/ft/ckpt")["versions"]
    assert [v["version"] for v in versions] == [1, 2], "the killed push left no version"

    # -- the restarted run resumes from the last committed checkpoint -----------------------
    w3 = {k: v + np.float32(0.002) for k, v in w2.items()}
    ck3 = save(tmp_path / "ck3", w3)
    run(env, lake, "push", str(ck3), "story/ft/ckpt", "--step", "300", "--metric", "loss=2.2",
        "--metric", "val_loss=2.4", "--parent", "story/ft/ckpt@latest:resumed-from")
    model = save(tmp_path / "model", w3, **{"README.md": "final"})
    run(env, lake, "push", str(model), "story/ft/model", "--parent", "story/ft/ckpt",
        "--alias", "candidate")
    evals = tmp_path / "eval"
    evals.mkdir()
    (evals / "results.json").write_text('{"hellaswag": 0.61}')
    run(env, lake, "push", str(evals), "story/ft/eval", "--parent",
        "story/ft/model@candidate:evaluated-from", "--metric", "hellaswag=0.61")

    # -- lineage of the eval results walks back to the base model and the dataset -------------
    up = run_json(env, lake, "lineage", "story/ft/eval")
    edges = {(e["child"], e["relation"], e["parent"]) for e in up["edges"]}
    assert edges == {
        ("story/ft/eval@v1", "evaluated-from", "story/ft/model@v1"),
        ("story/ft/model@v1", "derived-from", "story/ft/ckpt@v3"),
        ("story/ft/ckpt@v3", "resumed-from", "story/ft/ckpt@v2"),
        ("story/ft/ckpt@v2", "resumed-from", "story/ft/ckpt@v1"),
        ("story/ft/ckpt@v1", "fine-tuned-from", "story/base@v1"),
        ("story/ft/ckpt@v1", "input", f"input:{DATASET}"),
    }
    nodes = {n["id"]: n for n in up["nodes"]}
    assert nodes["story/base@v1"]["metrics"] == {"loss": 3.2}
    assert nodes[f"input:{DATASET}"]["uri"] == "s3://datasets/wiki-2024"
    tree = run(env, lake, "lineage", "story/ft/eval").stdout
    assert re.search(r"↑ evaluated-from\s+story/ft/model@v1", tree)
    assert re.search(r"↑ resumed-from\s+story/ft/ckpt@v2\s+step 200, loss=2.5", tree)
    assert re.search(r"↑ fine-tuned-from\s+story/base@v1\s+step 0, loss=3.2", tree)
    assert "↑ input  s3://datasets/wiki-2024#sha256:9f2c4e" in tree

    # -- lineage --down of the base finds them all ---------------------------------------------
    down = run_json(env, lake, "lineage", "story/base", "--down")
    assert {n["id"] for n in down["nodes"]} == {
        "story/base@v1", "story/ft/ckpt@v1", "story/ft/ckpt@v2", "story/ft/ckpt@v3",
        "story/ft/model@v1", "story/ft/eval@v1"}
    limited = run_json(env, lake, "lineage", "story/base", "--down", "--depth", "2")
    assert {n["id"] for n in limited["nodes"]} == {"story/base@v1", "story/ft/ckpt@v1",
                                                    "story/ft/ckpt@v2"}
    mermaid = run(env, lake, "lineage", "story/ft/model", "--both", "--format",
                  "mermaid").stdout
    assert mermaid.startswith("flowchart LR\n") and "-->|evaluated-from|" in mermaid
    dot_text = run(env, lake, "lineage", "story/ft/eval", "--format", "dot").stdout
    assert dot_text.startswith("digraph lineage {")
    if shutil.which("dot"):
        svg = subprocess.run(["dot", "-Tsvg"], input=dot_text, capture_output=True, text=True,
                             timeout=60)
        assert svg.returncode == 0 and "<svg" in svg.stdout, svg.stderr

    # -- show ------------------------------------------------------------------------------------
    shown = run_json(env, lake, "show", "story/ft/ckpt@v1")
    assert shown["parents"] == [{"artifact": "story/base", "version": 1,
                                 "relation": "fine-tuned-from", "status": "ok", "step": 0,
                                 "deleted": None}]
    assert [(c["artifact"], c["version"]) for c in shown["children"]] == [("story/ft/ckpt", 2)]
    assert shown["inputs"] == [{"uri": "s3://datasets/wiki-2024", "digest": "sha256:9f2c4e"}]
    assert shown["metadata"] == {"lr": "0.0001", "schedule.warmup": "100"}
    prov = shown["provenance"]
    assert "push" in prov["command"] and prov["python"] and prov["ckptlake"] and prov["hostname"]
    assert shown["files"] == [{"path": "model.safetensors", "size": (ck1 / "model.safetensors")
                               .stat().st_size, "tensors": 20}]
    assert "↑ fine-tuned-from  story/base@v1" in run(env, lake, "show", "story/ft/ckpt@v1").stdout

    # -- ls grows up -------------------------------------------------------------------------------
    best = run_json(env, lake, "ls", "story/ft/ckpt", "--where", "val_loss<2.9", "--where",
                    "step>=200", "--sort", "val_loss", "--limit", "5")
    assert [v["version"] for v in best["versions"]] == [3, 2]
    table = run(env, lake, "ls", "story/ft/ckpt", "--sort", "-loss").stdout.splitlines()
    assert table[0].split() == ["VERSION", "STEP", "SIZE", "AGE", "ALIASES", "loss", "METRICS"]
    assert [row.split()[0] for row in table[1:]] == ["v1", "v2", "v3"]

    # -- diff of two safetensors checkpoints: exactly the 3 changed, and the reshaped one ------
    d = run_json(env, lake, "diff", "story/ft/ckpt@v1", "story/ft/ckpt@v2")
    assert sorted(x["name"] for x in d["tensors"]["changed"]) == CHANGED
    assert [x["name"] for x in d["tensors"]["reshaped"]] == [RESHAPED]
    assert d["tensors"]["reshaped"][0]["shape_b"] == [48, 192]
    assert d["tensors"]["unchanged"] == 16 and not d["tensors"]["added"] + d["tensors"]["removed"]
    assert d["step"] == {"a": 100, "b": 200, "changed": True}
    assert d["metrics"]["changed"]["loss"] == {"a": 2.9, "b": 2.5, "delta": pytest.approx(-0.4)}
    assert d["metadata"]["removed"] == {"lr": "0.0001", "schedule.warmup": "100"}
    assert [f["path"] for f in d["files"]["modified"]] == ["model.safetensors"]
    assert d["bytes"]["total"] == d["bytes"]["shared"] + d["bytes"]["to_fetch"]
    assert d["identical"] is False and d["values"] is None
    assert set(d) >= {"a", "b", "step", "metrics", "metadata", "files", "bytes", "tensors"}
    human = run(env, lake, "diff", "story/ft/ckpt@v1", "story/ft/ckpt@v2").stdout
    assert "tensors: 3 changed, 1 reshaped, 0 retyped, 0 added, 0 removed, 16 unchanged" in human
    values = run_json(env, lake, "diff", "story/ft/ckpt@v1", "story/ft/ckpt@v2", "--values")
    for x in values["tensors"]["changed"]:
        assert x["values"]["rel_l2"] == pytest.approx(0.1, rel=1e-5)  # scaled by 0.9
    # only the changed tensors: their exact ranges when stored raw; stored compressed (the
    # default for new lakes), the chunk objects holding them, whole (what the estimate says)
    stored = sum(run_json(env, lake, "show", f"story/ft/ckpt@v{v}")["stored_bytes"]
                 for v in (1, 2))
    assert 3 * 2 * 96 * 96 * 4 <= values["values"]["bytes_fetched"] <= stored
    # across artifacts; exit codes
    same = run_json(env, lake, "diff", "story/ft/ckpt@v3", "story/ft/model")
    assert same["tensors"]["changed"] == [] and same["tensors"]["unchanged"] == 20
    assert [f["path"] for f in same["files"]["added"]] == ["README.md"]
    assert run(env, lake, "diff", "story/ft/ckpt@v1", "story/ft/ckpt@v2").returncode == 0
    run(env, lake, "diff", "story/ft/ckpt@v1", "story/ft/ckpt@v2", "--exit-code", check=1)
    run(env, lake, "diff", "story/ft/ckpt@v2", "story/ft/ckpt@v2", "--exit-code", check=0)
