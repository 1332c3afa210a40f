//! A toy multi-turn chat on random weights: two sessions with prompts of different lengths are
//! prefilled into a KV cache in one packed call, a few tokens are decoded, then each user's
//! second message (again of its own length) is prefilled against everything the cache already
//! holds, and more tokens are decoded. Every attention call runs on the GPU through sbattn and
//! every row it produces is checked against the f64 reference over the whole conversation so
//! far; prints the time and tokens/s of each phase.
//!
//! The cache is paged (pages of 16 tokens handed out from a shared pool as the sessions grow,
//! as an engine's allocator would); `--contiguous` gives each session its own contiguous rows.
//!
//! `cargo run --release --example chat -- [--decode 8] [--f32] [--contiguous]`
//!
//! The model is one attention layer: token embedding x, projections q = x Wq, k = x Wk,
//! v = x Wv (on the CPU: this is about the attention calls), the next token the argmax of
//! (o Wo) . embedding. It produces no meaningful text; the point is the sequence of calls an
//! inference engine makes: `Attention::append` of the new tokens' keys and values, then
//! `Forward::on_cache` for their queries (`with_varlen` when the sessions bring different
//! numbers of tokens; one new token each runs on the decode kernels by itself).

use std::time::Instant;

use sbattn::reference::{self, Rng};
use sbattn::{
    round_to, Append, Attention, Dtype, Forward, HostInput, KvCache, KvCacheDesc, Layout, Mask, Shape, TensorRef,
};

const VOCAB: usize = 48;
const HEADS: u32 = 4;
const KV_HEADS: u32 = 2;
const HEAD_DIM: u32 = 32;
const EMBED: usize = 64;
const PAGE_SIZE: u32 = 16;

/// The toy model's weights, row-major `[in, out]`.
struct Model {
    embed: Vec<f32>, // [VOCAB, EMBED]
    wq: Vec<f32>,    // [EMBED, H D]
    wk: Vec<f32>,    // [EMBED, Hkv D]
    wv: Vec<f32>,    // [EMBED, Hkv D]
    wo: Vec<f32>,    // [H D, EMBED]
}

fn matvec(x: &[f32], w: &[f32], out: usize) -> Vec<f32> {
    let mut y = vec![0.0; out];
    for (i, &xi) in x.iter().enumerate() {
        for (yj, wj) in y.iter_mut().zip(&w[i * out..(i + 1) * out]) {
            *yj += xi * wj;
        }
    }
    y
}

impl Model {
    fn new(seed: u64) -> Model {
        let mut rng = Rng::new(seed);
        let (hd, kd) = ((HEADS * HEAD_DIM) as usize, (KV_HEADS * HEAD_DIM) as usize);
        let s = (EMBED as f32).powf(-0.5);
        Model {
            embed: rng.normals(VOCAB * EMBED, 1.0),
            wq: rng.normals(EMBED * hd, s),
            wk: rng.normals(EMBED * kd, s),
            wv: rng.normals(EMBED * kd, s),
            wo: rng.normals(hd * EMBED, (hd as f32).powf(-0.5)),
        }
    }

    /// q, k, v of one token, rounded to the storage type.
    fn qkv(&self, token: usize, dtype: Dtype) -> [Vec<f32>; 3] {
        let x = &self.embed[token * EMBED..(token + 1) * EMBED];
        let (hd, kd) = ((HEADS * HEAD_DIM) as usize, (KV_HEADS * HEAD_DIM) as usize);
        [matvec(x, &self.wq, hd), matvec(x, &self.wk, kd), matvec(x, &self.wv, kd)].map(|v| round_to(&v, dtype))
    }

    /// The next token after attention output `o` (`[H D]`).
    fn next(&self, o: &[f32]) -> usize {
        let h = matvec(o, &self.wo, EMBED);
        let score = |t: usize| self.embed[t * EMBED..(t + 1) * EMBED].iter().zip(&h).map(|(a, b)| a * b).sum::<f32>();
        (0..VOCAB).max_by(|&a, &b| score(a).total_cmp(&score(b))).unwrap()
    }
}

/// One session: its tokens and their q, k, v so far.
struct Session {
    tokens: Vec<usize>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

struct Chat<'a> {
    attn: &'a Attention,
    model: Model,
    dtype: Dtype,
    cache: KvCache,
    sessions: Vec<Session>,
    /// Each session's pages, in token order, and the pool's free pages (paged cache).
    pages: Vec<Vec<u32>>,
    free: Vec<u32>,
    worst: f64,
}

impl Chat<'_> {
    /// Feeds `new[b]` tokens to session `b` (any counts, 0 included): appends their keys and
    /// values, runs their queries against the whole cache, checks every output row against the
    /// reference, and returns each session's last output row (`None` for a session fed nothing).
    fn feed(&mut self, new: &[Vec<usize>]) -> Result<Vec<Option<Vec<f32>>>, Box<dyn std::error::Error>> {
        let (attn, dtype) = (self.attn, self.dtype);
        let (hd, kd) = ((HEADS * HEAD_DIM) as usize, (KV_HEADS * HEAD_DIM) as usize);
        let counts: Vec<u32> = new.iter().map(|n| n.len() as u32).collect();
        let most = *counts.iter().max().unwrap();
        let total: u32 = counts.iter().sum();
        // New tokens' q (packed) and k, v (padded to the longest, as Append takes them).
        let (mut q, mut k, mut v) = (Vec::new(), vec![0.0; counts.len() * most as usize * kd], vec![0.0; counts.len() * most as usize * kd]);
        for (b, toks) in new.iter().enumerate() {
            for (i, &t) in toks.iter().enumerate() {
                let [tq, tk, tv] = self.model.qkv(t, dtype);
                q.extend_from_slice(&tq);
                let at = (b * most as usize + i) * kd;
                k[at..at + kd].copy_from_slice(&tk);
                v[at..at + kd].copy_from_slice(&tv);
                let s = &mut self.sessions[b];
                s.tokens.push(t);
                s.q.extend(tq);
                s.k.extend(tk);
                s.v.extend(tv);
            }
        }
        let (qb, kb, vb) = (attn.upload("q", &q, dtype)?, attn.upload("k", &k, dtype)?, attn.upload("v", &v, dtype)?);
        let ob = attn.zeroed("o", total as u64 * hd as u64 * dtype.size())?;
        let mut enc = attn.device().create_command_encoder(&Default::default());
        // Pages for the new tokens, from the pool.
        if let Some(paging) = self.cache.desc().paging {
            for (b, &c) in counts.iter().enumerate() {
                let need = (self.cache.lengths()[b] + c).div_ceil(paging.page_size) as usize;
                if self.pages[b].len() < need {
                    while self.pages[b].len() < need {
                        self.pages[b].push(self.free.pop().ok_or("the page pool is used up")?);
                    }
                    self.cache.set_pages(attn, &mut enc, b as u32, &self.pages[b])?;
                }
            }
        }
        attn.append(&mut enc, &mut self.cache, &Append::new(TensorRef::bthd(&kb), TensorRef::bthd(&vb), most).with_counts(&counts))?;
        let batch = counts.len() as u32;
        let dense = counts.iter().all(|&c| c == most);
        let mut cu = vec![0u32];
        for &c in &counts {
            cu.push(cu.last().unwrap() + c);
        }
        let shape = |t| Shape::new().with_batch(batch).with_seq_len(t).with_heads(HEADS).with_kv_heads(KV_HEADS).with_head_dim(HEAD_DIM);
        let call = if dense {
            Forward::on_cache(shape(most), dtype, TensorRef::bthd(&qb), &self.cache, TensorRef::bthd(&ob))
        } else {
            Forward::on_cache(shape(total), dtype, TensorRef::bthd(&qb), &self.cache, TensorRef::bthd(&ob)).with_varlen(&cu)
        };
        attn.forward(&mut enc, &call.with_mask(Mask::Strict))?;
        let rb = sbattn::Readback::record(attn.device(), &mut enc, &ob, total as u64 * hd as u64 * dtype.size());
        attn.queue().submit([enc.finish()]);
        let o = sbattn::from_bytes(&rb.read_blocking(attn.device())?, dtype);
        // Check each new row against the reference over the whole session.
        let mut out = Vec::new();
        let mut at = 0usize;
        for (b, &c) in counts.iter().enumerate() {
            let s = &self.sessions[b];
            let len = s.tokens.len() as u32;
            if c == 0 {
                out.push(None);
                continue;
            }
            let sh = Shape::new().with_seq_len(len).with_heads(HEADS).with_kv_heads(KV_HEADS).with_head_dim(HEAD_DIM);
            let want = reference::forward(&HostInput::new(sh, &s.q, &s.k, &s.v).with_layout(Layout::Bthd).with_dtype(dtype))?;
            let first = (len - c) as usize * hd;
            let got = &o[at * hd..(at + c as usize) * hd];
            let err = got.iter().zip(&want.o[first..]).map(|(g, w)| (*g as f64 - w).abs()).fold(0.0, f64::max);
            self.worst = self.worst.max(err);
            let tol = if dtype == Dtype::F16 { 3e-3 } else { 2e-5 };
            if err > tol {
                return Err(format!("session {b}: max |o - reference| {err:e} over {tol:e}").into());
            }
            out.push(Some(got[(c as usize - 1) * hd..].to_vec()));
            at += c as usize;
        }
        Ok(out)
    }

    /// Decodes `steps` tokens in every session, each from its last output.
    fn decode(&mut self, mut last: Vec<Vec<f32>>, steps: u32) -> Result<Vec<Vec<f32>>, Box<dyn std::error::Error>> {
        for _ in 0..steps {
            let next: Vec<Vec<usize>> = last.iter().map(|o| vec![self.model.next(o)]).collect();
            last = self.feed(&next)?.into_iter().map(|o| o.expect("one token each")).collect();
        }
        Ok(last)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut steps = 8;
    let mut dtype = Dtype::F16;
    let mut paged = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--decode" => steps = it.next().ok_or("--decode needs a count")?.parse()?,
            "--f32" => dtype = Dtype::F32,
            "--contiguous" => paged = false,
            other => return Err(format!("unknown argument {other} (--decode N, --f32, --contiguous)").into()),
        }
    }
    let attn = Attention::with_default_adapter_blocking()?;
    if dtype == Dtype::F16 && attn.forward_variant(Dtype::F16, HEAD_DIM, sbattn::KernelPath::Auto).is_err() {
        dtype = Dtype::F32;
    }
    println!("adapter: {}, {dtype:?} storage (the first call of each kernel includes compiling it)", attn.capabilities().name);
    let mut rng = Rng::new(7);
    let mut words = |n: usize| (0..n).map(|_| (rng.next_u64() % VOCAB as u64) as usize).collect::<Vec<_>>();
    let (prompts, replies) = (vec![words(37), words(12)], vec![words(5), words(23)]);
    let capacity = 37 + 23 + 2 * steps + 8;
    let mut desc = KvCacheDesc::new(2, KV_HEADS, HEAD_DIM, capacity, dtype);
    // The pool's pages come out of the free list in a scrambled order.
    let mut free = Vec::new();
    if paged {
        desc = desc.with_pages(PAGE_SIZE, 2 * capacity.div_ceil(PAGE_SIZE));
        free = (0..desc.paging.map_or(0, |p| p.num_pages)).collect();
        let mut shuffle = Rng::new(11);
        for i in (1..free.len()).rev() {
            free.swap(i, (shuffle.next_u64() % (i as u64 + 1)) as usize);
        }
    }
    let cache = KvCache::new(&attn, desc)?;
    println!("cache: {}", if paged { format!("paged, {PAGE_SIZE} tokens per page, a pool of {} pages", free.len()) } else { "contiguous".into() });
    let sessions = (0..2).map(|_| Session { tokens: Vec::new(), q: Vec::new(), k: Vec::new(), v: Vec::new() }).collect();
    let mut chat = Chat { attn: &attn, model: Model::new(3), dtype, cache, sessions, pages: vec![Vec::new(); 2], free, worst: 0.0 };
    let phase = |name: &str, tokens: usize, t: Instant| {
        let s = t.elapsed().as_secs_f64();
        println!("{name:<28} {tokens:>4} tokens  {:>9.2} ms  {:>9.0} tokens/s (with the reference check)", s * 1e3, tokens as f64 / s);
    };
    let t = Instant::now();
    let last = chat.feed(&prompts)?;
    phase("prefill prompts (37, 12)", 49, t);
    let t = Instant::now();
    let last = chat.decode(last.into_iter().map(Option::unwrap).collect(), steps)?;
    phase("decode", 2 * steps as usize, t);
    let t = Instant::now();
    let second = chat.feed(&replies)?;
    phase("prefill second turn (5, 23)", 28, t);
    let last: Vec<Vec<f32>> = second.into_iter().zip(last).map(|(a, b)| a.unwrap_or(b)).collect();
    let t = Instant::now();
    chat.decode(last, steps)?;
    phase("decode", 2 * steps as usize, t);
    for (b, s) in chat.sessions.iter().enumerate() {
        println!("session {b}: {} tokens, last {:?}", s.tokens.len(), &s.tokens[s.tokens.len() - steps as usize..]);
    }
    println!("every row checked against the f64 reference: max |o - reference| {:.2e}", chat.worst);
    Ok(())
}
