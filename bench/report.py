"""Markdown for the results: a summary table per data set plus the raw numbers, and the
marker-delimited section of docs/benchmarks.md that holds them."""
from __future__ import annotations

import re
from pathlib import Path
from statistics import median

MiB, GiB = 1 << 20, 1 << 30
OPS = ("upload", "download", "repush")
INTRO = """# Benchmarks

ckptlake against the usual S3 copy tools, on a local SeaweedFS. Produced by `bench/run.py`
(see `bench/README.md`); each data set's section below is replaced as a whole by the run
that produced it, so every section carries its own machine, date, versions and command.
"""


def mibps(rec: dict) -> float:
    return rec["bytes"] / MiB / rec["wall_s"]


def ok(rec: dict) -> bool:
    return rec["status"] == "ok"


def progress_line(rec: dict, reps: int) -> str:
    head = f"[{rec['dataset']} rep {rec['rep']}/{reps}] {rec['tool']:<9} {rec['op']:<8}"
    if "wall_s" not in rec:
        return f"{head} {rec['status']}"
    return (f"{head} {rec['wall_s']:7.2f} s {mibps(rec):7.1f} MiB/s  cpu {rec['cpu_s']:6.2f} s  "
            f"rss {rec['rss_mib']:6.0f} MiB  {rec['status']}")


def _summary(records: list[dict], tools: dict[str, str]) -> list[str]:
    has_lake = "ckptlake" in tools
    head = ("| tool | op | MiB/s median | MiB/s min–max | client CPU-s per GiB "
            "| server CPU-s per GiB | peak RSS MiB | ok runs |")
    rule = "|---|---|--:|--:|--:|--:|--:|--:|"
    if has_lake:
        head, rule = head + " ckptlake ÷ tool |", rule + "--:|"
    lines = [head, rule]
    lake_speed = {}
    for op in OPS:
        good = [r for r in records if r["tool"] == "ckptlake" and r["op"] == op and ok(r)]
        if good:
            lake_speed[op] = median(mibps(r) for r in good)
    for op in OPS:
        for name, label in tools.items():
            runs = [r for r in records if r["tool"] == name and r["op"] == op]
            if not runs:
                continue
            good = [r for r in runs if ok(r)]
            count = f"{len(good)}/{len(runs)}" + ("" if len(good) == len(runs) else " ⚠")
            if not good:
                cells = ["**FAILED**", "", "", "", "", count]
            else:
                speeds = [mibps(r) for r in good]
                cells = [f"{median(speeds):.1f}", f"{min(speeds):.1f}–{max(speeds):.1f}",
                         f"{median(r['cpu_s'] / (r['bytes'] / GiB) for r in good):.2f}",
                         f"{median(r['server_cpu_s'] / (r['bytes'] / GiB) for r in good):.2f}",
                         f"{median(r['rss_mib'] for r in good):.0f}", count]
            if has_lake:
                if good and op in lake_speed and op != "repush":
                    cells.append(f"{lake_speed[op] / median(mibps(r) for r in good):.2f}")
                else:
                    cells.append("—")
            lines.append(f"| {label} | {op} | " + " | ".join(cells) + " |")
    return lines


def _raw(records: list[dict], tools: dict[str, str], label: str = "tool") -> list[str]:
    lines = [f"| rep | {label} | op | wall s | MiB/s | client CPU s | server CPU s | other CPU s "
             "| peak RSS MiB | flush s | status |",
             "|--:|---|---|--:|--:|--:|--:|--:|--:|--:|---|"]
    for r in records:
        flush = f"{r['flush_s']:.2f}" if "flush_s" in r else ""
        nums = (f"{r['wall_s']:.2f} | {mibps(r):.1f} | {r['cpu_s']:.2f} | {r['server_cpu_s']:.2f} "
                f"| {r['other_cpu_s']:.2f} | {r['rss_mib']:.0f} | {flush}" if "wall_s" in r
                else " | | | | | | ")
        status = r["status"].replace("|", "/")
        lines.append(f"| {r['rep']} | {tools[r['tool']]} | {r['op']} | {nums} | {status} |")
    return lines


def _background(records: list[dict], tools: dict[str, str]) -> str:
    timed = [r for r in records if "wall_s" in r]
    if not timed:
        return ""
    share = [r["other_cpu_s"] / r["wall_s"] for r in timed]
    worst = max(timed, key=lambda r: r["other_cpu_s"] / r["wall_s"])
    return (f"Noise: the rest of the machine (kernel writeback, other processes) used a median "
            f"{median(share):.2f} cores during a run, at most {max(share):.2f} "
            f"(rep {worst['rep']}, {tools[worst['tool']]} {worst['op']}); see 'other CPU s' in "
            f"the raw numbers.")


def run_where(meta: dict) -> str:
    """'Run DATE on MACHINE (...)': every section says when and where it was measured."""
    m = meta["machine"]
    return (f"Run {meta['date']} on {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM "
            f"(Linux {m['kernel']}, Python {m['python']}).")


def reproduce(meta: dict) -> list[str]:
    """The lines that give the command reproducing a section."""
    return ["", "Reproduce from the repository root:", "", f"    {meta['command']}", ""]


def section(ds, records: list[dict], meta: dict) -> str:
    tools = meta["tools"]
    failed = [r for r in records if not ok(r)]
    out = [
        f"<!-- bench:{ds.name}:start -->",
        f"## {ds.name}: {ds.description}",
        "",
        f"{ds.total_bytes / MiB:.0f} MiB in {ds.files} files. " + run_where(meta),
        *reproduce(meta),
        "Setup: one `weed server -s3` (SeaweedFS) on loopback on the same machine, so client and "
        "server share the cores; warm page cache (nothing is dropped between runs); source data, "
        "server data and downloads on the same disk; `sync` before and after every run, untimed "
        "(no run waits behind an earlier run's writeback; 'flush s' in the raw numbers is what "
        "the run left for the kernel to write). Every tool at its default settings. "
        f"{meta['reps']} reps, tools interleaved (rep 1: all tools, rep 2: all tools, ...), after "
        f"one uncounted upload + download by {tools[next(iter(tools))]} (the first writes after "
        "the server starts are slower while SeaweedFS grows its volumes). Each "
        "upload goes to a fresh empty bucket; each download reads what that tool uploaded into a "
        "fresh empty directory and is verified file by file (size + SHA-256) — a run that fails "
        "or returns wrong bytes counts as FAILED, not timed.",
        "",
        *_summary(records, tools),
        "",
        "MiB/s = data set size / wall time of the client process. Client CPU-s per GiB = "
        "user+sys CPU of the client (with its waited-for children, from wait4) per GiB of data "
        "set; server CPU-s per GiB = the same for the `weed` process during the run. Peak RSS = "
        "max of wait4's ru_maxrss and the summed RSS of the client's process tree sampled every "
        "0.1 s. All medians over the ok runs.",
        "",
        _background(records, tools),
    ]
    if "ckptlake" in tools:
        out += ["", "**ckptlake ÷ tool** = ckptlake's median MiB/s divided by that tool's median "
                   "MiB/s for the same op: above 1 means ckptlake is faster. **repush** = "
                   "`ckptlake push` of the same data to the same lake again (nothing new to "
                   "upload); its MiB/s is data set size / wall time."]
    repush = [r["result"].get("bytes_uploaded") for r in records
              if r["op"] == "repush" and ok(r) and isinstance(r.get("result"), dict)]
    if repush:
        out += ["", f"repush uploaded {max(b or 0 for b in repush):,} bytes at most "
                    f"(`bytes_uploaded` of `ckptlake push --json`, over {len(repush)} runs)."]
    pushes = [r["result"] for r in records if r["op"] == "upload" and ok(r)
              and isinstance(r.get("result"), dict) and r["result"].get("bytes_stored") is not None]
    if pushes:  # ckptlake pushes that report what they stored (compressing versions)
        stored = median(p["bytes_stored"] for p in pushes)
        sent = median(p.get("bytes_sent") or 0 for p in pushes)
        out += ["", f"**Stored ÷ raw**: ckptlake's cold push stored {stored:,.0f} bytes for "
                    f"{ds.total_bytes:,} bytes of data set = **{stored / ds.total_bytes:.3f}** "
                    f"(sent {sent:,.0f} bytes; compression `{pushes[0].get('compression')}`; "
                    f"`bytes_stored`/`bytes_sent` of `ckptlake push --json`, median over "
                    f"{len(pushes)} runs, range {min(p['bytes_stored'] for p in pushes):,}–"
                    f"{max(p['bytes_stored'] for p in pushes):,}). The MiB/s columns count the "
                    f"data set's raw bytes for every tool."]
    if failed:
        out += ["", "Failed runs:", ""] + [
            f"- rep {r['rep']} {tools[r['tool']]} {r['op']}: {r['status']}" for r in failed]
    out += ["", "Versions:", ""] + [f"- {k}: `{v}`" for k, v in meta["versions"].items()]
    out += ["", "<details><summary>Raw per-rep numbers</summary>", "", *_raw(records, tools),
            "", "</details>", f"<!-- bench:{ds.name}:end -->"]
    return "\n".join(out)


def publish(text: str, out: Path | None, name: str, who: str) -> None:
    """Print a section; with --out, also replace it in that file (every bench script's end)."""
    print("\n" + text, flush=True)
    if out:
        write_section(out, name, text)
        print(f"[{who}] wrote section {name} into {out}", flush=True)


def write_section(path: Path, name: str, text: str) -> None:
    """Replace the section between this data set's markers in path (append it if absent)."""
    doc = path.read_text() if path.exists() else INTRO
    pattern = re.compile(rf"<!-- bench:{re.escape(name)}:start -->.*?<!-- bench:{re.escape(name)}:end -->",
                         re.S)
    if pattern.search(doc):
        doc = pattern.sub(lambda _: text, doc, count=1)
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc)
