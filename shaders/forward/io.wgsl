// Parameters and bindings shared by the forward kernels (portable.wgsl, coop.wgsl).

// Must match `ForwardParams` in src/ops/forward/params.rs (tests/shaders.rs checks the layout
// against naga's).
struct Params {
    h: u32,          // query heads
    group: u32,      // query heads per key/value head (H / Hkv)
    d: u32,          // head dim
    batch: u32,      // sequences
    q: Addr,         // elements, relative to each binding's start
    k: Addr,
    v: Addr,
    o: Addr,
    pg: Pages,       // paging of k and v (a paged KV cache; shift 0: not paged)
    rem_off: u32,    // rem_out element of the first row ([B, H, T], or [H, total] packed)
    lrem_off: u32,   // likewise in lrem_out
    bias_off: u32,   // [H, D] element offset into bias
    flags: u32,
    scale: f32,
    log_eps: f32,    // early exit once every row's carry is below this (with FLAG_EARLY_EXIT)
    rows_b: u32,     // rem_out / lrem_out rows between consecutive batch entries (0 packed)
    rows_h: u32,     // rem_out / lrem_out rows between consecutive heads
    n_work: u32,     // work items: (sequence, query tile), heaviest first
    work_x: u32,     // work items per grid row (grid x); item = wid.x + work_x * wid.z
    seq_off: u32,    // sched element of the first sequence record
    q_tokens: u32,   // tokens the q (and o) tensor holds per batch entry
    k_tokens: u32,   // tokens the k and v tensors hold per batch entry
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// The call's schedule (src/ops/forward/mod.rs writes it): work item n at sched[2n ..] =
// (sequence, query tile); sequence b at sched[seq_off + 4b ..] = (first query token, queries,
// first key token, keys); a paged cache's block table from sched[p.pg.table]. A sequence's
// queries are its last `queries` keys' tokens: query i sits at position keys - queries + i and
// sees the keys before it (and itself with FLAG_ATTEND_CURRENT). Written by the host, clamped
// here all the same, so that no index derived from it leaves its buffer.
struct Seq {
    b: u32,          // the sequence
    q0: u32,         // first query token in q and o
    tq: u32,         // queries
    k0: u32,         // first key token in k and v
    tk: u32,         // keys (the queries' own tokens included)
    p0: u32,         // position of the first query (tk - tq)
    row0: u32,       // rem_out / lrem_out row of query 0 of head 0
}

// A work item's record as read from `sched` by one invocation and handed to all through
// workgroupUniformLoad (the walk's trip counts derive from it, and they must be uniform: storage
// reads are not). 32 bytes: every workgroup variable of the tensor-core kernel is a multiple of
// 16 bytes long (forward/coop.wgsl says why).
struct Item {
    b: u32,
    qt: u32,
    q0: u32,
    tq: u32,
    k0: u32,
    tk: u32,
    _p0: u32,
    _p1: u32,
}
var<workgroup> item_s: Item;

// Work item and query head of workgroup `wid`, and whether it is the grid's padding. HI
// (prelude) 0: the grid is (items, H, z), item wid.x + work_x wid.z, head wid.y: each head's
// items heaviest first, the heads one after another. 1: the grid is (items x H, 1, z), the heads
// innermost, so that the heaviest items of all heads come first.
struct Work {
    wi: u32,
    h: u32,
    pad: bool,
}
fn work_of(wid: vec3<u32>) -> Work {
    let lin = wid.x + p.work_x * wid.z;
    if (HI == 1u) {
        return Work(lin / p.h, lin % p.h, lin / p.h >= p.n_work);
    }
    return Work(lin, wid.y, lin >= p.n_work);
}

// Work item wi's sequence record, clamped: every index derived from it stays in its buffer.
fn schedule(wi: u32, lidx: u32) -> Item {
    if (lidx == 0u) {
        let b = min(sched[2u * wi], p.batch - 1u);
        let at = p.seq_off + 4u * b;
        item_s = Item(b, sched[2u * wi + 1u], sched[at], sched[at + 1u], sched[at + 2u], sched[at + 3u], 0u, 0u);
    }
    return workgroupUniformLoad(&item_s);
}

fn seq_of(r: Item) -> Seq {
    let k0 = min(r.k0, p.k_tokens);
    let tk = min(r.tk, p.k_tokens - k0);
    let q0 = min(r.q0, p.q_tokens);
    let tq = min(min(r.tq, p.q_tokens - q0), tk);
    return Seq(r.b, q0, tq, k0, tk, tk - tq, r.b * p.rows_b + q0);
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<ST>;
@group(0) @binding(2) var<storage, read> k: array<ST>;
@group(0) @binding(3) var<storage, read> v: array<ST>;
@group(0) @binding(4) var<storage, read_write> o: array<ST>;
@group(0) @binding(5) var<storage, read_write> rem_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> lrem_out: array<f32>;
@group(0) @binding(7) var<storage, read> bias: array<ST>;
@group(0) @binding(8) var<storage, read> sched: array<u32>;

fn page_entry(i: u32) -> u32 {
    return sched[min(i, arrayLength(&sched) - 1u)];
}

// Offset of key j of the workgroup's sequence (`sq`, declared by each kernel) from its k or v
// base (`seq_base` from the sequence's first key, plus the head's offset).
fn key_off(j: u32) -> u32 {
    return token_off(p.k, p.pg, sq.b, j);
}
fn val_off(j: u32) -> u32 {
    return token_off(p.v, p.pg, sq.b, j);
}
