//! `sbattn bench prefill`: what an inference engine's prefill costs on each of the library's
//! ways to run it, side by side on the same inputs:
//!
//! - `one call`: the whole prompt of `--len` tokens per sequence in one forward call, keys and
//!   values in plain tensors (no cache);
//! - `chunks of C` (each of `--chunks`), on a contiguous cache and on a paged one (each of
//!   `--page-sizes`, pages of every sequence shuffled over the pool): the cache emptied, then for
//!   each chunk its keys and values appended ([`sbattn::Attention::append`]) and its queries run
//!   against the whole cache ([`sbattn::Forward::on_cache`]); one sample is the whole prompt;
//! - `--varlen L1,L2,..`: sequences of those lengths packed into one call
//!   ([`sbattn::Forward::with_varlen`]) next to the same sequences padded to the longest
//!   (`B = n`, `T = max`), what a framework without packed batches runs.
//!
//! Timing is [`crate::timer`]'s, summaries [`crate::stats`]'s. Correctness is the test suite's
//! (`tests/serving.rs`: chunked prefill equals one call bitwise-close, paged equals contiguous).

use sbattn::{Append, Forward, KvCache, KvCacheDesc, Shape, TensorRef};
use serde::Serialize;

use crate::args::PrefillArgs;
use crate::gpu::{ErrorSlot, context, dtype_name, try_alloc, wait};
use crate::report::{AdapterJson, Align, DocHeader, Table, fmt_ms, fmt_sig, save_json};
use crate::stats::{Summary, summarize};
use crate::timer::{Record, Sampling, Timer};
use crate::training::random_buffer;
use crate::{Outcome, Result};

/// One row of the table.
#[derive(Clone, Debug, Serialize)]
pub struct PrefillRow {
    /// What ran (`one call`, `chunks of 512, paged 16`, `varlen packed`, ...).
    pub what: String,
    /// Sequences and tokens of each (`varlen`: the lengths).
    pub problem: String,
    /// Seconds per whole prefill.
    pub time: Summary,
    /// Causal forward FLOP of the real (unpadded) problem over the median.
    pub tflops: f64,
}

#[derive(Debug, Serialize)]
struct PrefillDoc {
    #[serde(flatten)]
    head: DocHeader,
    dtype: &'static str,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    results: Vec<PrefillRow>,
}

const COLUMNS: &[(&str, Align)] = &[
    ("what", Align::Left),
    ("problem", Align::Left),
    ("median ms", Align::Right),
    ("min ms", Align::Right),
    ("spread", Align::Right),
    ("TFLOP/s", Align::Right),
    ("vs first", Align::Right),
];

/// `4 H (T^2 / 2) D` per sequence of `T` tokens.
fn flops(lengths: &[u32], heads: u32, d: u32) -> f64 {
    lengths.iter().map(|&t| 2.0 * heads as f64 * (t as f64).powi(2) * d as f64).sum()
}

/// A deterministic shuffle of `0..n` (a linear congruential walk, a bijection for odd `a`).
pub fn shuffled(n: u32, seed: u64) -> Vec<u32> {
    let a = (seed | 1).wrapping_mul(2_654_435_761) | 1;
    let mut v: Vec<u32> = (0..n).collect();
    v.sort_by_key(|&i| (i as u64).wrapping_mul(a).wrapping_add(seed) % (1 << 61));
    v
}

/// Runs `sbattn bench prefill`.
///
/// # Errors
/// No adapter, a timer the device lacks, a problem the library refuses, `--plot` (not drawn),
/// writing the JSON.
pub fn run(a: &PrefillArgs) -> Result<Outcome> {
    if a.bench.plot.is_some() {
        return Err("bench prefill draws no plot: use --json".into());
    }
    let sampling = a.bench.sampling();
    let dtype = a.dtype.dtype();
    let (b, len, h, hkv, d) = (a.sequences, a.len, a.heads, a.kv_heads, a.head_dim);
    let attn = context(a.bench.checks().first().copied().ok_or("no --checks")?)?;
    let errors = ErrorSlot::install(&attn);
    let timer = Timer::new(&attn, a.bench.timer)?;
    let mut doc = PrefillDoc {
        head: DocHeader { adapter: Some(AdapterJson::of(&attn)), timer: timer.describe(), ..DocHeader::new("sbattn bench prefill") },
        dtype: dtype_name(dtype),
        heads: h,
        kv_heads: hkv,
        head_dim: d,
        results: Vec::new(),
    };
    println!("adapter: {} ({:?}); timer: {}; {} H{h}/{hkv} D{d}\n", attn.capabilities().name, attn.capabilities().backend, doc.head.timer, doc.dtype);
    let table = Table::new(COLUMNS);
    println!("{}", table.header());
    let seed = a.bench.seed;
    let shape = |batch: u32, t: u32| Shape::new().with_batch(batch).with_seq_len(t).with_heads(h).with_kv_heads(hkv).with_head_dim(d);
    let err = |e: sbattn::Error| e.to_string();
    // `base`: the median of the group's first row (the one-call prefill; the packed call).
    let report = |doc: &mut PrefillDoc, what: String, problem: String, lengths: &[u32], s: Summary, base: f64| -> Result<()> {
        let row = PrefillRow { what, problem, time: s, tflops: flops(lengths, h, d) / s.median * 1e-12 };
        println!(
            "{}",
            table.row(&[
                row.what.clone(),
                row.problem.clone(),
                fmt_ms(s.median * 1e3),
                fmt_ms(s.min * 1e3),
                format!("{:.0}%", s.spread * 100.0),
                fmt_sig(row.tflops, 3),
                fmt_sig(s.median / base, 3),
            ])
        );
        doc.results.push(row);
        if let Some(path) = &a.bench.json {
            save_json(path, &*doc)?;
        }
        Ok(())
    };
    fn time(attn: &sbattn::Attention, errors: &ErrorSlot, timer: &Timer, sampling: &Sampling, rec: &mut Record<'_>) -> Result<Summary> {
        let t = errors.check(timer.measure(attn, sampling, rec))?;
        summarize(&t.samples).ok_or_else(|| "no finite samples".to_string())
    }
    let measure = |rec: &mut Record<'_>| time(&attn, &errors, &timer, &sampling, rec);

    if len > 0 {
        let problem = format!("B{b} T{len}");
        let lengths = vec![len; b as usize];
        let nq = (b * len * h * d) as u64;
        let nk = (b * len * hkv * d) as u64;
        let q = random_buffer(&attn, "q", nq, dtype, seed, 1)?;
        let k = random_buffer(&attn, "k", nk, dtype, seed, 2)?;
        let v = random_buffer(&attn, "v", nk, dtype, seed, 3)?;
        let o = try_alloc(attn.device(), || sbattn::zeroed(attn.device(), "o", nq * dtype.size()))?;
        let t = TensorRef::bthd;
        let one = Forward::new(shape(b, len), dtype, t(&q), t(&k), t(&v), t(&o));
        let s = measure(&mut |enc, _| attn.forward(enc, &one).map_err(err))?;
        let base = s.median;
        report(&mut doc, "one call".into(), problem.clone(), &lengths, s, base)?;
        for &chunk in &a.chunks {
            if chunk == 0 || len % chunk != 0 {
                println!("skipped chunks of {chunk}: not a divisor of --len {len}");
                continue;
            }
            // The chunk's own keys, values and queries (the same for every chunk: the cost does
            // not depend on the values).
            let cq = random_buffer(&attn, "chunk q", (b * chunk * h * d) as u64, dtype, seed, 4)?;
            let ck = random_buffer(&attn, "chunk k", (b * chunk * hkv * d) as u64, dtype, seed, 5)?;
            let cv = random_buffer(&attn, "chunk v", (b * chunk * hkv * d) as u64, dtype, seed, 6)?;
            let co = try_alloc(attn.device(), || sbattn::zeroed(attn.device(), "chunk o", (b * chunk * h * d) as u64 * dtype.size()))?;
            for &page in std::iter::once(&0).chain(&a.page_sizes) {
                let mut desc = KvCacheDesc::new(b, hkv, d, len, dtype);
                let per_seq = len.div_ceil(page.max(1));
                if page > 0 {
                    desc = desc.with_pages(page, b * per_seq);
                }
                let mut cache = try_alloc(attn.device(), || KvCache::new(&attn, desc))?.map_err(err)?;
                let mut enc = attn.device().create_command_encoder(&Default::default());
                if page > 0 {
                    let pool = shuffled(b * per_seq, seed);
                    for (i, pages) in pool.chunks(per_seq as usize).enumerate() {
                        cache.set_pages(&attn, &mut enc, i as u32, pages).map_err(err)?;
                    }
                }
                attn.queue().submit([enc.finish()]);
                wait(&attn)?;
                let zeros = vec![0u32; b as usize];
                let s = measure(&mut |enc, _| {
                    cache.set_lengths(&attn, enc, &zeros).map_err(err)?;
                    for _ in 0..len / chunk {
                        attn.append(enc, &mut cache, &Append::new(TensorRef::bthd(&ck), TensorRef::bthd(&cv), chunk)).map_err(err)?;
                        attn.forward(enc, &Forward::on_cache(shape(b, chunk), dtype, TensorRef::bthd(&cq), &cache, TensorRef::bthd(&co))).map_err(err)?;
                    }
                    Ok(())
                })?;
                let how = if page > 0 { format!("paged {page}") } else { "contiguous".into() };
                report(&mut doc, format!("chunks of {chunk}, {how} cache"), problem.clone(), &lengths, s, base)?;
                cache.k().buffer.destroy();
                cache.v().buffer.destroy();
            }
            for x in [&cq, &ck, &cv, &co] {
                x.destroy();
            }
        }
        for x in [&q, &k, &v, &o] {
            x.destroy();
        }
    }

    if !a.varlen.is_empty() {
        let lengths = &a.varlen;
        let total: u32 = lengths.iter().sum();
        let longest = *lengths.iter().max().unwrap_or(&1);
        let n = lengths.len() as u32;
        let list = lengths.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let mut cu = vec![0u32];
        for &l in lengths {
            cu.push(cu.last().copied().unwrap_or(0) + l);
        }
        let t = TensorRef::bthd;
        let (nq, nk) = ((total * h * d) as u64, (total * hkv * d) as u64);
        let q = random_buffer(&attn, "packed q", nq, dtype, seed, 7)?;
        let k = random_buffer(&attn, "packed k", nk, dtype, seed, 8)?;
        let v = random_buffer(&attn, "packed v", nk, dtype, seed, 9)?;
        let o = try_alloc(attn.device(), || sbattn::zeroed(attn.device(), "packed o", nq * dtype.size()))?;
        let packed = Forward::new(shape(n, total), dtype, t(&q), t(&k), t(&v), t(&o)).with_varlen(&cu);
        let s = measure(&mut |enc, _| attn.forward(enc, &packed).map_err(err))?;
        let base = s.median;
        report(&mut doc, "varlen packed".into(), list.clone(), lengths, s, base)?;
        let (pq, pk) = ((n * longest * h * d) as u64, (n * longest * hkv * d) as u64);
        let q2 = random_buffer(&attn, "padded q", pq, dtype, seed, 7)?;
        let k2 = random_buffer(&attn, "padded k", pk, dtype, seed, 8)?;
        let v2 = random_buffer(&attn, "padded v", pk, dtype, seed, 9)?;
        let o2 = try_alloc(attn.device(), || sbattn::zeroed(attn.device(), "padded o", pq * dtype.size()))?;
        let padded = Forward::new(shape(n, longest), dtype, t(&q2), t(&k2), t(&v2), t(&o2));
        let s = measure(&mut |enc, _| attn.forward(enc, &padded).map_err(err))?;
        report(&mut doc, format!("padded to B{n} T{longest}"), list, lengths, s, base)?;
        for x in [&q, &k, &v, &o, &q2, &k2, &v2, &o2] {
            x.destroy();
        }
    }
    if let Some(path) = &a.bench.json {
        save_json(path, &doc)?;
    }
    Ok(if doc.results.is_empty() { Outcome::Failed("nothing ran".into()) } else { Outcome::Passed })
}
