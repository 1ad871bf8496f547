"""Deterministic data sets, built once under bench/.work/data/<name>/, and their manifests.

Bytes come from random.Random seeded with "<dataset>:<path>", so every machine builds the same
incompressible, non-repeating files. A file already present with the right size is kept.
The manifest (path -> size, sha256) is computed once and cached next to the data.

`bf16ckpt2g` is the exception: random bytes say nothing about a compressing pusher, so its
safetensors shards hold synthetic bf16 weights (Gaussian, per-tensor scale; see _bf16ckpt2g),
generated with numpy (imported only for that data set, so run.py stays stdlib-only otherwise).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
CHUNK = 16 * MiB


def _small(dataset: str, n: int, fmt: str) -> list[tuple[str, int]]:
    rng = random.Random(f"{dataset}:sizes")
    return [(fmt.format(i=i, d=i // 100), rng.randint(4 * KiB, 64 * KiB)) for i in range(n)]


def _ckpt1g() -> list[tuple[str, int]]:
    big = [(f"model-{i:05d}-of-00002.safetensors", 448 * MiB) for i in (1, 2)]
    optim = [(f"optimizer/shard-{i}.pt", 32 * MiB) for i in range(4)]
    return big + optim + _small("ckpt1g", 100, "extra/file-{i:03d}.bin")


def _ckpt2g() -> list[tuple[str, int]]:
    big = [(f"model-{i:05d}-of-00004.safetensors", 512 * MiB) for i in range(1, 5)]
    return big + _small("ckpt2g", 200, "extra/file-{i:03d}.bin")


# ---------------------------------------------------------------- bf16ckpt2g
#
# The shapes of a 1.1 B-parameter Llama-style decoder (TinyLlama-1.1B's: vocab 32000, hidden
# 2048, 22 layers, MLP 5632, 4 KV heads of 64): 1,100,048,384 parameters = 2.05 GiB in bf16,
# sharded as `save_pretrained` does (shards of at most ~550 MB, plus the index). The values are
# SYNTHETIC, not trained: each weight matrix is normal(0, sigma) with sigma drawn per tensor
# log-uniformly in [1e-3, 0.1] (the range of trained transformer layers' std), each RMSNorm
# weight normal(1, sigma) with sigma in [0.01, 0.1]; fp32 draws rounded to bf16 (round to
# nearest even on the upper 16 bits). Such weights have a trained model's exponent statistics
# only roughly: a Gaussian's exponents, no outliers, no structure across tensors.

BF16_LAYERS, BF16_HIDDEN, BF16_MLP, BF16_VOCAB, BF16_KV = 22, 2048, 5632, 32000, 256
BF16_SHARD = 550_000_000  # bytes of tensor data per shard, at most
BF16_SMALL = {
    "config.json": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "bfloat16",
        "hidden_size": BF16_HIDDEN, "intermediate_size": BF16_MLP,
        "num_hidden_layers": BF16_LAYERS, "num_attention_heads": 32, "num_key_value_heads": 4,
        "vocab_size": BF16_VOCAB, "max_position_embeddings": 2048, "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 2, "transformers_version": "4.57.0"},
    "generation_config.json": {"bos_token_id": 1, "eos_token_id": 2, "max_length": 2048,
                               "pad_token_id": 0},
    "special_tokens_map.json": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    "tokenizer_config.json": {"add_bos_token": True, "add_eos_token": False,
                              "model_max_length": 2048, "tokenizer_class": "LlamaTokenizer",
                              "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    "trainer_state.json": {"global_step": 48000, "epoch": 1.0,
                           "log_history": [{"step": s, "loss": round(2.0 + 8.0 / (1 + s / 500), 4),
                                            "learning_rate": 4e-4 * min(1, s / 2000)}
                                           for s in range(0, 48001, 100)]},
}


def _bf16_tensors() -> list[tuple[str, tuple[int, ...]]]:
    h, m = BF16_HIDDEN, BF16_MLP
    out = [("model.embed_tokens.weight", (BF16_VOCAB, h))]
    for i in range(BF16_LAYERS):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (h,)),
                (p + "self_attn.q_proj.weight", (h, h)),
                (p + "self_attn.k_proj.weight", (BF16_KV, h)),
                (p + "self_attn.v_proj.weight", (BF16_KV, h)),
                (p + "self_attn.o_proj.weight", (h, h)),
                (p + "post_attention_layernorm.weight", (h,)),
                (p + "mlp.gate_proj.weight", (m, h)),
                (p + "mlp.up_proj.weight", (m, h)),
                (p + "mlp.down_proj.weight", (h, m))]
    return out + [("model.norm.weight", (h,)), ("lm_head.weight", (BF16_VOCAB, h))]


def _bf16_plan() -> dict[str, tuple[bytes, list[tuple[str, int]]]]:
    """rel path -> (bytes written first, tensors that follow: (name, elements)). Small files
    are all header; a shard is its safetensors header then its tensors' data in header order."""
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    used = 0
    for name, shape in _bf16_tensors():
        size = 2 * _count(shape)
        if shards[-1] and used + size > BF16_SHARD:
            shards.append([])
            used = 0
        shards[-1].append((name, shape))
        used += size
    plan: dict[str, tuple[bytes, list[tuple[str, int]]]] = {}
    weight_map, total = {}, 0
    for k, tensors in enumerate(shards, 1):
        rel = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        doc: dict = {"__metadata__": {"format": "pt"}}
        off = 0
        for name, shape in tensors:
            n = 2 * _count(shape)
            doc[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
            weight_map[name] = rel
            off += n
        total += off
        head = json.dumps(doc, separators=(",", ":")).encode()
        head += b" " * (-len(head) % 8)  # the safetensors writer pads to 8 bytes the same way
        plan[rel] = (struct.pack("<Q", len(head)) + head,
                     [(name, _count(shape)) for name, shape in tensors])
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    for rel, doc in {"model.safetensors.index.json": index, **BF16_SMALL}.items():
        plan[rel] = (json.dumps(doc, indent=2).encode() + b"\n", [])
    return plan


def _count(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _bf16ckpt2g() -> list[tuple[str, int]]:
    return [(rel, len(head) + 2 * sum(n for _, n in tensors))
            for rel, (head, tensors) in _bf16_plan().items()]


def _write_bf16(path: Path, rel: str, seed: str) -> None:
    """Writes one file of bf16ckpt2g in a child process: numpy and its buffers (~100 MiB) must
    not stay in run.py, whose RSS at fork time every measured tool would inherit as the floor
    of its ru_maxrss (Linux keeps the high-water mark across fork and exec)."""
    import subprocess
    subprocess.run([sys.executable, __file__, "--write-bf16", str(path), rel, seed], check=True)


def _write_bf16_here(path: Path, rel: str, seed: str) -> None:
    """One file of bf16ckpt2g; a numpy Generator seeded by "<dataset>:<path>" draws every
    tensor's sigma, then its values, in header order, 4 M elements at a time."""
    try:
        import numpy as np
    except ImportError:
        sys.exit("bf16ckpt2g is built with numpy: `pip install numpy` for this python "
                 f"({sys.executable}), or run with bench/.venv/bin/python")
    head, tensors = _bf16_plan()[rel]
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "little"))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        f.write(head)
        for name, n in tensors:
            norm = name.endswith("norm.weight")
            lo, hi = (0.01, 0.1) if norm else (1e-3, 0.1)
            sigma = np.float32(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            left = n
            while left:
                k = min(left, 4 << 20)
                x = rng.standard_normal(k, dtype=np.float32)
                x *= sigma
                if norm:
                    x += np.float32(1.0)
                u = x.view(np.uint32)
                u += np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))  # RNE (finite x)
                f.write((u >> np.uint32(16)).astype("<u2").tobytes())
                left -= k
    tmp.rename(path)


DATASETS = {
    "ckpt1g": ("1 GiB checkpoint dir: 2 x 448 MiB + 4 x 32 MiB + 100 files of 4-64 KiB", _ckpt1g),
    "ckpt2g": ("2 GiB checkpoint dir: 4 x 512 MiB + 200 files of 4-64 KiB", _ckpt2g),
    "file4g": ("one 4 GiB file", lambda: [("blob.bin", 4 * GiB)]),
    "small10k": ("10,000 files of 4-64 KiB in 100 dirs",
                 lambda: _small("small10k", 10_000, "d{d:02d}/f{i:05d}.bin")),
    "bf16ckpt2g": ("2 GiB bf16 checkpoint dir: 5 safetensors shards of a 1.1 B-parameter "
                   "Llama-shaped model, SYNTHETIC Gaussian weights (not trained) + 6 small "
                   "JSON files", _bf16ckpt2g),
}
# Data sets whose files are not seeded random bytes: name -> writer(path, rel, seed).
WRITERS = {"bf16ckpt2g": _write_bf16}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    buf = bytearray(4 * MiB)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


@dataclass
class Dataset:
    name: str
    description: str
    root: Path
    manifest: dict[str, tuple[int, str]]  # relative posix path -> (size, sha256)

    @property
    def total_bytes(self) -> int:
        return sum(size for size, _ in self.manifest.values())

    @property
    def files(self) -> int:
        return len(self.manifest)

    def verify(self, dest: Path) -> str | None:
        """None if dest holds exactly the data set's files with the same bytes, else why not."""
        found: dict[str, Path] = {}
        for dirpath, _, names in os.walk(dest):
            for n in names:
                p = Path(dirpath, n)
                found[p.relative_to(dest).as_posix()] = p
        missing = sorted(set(self.manifest) - set(found))
        extra = sorted(set(found) - set(self.manifest))
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if extra:
            problems.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
        bad = []
        for rel, p in found.items():
            if rel in self.manifest:
                size, digest = self.manifest[rel]
                if p.stat().st_size != size or sha256_file(p) != digest:
                    bad.append(rel)
        if bad:
            problems.append(f"{len(bad)} with wrong bytes (e.g. {sorted(bad)[0]})")
        return "; ".join(problems) or None


def _write_random(path: Path, size: int, seed: str) -> None:
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        left = size
        while left:
            n = min(CHUNK, left)
            f.write(rng.randbytes(n))
            left -= n
    tmp.rename(path)


def build(name: str, data_dir: Path, log=print) -> Dataset:
    description, layout = DATASETS[name]
    files = layout()
    root = data_dir / name
    wanted = {rel for rel, _ in files}
    for dirpath, _, names in os.walk(root):  # e.g. a .part left by an interrupted build
        for n in names:
            p = Path(dirpath, n)
            if p.relative_to(root).as_posix() not in wanted:
                p.unlink()
    written = 0
    for rel, size in files:
        p = root / rel
        if not (p.is_file() and p.stat().st_size == size):
            if name in WRITERS:
                WRITERS[name](p, rel, f"{name}:{rel}")
            else:
                _write_random(p, size, f"{name}:{rel}")
            written += size
    if written:
        log(f"[data] {name}: wrote {written / MiB:.0f} MiB into {root}")
    cache = data_dir / f"{name}.manifest.json"
    stamp = {rel: [size, (root / rel).stat().st_mtime_ns] for rel, size in files}
    try:
        cached = json.loads(cache.read_text())
        if cached["stamp"] == stamp:
            manifest = {k: tuple(v) for k, v in cached["manifest"].items()}
            return Dataset(name, description, root, manifest)
    except (OSError, ValueError, KeyError):
        pass
    log(f"[data] {name}: hashing {len(files)} files")
    manifest = {rel: (size, sha256_file(root / rel)) for rel, size in files}
    cache.write_text(json.dumps({"stamp": stamp, "manifest": manifest}))
    return Dataset(name, description, root, manifest)


if __name__ == "__main__" and sys.argv[1:2] == ["--write-bf16"]:
    _write_bf16_here(Path(sys.argv[2]), sys.argv[3], sys.argv[4])
