"""Chunk compression on real trained float weights (issue 13, item 2; docs/benchmarks.md,
"Chunk compression").

Trains a small character-level transformer on CPU (torch) on real text (the Python sources of
the installed standard library), saves its weights in fp32 and bf16 and the fp32 weights with
the AdamW state, then compresses each in 16 MiB chunks, one core:

* ckptlake's codec (format/codecs.py: chosen by sampling, bit/byte planes + zstd-1),
* plain zstd-1 on the raw bytes, zlib-1 and lzma preset 0 (the stdlib's options),
* ZipNN (if `zipnn` is installed; a reference only, not a dependency).

Prints stored ÷ raw and MB/s (compress, decompress; CPU time of this process, so a loaded
machine slows it less than wall time would) per codec and checkpoint.

    python bench/codec_bench.py [--steps 300] [--out /tmp/codec-bench]
"""
from __future__ import annotations

import argparse
import io
import lzma
import os
import sys
import time
import zlib
from pathlib import Path

CHUNK = 16 * 1024 * 1024


def corpus(limit: int = 4_000_000) -> bytes:
    root = Path(os.__file__).parent
    out = bytearray()
    for p in sorted(root.glob("*.py")):
        out += p.read_bytes()
        if len(out) >= limit:
            break
    return bytes(out[:limit])


def train(steps: int, seed: int = 0, on_step=None):
    """The model and its AdamW optimizer after `steps` steps; on_step(step, model, opt, loss)
    runs after each step (bench/delta_bench.py saves its checkpoints there)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    text = torch.tensor(list(corpus()), dtype=torch.long)
    d, layers, ctx = 384, 4, 64

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(256, d)
            self.pos = nn.Parameter(torch.zeros(ctx, d))
            layer = nn.TransformerEncoderLayer(d, 6, 4 * d, dropout=0.0, batch_first=True,
                                               norm_first=True)
            self.body = nn.TransformerEncoder(layer, layers)
            self.head = nn.Linear(d, 256)

        def forward(self, x):
            mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1])
            return self.head(self.body(self.emb(x) + self.pos[:x.shape[1]], mask=mask,
                                       is_causal=True))

    model = Model()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    t0 = time.time()
    for step in range(steps):
        idx = torch.randint(0, len(text) - ctx - 1, (16,))
        x = torch.stack([text[i:i + ctx] for i in idx])
        y = torch.stack([text[i + 1:i + ctx + 1] for i in idx])
        loss = nn.functional.cross_entropy(model(x).reshape(-1, 256), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if on_step is not None:
            on_step(step + 1, model, opt, loss.item())
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step} loss {loss.item():.3f} ({time.time() - t0:.0f} s)",
                  file=sys.stderr)
    return model, opt


def state_blobs(model, opt) -> dict[str, bytes]:
    """name -> safetensors bytes (tensors back to back: what a push chunks) of the weights in
    fp32 and bf16, and of the fp32 weights with the AdamW state."""
    import torch
    from safetensors.torch import save

    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    state = dict(sd)
    for name, p in model.named_parameters():
        s = opt.state[p]
        state[f"optim.{name}.exp_avg"] = s["exp_avg"].contiguous()
        state[f"optim.{name}.exp_avg_sq"] = s["exp_avg_sq"].contiguous()
    return {"fp32": save(sd), "bf16": save({k: v.to(torch.bfloat16) for k, v in sd.items()}),
            "fp32+adamw": save(state)}


def checkpoints(steps: int, out: Path) -> dict[str, bytes]:
    """name -> safetensors bytes of the checkpoint after `steps` steps (cached in `out`)."""
    cached = {n: out / f"{n}.safetensors" for n in ("bf16", "fp32", "fp32+adamw")}
    if all(p.exists() for p in cached.values()):
        return {n: p.read_bytes() for n, p in cached.items()}
    blobs = state_blobs(*train(steps))
    out.mkdir(parents=True, exist_ok=True)
    for n, b in blobs.items():
        cached[n].write_bytes(b)
    return blobs


def chunks(data: bytes) -> list[bytes]:
    return [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]


def measure(name: str, data: bytes, enc, dec) -> tuple[float, float, float]:
    # one untimed round on a whole chunk first: a codec's first call pays its imports and
    # set-up (numpy, chunk-sized scratch buffers for ckptlake's planes), which a push pays
    # once, not per chunk; the bf16 checkpoint is one chunk, so timed cold it showed 90 MB/s
    warm = bytes(bytearray(data[:CHUNK]))
    z = enc(warm)
    if z is not None:
        dec(z)
    stored, t_enc, t_dec = 0, 0.0, 0.0
    for c in chunks(data):
        src = bytes(bytearray(c))  # a private copy: ZipNN was seen to alter its input
        t = time.process_time()
        z = enc(src)
        t_enc += time.process_time() - t
        stored += len(z) if z is not None else len(c)
        t = time.process_time()
        back = dec(z) if z is not None else c
        t_dec += time.process_time() - t
        assert bytes(back) == c, name
    mb = len(data) / 1e6
    return stored / len(data), mb / max(t_enc, 1e-9), mb / max(t_dec, 1e-9)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--out", default="/tmp/codec-bench")
    args = ap.parse_args()
    import zstandard

    from ckptlake.format import codecs

    blobs = checkpoints(args.steps, Path(args.out))
    zc, zd = zstandard.ZstdCompressor(level=1), zstandard.ZstdDecompressor()
    runners = {
        "ckptlake auto": (codecs.encode_auto, codecs.decode),
        "zstd-1": (zc.compress, zd.decompress),
        "zlib-1": (lambda c: zlib.compress(c, 1), zlib.decompress),
        "lzma-0": (lambda c: lzma.compress(c, preset=0), lzma.decompress),
    }
    try:
        from zipnn import ZipNN

        zs = {"bf16": ZipNN(input_format="byte", bytearray_dtype="bfloat16", threads=1),
              "fp32": ZipNN(input_format="byte", bytearray_dtype="float32", threads=1)}
        runners["zipnn"] = (None, None)  # per checkpoint below
    except ImportError:
        zs = None
    print(f"{'checkpoint':<12} {'MB':>7} {'codec':<14} {'stored/raw':>10} {'enc MB/s':>9} "
          f"{'dec MB/s':>9}")
    for cname, data in blobs.items():
        for rname, (enc, dec) in runners.items():
            if rname == "zipnn":
                z = zs["bf16" if cname == "bf16" else "fp32"]
                enc, dec = z.compress, lambda b, z=z: bytes(z.decompress(b))
            if rname == "lzma-0" and len(data) > 64 * 1024 * 1024:
                continue
            ratio, e, d = measure(rname, data, enc, dec)
            print(f"{cname:<12} {len(data) / 1e6:>7.1f} {rname:<14} {ratio:>10.3f} {e:>9.0f} "
                  f"{d:>9.0f}", flush=True)


if __name__ == "__main__":
    main()
