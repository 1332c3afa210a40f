#!/usr/bin/env python3
"""Merges `sbattn bench forward --json` files and scripts/torch_baselines.py JSON into markdown tables for
BENCHMARKS.md: our times with ratios to the same-run PyTorch SDPA and to the Triton anchor
figures of ../shared/ALGORITHM.md.

Ratios are OUR time / THEIR time: under 1 means we are faster. f16 rows compare with SDPA bf16
(the anchor's dtype; f16 if bf16 is missing), f32 rows with SDPA f32. The Triton anchor is the
authors' bf16 kernel (measured 2026-11-28 on the H200), given for every dtype: the work is the same.

Usage:
  python3 scripts/report.py --ours a.json [b.json ...] [--torch t.json] [--out report.md]
  python3 scripts/report.py --self-test
Standard library only.
"""

import argparse
import json
import sys

# ALGORITHM.md, "Anchor figures" (H200, bf16, causal forward), ms; (B, H, T, D) keys.
ANCHORS = {
    (4, 12, 1024, 128): {"triton": 0.105, "sdpa_bf16": 0.044, "sdpa_f32": 0.385},
    (4, 12, 2048, 128): {"triton": 0.331, "sdpa_bf16": 0.119, "sdpa_f32": 1.292},
    (4, 12, 4096, 128): {"triton": 1.242, "sdpa_bf16": 0.399, "sdpa_f32": 4.740},
    (4, 12, 8192, 128): {"triton": 4.593, "sdpa_bf16": 1.515, "sdpa_f32": 18.07},
    (8, 32, 4096, 128): {"triton": 6.90, "sdpa_bf16": 2.09, "sdpa_f32": 24.2},
}

# Which baseline dtypes an entry of ours is compared with, in order of preference.
SDPA_FOR = {"f16": ["bf16", "f16"], "f32": ["f32"]}


def key(shape):
    return (shape["batch"], shape["heads"], shape["seq_len"], shape["head_dim"])


def name(k):
    return "x".join(str(x) for x in k)


def fmt_ms(x):
    if x is None:
        return "-"
    return f"{x:.4g}" if x < 10 else f"{x:.1f}"


def ratio(a, b):
    return "-" if a is None or b is None or b <= 0 else f"{a / b:.2f}"


def fmt_tflops(x):
    return f"{x:.2f}" if x >= 0.1 else f"{x:.2e}"


def path_label(r):
    label = r["path"] if r.get("path_requested") != "auto" else f"auto→{r['path']}"
    if r.get("coop_block_n"):  # a forced ForwardTuning::coop_block_n (sbattn bench forward --coop-block-n)
        label += f" bn{r['coop_block_n']}"
    if r.get("checks", "default") != "default":  # --checks full / unchecked
        label += f" ({r['checks']})"
    return label


def fmt_eps(e):
    return "0" if e == 0 else f"{e:g}"


def render(ours_docs, torch_doc):
    """The markdown report (a string)."""
    out = []
    for doc in ours_docs:
        a = doc.get("adapter", {})
        command = doc.get("command", "")
        command = command if command.startswith("sbattn") else f"bench {command}"  # the old examples/bench.rs
        driver = " ".join(x for x in (a.get("driver"), a.get("driver_info")) if x)
        out.append(f"- ours: `{command}`: {a.get('name')} ({a.get('backend')}, driver "
                   f"{driver}), timer {doc.get('timer')}, {doc.get('date')}"
                   + ("" if doc.get("complete", True) else " **(run cut short: partial results)**"))
    if torch_doc:
        out.append(f"- baselines: `{torch_doc.get('command', '')}`: {torch_doc.get('device')}, torch "
                   f"{torch_doc.get('torch')}, CUDA {torch_doc.get('cuda')}, Triton {torch_doc.get('triton')}, "
                   f"{torch_doc.get('date')}" + ("" if torch_doc.get("complete", True) else " **(partial)**"))
        chk = torch_doc.get("eager_check")
        if chk:
            out.append(f"- eager stick-breaking vs float64 definition ({chk.get('shape')}): max abs err o "
                       f"{chk.get('max_abs_err_o'):.2e}, rem {chk.get('max_abs_err_rem'):.2e}")
    out.append("")

    # Same-run baselines, by (shape, impl, dtype).
    base = {}
    for r in (torch_doc or {}).get("results", []):
        base.setdefault((key(r["shape"]), r["impl"], r["dtype"]), r)

    def sdpa_for(k, dtype):
        for d in SDPA_FOR.get(dtype, []):
            if (k, "sdpa", d) in base:
                return base[(k, "sdpa", d)], d
        return None, None

    rows = []
    order = {}
    for run, doc in enumerate(ours_docs, 1):
        for r in doc.get("results", []):
            order.setdefault(("shape", key(r["shape"])), len(order))
            order.setdefault(("path", r["path_requested"]), len(order))
            rows.append((run, r))
    inputs_order = {"random": 0, "long-range": 1}
    rows.sort(key=lambda x: (order[("shape", key(x[1]["shape"]))], x[1]["dtype"],
                             inputs_order.get(x[1]["inputs"], 9), x[1]["eps"], order[("path", x[1]["path_requested"])], x[0]))

    # Headline: the target shape, f16, every path, eps 0, random inputs.
    target = (4, 12, 4096, 128)
    heads = [(run, r) for run, r in rows if key(r["shape"]) == target and r["dtype"] == "f16" and r["eps"] == 0
             and r["inputs"] == "random"]
    if heads:
        tri = ANCHORS[target]["triton"]
        parts = [f"{path_label(r)} {fmt_ms(r['median_ms'])} ms = {ratio(r['median_ms'], tri)}x Triton (run {run})"
                 for run, r in heads]
        out.append(f"Headline, B4 H12 T4096 D128 f16, random inputs, eps 0 (Triton anchor {tri} ms): " + "; ".join(parts))
        out.append("")

    out.append("| shape BxHxTxD | dtype | path | eps | inputs | median ms | min ms | TFLOP/s | max err "
               "| SDPA same run ms | ours/SDPA | Triton anchor ms | ours/Triton | run |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run, r in rows:
        k = key(r["shape"])
        sd, sd_dtype = sdpa_for(k, r["dtype"])
        tri = ANCHORS.get(k, {}).get("triton")
        chk = r.get("check") or {}
        err = chk.get("max_abs_err")
        err_s = f"{err:.1e}" if isinstance(err, (int, float)) else ("FAILED" if chk.get("error") else "-")
        if chk.get("pass") is False:  # outside the tolerance (sbattn bench forward's checks say so)
            err_s = f"FAILED {err_s}"
        sd_s = "-" if sd is None else f"{fmt_ms(sd['median_ms'])} ({sd_dtype})"
        out.append(f"| {name(k)} | {r['dtype']} | {path_label(r)} | {fmt_eps(r['eps'])} | {r['inputs']} "
                   f"| {fmt_ms(r['median_ms'])} | {fmt_ms(r['min_ms'])} | {fmt_tflops(r['tflops_median'])} | {err_s} "
                   f"| {sd_s} | {ratio(r['median_ms'], sd and sd['median_ms'])} "
                   f"| {fmt_ms(tri)} | {ratio(r['median_ms'], tri)} | {run} |")
    if rows:
        out.append("")
        out.append("run: which --ours file (in order) the row comes from; a configuration measured in two runs "
                   "shows the run-to-run spread. Ratios are our median over theirs (under 1: we are faster).")

    if torch_doc and torch_doc.get("results"):
        out.append("")
        out.append("| shape BxHxTxD | baseline | dtype | median ms | min ms | TFLOP/s | do_bench median ms "
                   "| anchor ms | same run/anchor |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for r in torch_doc["results"]:
            k = key(r["shape"])
            anchor = None
            if r["impl"] == "sdpa":
                anchor = ANCHORS.get(k, {}).get(f"sdpa_{r['dtype']}")
            elif r["impl"] == "sb_triton" and r["dtype"] == "bf16":
                anchor = ANCHORS.get(k, {}).get("triton")
            db = r.get("do_bench") or {}
            impl = r["impl"] + (f" ({r['note']})" if r.get("note") else "")
            out.append(f"| {name(k)} | {impl} | {r['dtype']} | {fmt_ms(r['median_ms'])} | {fmt_ms(r['min_ms'])} "
                       f"| {fmt_tflops(r['tflops_median'])} | {fmt_ms(db.get('median_ms'))} | {fmt_ms(anchor)} "
                       f"| {ratio(r['median_ms'], anchor)} |")

    skipped = []
    for doc in ours_docs:
        for s in doc.get("skipped", []):
            if "what" in s:  # sbattn bench forward: {"what", "reason"}
                skipped.append(f"ours {s['what']}: {s.get('reason')}")
                continue
            shape = s.get("shape")
            skipped.append(f"ours {name(key(shape)) if shape else ''} {s.get('dtype') or ''} {s.get('path')}: {s.get('reason')}")
    for s in (torch_doc or {}).get("skipped", []):
        shape = s.get("shape")
        skipped.append(f"{s.get('impl')} {'x'.join(map(str, shape)) if shape else ''} {s.get('dtype', '')}: {s.get('reason')}")
    if skipped:
        out.append("")
        out.append("Skipped:")
        out.extend(f"- {' '.join(s.split())}" for s in skipped)
    return "\n".join(out) + "\n"


def self_test():
    """Renders synthetic documents (no measurement) and checks the ratios."""
    shape = {"batch": 4, "heads": 12, "seq_len": 4096, "head_dim": 128, "name": "4x12x4096x128"}
    ours = {"command": "bench --self-test", "adapter": {"name": "Synthetic"}, "timer": "timestamp", "complete": False,
            "results": [
                {"shape": shape, "dtype": "f16", "path": "subgroup", "path_requested": "auto", "eps": 0.0,
                 "inputs": "random", "median_ms": 2.484, "min_ms": 2.4, "tflops_median": 83.0,
                 "check": {"max_abs_err": 1.5e-3}},
                {"shape": shape, "dtype": "f32", "path": "shared", "path_requested": "shared", "eps": 1e-3,
                 "inputs": "long-range", "median_ms": 9.48, "min_ms": 9.0, "tflops_median": 21.7,
                 "check": {"error": "x"}},
            ],
            "skipped": [{"shape": None, "dtype": "f32", "path": "coop", "reason": "no f32 cooperative matrices"},
                        {"what": "f32 coop D128", "reason": "needs f16 data"}]}
    torch_doc = {"command": "torch_baselines.py", "device": "Synthetic", "results": [
        {"impl": "sdpa", "dtype": "bf16", "shape": shape, "median_ms": 0.414, "min_ms": 0.4, "tflops_median": 500.0,
         "do_bench": {"median_ms": 0.41, "min_ms": 0.40}},
        {"impl": "sdpa", "dtype": "f32", "shape": shape, "median_ms": 4.74, "min_ms": 4.7, "tflops_median": 43.0,
         "do_bench": None},
        {"impl": "sb_eager", "dtype": "bf16", "shape": shape, "median_ms": 30.0, "min_ms": 29.0, "tflops_median": 6.9,
         "note": "1 chunk(s) of 48 heads"},
    ], "skipped": [{"impl": "sb_triton", "reason": "not importable"}]}
    text = render([ours], torch_doc)
    lines = text.splitlines()
    f16 = next(x for x in lines if x.startswith("| 4x12x4096x128 | f16 |"))
    f32 = next(x for x in lines if x.startswith("| 4x12x4096x128 | f32 |"))
    assert "auto→subgroup" in f16 and "| 6.00 |" in f16 and "| 2.00 |" in f16, f16  # 2.484/0.414, 2.484/1.242
    assert "FAILED" in f32 and "| 2.00 |" in f32 and "| 7.63 |" in f32, f32  # 9.48/4.74, 9.48/1.242
    assert "partial results" in text and "Skipped:" in text and "| 1.04 |" in text  # 0.414/0.399
    assert "ours f32 coop D128: needs f16 data" in text
    print(text)
    print("report.py self-test: 1 passed, 0 failed")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ours", nargs="*", default=[], help="sbattn bench forward --json files")
    ap.add_argument("--torch", help="scripts/torch_baselines.py JSON")
    ap.add_argument("--out", help="also write the markdown here")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args(argv)
    if args.self_test:
        return self_test()
    docs, torch_doc = [], None
    for path in args.ours:
        try:
            with open(path) as f:
                docs.append(json.load(f))
        except (OSError, ValueError) as e:
            print(f"report.py: skipping {path}: {e}", file=sys.stderr)
    if args.torch:
        try:
            with open(args.torch) as f:
                torch_doc = json.load(f)
        except (OSError, ValueError) as e:
            print(f"report.py: no baselines ({args.torch}: {e})", file=sys.stderr)
    if not docs and torch_doc is None:
        print("report.py: nothing to report", file=sys.stderr)
        return 1
    text = render(docs, torch_doc)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
