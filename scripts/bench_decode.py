#!/usr/bin/env python3
"""Baseline for `sbattn bench decode`: one stick-breaking decode step in plain PyTorch.

Written from /work/shared/ALGORITHM.md the way model code does it today (eager ops, no fused
kernel): logits -> softplus -> reverse cumulative sum -> weights -> matmul. One new query per
sequence against a KV cache of length L that already holds the query's own token (the
query sees every cached key, i.e. attend_current). Timed with CUDA events at the shapes of the
Rust benchmark; writes JSON with the same fields (kv_bytes, median_ms, gbps_median, ...), each
result also naming its `impl` and `dtype`: the baselines format `sbattn bench decode --plot X.png
--baselines FILE` draws (cli/README.md).

    python3 scripts/bench_decode.py --json torch_decode.json [--iters 30] [--repeat-kv]
    python3 scripts/bench_decode.py --quick            # tiny sizes (CPU is fine)

--repeat-kv expands K and V to all query heads first (repeat_interleave, as Hugging Face
style model code does for grouped-query attention); the default uses a grouped view, which
reads K and V once and is the faster, fairer baseline.
"""

import argparse
import json
import math
import statistics

# The names the Rust tool uses (`sbattn bench decode --baselines` reads each result's dtype).
SHORT_DTYPE = {"float16": "f16", "bfloat16": "bf16", "float32": "f32"}


def decode_step(q, k, v, scale, repeat_kv=False):
    """One decode step.

    q: [B, H, 1, D]; k, v: [B, Hkv, L, D]. Returns (o [B, H, 1, D], rem [B, H, 1]).
    """
    import torch
    import torch.nn.functional as F

    b, h, n, d = q.shape
    hkv = k.shape[1]
    if repeat_kv:
        k = k.repeat_interleave(h // hkv, dim=1)
        v = v.repeat_interleave(h // hkv, dim=1)
        qg = q
    else:
        qg = q.reshape(b, hkv, (h // hkv) * n, d)  # the query heads of a kv head share it
    z = torch.matmul(qg, k.transpose(-1, -2)).float() * scale   # logits, [.., rows, L]
    log_beta = -F.softplus(-z)                                   # log(beta)
    log_keep = -F.softplus(z)                                    # log(1 - beta)
    # Sum of log(1 - beta) over the keys to the right of each key (nearer the query):
    # an exclusive reverse cumulative sum along the key axis.
    right = torch.flip(torch.cumsum(torch.flip(log_keep, [-1]), -1), [-1]) - log_keep
    a = torch.exp(log_beta + right)                              # weights A_j
    o = torch.matmul(a.to(v.dtype), v)                           # [.., rows, D]
    rem = torch.exp(log_keep.sum(-1))                            # stick left
    return o.reshape(b, h, n, d), rem.reshape(b, h, n)


def reference_check(torch, device):
    """The step against a direct double-precision loop on a tiny case."""
    g = torch.Generator().manual_seed(0)
    b, h, hkv, length, d = 2, 4, 2, 9, 8
    q = torch.randn(b, h, 1, d, generator=g, dtype=torch.float64)
    k = torch.randn(b, hkv, length, d, generator=g, dtype=torch.float64)
    v = torch.randn(b, hkv, length, d, generator=g, dtype=torch.float64)
    scale = 1 / math.sqrt(d)
    o, rem = decode_step(q.to(device), k.to(device), v.to(device), scale)
    sp = lambda x: max(x, 0.0) + math.log1p(math.exp(-abs(x)))
    for bi in range(b):
        for hi in range(h):
            acc, out = 0.0, torch.zeros(d, dtype=torch.float64)
            for j in reversed(range(length)):
                zz = scale * float(q[bi, hi, 0] @ k[bi, hi // (h // hkv), j])
                out += math.exp(-sp(-zz) + acc) * v[bi, hi // (h // hkv), j]
                acc -= sp(zz)
            assert torch.allclose(o[bi, hi, 0].cpu().double(), out, atol=1e-6), "o mismatch"
            assert abs(float(rem[bi, hi, 0]) - math.exp(acc)) < 1e-6, "rem mismatch"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--quick", action="store_true", help="tiny sizes")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--repeat-kv", action="store_true", help="expand K/V to every query head first")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    args = ap.parse_args()

    import torch

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    dtype = getattr(torch, args.dtype)
    reference_check(torch, device)
    if args.quick:
        batches, lens, heads, kv_heads, head_dim = [1, 2], [64, 500], 32, 8, 128
    else:
        batches, lens, heads, kv_heads, head_dim = [1, 8, 32], [4096, 32768, 131072], 32, 8, 128
    esize = torch.tensor([], dtype=dtype).element_size()
    copy = None
    if cuda:  # the bandwidth roofline of the same run: a 1 GiB device-to-device copy
        x = torch.empty(1 << 29, device=device, dtype=torch.float16)
        y = torch.empty_like(x)
        for _ in range(3):
            y.copy_(x)
        ts = []
        for _ in range(20):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            y.copy_(x)
            end.record()
            torch.cuda.synchronize()
            ts.append(start.elapsed_time(end))
        med = statistics.median(ts)
        copy = {"bytes": 1 << 30, "median_ms": med, "min_ms": min(ts),
                "gbps_read_plus_write": 2 * (1 << 30) / (med * 1e-3) / 1e9}
        print(f"torch copy: {copy['gbps_read_plus_write']:.0f} GB/s (read + write)")
        x = y = None
        torch.cuda.empty_cache()
    results = []
    print(f"device: {torch.cuda.get_device_name() if cuda else 'cpu'}, torch {torch.__version__}, {args.dtype}")
    print(f"{'B':>3} {'L':>7} {'median ms':>10} {'min ms':>10} {'GB/s':>9}")
    for b in batches:
        for length in lens:
            row = {"impl": "sb_eager" + ("_repeat_kv" if args.repeat_kv else ""), "dtype": SHORT_DTYPE[args.dtype],
                   "batch": b, "heads": heads, "kv_heads": kv_heads, "head_dim": head_dim,
                   "cache_len": length, "new_tokens": 1, "repeat_kv": args.repeat_kv,
                   "kv_bytes": 2 * b * kv_heads * length * head_dim * esize}
            try:
                q = torch.randn(b, heads, 1, head_dim, device=device, dtype=dtype) * 0.1
                k = torch.randn(b, kv_heads, length, head_dim, device=device, dtype=dtype)
                v = torch.randn(b, kv_heads, length, head_dim, device=device, dtype=dtype)
                scale = 1 / math.sqrt(head_dim)
                for _ in range(3):  # warm-up
                    decode_step(q, k, v, scale, args.repeat_kv)
                times = []
                for _ in range(args.iters):
                    if cuda:
                        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                        start.record()
                        decode_step(q, k, v, scale, args.repeat_kv)
                        end.record()
                        torch.cuda.synchronize()
                        times.append(start.elapsed_time(end))
                    else:
                        import time
                        t0 = time.perf_counter()
                        decode_step(q, k, v, scale, args.repeat_kv)
                        times.append((time.perf_counter() - t0) * 1e3)
                med, best = statistics.median(times), min(times)
                row.update(median_ms=med, min_ms=best, times_ms=times,
                           gbps_median=row["kv_bytes"] / (med * 1e-3) / 1e9,
                           gbps_best=row["kv_bytes"] / (best * 1e-3) / 1e9, error=None)
                print(f"{b:>3} {length:>7} {med:>10.4f} {best:>10.4f} {row['gbps_median']:>9.1f}")
            except RuntimeError as e:  # out of memory at the largest shapes
                row.update(median_ms=None, min_ms=None, error=str(e).splitlines()[0])
                print(f"{b:>3} {length:>7}  error: {row['error']}")
                if cuda:
                    torch.cuda.empty_cache()
            finally:
                q = k = v = None
            results.append(row)
    if args.json:
        meta = {"bench": "pytorch eager stick-breaking decode step", "device": device,
                "gpu": torch.cuda.get_device_name() if cuda else None, "torch": torch.__version__,
                "dtype": args.dtype, "timing": "cuda events per step" if cuda else "perf_counter",
                "iters": args.iters, "copy": copy, "results": results}
        with open(args.json, "w") as f:
            json.dump(meta, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
