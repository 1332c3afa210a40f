// Stick-breaking attention, decode: 1..=16 new queries per sequence against a KV cache, the keys
// split into chunks processed in parallel (split-K). This kernel writes, per (query row, chunk),
// a partial output and the chunk's sum of log(1 - beta); decode_merge.wgsl combines the chunks
// nearest-first (docs/ALGORITHM.md, "Decode and split-K").
//
// src/kernel/source.rs assembles the generated prelude, common/addr.wgsl, this file,
// common/stick.wgsl (`log1p_small`), one load file (load_vec8.wgsl, load_vec4.wgsl or
// load_scalar.wgsl: the cache bindings, the type `RAW` of one load, `ld` and `widen`) and one
// reduction file (reduce_subgroup.wgsl or reduce_shared.wgsl: the entry point `main`, which
// calls `decode`, and `quad_step`, one key's stick step for four rows from each lane's partial
// logits). The prelude declares (src/ops/decode/plan.rs chooses them):
//   alias ST = f32 | f16;  storage type of q and of the cache (math is always f32)
//   const WG: u32;  invocations per workgroup
//   const MERGE_VEC4: u32;  vec4s of workgroup memory the slot merge may use
//   const P: u32;  lanes per key (power of two, 8..=64)
//   const M: u32;  vec4s of a key's head dim per lane: the padded head dim is 4 * M * P (1..=8)
//   const R: u32;  query rows per workgroup (1, 2, 4, 8 or 16), R * M <= 16
//   const W: u32;  vec4s per load (1, or 2: eight f16 in one 16-byte load); M is a multiple of W
// and the pipeline sets U below.
//
// Workgroup (chunk c = wid.x, kv head and row block = wid.y, sequence b = wid.z), WG threads,
// slot = key slot * P + lane g. The query rows of a block are (head of the kv head's group,
// new token) pairs, so K and V are read once for the whole group. Each of the NK = WG / P key
// slots walks its own contiguous part of the chunk from right to left, U keys per step (all U
// keys' loads are issued before the first is used, so U rows per lane are in flight), with its
// state in named registers (never an indexed local array: naga clamps its indices and keeps it out of registers; docs/PERFORMANCE.md):
//   k0..k7, v0..v7 (Raw)  the step's keys and values as loaded: NU = M / W loads per lane
//   Acc.a0 .. a15         accumulators: a[r*M + x] holds row r, lane column x
//   Acc.c0 .. c3          log of the stick left since the slot's right edge, rows 4q .. 4q+3
//   Qt.q0 .. q15          the query tile: q[r*M + x] row r, lane column x (read once)
// Lane column x of lane g is head-dim vec4 col(x, g): the W vec4s of one load are adjacent and
// the P lanes' loads of a row sit side by side, so a row's loads are contiguous across lanes.
// Then the slots merge nearest-first (the merge used across chunks) and the workgroup writes its
// partial output and its sum of log(1 - beta) per row.

// Keys each key slot loads per step before using any (1, 2, 4 or 8): a pipeline constant, so
// one module serves every value (src/ops/decode passes it when it builds the pipeline).
override U: u32 = 1u;

const NK: u32 = WG / P;                     // key slots
const NQ: u32 = (R + 3u) / 4u;              // row quads (vec4s of per-row values)
const NA: u32 = R * M;                      // accumulators in use
const NU: u32 = M / W;                      // loads per lane and key row
const DP4: u32 = M * P;                     // vec4s of a padded head-dim row
const RMP: u32 = R * DP4;                   // vec4s of all rows of the block
const NB: u32 = clamp(MERGE_VEC4 / RMP, 1u, NK);  // slot outputs summed side by side in the merge
const NONE: u32 = 0xffffffffu;              // a key index no row sees

// Must match `DecodeParams` in src/ops/decode/params.rs (tests/shaders.rs checks the layout).
struct Params {
    h: u32,          // query heads
    group: u32,      // query heads per kv head
    n: u32,          // new tokens (queries) per sequence
    d: u32,          // head dim
    rows: u32,       // query rows per kv head: group * n
    row_blocks: u32, // workgroups per kv head along y: ceil(rows / R)
    splits: u32,     // chunks per sequence (grid x)
    flags: u32,
    q: Addr,         // elements: offset; batch, token, head strides
    k: Addr,         // in loads of the load file (8, 4 or 1 elements)
    v: Addr,
    scale: f32,
    log_eps: f32,    // early exit below exp(log_eps) of stick left (with FLAG_EARLY_EXIT)
    capacity: u32,   // tokens the cache holds per sequence (lengths are clamped to it)
    later: u32,      // tokens of the sequences after this cache's last (a partial over older keys)
    pg: Pages,       // paging of the cache (k and v addresses in loads; shift 0: contiguous)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<ST>;
// bindings 2 (k cache) and 3 (v cache): the load file
@group(0) @binding(4) var<storage, read> lengths: array<u32>;            // [B] tokens held, then
                                                                         // a paged cache's table
@group(0) @binding(5) var<storage, read_write> o_part: array<vec4<f32>>; // [B, H, n, splits, DP4]
@group(0) @binding(6) var<storage, read_write> s_part: array<f32>;       // [B, H, n, splits]

fn page_entry(i: u32) -> u32 {
    return lengths[min(i, arrayLength(&lengths) - 1u)];
}

// The query tile (R rows of DP4 vec4s, pre-scaled, [R][M][P]: lane g's column x of row r at
// r * DP4 + x * P + g) during the walk; afterwards NB slot outputs in the same order.
var<workgroup> rows_s: array<vec4<f32>, NB * RMP>;
var<workgroup> carry_s: array<vec4<f32>, NK * NQ>;   // [NK][NQ] each slot's final carry

// One lane's loads of a key or value row: loads i*P + g of the row, i < NU.
struct Raw {
    u0: RAW, u1: RAW, u2: RAW, u3: RAW,
    u4: RAW, u5: RAW, u6: RAW, u7: RAW,
}

// A key slot's running state.
struct Acc {
    a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>,
    a4: vec4<f32>, a5: vec4<f32>, a6: vec4<f32>, a7: vec4<f32>,
    a8: vec4<f32>, a9: vec4<f32>, a10: vec4<f32>, a11: vec4<f32>,
    a12: vec4<f32>, a13: vec4<f32>, a14: vec4<f32>, a15: vec4<f32>,
    c0: vec4<f32>, c1: vec4<f32>, c2: vec4<f32>, c3: vec4<f32>,
}

// Keys each row quad sees: rows 4q .. 4q+3 see keys j < vis.q[q] (componentwise).
struct Vis {
    q0: vec4<u32>, q1: vec4<u32>, q2: vec4<u32>, q3: vec4<u32>,
}

// Weights of one key for four rows, and their log(1 - beta) (0 where not visible).
struct Step {
    w: vec4<f32>,
    nl: vec4<f32>,
}

fn ld_q(base: u32, d: u32) -> f32 {
    if (d < p.d) { return f32(q[base + d]); }
    return 0.0;
}

// Head-dim vec4 of lane g's column x.
fn col(x: u32, g: u32) -> u32 {
    return (x / W) * (W * P) + W * g + x % W;
}

// Component e of x. Every caller passes constants once inlined, so this folds away.
fn comp(x: vec4<f32>, e: u32) -> f32 {
    return select(select(select(x.x, x.y, e == 1u), x.z, e == 2u), x.w, e == 3u);
}

// Value of row r among rows held four per vec4 in x0..x3.
fn row_of(r: u32, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>) -> f32 {
    let qd = r / 4u;
    let x = select(select(select(x0, x1, qd == 1u), x2, qd == 2u), x3, qd == 3u);
    return comp(x, r % 4u);
}

// Load i of a Raw (i a constant once inlined, so this folds away).
fn unit_of(i: u32, l: Raw) -> RAW {
    let lo = select(select(select(l.u0, l.u1, i == 1u), l.u2, i == 2u), l.u3, i == 3u);
    let hi = select(select(select(l.u4, l.u5, i == 5u), l.u6, i == 6u), l.u7, i == 7u);
    return select(lo, hi, i >= 4u);
}

// Lane column x of a loaded row, in f32.
fn lane_col(x: u32, l: Raw) -> vec4<f32> {
    return widen(unit_of(x / W, l), x % W);
}

// Lane g's loads of the value (v) or key row that starts at load `row`.
fn ld_row(v: bool, row: u32, g: u32) -> Raw {
    var l = Raw();
    l.u0 = ld(v, row, g);
    if (NU > 1u) { l.u1 = ld(v, row, P + g); }
    if (NU > 2u) { l.u2 = ld(v, row, 2u * P + g); }
    if (NU > 3u) { l.u3 = ld(v, row, 3u * P + g); }
    if (NU > 4u) { l.u4 = ld(v, row, 4u * P + g); }
    if (NU > 5u) { l.u5 = ld(v, row, 5u * P + g); }
    if (NU > 6u) { l.u6 = ld(v, row, 6u * P + g); }
    if (NU > 7u) { l.u7 = ld(v, row, 7u * P + g); }
    return l;
}

// This lane's query values, in the accumulators' order: q[r*M + x] holds row r's lane column
// x (the query tile of rows_s, read once into registers: the walk then reads no workgroup
// memory, and no index of it needs clamping).
struct Qt {
    q0: vec4<f32>, q1: vec4<f32>, q2: vec4<f32>, q3: vec4<f32>,
    q4: vec4<f32>, q5: vec4<f32>, q6: vec4<f32>, q7: vec4<f32>,
    q8: vec4<f32>, q9: vec4<f32>, q10: vec4<f32>, q11: vec4<f32>,
    q12: vec4<f32>, q13: vec4<f32>, q14: vec4<f32>, q15: vec4<f32>,
}

// Entry a of rows_s's query tile for lane g (0 past the rows in use).
fn tile_q(a: u32, g: u32) -> vec4<f32> {
    if (a >= NA) { return vec4<f32>(0.0); }
    return rows_s[(a / M) * DP4 + (a % M) * P + g];
}

fn load_qt(g: u32) -> Qt {
    return Qt(tile_q(0u, g), tile_q(1u, g), tile_q(2u, g), tile_q(3u, g),
              tile_q(4u, g), tile_q(5u, g), tile_q(6u, g), tile_q(7u, g),
              tile_q(8u, g), tile_q(9u, g), tile_q(10u, g), tile_q(11u, g),
              tile_q(12u, g), tile_q(13u, g), tile_q(14u, g), tile_q(15u, g));
}

// Entry a of the lane's query values (a a constant once inlined, so this folds away).
fn q_at(t: Qt, a: u32) -> vec4<f32> {
    let lo = select(select(select(t.q0, t.q1, a == 1u), t.q2, a == 2u), t.q3, a == 3u);
    let m1 = select(select(select(t.q4, t.q5, a == 5u), t.q6, a == 6u), t.q7, a == 7u);
    let m2 = select(select(select(t.q8, t.q9, a == 9u), t.q10, a == 10u), t.q11, a == 11u);
    let hi = select(select(select(t.q12, t.q13, a == 13u), t.q14, a == 14u), t.q15, a == 15u);
    return select(select(select(lo, m1, a >= 4u), m2, a >= 8u), hi, a >= 12u);
}

// This lane's part of the dot product of query row r with the key (0 for rows >= R).
fn qk_row(r: u32, qt: Qt, k: Raw) -> f32 {
    if (r >= R) { return 0.0; }
    let a = r * M;
    var s = dot(q_at(qt, a), lane_col(0u, k));
    if (M > 1u) { s += dot(q_at(qt, a + 1u), lane_col(1u, k)); }
    if (M > 2u) { s += dot(q_at(qt, a + 2u), lane_col(2u, k)); }
    if (M > 3u) { s += dot(q_at(qt, a + 3u), lane_col(3u, k)); }
    if (M > 4u) { s += dot(q_at(qt, a + 4u), lane_col(4u, k)); }
    if (M > 5u) { s += dot(q_at(qt, a + 5u), lane_col(5u, k)); }
    if (M > 6u) { s += dot(q_at(qt, a + 6u), lane_col(6u, k)); }
    if (M > 7u) { s += dot(q_at(qt, a + 7u), lane_col(7u, k)); }
    return s;
}

// This lane's parts of the logits of rows 4qd .. 4qd+3 against the key (the reduction file's
// `quad_step` sums them over the key's P lanes).
fn partials(qd: u32, qt: Qt, k: Raw) -> vec4<f32> {
    let r = 4u * qd;
    return vec4<f32>(qk_row(r, qt, k), qk_row(r + 1u, qt, k), qk_row(r + 2u, qt, k), qk_row(r + 3u, qt, k));
}

// One key for four rows of logits z: weight exp(log(beta) + carry) and log(1 - beta) where
// visible, 0 elsewhere.
fn stick_step(z: vec4<f32>, carry: vec4<f32>, vis: vec4<bool>) -> Step {
    let l = log1p_small(exp(-abs(z)));
    let nl = select(vec4<f32>(0.0), -(max(z, vec4<f32>(0.0)) + l), vis);
    let w = select(vec4<f32>(0.0), exp(min(z, vec4<f32>(0.0)) - l + carry), vis);
    return Step(w, nl);
}

// Key j (NONE: past the slot's end, changes nothing) for every row of the block: its weights,
// the carries after it, and the accumulators a[r*M + x] += w[r] * v[x].
fn key(st: ptr<function, Acc>, qt: Qt, kk: Raw, vv: Raw, j: u32, vis: Vis, slot: u32, g: u32) {
    let jv = vec4<u32>(j);
    let s0 = quad_step(partials(0u, qt, kk), (*st).c0, jv < vis.q0, slot, g);
    (*st).c0 += s0.nl;
    let w0 = s0.w;
    var w1 = vec4<f32>(0.0); var w2 = vec4<f32>(0.0); var w3 = vec4<f32>(0.0);
    if (NQ > 1u) {
        let s = quad_step(partials(1u, qt, kk), (*st).c1, jv < vis.q1, slot, g);
        (*st).c1 += s.nl; w1 = s.w;
    }
    if (NQ > 2u) {
        let s = quad_step(partials(2u, qt, kk), (*st).c2, jv < vis.q2, slot, g);
        (*st).c2 += s.nl; w2 = s.w;
    }
    if (NQ > 3u) {
        let s = quad_step(partials(3u, qt, kk), (*st).c3, jv < vis.q3, slot, g);
        (*st).c3 += s.nl; w3 = s.w;
    }
    if (NA > 0u) { (*st).a0 += row_of(0u / M, w0, w1, w2, w3) * lane_col(0u % M, vv); }
    if (NA > 1u) { (*st).a1 += row_of(1u / M, w0, w1, w2, w3) * lane_col(1u % M, vv); }
    if (NA > 2u) { (*st).a2 += row_of(2u / M, w0, w1, w2, w3) * lane_col(2u % M, vv); }
    if (NA > 3u) { (*st).a3 += row_of(3u / M, w0, w1, w2, w3) * lane_col(3u % M, vv); }
    if (NA > 4u) { (*st).a4 += row_of(4u / M, w0, w1, w2, w3) * lane_col(4u % M, vv); }
    if (NA > 5u) { (*st).a5 += row_of(5u / M, w0, w1, w2, w3) * lane_col(5u % M, vv); }
    if (NA > 6u) { (*st).a6 += row_of(6u / M, w0, w1, w2, w3) * lane_col(6u % M, vv); }
    if (NA > 7u) { (*st).a7 += row_of(7u / M, w0, w1, w2, w3) * lane_col(7u % M, vv); }
    if (NA > 8u) { (*st).a8 += row_of(8u / M, w0, w1, w2, w3) * lane_col(8u % M, vv); }
    if (NA > 9u) { (*st).a9 += row_of(9u / M, w0, w1, w2, w3) * lane_col(9u % M, vv); }
    if (NA > 10u) { (*st).a10 += row_of(10u / M, w0, w1, w2, w3) * lane_col(10u % M, vv); }
    if (NA > 11u) { (*st).a11 += row_of(11u / M, w0, w1, w2, w3) * lane_col(11u % M, vv); }
    if (NA > 12u) { (*st).a12 += row_of(12u / M, w0, w1, w2, w3) * lane_col(12u % M, vv); }
    if (NA > 13u) { (*st).a13 += row_of(13u / M, w0, w1, w2, w3) * lane_col(13u % M, vv); }
    if (NA > 14u) { (*st).a14 += row_of(14u / M, w0, w1, w2, w3) * lane_col(14u % M, vv); }
    if (NA > 15u) { (*st).a15 += row_of(15u / M, w0, w1, w2, w3) * lane_col(15u % M, vv); }
}

// Keys row r of block rb sees: the queries are the last n tokens of a sequence whose first
// `len` tokens this cache holds (all of them unless `p.later` more follow), query 0 at cache
// position `first`, so token i of the n sees keys j < first + i (+ 1 with the current token),
// at most the len held. 0 for padding rows.
fn visible(r: u32, rb: u32, first: u32, len: u32, ac: u32) -> u32 {
    let rr = rb * R + r;
    if (r >= R || rr >= p.rows) { return 0u; }
    return min(first + rr % p.n + ac, len);
}

fn visible_quad(qd: u32, rb: u32, first: u32, len: u32, ac: u32) -> vec4<u32> {
    let r = 4u * qd;
    return vec4<u32>(visible(r, rb, first, len, ac), visible(r + 1u, rb, first, len, ac),
                     visible(r + 2u, rb, first, len, ac), visible(r + 3u, rb, first, len, ac));
}

// Rows of quad qd that exist (not padding of the last block).
fn real_quad(qd: u32, rb: u32) -> vec4<bool> {
    let rr = vec4<u32>(rb * R + 4u * qd) + vec4<u32>(0u, 1u, 2u, 3u);
    let r = vec4<u32>(4u * qd) + vec4<u32>(0u, 1u, 2u, 3u);
    return (rr < vec4<u32>(p.rows)) & (r < vec4<u32>(R));
}

// [B, H, n] index of row rr of kv head hk.
fn row_index(b: u32, hk: u32, rr: u32) -> u32 {
    return (b * p.h + hk * p.group + rr / p.n) * p.n + rr % p.n;
}

// Stores or adds one accumulator into the merge buffer.
fn put(i: u32, x: vec4<f32>, first: bool) {
    if (first) { rows_s[i] = x; } else { rows_s[i] += x; }
}

fn decode(wid: vec3<u32>, lidx: u32, slot: u32) {
    let c = wid.x;
    let hk = wid.y / p.row_blocks;
    let rb = wid.y % p.row_blocks;
    let b = wid.z;
    let ks = slot / P;
    let g = slot % P;
    let ac = p.flags & FLAG_ATTEND_CURRENT;

    // The host guarantees n <= len + later and len <= capacity; the clamps keep every index in
    // range (and nothing below 0) even if the lengths buffer were written behind its back.
    let len = min(lengths[b], p.capacity);
    let first = max(len + p.later, p.n) - p.n;  // cache position of query 0
    let kv_end = min(first + p.n - 1u + ac, len); // keys the last query sees
    let per = (kv_end + p.splits - 1u) / p.splits;
    let c0 = min(c * per, kv_end);              // this chunk: keys c0 .. c1 - 1
    let c1 = min(c0 + per, kv_end);
    let sl = (c1 - c0 + NK - 1u) / NK;          // keys of every slot (uniform: barriers inside)
    let s0 = min(c0 + ks * sl, c1);             // this slot: keys s0 .. s1 - 1
    let s1 = min(s0 + sl, c1);

    // Query tile, pre-scaled, in lane order: rows_s[r * DP4 + x * P + g] = scale * q[row r]
    // [4 col(x, g) .. + 4].
    for (var i = lidx; i < RMP; i += WG) {
        let rr = rb * R + i / DP4;
        var qv = vec4<f32>(0.0);
        if (rr < p.rows) {
            let base = p.q.off + b * p.q.sb + (rr % p.n) * p.q.st + (hk * p.group + rr / p.n) * p.q.sh;
            let d = 4u * col((i % DP4) / P, i % P);
            qv = p.scale * vec4<f32>(ld_q(base, d), ld_q(base, d + 1u), ld_q(base, d + 2u), ld_q(base, d + 3u));
        }
        rows_s[i] = qv;
    }
    workgroupBarrier();

    let vis = Vis(visible_quad(0u, rb, first, len, ac), visible_quad(1u, rb, first, len, ac),
                  visible_quad(2u, rb, first, len, ac), visible_quad(3u, rb, first, len, ac));
    let kb = seq_base(p.k, p.pg, b, 0u) + hk * p.k.sh;
    let vb = seq_base(p.v, p.pg, b, 0u) + hk * p.v.sh;
    let early = (p.flags & FLAG_EARLY_EXIT) != 0u;
    let le = vec4<f32>(p.log_eps);

    let qt = load_qt(g);
    var st = Acc();
    var done = false;                           // every real row's stick is below eps

    for (var step = 0u; step < sl; step += U) {
        let left = (s1 - s0) - min(step, s1 - s0);   // keys of the slot not walked yet
        let go = left > 0u && !done;
        let j0 = s1 - 1u - step;                // the step's nearest key; then j0 - 1, ...
        // Every load of the step before any use. A key past the slot's left end re-loads the
        // last real one (its index is NONE below, so it changes nothing).
        var k0 = Raw(); var v0 = Raw(); var k1 = Raw(); var v1 = Raw();
        var k2 = Raw(); var v2 = Raw(); var k3 = Raw(); var v3 = Raw();
        var k4 = Raw(); var v4 = Raw(); var k5 = Raw(); var v5 = Raw();
        var k6 = Raw(); var v6 = Raw(); var k7 = Raw(); var v7 = Raw();
        if (go) {
            k0 = ld_row(false, kb + token_off(p.k, p.pg, b, j0), g); v0 = ld_row(true, vb + token_off(p.v, p.pg, b, j0), g);
            if (U > 1u) { let j = j0 - min(1u, left - 1u); k1 = ld_row(false, kb + token_off(p.k, p.pg, b, j), g); v1 = ld_row(true, vb + token_off(p.v, p.pg, b, j), g); }
            if (U > 2u) { let j = j0 - min(2u, left - 1u); k2 = ld_row(false, kb + token_off(p.k, p.pg, b, j), g); v2 = ld_row(true, vb + token_off(p.v, p.pg, b, j), g); }
            if (U > 3u) { let j = j0 - min(3u, left - 1u); k3 = ld_row(false, kb + token_off(p.k, p.pg, b, j), g); v3 = ld_row(true, vb + token_off(p.v, p.pg, b, j), g); }
            if (U > 4u) { let j = j0 - min(4u, left - 1u); k4 = ld_row(false, kb + token_off(p.k, p.pg, b, j), g); v4 = ld_row(true, vb + token_off(p.v, p.pg, b, j), g); }
            if (U > 5u) { let j = j0 - min(5u, left - 1u); k5 = ld_row(false, kb + token_off(p.k, p.pg, b, j), g); v5 = ld_row(true, vb + token_off(p.v, p.pg, b, j), g); }
            if (U > 6u) { let j = j0 - min(6u, left - 1u); k6 = ld_row(false, kb + token_off(p.k, p.pg, b, j), g); v6 = ld_row(true, vb + token_off(p.v, p.pg, b, j), g); }
            if (U > 7u) { let j = j0 - min(7u, left - 1u); k7 = ld_row(false, kb + token_off(p.k, p.pg, b, j), g); v7 = ld_row(true, vb + token_off(p.v, p.pg, b, j), g); }
        }
        // Nearest first: each key's weight takes the stick the keys after it leave.
        key(&st, qt, k0, v0, select(NONE, j0, go), vis, slot, g);
        if (U > 1u) { key(&st, qt, k1, v1, select(NONE, j0 - 1u, go && left > 1u), vis, slot, g); }
        if (U > 2u) { key(&st, qt, k2, v2, select(NONE, j0 - 2u, go && left > 2u), vis, slot, g); }
        if (U > 3u) { key(&st, qt, k3, v3, select(NONE, j0 - 3u, go && left > 3u), vis, slot, g); }
        if (U > 4u) { key(&st, qt, k4, v4, select(NONE, j0 - 4u, go && left > 4u), vis, slot, g); }
        if (U > 5u) { key(&st, qt, k5, v5, select(NONE, j0 - 5u, go && left > 5u), vis, slot, g); }
        if (U > 6u) { key(&st, qt, k6, v6, select(NONE, j0 - 6u, go && left > 6u), vis, slot, g); }
        if (U > 7u) { key(&st, qt, k7, v7, select(NONE, j0 - 7u, go && left > 7u), vis, slot, g); }
        // Early exit: once every real row has less than eps of its stick left, each weight
        // further left is below eps; the slot stops loading keys (all P lanes agree: they hold
        // identical carries).
        if (early) {
            done = all((st.c0 < le) | !real_quad(0u, rb)) && all((st.c1 < le) | !real_quad(1u, rb))
                && all((st.c2 < le) | !real_quad(2u, rb)) && all((st.c3 < le) | !real_quad(3u, rb));
        }
    }

    // Merge the key slots nearest-first (slot NK - 1 is nearest): slot ks's output is scaled by
    // the stick its nearer slots leave, exp(sum of their carries), then all are summed.
    if (g == 0u) {
        carry_s[ks * NQ] = st.c0;
        if (NQ > 1u) { carry_s[ks * NQ + 1u] = st.c1; }
        if (NQ > 2u) { carry_s[ks * NQ + 2u] = st.c2; }
        if (NQ > 3u) { carry_s[ks * NQ + 3u] = st.c3; }
    }
    workgroupBarrier();   // also ends every read of the query tile in rows_s
    var f0 = vec4<f32>(0.0); var f1 = vec4<f32>(0.0); var f2 = vec4<f32>(0.0); var f3 = vec4<f32>(0.0);
    for (var t = ks + 1u; t < NK; t++) {
        f0 += carry_s[t * NQ];
        if (NQ > 1u) { f1 += carry_s[t * NQ + 1u]; }
        if (NQ > 2u) { f2 += carry_s[t * NQ + 2u]; }
        if (NQ > 3u) { f3 += carry_s[t * NQ + 3u]; }
    }
    f0 = exp(f0); f1 = exp(f1); f2 = exp(f2); f3 = exp(f3);
    // Slot ks adds into buffer ks % NB in round ks / NB (the first round stores).
    let dst = (ks % NB) * RMP + g;
    for (var round = 0u; round < (NK + NB - 1u) / NB; round++) {
        if (ks / NB == round) {
            let first = round == 0u;
            if (NA > 0u) { put(dst, st.a0 * row_of(0u / M, f0, f1, f2, f3), first); }
            if (NA > 1u) { put(dst + P, st.a1 * row_of(1u / M, f0, f1, f2, f3), first); }
            if (NA > 2u) { put(dst + 2u * P, st.a2 * row_of(2u / M, f0, f1, f2, f3), first); }
            if (NA > 3u) { put(dst + 3u * P, st.a3 * row_of(3u / M, f0, f1, f2, f3), first); }
            if (NA > 4u) { put(dst + 4u * P, st.a4 * row_of(4u / M, f0, f1, f2, f3), first); }
            if (NA > 5u) { put(dst + 5u * P, st.a5 * row_of(5u / M, f0, f1, f2, f3), first); }
            if (NA > 6u) { put(dst + 6u * P, st.a6 * row_of(6u / M, f0, f1, f2, f3), first); }
            if (NA > 7u) { put(dst + 7u * P, st.a7 * row_of(7u / M, f0, f1, f2, f3), first); }
            if (NA > 8u) { put(dst + 8u * P, st.a8 * row_of(8u / M, f0, f1, f2, f3), first); }
            if (NA > 9u) { put(dst + 9u * P, st.a9 * row_of(9u / M, f0, f1, f2, f3), first); }
            if (NA > 10u) { put(dst + 10u * P, st.a10 * row_of(10u / M, f0, f1, f2, f3), first); }
            if (NA > 11u) { put(dst + 11u * P, st.a11 * row_of(11u / M, f0, f1, f2, f3), first); }
            if (NA > 12u) { put(dst + 12u * P, st.a12 * row_of(12u / M, f0, f1, f2, f3), first); }
            if (NA > 13u) { put(dst + 13u * P, st.a13 * row_of(13u / M, f0, f1, f2, f3), first); }
            if (NA > 14u) { put(dst + 14u * P, st.a14 * row_of(14u / M, f0, f1, f2, f3), first); }
            if (NA > 15u) { put(dst + 15u * P, st.a15 * row_of(15u / M, f0, f1, f2, f3), first); }
        }
        workgroupBarrier();
    }

    // The chunk's partial output (sum of the NB buffers, back in head-dim order) and its sum of
    // log(1 - beta) per row.
    for (var i = lidx; i < RMP; i += WG) {
        let rr = rb * R + i / DP4;
        if (rr < p.rows) {
            var s = rows_s[i];
            for (var t = 1u; t < NB; t++) { s += rows_s[t * RMP + i]; }
            o_part[(row_index(b, hk, rr) * p.splits + c) * DP4 + col((i % DP4) / P, i % P)] = s;
        }
    }
    let rr = rb * R + lidx;
    if (lidx < R && rr < p.rows) {
        var s = 0.0;
        for (var t = 0u; t < NK; t++) { s += comp(carry_s[t * NQ + lidx / 4u], lidx % 4u); }
        s_part[row_index(b, hk, rr) * p.splits + c] = s;
    }
}
