// Stick-breaking attention, decode: 1..=16 new queries per sequence against a KV cache, the keys
// split into chunks processed in parallel (split-K). This kernel writes, per (query row, chunk),
// a partial output and the chunk's sum of log(1 - beta); decode_merge.wgsl combines the chunks
// nearest-first (ALGORITHM.md, "Decode and split-K").
//
// src/shader.rs prepends a prelude and appends stick.wgsl (flag bits, `log1p_small`), one load file
// (decode_load_vec.wgsl or decode_load_scalar.wgsl: the cache bindings, `ld_k4`, `ld_v4`) and one
// reduction file (decode_subgroup.wgsl or decode_shared.wgsl: the entry point `main`, which calls
// `decode`, and `lane_sum`). The prelude declares:
//   alias ST = f32 | f16;  storage type of q and of the cache (math is always f32)
//   const P: u32;  lanes per key (power of two, 8..=64)
//   const M: u32;  vec4s of a key's head dim per lane: the padded head dim is 4 * M * P (1..=8)
//   const R: u32;  query rows per workgroup (1, 2, 4, 8 or 16), R * M <= 16
//
// Workgroup (chunk c = wid.x, kv head and row block = wid.y, sequence b = wid.z), WG threads,
// slot = key slot * P + lane g. The query rows of a block are (head of the kv head's group,
// new token) pairs, so K and V are read once for the whole group. Each of the NK = WG / P key
// slots walks its own contiguous part of the chunk from right to left, one key per step, with
// its state in named registers (never an indexed local array; see PERF-NOTES.md):
//   kk, vv (struct Lanes)  the lane's M vec4s of the key and value: head-dim vec4s x*P + g, x < M
//   a0 .. a15              accumulators: a[r*M + x] holds row r, head-dim vec4 x*P + g
//   carry0 .. carry3       log of the stick left since the slot's right edge, rows 4q .. 4q+3
// Then the slots merge nearest-first (the merge used across chunks) and the workgroup writes its
// partial output and its sum of log(1 - beta) per row.

const WG: u32 = 256u;
const NK: u32 = WG / P;                     // key slots
const NQ: u32 = (R + 3u) / 4u;              // row quads (vec4s of per-row values)
const NA: u32 = R * M;                      // accumulators in use
const DP4: u32 = M * P;                     // vec4s of a padded head-dim row
const RMP: u32 = R * DP4;                   // vec4s of all rows of the block
const NB: u32 = clamp(512u / RMP, 1u, NK);  // slot outputs summed side by side in the merge

const FLAG_EARLY_EXIT: u32 = 16u;         // bits 0..3: stick.wgsl

// Must match `DecodeParams` in src/decode.rs (tests/decode.rs checks the layout with naga).
struct Params {
    h: u32,          // query heads
    group: u32,      // query heads per kv head
    n: u32,          // new tokens (queries) per sequence
    d: u32,          // head dim
    rows: u32,       // query rows per kv head: group * n
    row_blocks: u32, // workgroups per kv head along y: ceil(rows / R)
    splits: u32,     // chunks per sequence (grid x)
    flags: u32,
    q_off: u32, q_sb: u32, q_st: u32, q_sh: u32,   // elements: offset; batch, token, head strides
    k_off: u32, k_sb: u32, k_st: u32, k_sh: u32,   // in loads of the load file (vec4s or elements)
    v_off: u32, v_sb: u32, v_st: u32, v_sh: u32,
    scale: f32,
    log_eps: f32,    // early exit below exp(log_eps) of stick left (with FLAG_EARLY_EXIT)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<ST>;
// bindings 2 (k cache) and 3 (v cache): the load file
@group(0) @binding(4) var<storage, read> lengths: array<u32>;            // [B] tokens held
@group(0) @binding(5) var<storage, read_write> o_part: array<vec4<f32>>; // [B, H, n, splits, DP4]
@group(0) @binding(6) var<storage, read_write> s_part: array<f32>;       // [B, H, n, splits]

// The query tile (R rows of DP4 vec4s, pre-scaled) during the walk; afterwards NB slot outputs.
var<workgroup> rows_s: array<vec4<f32>, NB * RMP>;
var<workgroup> carry_s: array<vec4<f32>, NK * NQ>;   // [NK][NQ] each slot's final carry

// One lane's part of a key or value row: head-dim vec4s x*P + g for x < M.
struct Lanes {
    c0: vec4<f32>, c1: vec4<f32>, c2: vec4<f32>, c3: vec4<f32>,
    c4: vec4<f32>, c5: vec4<f32>, c6: vec4<f32>, c7: vec4<f32>,
}

// Weights of one key for four rows, and the carry after it.
struct Step {
    w: vec4<f32>,
    carry: vec4<f32>,
}

fn ld_q(base: u32, d: u32) -> f32 {
    if (d < p.d) { return f32(q[base + d]); }
    return 0.0;
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

// Member x of a Lanes (x a constant once inlined, so this folds away).
fn lane_of(x: u32, l: Lanes) -> vec4<f32> {
    let lo = select(select(select(l.c0, l.c1, x == 1u), l.c2, x == 2u), l.c3, x == 3u);
    let hi = select(select(select(l.c4, l.c5, x == 5u), l.c6, x == 6u), l.c7, x == 7u);
    return select(lo, hi, x >= 4u);
}

// This lane's part of the dot product of query row r with the key (0 for rows >= R).
fn qk_row(r: u32, g: u32, k: Lanes) -> f32 {
    if (r >= R) { return 0.0; }
    let b = r * DP4 + g;
    var s = dot(rows_s[b], k.c0);
    if (M > 1u) { s += dot(rows_s[b + P], k.c1); }
    if (M > 2u) { s += dot(rows_s[b + 2u * P], k.c2); }
    if (M > 3u) { s += dot(rows_s[b + 3u * P], k.c3); }
    if (M > 4u) { s += dot(rows_s[b + 4u * P], k.c4); }
    if (M > 5u) { s += dot(rows_s[b + 5u * P], k.c5); }
    if (M > 6u) { s += dot(rows_s[b + 6u * P], k.c6); }
    if (M > 7u) { s += dot(rows_s[b + 7u * P], k.c7); }
    return s;
}

// Logits of rows 4qd .. 4qd+3 against the key, summed over the key's P lanes.
fn logits(qd: u32, slot: u32, g: u32, k: Lanes) -> vec4<f32> {
    let r = 4u * qd;
    return lane_sum(vec4<f32>(qk_row(r, g, k), qk_row(r + 1u, g, k), qk_row(r + 2u, g, k),
                              qk_row(r + 3u, g, k)), slot, g);
}

// One key for four rows: weight exp(log(beta) + carry) where visible, carry += log(1 - beta).
fn stick_step(z: vec4<f32>, carry: vec4<f32>, vis: vec4<bool>) -> Step {
    let l = log1p_small(exp(-abs(z)));
    let nl = select(vec4<f32>(0.0), -(max(z, vec4<f32>(0.0)) + l), vis);
    let w = select(vec4<f32>(0.0), exp(min(z, vec4<f32>(0.0)) - l + carry), vis);
    return Step(w, carry + nl);
}

// Keys row r of block rb sees: the queries are the last n tokens of a sequence of `len`, so
// token i of the n sees keys j < len - n + i (+ 1 with the current token). 0 for padding rows.
fn visible(r: u32, rb: u32, len: u32, ac: u32) -> u32 {
    let rr = rb * R + r;
    if (r >= R || rr >= p.rows) { return 0u; }
    return len - p.n + rr % p.n + ac;
}

fn visible_quad(qd: u32, rb: u32, len: u32, ac: u32) -> vec4<u32> {
    let r = 4u * qd;
    return vec4<u32>(visible(r, rb, len, ac), visible(r + 1u, rb, len, ac),
                     visible(r + 2u, rb, len, ac), visible(r + 3u, rb, len, ac));
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

    // The host guarantees len >= n; max() keeps every index in range even if it were not.
    let len = max(lengths[b], p.n);
    let kv_end = len - 1u + ac;                 // keys the last query sees
    let per = (kv_end + p.splits - 1u) / p.splits;
    let c0 = min(c * per, kv_end);              // this chunk: keys c0 .. c1 - 1
    let c1 = min(c0 + per, kv_end);
    let sl = (c1 - c0 + NK - 1u) / NK;          // steps of every slot (uniform: barriers inside)
    let s0 = min(c0 + ks * sl, c1);             // this slot: keys s0 .. s1 - 1
    let s1 = min(s0 + sl, c1);

    // Query tile, pre-scaled: rows_s[r * DP4 + x] = scale * q[row r][4x .. 4x + 4].
    for (var x = lidx; x < RMP; x += WG) {
        let rr = rb * R + x / DP4;
        var qv = vec4<f32>(0.0);
        if (rr < p.rows) {
            let base = p.q_off + b * p.q_sb + (rr % p.n) * p.q_st + (hk * p.group + rr / p.n) * p.q_sh;
            let d = 4u * (x % DP4);
            qv = p.scale * vec4<f32>(ld_q(base, d), ld_q(base, d + 1u), ld_q(base, d + 2u), ld_q(base, d + 3u));
        }
        rows_s[x] = qv;
    }
    workgroupBarrier();

    let vis0 = visible_quad(0u, rb, len, ac);
    let vis1 = visible_quad(1u, rb, len, ac);
    let vis2 = visible_quad(2u, rb, len, ac);
    let vis3 = visible_quad(3u, rb, len, ac);
    let kb = p.k_off + b * p.k_sb + hk * p.k_sh;
    let vb = p.v_off + b * p.v_sb + hk * p.v_sh;
    let early = (p.flags & FLAG_EARLY_EXIT) != 0u;
    let le = vec4<f32>(p.log_eps);

    var a0 = vec4<f32>(0.0); var a1 = vec4<f32>(0.0); var a2 = vec4<f32>(0.0); var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0); var a5 = vec4<f32>(0.0); var a6 = vec4<f32>(0.0); var a7 = vec4<f32>(0.0);
    var a8 = vec4<f32>(0.0); var a9 = vec4<f32>(0.0); var a10 = vec4<f32>(0.0); var a11 = vec4<f32>(0.0);
    var a12 = vec4<f32>(0.0); var a13 = vec4<f32>(0.0); var a14 = vec4<f32>(0.0); var a15 = vec4<f32>(0.0);
    var carry0 = vec4<f32>(0.0); var carry1 = vec4<f32>(0.0);
    var carry2 = vec4<f32>(0.0); var carry3 = vec4<f32>(0.0);
    var done = false;                           // every real row's stick is below eps

    for (var step = 0u; step < sl; step++) {
        let live = step < s1 - s0 && !done;
        let j = select(0xffffffffu, s1 - 1u - step, live);   // no row sees key 0xffffffff
        var kk = Lanes();
        var vv = Lanes();
        if (live) {
            let kr = kb + j * p.k_st;
            let vr = vb + j * p.v_st;
            kk.c0 = ld_k4(kr, g); vv.c0 = ld_v4(vr, g);
            if (M > 1u) { kk.c1 = ld_k4(kr, P + g); vv.c1 = ld_v4(vr, P + g); }
            if (M > 2u) { kk.c2 = ld_k4(kr, 2u * P + g); vv.c2 = ld_v4(vr, 2u * P + g); }
            if (M > 3u) { kk.c3 = ld_k4(kr, 3u * P + g); vv.c3 = ld_v4(vr, 3u * P + g); }
            if (M > 4u) { kk.c4 = ld_k4(kr, 4u * P + g); vv.c4 = ld_v4(vr, 4u * P + g); }
            if (M > 5u) { kk.c5 = ld_k4(kr, 5u * P + g); vv.c5 = ld_v4(vr, 5u * P + g); }
            if (M > 6u) { kk.c6 = ld_k4(kr, 6u * P + g); vv.c6 = ld_v4(vr, 6u * P + g); }
            if (M > 7u) { kk.c7 = ld_k4(kr, 7u * P + g); vv.c7 = ld_v4(vr, 7u * P + g); }
        }
        let jv = vec4<u32>(j);
        let st0 = stick_step(logits(0u, slot, g, kk), carry0, jv < vis0);
        carry0 = st0.carry;
        let w0 = st0.w;
        var w1 = vec4<f32>(0.0); var w2 = vec4<f32>(0.0); var w3 = vec4<f32>(0.0);
        if (NQ > 1u) {
            let st = stick_step(logits(1u, slot, g, kk), carry1, jv < vis1);
            carry1 = st.carry; w1 = st.w;
        }
        if (NQ > 2u) {
            let st = stick_step(logits(2u, slot, g, kk), carry2, jv < vis2);
            carry2 = st.carry; w2 = st.w;
        }
        if (NQ > 3u) {
            let st = stick_step(logits(3u, slot, g, kk), carry3, jv < vis3);
            carry3 = st.carry; w3 = st.w;
        }
        // a[r*M + x] += w[r] * v[x]
        if (NA > 0u) { a0 += row_of(0u / M, w0, w1, w2, w3) * lane_of(0u % M, vv); }
        if (NA > 1u) { a1 += row_of(1u / M, w0, w1, w2, w3) * lane_of(1u % M, vv); }
        if (NA > 2u) { a2 += row_of(2u / M, w0, w1, w2, w3) * lane_of(2u % M, vv); }
        if (NA > 3u) { a3 += row_of(3u / M, w0, w1, w2, w3) * lane_of(3u % M, vv); }
        if (NA > 4u) { a4 += row_of(4u / M, w0, w1, w2, w3) * lane_of(4u % M, vv); }
        if (NA > 5u) { a5 += row_of(5u / M, w0, w1, w2, w3) * lane_of(5u % M, vv); }
        if (NA > 6u) { a6 += row_of(6u / M, w0, w1, w2, w3) * lane_of(6u % M, vv); }
        if (NA > 7u) { a7 += row_of(7u / M, w0, w1, w2, w3) * lane_of(7u % M, vv); }
        if (NA > 8u) { a8 += row_of(8u / M, w0, w1, w2, w3) * lane_of(8u % M, vv); }
        if (NA > 9u) { a9 += row_of(9u / M, w0, w1, w2, w3) * lane_of(9u % M, vv); }
        if (NA > 10u) { a10 += row_of(10u / M, w0, w1, w2, w3) * lane_of(10u % M, vv); }
        if (NA > 11u) { a11 += row_of(11u / M, w0, w1, w2, w3) * lane_of(11u % M, vv); }
        if (NA > 12u) { a12 += row_of(12u / M, w0, w1, w2, w3) * lane_of(12u % M, vv); }
        if (NA > 13u) { a13 += row_of(13u / M, w0, w1, w2, w3) * lane_of(13u % M, vv); }
        if (NA > 14u) { a14 += row_of(14u / M, w0, w1, w2, w3) * lane_of(14u % M, vv); }
        if (NA > 15u) { a15 += row_of(15u / M, w0, w1, w2, w3) * lane_of(15u % M, vv); }
        // Early exit: once every real row has less than eps of its stick left, each weight
        // further left is below eps; the slot stops loading keys (all P lanes agree: they hold
        // identical carries).
        if (early) {
            done = all((carry0 < le) | !real_quad(0u, rb)) && all((carry1 < le) | !real_quad(1u, rb))
                && all((carry2 < le) | !real_quad(2u, rb)) && all((carry3 < le) | !real_quad(3u, rb));
        }
    }

    // Merge the key slots nearest-first (slot NK - 1 is nearest): slot ks's output is scaled by
    // the stick its nearer slots leave, exp(sum of their carries), then all are summed.
    if (g == 0u) {
        carry_s[ks * NQ] = carry0;
        if (NQ > 1u) { carry_s[ks * NQ + 1u] = carry1; }
        if (NQ > 2u) { carry_s[ks * NQ + 2u] = carry2; }
        if (NQ > 3u) { carry_s[ks * NQ + 3u] = carry3; }
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
            if (NA > 0u) { put(dst, a0 * row_of(0u / M, f0, f1, f2, f3), first); }
            if (NA > 1u) { put(dst + P, a1 * row_of(1u / M, f0, f1, f2, f3), first); }
            if (NA > 2u) { put(dst + 2u * P, a2 * row_of(2u / M, f0, f1, f2, f3), first); }
            if (NA > 3u) { put(dst + 3u * P, a3 * row_of(3u / M, f0, f1, f2, f3), first); }
            if (NA > 4u) { put(dst + 4u * P, a4 * row_of(4u / M, f0, f1, f2, f3), first); }
            if (NA > 5u) { put(dst + 5u * P, a5 * row_of(5u / M, f0, f1, f2, f3), first); }
            if (NA > 6u) { put(dst + 6u * P, a6 * row_of(6u / M, f0, f1, f2, f3), first); }
            if (NA > 7u) { put(dst + 7u * P, a7 * row_of(7u / M, f0, f1, f2, f3), first); }
            if (NA > 8u) { put(dst + 8u * P, a8 * row_of(8u / M, f0, f1, f2, f3), first); }
            if (NA > 9u) { put(dst + 9u * P, a9 * row_of(9u / M, f0, f1, f2, f3), first); }
            if (NA > 10u) { put(dst + 10u * P, a10 * row_of(10u / M, f0, f1, f2, f3), first); }
            if (NA > 11u) { put(dst + 11u * P, a11 * row_of(11u / M, f0, f1, f2, f3), first); }
            if (NA > 12u) { put(dst + 12u * P, a12 * row_of(12u / M, f0, f1, f2, f3), first); }
            if (NA > 13u) { put(dst + 13u * P, a13 * row_of(13u / M, f0, f1, f2, f3), first); }
            if (NA > 14u) { put(dst + 14u * P, a14 * row_of(14u / M, f0, f1, f2, f3), first); }
            if (NA > 15u) { put(dst + 15u * P, a15 * row_of(15u / M, f0, f1, f2, f3), first); }
        }
        workgroupBarrier();
    }

    // The chunk's partial output (sum of the NB buffers) and its sum of log(1 - beta) per row.
    for (var x = lidx; x < RMP; x += WG) {
        let rr = rb * R + x / DP4;
        if (rr < p.rows) {
            var s = rows_s[x];
            for (var t = 1u; t < NB; t++) { s += rows_s[t * RMP + x]; }
            o_part[(row_index(b, hk, rr) * p.splits + c) * DP4 + x % DP4] = s;
        }
    }
    let rr = rb * R + lidx;
    if (lidx < R && rr < p.rows) {
        var s = 0.0;
        for (var t = 0u; t < NK; t++) { s += comp(carry_s[t * NQ + lidx / 4u], lidx % 4u); }
        s_part[row_index(b, hk, rr) * p.splits + c] = s;
    }
}
