#!/usr/bin/env python3
"""PyTorch baselines for sbattn's benchmark, run on the GPU machine (CUDA, PyTorch, Triton).

Times, at the shapes of `sbattn bench forward --profile default` (B, H, T, D):
  * torch.nn.functional.scaled_dot_product_attention, causal, in bf16, f16 and f32
    (FlashAttention for bf16/f16; the softmax baseline of ALGORITHM.md's anchor table);
  * a plain eager PyTorch stick-breaking forward written from ALGORITHM.md (logits, softplus,
    reverse cumsum via flip/cumsum, masking, weights, matmul), with bf16/f16 inputs and f32
    scan math. It holds T x T f32 scores per head, so heads are processed in chunks that fit
    --eager-budget-gib (and the free memory); a shape whose single head does not fit is skipped
    and listed under "skipped".
  * flash-linear-attention's stick-breaking kernel (PyPI `fla-core` 0.6.0,
    `fla.ops.stickbreaking_attn.parallel_stickbreaking_attn`, q/k/v as [B, T, H, D]; carried to
    the GPU machine as a wheel by scripts/prepare-device.sh), forward and forward + backward,
    checked against the float64 definition first;
  * SDPA forward + backward (the training baseline);
  * the authors' Triton kernel, only if a `stickbreaking_attention` package happens to be
    importable (it is not installed on the GPU machine as of writing; the import failure is
    recorded).

Timing: the same method as `sbattn bench forward`. Each sample is a batch of calls between two CUDA
events (batch sized so a sample lasts about --sample-ms), rotating through two input sets;
per-call time is the sample over the batch; median and min over --iters samples. Where Triton
is importable, triton.testing.do_bench (which flushes L2 before every call) is also recorded.

Before timing, the eager implementation is checked against a float64 loop over keys (the
definition) on a small shape; the error is recorded in the JSON.

Usage: python3 scripts/torch_baselines.py OUT.json [--shapes 4x12x4096x128,...] [--quick]

Writes JSON (rewritten after every measurement, so a run cut short still leaves results) and
prints one line per measurement. Its `results` (impl, dtype, shape, median_ms) are the baselines
format that `sbattn bench forward --plot X.png --baselines FILE` draws (cli/README.md).
"""

import argparse
import datetime
import json
import math
import os
import sys
import time

DEFAULT_SHAPES = [
    (4, 12, 1024, 128),
    (4, 12, 2048, 128),
    (4, 12, 4096, 128),
    (4, 12, 8192, 128),
    (8, 32, 4096, 128),
    (1, 32, 4096, 64),
]
QUICK_SHAPES = [(1, 2, 256, 64), (1, 2, 512, 128)]


def parse_shape(text):
    """`BxHxTxD` to a (B, H, T, D) tuple of positive ints."""
    parts = text.split("x")
    if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"shape `{text}` is not BxHxTxD")
    return tuple(int(p) for p in parts)


def parse_shapes(text):
    return [parse_shape(s) for s in text.split(",") if s]


def forward_flops(b, h, t, d):
    """4 * B * H * (T^2 / 2) * D, the figure every table reports."""
    return 4.0 * b * h * (t * t / 2.0) * d


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="JSON output path")
    ap.add_argument("--shapes", type=parse_shapes, help="BxHxTxD list instead of the default sweep")
    ap.add_argument("--quick", action="store_true", help="two small shapes (a smoke test)")
    ap.add_argument("--iters", type=int, default=10, help="timed samples per measurement")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    ap.add_argument("--sample-ms", type=float, default=10.0, help="target length of one sample")
    ap.add_argument("--time-limit", type=float, default=5.0, help="seconds per measurement (fewer samples)")
    ap.add_argument("--sdpa-dtypes", default="bf16,f16,f32")
    ap.add_argument("--eager-dtypes", default="bf16,f16")
    ap.add_argument("--eager-budget-gib", type=float, default=32.0,
                    help="memory for one chunk of eager heads (also capped at 70%% of free memory)")
    ap.add_argument("--skip-eager", action="store_true")
    ap.add_argument("--skip-backward", action="store_true", help="no forward + backward timings")
    ap.add_argument("--no-do-bench", action="store_true", help="skip triton.testing.do_bench")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                    help="cpu: a smoke test of this script where there is no GPU (host clock, tiny shapes)")
    args = ap.parse_args(argv)
    shapes = args.shapes or (QUICK_SHAPES if args.quick else DEFAULT_SHAPES)
    for name in (args.sdpa_dtypes + "," + args.eager_dtypes).split(","):
        if name and name not in ("bf16", "f16", "f32"):
            ap.error(f"unknown dtype `{name}` (bf16, f16 or f32)")

    import torch
    import torch.nn.functional as F

    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("torch_baselines: CUDA is not available", file=sys.stderr)
        return 1
    dev = torch.device(args.device)

    def sync():
        if cuda:
            torch.cuda.synchronize()
    dtypes = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}
    try:
        import triton
        import triton.testing
        triton_version = triton.__version__
    except Exception as e:  # noqa: BLE001 - any import failure just disables do_bench
        triton, triton_version = None, f"unavailable: {e}"

    total_memory = torch.cuda.get_device_properties(dev).total_memory if cuda else 0
    doc = {
        "tool": "sbattn scripts/torch_baselines.py",
        "format": 1,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join([os.path.basename(sys.argv[0])] + (argv if argv is not None else sys.argv[1:])),
        "device": torch.cuda.get_device_name(dev) if cuda else "cpu (smoke test)",
        "memory_gib": round(total_memory / 2**30, 1),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": triton_version,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "flash_sdp_enabled": torch.backends.cuda.flash_sdp_enabled(),
        "timing": ("CUDA events" if cuda else "host clock") + " around batches of calls, two rotating input sets; "
                  "median and min of samples",
        "complete": False,
        "eager_check": None,
        "results": [],
        "skipped": [],
    }

    def save():
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        os.replace(tmp, args.out)

    # ---------------------------------------------------------------- implementations

    def sdpa(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    mask_cache = {}

    def hidden_mask(t):
        """True where key j is NOT visible from row i (visible: j < i, a token does not see itself)."""
        if t not in mask_cache:
            mask_cache[t] = ~torch.ones(t, t, dtype=torch.bool, device=dev).tril(-1)
        return mask_cache[t]

    def sb_heads(q, k, v, scale):
        """Stick-breaking forward of [n, T, D] heads: returns (o [n, T, D], rem [n, T]).

        Matmuls in the input dtype (tensor cores, f32 accumulation), everything between them in
        f32, as ALGORITHM.md's log-space form:
            z      = scale * q k^T
            nl     = -softplus(z), 0 where masked         (log(1 - beta))
            rc     = reverse inclusive cumsum of nl       (sum over l >= j)
            log A  = z - softplus(z) + (rc - nl)          (log beta + sum over j < l < i)
            o      = A v ;  rem = exp(rc[:, :, 0])
        """
        t = q.shape[-2]
        hidden = hidden_mask(t)
        z = torch.matmul(q, k.transpose(-1, -2)).float().mul_(scale)
        sp = F.softplus(z)
        nl = sp.neg().masked_fill_(hidden, 0.0)
        rc = nl.flip(-1).cumsum(-1).flip(-1)
        rem = rc[..., 0].exp()
        log_a = z.sub_(sp).add_(rc).sub_(nl)
        del sp, nl, rc
        a = log_a.exp_().masked_fill_(hidden, 0.0)
        return torch.matmul(a.to(v.dtype), v), rem

    def eager_chunk_heads(t):
        """Heads per chunk: ~7 live T x T f32 arrays per head at the peak."""
        free = torch.cuda.mem_get_info(dev)[0] if cuda else 8 * 2**30
        budget = min(args.eager_budget_gib * 2**30, 0.7 * free)
        return int(budget // (7 * 4 * t * t))

    def sb_eager(q, k, v, chunk):
        """[B, H, T, D] in, [B, H, T, D] out (the remainder is dropped, as the kernel's default)."""
        b, h, t, d = q.shape
        qf, kf, vf = (x.reshape(b * h, t, d) for x in (q, k, v))
        o = torch.empty_like(qf)
        scale = 1.0 / math.sqrt(d)
        for s in range(0, b * h, chunk):
            e = min(s + chunk, b * h)
            o[s:e] = sb_heads(qf[s:e], kf[s:e], vf[s:e], scale)[0]
        return o.view(b, h, t, d)

    def sb_definition(q, k, v):
        """float64 loop over keys, nearest first: ALGORITHM.md's reference. [n, T, D] in."""
        q, k, v = q.double(), k.double(), v.double()
        n, t, d = q.shape
        scale = 1.0 / math.sqrt(d)
        o = torch.zeros_like(q)
        rem = torch.ones(n, t, dtype=torch.float64, device=q.device)
        for i in range(t):
            acc = torch.zeros(n, dtype=torch.float64, device=q.device)
            for j in range(i - 1, -1, -1):
                z = scale * (q[:, i] * k[:, j]).sum(-1)
                o[:, i] += torch.exp(-F.softplus(-z) + acc)[:, None] * v[:, j]
                acc = acc - F.softplus(z)
            rem[:, i] = acc.exp()
        return o, rem

    # ---------------------------------------------------------------- correctness of the eager path
    gen = torch.Generator(device=dev).manual_seed(1234)
    cq, ck, cv = (torch.randn(2, 48, 32, device=dev, generator=gen) for _ in range(3))
    ref_o, ref_rem = sb_definition(cq, ck, cv)
    got_o, got_rem = sb_heads(cq, ck, cv, 1.0 / math.sqrt(32))
    doc["eager_check"] = {
        "shape": "n2 T48 D32, f32 inputs",
        "max_abs_err_o": (got_o.double() - ref_o).abs().max().item(),
        "max_abs_err_rem": (got_rem.double() - ref_rem).abs().max().item(),
    }
    print(f"eager check vs float64 definition: {doc['eager_check']}", flush=True)
    if not doc["eager_check"]["max_abs_err_o"] < 1e-3:
        print("torch_baselines: the eager implementation disagrees with the definition", file=sys.stderr)
        doc["skipped"].append({"impl": "sb_eager", "reason": "failed its correctness check"})
        args.skip_eager = True
    save()

    try:
        from fla.ops.stickbreaking_attn import parallel_stickbreaking_attn as fla_sb
        import fla
        doc["fla"] = getattr(fla, "__version__", "?")
    except Exception as e:  # noqa: BLE001
        fla_sb = None
        doc["skipped"].append({"impl": "sb_fla", "reason": f"not importable: {e}"})
    if fla_sb is not None and cuda:
        # FLA takes [B, T, H, D]; the check's [n, T, D] heads become B = n, H = 1.
        qq, kk, vv = (x[:, :, None, :].to(torch.bfloat16) for x in (cq, ck, cv))
        fo, frem = fla_sb(qq, kk, vv)
        ref_o, ref_rem = sb_definition(*(x[:, :, 0, :].float() for x in (qq, kk, vv)))
        doc["fla_check"] = {
            "shape": "n2 T48 D32, bf16 inputs",
            "max_abs_err_o": (fo[:, :, 0, :].double() - ref_o).abs().max().item(),
            "max_abs_err_rem": (frem[:, :, 0].double() - ref_rem).abs().max().item(),
        }
        print(f"fla check vs float64 definition: {doc['fla_check']}", flush=True)
        save()

    # ---------------------------------------------------------------- timing

    def time_events(fn, sets):
        """Median and min per-call ms of fn(*set) over batches between CUDA events."""
        for i in range(max(1, args.warmup)):
            fn(*sets[i % len(sets)])
        sync()
        t0 = time.perf_counter()
        fn(*sets[0])
        sync()
        est = time.perf_counter() - t0
        batch = max(1, min(100, math.ceil(args.sample_ms * 1e-3 / max(est, 1e-7))))
        iters = args.iters
        if est * batch * iters > args.time_limit:
            iters = max(min(3, args.iters), int(args.time_limit / (est * batch)))
        samples = []  # ms per sample: CUDA events (resolved after the last sync) or host clock
        for i in range(iters):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
            else:
                t0 = time.perf_counter()
            for c in range(batch):
                fn(*sets[(i * batch + c + 1) % len(sets)])
            if cuda:
                end.record()
                samples.append((start, end))
            else:
                samples.append((time.perf_counter() - t0) * 1e3)
        sync()
        if cuda:
            samples = [start.elapsed_time(end) for start, end in samples]
        per_call = sorted(ms / batch for ms in samples)
        n = len(per_call)
        med = per_call[n // 2] if n % 2 else 0.5 * (per_call[n // 2 - 1] + per_call[n // 2])
        return {"median_ms": med, "min_ms": per_call[0], "batch": batch, "iters": n,
                "samples_ms": per_call}

    def time_do_bench(fn, sets):
        if triton is None or args.no_do_bench or not cuda:
            return None
        try:
            med, mn = triton.testing.do_bench(lambda: fn(*sets[0]), warmup=25, rep=100, quantiles=[0.5, 0.0])
            return {"median_ms": med, "min_ms": mn}
        except Exception as e:  # noqa: BLE001 - record and go on
            return {"error": str(e)}

    def record(impl, dtype_name, shape, fn, sets, note=None):
        try:
            ev = time_events(fn, sets)
            db = time_do_bench(fn, sets)
        except torch.cuda.OutOfMemoryError as e:
            if cuda:
                torch.cuda.empty_cache()
            doc["skipped"].append({"impl": impl, "dtype": dtype_name, "shape": list(shape), "reason": f"out of memory: {e}"})
            print(f"skip {impl} {dtype_name} {shape}: out of memory", flush=True)
            save()
            return
        flops = forward_flops(*shape)
        entry = {"impl": impl, "dtype": dtype_name,
                 "shape": {"batch": shape[0], "heads": shape[1], "seq_len": shape[2], "head_dim": shape[3],
                           "name": "x".join(map(str, shape))},
                 "flops": flops, **ev, "tflops_median": flops / (ev["median_ms"] * 1e-3) * 1e-12,
                 "do_bench": db}
        if note:
            entry["note"] = note
        doc["results"].append(entry)
        dbs = "" if not db or "median_ms" not in db else f"  do_bench median {db['median_ms']:.4f} min {db['min_ms']:.4f}"
        print(f"{impl:9s} {dtype_name:4s} {entry['shape']['name']:>15s}  median {ev['median_ms']:.4f} ms  "
              f"min {ev['min_ms']:.4f} ms  {entry['tflops_median']:.2f} TFLOP/s  (batch {ev['batch']} x {ev['iters']}){dbs}",
              flush=True)
        save()

    try:
        from stickbreaking_attention.sb_attn import sb_attn  # the authors' kernel, if present
    except Exception as e:  # noqa: BLE001
        sb_attn = None
        doc["skipped"].append({"impl": "sb_triton", "reason": f"not importable: {e}"})

    for shape in shapes:
        b, h, t, d = shape
        for name in [x for x in args.sdpa_dtypes.split(",") if x]:
            dt = dtypes[name]
            sets = [tuple(torch.randn(b, h, t, d, device=dev, dtype=dt) for _ in range(3)) for _ in range(2)]
            record("sdpa", name, shape, sdpa, sets)
            if not args.skip_backward and name != "f32":
                grads = [tuple(x.detach().requires_grad_() for x in st) for st in sets]

                def sdpa_fwd_bwd(q, k, v):
                    o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                    o.backward(torch.ones_like(o))
                record("sdpa_fwd_bwd", name, shape, sdpa_fwd_bwd, grads)
                del grads
            del sets
        for name in [x for x in args.eager_dtypes.split(",") if x]:
            dt = dtypes[name]
            sets = [tuple(torch.randn(b, h, t, d, device=dev, dtype=dt) for _ in range(3)) for _ in range(2)]
            if fla_sb is not None and cuda:
                # FLA's layout: [B, T, H, D].
                fsets = [tuple(torch.randn(b, t, h, d, device=dev, dtype=dt) for _ in range(3)) for _ in range(2)]
                record("sb_fla", name, shape, lambda q, k, v: fla_sb(q, k, v)[0], fsets)
                if not args.skip_backward:
                    fgrads = [tuple(x.requires_grad_() for x in st) for st in fsets]

                    def fla_fwd_bwd(q, k, v):
                        o, _ = fla_sb(q, k, v)
                        o.backward(torch.ones_like(o))
                    record("sb_fla_fwd_bwd", name, shape, fla_fwd_bwd, fgrads)
                    del fgrads
                del fsets
            if sb_attn is not None:
                def triton_fn(q, k, v):
                    # Their layout is [B, H, T, D]; attend_current=False is this crate's default mask.
                    return sb_attn(q, k, v, inv_temp=1.0 / math.sqrt(d), attend_current=False)
                try:
                    record("sb_triton", name, shape, triton_fn, sets)
                except Exception as e:  # noqa: BLE001
                    doc["skipped"].append({"impl": "sb_triton", "dtype": name, "shape": list(shape), "reason": str(e)})
            if not args.skip_eager:
                chunk = min(eager_chunk_heads(t), b * h)
                if chunk < 1:
                    doc["skipped"].append({"impl": "sb_eager", "dtype": name, "shape": list(shape),
                                           "reason": "one head's T x T scores do not fit the memory budget"})
                    print(f"skip sb_eager {name} {shape}: one head does not fit", flush=True)
                else:
                    n_chunks = math.ceil(b * h / chunk)
                    record("sb_eager", name, shape, lambda q, k, v: sb_eager(q, k, v, chunk), sets,
                           note=f"{n_chunks} chunk(s) of {chunk} heads")
            del sets
            if cuda:
                torch.cuda.empty_cache()
    doc["complete"] = True
    save()
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
