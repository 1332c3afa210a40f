// Causal stick-breaking attention, forward (prefill), tiled flash-style: the portable kernel
// (any adapter, browsers included; f32 arithmetic on f32 or f16 storage).
//
// src/kernel/source.rs assembles: the generated prelude, common/addr.wgsl, forward/io.wgsl
// (Params, bindings), this file, one scan file (common/scan_subgroup.wgsl or forward/scan_shared.wgsl) and
// common/stick.wgsl. The prelude declares (src/ops/forward/plan.rs chooses them from the
// device's workgroup memory, and says why):
//   alias ST = f32 | f16;  storage element type of q, k, v, o and bias (math is always f32)
//   const WG: u32;         invocations per workgroup (64 or 128); BM = WG / 2 query rows
//   const BN: u32;         keys per tile (32 or 64)
//   const DC: u32;         head-dim columns of q and k staged at once for S (16 or 32)
//   const MC: u32;         head-dim chunks of S: the padded head dim of S is MC * DC
//   const NJ: u32;         output column groups of 32 (2, 4, 6, 8): O's head dim padded to 32 NJ
//   const VK: u32;         keys of v staged at once (a multiple of 4 dividing BN)
//   const PF: u32;         1: load each stage's q, k or v during the previous stage (register
//                          prefetch); 0: at the start of its own stage
// and the flag bits (FLAG_*, REM_*). The scan file declares the entry point `main` (which
// calls `forward`) and
//   fn lane_scan(t0: vec4<f32>, t1: vec4<f32>, rg: u32, g: u32, sg_lane: u32) -> Scan
// (below): over the 8 lanes of one row group, per row, the sums of the lane totals t0 (keys
// 0..31 of the tile) and t1 (keys 32..63) to the right of lane g, and over all 8 lanes.
//
// Thread layout. S: slot = 8 rg + g (row group rg < WG / 8, lane g < 8; on the subgroup path
// the slot comes from the subgroup ids, so the 8 lanes of a row group are 8 aligned lanes of
// one subgroup at any subgroup size >= 8). O: lidx = 16 ro + co (row octet ro, column lane co).
// Per invocation, in registers (named vec4s, never an array with a runtime index: naga's index
// clamping then keeps it out of registers; `if (NKV > 1u)`, `if (NM > m)` drop unused ones):
//   s{r}{h}  vec4  S[i0 + r][k0 + 32 h + 4 g .. + 3], r < 4, segment h < NKV   (4 x 4 NKV)
//   carry    vec4  log of the stick left of rows i0 .. i0 + 3 (i0 = r0 + 4 rg), the same in
//                  all 8 lanes of the row group
//   o{r}{m}  vec4  O[o0 + r][4 (co + 16 m) .. + 3], r < 8, m < NM = NJ / 2      (8 x 8 NM)
//                  (o0 = r0 + 8 ro)
//   f        Fetch a stage's q and k (or v) elements (with PF = 1: the next stage's, loaded
//                  during this one)
// At D = 128 (NJ = 4, BN = 64): 32 + 4 + 64 accumulators and 32 prefetched values.
//
// Per key tile (from the diagonal tile to tile 0; each tile's keys right to left):
//   S: for each head-dim chunk c < MC: store the chunk (prefetched, or loaded now) into q_s,
//      k_s; barrier; PF: load the next stage (chunk c + 1, or the tile's first v chunk); per
//      column: 1 vec4 of q_s (4 rows) x NKV vec4 of k_s (4 keys) = 16 NKV FMAs per 1 + NKV
//      vec4 reads; barrier before the next chunk's store
//   z = scale S, log-space pieces (common/stick.wgsl: log1p_small), masked on the diagonal tile
//      only; suffix sums of log(1 - beta): within the lane (its 4 keys), across the 8 lanes of
//      the row (lane_scan: subgroup shuffles, or workgroup memory), across tiles (carry);
//      w = exp(log beta + suffix + carry), 0 where masked; carry += row total
//   w transposed into p_s (p_s[key][rg] = rows i0 .. i0 + 3)
//   O: for each v chunk: store the chunk into v_s; barrier (the first also publishes p_s); PF:
//      load the next stage (the next v chunk, or the next tile's first chunk of S); per
//      key: 2 vec4 of p_s (8 rows) x NM vec4 of v_s = 32 NM FMAs per 2 + NM vec4 reads
//   early exit (FLAG_EARLY_EXIT): stop once no row of the tile has exp(carry) >= eps
// Barriers per tile: 2 MC + 2 BN / VK - 2 (+2 on the shared-memory scan, +1 with early exit).
// No barrier ends the last chunk of S or of O: the next writes to q_s, k_s, p_s and v_s all
// follow a barrier that every invocation reaches only after its last read of them.
// FLOPs per workgroup-memory vec4 read: 21 in S (NKV = 2); in O 32 at D = 128 (NM = 2), 43 at
// D = 256, 21 at D <= 64; the kernel this replaced (1 row x 4 keys or columns per invocation)
// had 6.4 in both.
//
// Workgroup memory: every hot-loop read takes 2 (p_s), 4 (q_s) or 8 and 16 (k_s, v_s)
// consecutive vec4s per 32 invocations (no bank conflicts); q_s, k_s and p_s rows are padded
// by one vec4 so that the stores (a column of 4 rows from 32 invocations, a 4 x 4 block of w)
// spread over all banks too. The outer index of every hot-loop read is the loop counter and the
// inner one depends only on the invocation, so naga's index clamps fold or leave the loop.
//
// Global memory: scalar loads (io.wgsl declares the bindings as arrays of ST; offsets and
// strides are only element-aligned). q and k: 32 neighbouring invocations read 32 neighbouring
// head-dim columns of a row (coalesced); v: 4 keys at one column per item, likewise. Loaded
// values stay unconverted in registers until stored: with the prefetch, converting or packing
// them at once would make the invocation wait for its loads before computing. Rows past T and
// columns past the head dim are never loaded: they are 0.

const G: u32 = 8u;             // lanes per row group (all in one subgroup: every size >= 8)
const RG: u32 = WG / G;        // row groups
const BM: u32 = 4u * RG;       // query rows per tile
const NKV: u32 = BN / 32u;     // key segments of 32 per tile (1 or 2): s{r}1 live when 2
const KQ: u32 = BN / 4u;       // key quads per tile
const VW: u32 = 8u * NJ;       // vec4s per staged v row (32 NJ columns)
const NV: u32 = BN / VK;       // v chunks per tile
const NM: u32 = NJ / 2u;       // output vec4s per row and invocation (NJ is even)

var<workgroup> q_s: array<array<vec4<f32>, RG + 1u>, DC>;  // [DC][BM/4 +1] q chunk, transposed: rows 4x..4x+3 of column d
var<workgroup> k_s: array<array<vec4<f32>, KQ + 1u>, DC>;  // [DC][BN/4 +1] k chunk, transposed: keys 4x..4x+3 of column d
var<workgroup> p_s: array<array<vec4<f32>, RG + 1u>, BN>;  // [BN][BM/4 +1] weights, transposed: rows 4x..4x+3 of key j
var<workgroup> v_s: array<array<vec4<f32>, VW>, VK>;       // [VK][32 NJ / 4] v chunk: columns 4x..4x+3 of key j
var<workgroup> live_s: array<u32, RG>;                     // early exit: a row of the group still has stick >= eps
var<workgroup> alive_s: u32;                               // early exit: some row of the tile has
var<workgroup> carry_s: array<f32, BM>;                    // the final carry per row, from the S layout to the O layout

// What lane_scan returns, per row of the row group (x, y, z, w = rows 4 rg + 0..3).
struct Scan {
    right0: vec4<f32>,   // sum of t0 over lanes g+1 .. 7
    right1: vec4<f32>,   // sum of t1 over lanes g+1 .. 7
    total0: vec4<f32>,   // sum of t0 over all 8 lanes (the same in every lane)
    total1: vec4<f32>,   // sum of t1 over all 8 lanes
}

// The next stage's data, loaded from memory while the current stage computes (register
// prefetch: the load latency hides behind the FMAs instead of stalling between barriers). A
// chunk of S: a0..a3 = q items, b0..b3 = k items; a chunk of v: a0..a3 = v items.
struct Fetch {
    a0: Raw4, a1: Raw4, a2: Raw4, a3: Raw4,
    b0: Raw4, b1: Raw4, b2: Raw4, b3: Raw4,
}
// Four loaded elements in the storage type, each its own value: nothing (no conversion, no
// packing of two f16 into one register) waits for the loads before the next stage stores them.
struct Raw4 { x: ST, y: ST, z: ST, w: ST }
fn widen(r: Raw4) -> vec4<f32> {
    return vec4<f32>(f32(r.x), f32(r.y), f32(r.z), f32(r.w));
}

// Items per invocation per stage. q and k: item n of invocation lidx is head-dim column
// lidx % DC of the 4 rows (keys) 4 (lidx / DC + n WG / DC) ..: 32 neighbouring invocations read
// 32 neighbouring columns of a row (coalesced), and store one vec4 (its 4 rows) into q_s / k_s.
// v: item n is x = lidx + n WG: column x % (4 VW) of the 4 keys 4 (x / (4 VW)) ..; its 4 values
// go into 4 rows of v_s.
const NQI: u32 = DC / 8u;                  // q items (2 or 4)
const NKI: u32 = DC * KQ / WG;             // k items (2 or 4)
const NVI: u32 = (VK * VW + WG - 1u) / WG; // v items (<= 4)
const RS: u32 = WG / DC;                   // row quads between an invocation's items

// Column `base` of rows i .. i+3 of q or k (`st`: the token stride), 0 for rows past the
// sequence's queries (q) or keys (k, v) or when the column is past the head dim (`ok` false).
// Loads only what exists.
fn col4q(base: u32, i: u32, ok: bool) -> Raw4 {
    var x: Raw4;
    if (ok) {
        let st = p.q.st;
        if (i + 3u < sq.tq) {
            x = Raw4(q[base + i * st], q[base + (i + 1u) * st], q[base + (i + 2u) * st], q[base + (i + 3u) * st]);
        } else {
            if (i < sq.tq) { x.x = q[base + i * st]; }
            if (i + 1u < sq.tq) { x.y = q[base + (i + 1u) * st]; }
            if (i + 2u < sq.tq) { x.z = q[base + (i + 2u) * st]; }
        }
    }
    return x;
}
fn col4k(base: u32, j: u32, ok: bool) -> Raw4 {
    var x: Raw4;
    if (ok) {
        if (j + 3u < sq.tk) {
            x = Raw4(k[base + key_off(j)], k[base + key_off(j + 1u)], k[base + key_off(j + 2u)], k[base + key_off(j + 3u)]);
        } else {
            if (j < sq.tk) { x.x = k[base + key_off(j)]; }
            if (j + 1u < sq.tk) { x.y = k[base + key_off(j + 1u)]; }
            if (j + 2u < sq.tk) { x.z = k[base + key_off(j + 2u)]; }
        }
    }
    return x;
}
fn col4v(base: u32, j: u32, ok: bool) -> Raw4 {
    var x: Raw4;
    if (ok) {
        if (j + 3u < sq.tk) {
            x = Raw4(v[base + val_off(j)], v[base + val_off(j + 1u)], v[base + val_off(j + 2u)], v[base + val_off(j + 3u)]);
        } else {
            if (j < sq.tk) { x.x = v[base + val_off(j)]; }
            if (j + 1u < sq.tk) { x.y = v[base + val_off(j + 1u)]; }
            if (j + 2u < sq.tk) { x.z = v[base + val_off(j + 2u)]; }
        }
    }
    return x;
}

// Loads head-dim chunk c of the tile's q rows (r0 ..) and keys (k0 ..).
fn fetch_qk(c: u32, r0: u32, k0: u32, qb: u32, kb: u32, lidx: u32) -> Fetch {
    let d = c * DC + lidx % DC;
    let ok = d < p.d;
    let i = r0 + 4u * (lidx / DC);
    let j = k0 + 4u * (lidx / DC);
    var f: Fetch;
    f.a0 = col4q(qb + d, i, ok);
    f.a1 = col4q(qb + d, i + 4u * RS, ok);
    if (NQI > 2u) {
        f.a2 = col4q(qb + d, i + 8u * RS, ok);
        f.a3 = col4q(qb + d, i + 12u * RS, ok);
    }
    f.b0 = col4k(kb + d, j, ok);
    f.b1 = col4k(kb + d, j + 4u * RS, ok);
    if (NKI > 2u) {
        f.b2 = col4k(kb + d, j + 8u * RS, ok);
        f.b3 = col4k(kb + d, j + 12u * RS, ok);
    }
    return f;
}

// Stores a fetched chunk of S into q_s and k_s (f32).
fn put_qk(f: Fetch, lidx: u32) {
    let d = lidx % DC;
    let x = lidx / DC;
    q_s[d][x] = widen(f.a0);
    q_s[d][x + RS] = widen(f.a1);
    if (NQI > 2u) {
        q_s[d][x + 2u * RS] = widen(f.a2);
        q_s[d][x + 3u * RS] = widen(f.a3);
    }
    k_s[d][x] = widen(f.b0);
    k_s[d][x + RS] = widen(f.b1);
    if (NKI > 2u) {
        k_s[d][x + 2u * RS] = widen(f.b2);
        k_s[d][x + 3u * RS] = widen(f.b3);
    }
}

// Loads keys j0 .. j0 + VK - 1 of v, all 32 NJ columns.
fn fetch_v(j0: u32, vb: u32, lidx: u32) -> Fetch {
    var f: Fetch;
    f.a0 = fetch_v1(j0, vb, lidx);
    if (NVI > 1u) { f.a1 = fetch_v1(j0, vb, lidx + WG); }
    if (NVI > 2u) { f.a2 = fetch_v1(j0, vb, lidx + 2u * WG); }
    if (NVI > 3u) { f.a3 = fetch_v1(j0, vb, lidx + 3u * WG); }
    return f;
}
fn fetch_v1(j0: u32, vb: u32, x: u32) -> Raw4 {
    let d = x % (4u * VW);
    return col4v(vb + d, j0 + 4u * (x / (4u * VW)), x < VK * VW && d < p.d);
}

// Stores a fetched chunk of v into v_s (f32).
fn put_v(f: Fetch, lidx: u32) {
    put_v1(f.a0, lidx);
    if (NVI > 1u) { put_v1(f.a1, lidx + WG); }
    if (NVI > 2u) { put_v1(f.a2, lidx + 2u * WG); }
    if (NVI > 3u) { put_v1(f.a3, lidx + 3u * WG); }
}
fn put_v1(r: Raw4, i: u32) {
    if (i < VK * VW) {
        let d = i % (4u * VW);
        let j = 4u * (i / (4u * VW));
        let x = widen(r);
        v_s[j][d / 4u][d % 4u] = x.x;
        v_s[j + 1u][d / 4u][d % 4u] = x.y;
        v_s[j + 2u][d / 4u][d % 4u] = x.z;
        v_s[j + 3u][d / 4u][d % 4u] = x.w;
    }
}

// One lane's four keys of one row: log(beta) plus the sum of log(1 - beta) over the lane's keys
// to the right (`a`), and the lane's sum of log(1 - beta) (`t`); masked keys add 0.
struct Lane4 {
    a: vec4<f32>,
    t: f32,
}
fn lane4(z: vec4<f32>, vis: vec4<bool>) -> Lane4 {
    // Stable pieces: softplus(z) = max(z,0) + l, softplus(-z) = max(-z,0) + l, l = log1p(e^-|z|).
    let l = log1p_small(exp(-abs(z)));
    let nl = select(vec4<f32>(0.0), -(max(z, vec4<f32>(0.0)) + l), vis);  // log(1 - beta)
    let lb = min(z, vec4<f32>(0.0)) - l;                                  // log(beta)
    // Exclusive suffix sums of nl within the lane's four keys.
    let ex_z = nl.w;
    let ex_y = nl.z + ex_z;
    let ex_x = nl.y + ex_y;
    return Lane4(lb + vec4<f32>(ex_x, ex_y, ex_z, 0.0), nl.x + ex_x);
}

// The weights of one lane's four keys of one row: exp(a + base), 0 where masked.
fn weight4(x: Lane4, base: f32, vis: vec4<bool>) -> vec4<f32> {
    return select(vec4<f32>(0.0), exp(x.a + vec4<f32>(base)), vis);
}

// Visibility of keys j .. j + 3 for query row i, at position p0 + i (key j is visible when
// j <= p0 + i - 1 + ac).
fn vis4(j: u32, i: u32, ac: u32) -> vec4<bool> {
    return (vec4<u32>(j) + vec4<u32>(0u, 1u, 2u, 3u)) < vec4<u32>(sq.p0 + i + ac);
}

// Adds the remainder term to output columns d0 .. d0 + 3 of one row and stores them.
fn store4(acc: vec4<f32>, d0: u32, rem: f32, mode: u32, ob: u32, vrow: u32, bb: u32) {
    for (var e = 0u; e < 4u; e++) {
        let d = d0 + e;
        if (d < p.d) {
            var x = acc[e];
            if (mode == REM_ADD_VALUE) {
                x += rem * f32(v[vrow + d]);
            } else if (mode == REM_ADD_BIAS) {
                x += rem * f32(bias[bb + d]);
            }
            o[ob + d] = ST(x);
        }
    }
}

// Writes rem and log rem of row i when it exists.
fn finish_rem(i: u32, lr: f32, b: u32, h: u32) {
    if (i >= sq.tq) { return; }
    let row_idx = sq.row0 + h * p.rows_h + i;
    if ((p.flags & FLAG_WRITE_LOG_REM) != 0u) { lrem_out[p.lrem_off + row_idx] = lr; }
    if (((p.flags >> REM_SHIFT) & 3u) == REM_RETURN) { rem_out[p.rem_off + row_idx] = exp(lr); }
}

// Writes this invocation's NM output quads a0..a3 of row i (tile row t) when the row exists.
fn finish_row(i: u32, t: u32, co: u32, b: u32, h: u32, vb: u32,
              a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>) {
    if (i >= sq.tq) { return; }
    let mode = (p.flags >> REM_SHIFT) & 3u;
    let rem = exp(carry_s[t]);
    let ob = p.o.off + b * p.o.sb + (sq.q0 + i) * p.o.st + h * p.o.sh;
    let vrow = vb + val_off(sq.p0 + i);       // the query's own token's value
    let bb = p.bias_off + h * p.d;
    let d = 4u * co;
    store4(a0, d, rem, mode, ob, vrow, bb);
    if (NM > 1u) { store4(a1, d + 64u, rem, mode, ob, vrow, bb); }
    if (NM > 2u) { store4(a2, d + 128u, rem, mode, ob, vrow, bb); }
    if (NM > 3u) { store4(a3, d + 192u, rem, mode, ob, vrow, bb); }
}

// This workgroup's sequence (the schedule's record, clamped).
var<private> sq: Seq;

fn body(wid: vec3<u32>, lidx: u32, slot: u32, sg_lane: u32) {
    let work = work_of(wid);                  // work items come heaviest first
    if (work.pad) { return; }                 // the grid's padding (the whole workgroup)
    let item = schedule(work.wi, lidx);
    let b = item.b;
    let qt = item.qt;
    // A local copy for every decision the workgroup must take together: a module-scope
    // variable counts as non-uniform to WGSL's uniformity analysis (Tint enforces it).
    let seq = seq_of(item);
    sq = seq;
    let h = work.h;
    let hk = h / p.group;
    let rg = slot / G;
    let g = slot % G;
    let r0 = qt * BM;
    if (r0 >= seq.tq) { return; }             // an empty or corrupt record (uniform)
    let i0 = r0 + 4u * rg;                   // this thread's first row in S
    // O layout: rows o0 .. o0 + 7 (row octet ro), column quads co + 16 m (any invocation order).
    let ro = lidx / 16u;
    let co = lidx % 16u;
    let o0 = r0 + 8u * ro;
    let ac = p.flags & FLAG_ATTEND_CURRENT;

    let qb = p.q.off + b * p.q.sb + seq.q0 * p.q.st + h * p.q.sh;
    let kb = seq_base(p.k, p.pg, b, seq.k0) + hk * p.k.sh;
    let vb = seq_base(p.v, p.pg, b, seq.k0) + hk * p.v.sh;

    var carry = vec4<f32>(0.0);              // log of the stick left, rows i0 .. i0 + 3

    // O[o0 + r][4 (co + 16 m) .. + 4]: o{r}{m}, r < 8, m < NM
    var o00 = vec4<f32>(0.0); var o01 = vec4<f32>(0.0); var o02 = vec4<f32>(0.0); var o03 = vec4<f32>(0.0);
    var o10 = vec4<f32>(0.0); var o11 = vec4<f32>(0.0); var o12 = vec4<f32>(0.0); var o13 = vec4<f32>(0.0);
    var o20 = vec4<f32>(0.0); var o21 = vec4<f32>(0.0); var o22 = vec4<f32>(0.0); var o23 = vec4<f32>(0.0);
    var o30 = vec4<f32>(0.0); var o31 = vec4<f32>(0.0); var o32 = vec4<f32>(0.0); var o33 = vec4<f32>(0.0);
    var o40 = vec4<f32>(0.0); var o41 = vec4<f32>(0.0); var o42 = vec4<f32>(0.0); var o43 = vec4<f32>(0.0);
    var o50 = vec4<f32>(0.0); var o51 = vec4<f32>(0.0); var o52 = vec4<f32>(0.0); var o53 = vec4<f32>(0.0);
    var o60 = vec4<f32>(0.0); var o61 = vec4<f32>(0.0); var o62 = vec4<f32>(0.0); var o63 = vec4<f32>(0.0);
    var o70 = vec4<f32>(0.0); var o71 = vec4<f32>(0.0); var o72 = vec4<f32>(0.0); var o73 = vec4<f32>(0.0);

    // Keys any row of this tile sees: 0 .. p0 + min(r0 + BM, tq) - 1 + ac (exclusive end).
    let n_keys = seq.p0 + min(r0 + BM, seq.tq) + ac - 1u;
    var kt = (n_keys + BN - 1u) / BN;
    var f: Fetch;                            // a stage's data (PF: the next stage's, in flight)
    if (PF != 0u && kt > 0u) { f = fetch_qk(0u, r0, (kt - 1u) * BN, qb, kb, lidx); }
    loop {
        if (kt == 0u) { break; }
        kt -= 1u;
        let k0 = kt * BN;
        // Only tiles reaching past the first row's last key need the causal mask.
        let masked = k0 + BN > seq.p0 + r0 + ac;

        // S[i0 + r][k0 + 32 s + 4 g .. + 4]
        var s00 = vec4<f32>(0.0); var s10 = vec4<f32>(0.0); var s20 = vec4<f32>(0.0); var s30 = vec4<f32>(0.0);
        var s01 = vec4<f32>(0.0); var s11 = vec4<f32>(0.0); var s21 = vec4<f32>(0.0); var s31 = vec4<f32>(0.0);
        for (var c = 0u; c < MC; c++) {
            if (c > 0u) { workgroupBarrier(); }   // everyone is done with chunk c - 1
            if (PF == 0u) { f = fetch_qk(c, r0, k0, qb, kb, lidx); }
            put_qk(f, lidx);
            workgroupBarrier();
            // Prefetch the next stage: chunk c + 1, or the tile's first v chunk.
            if (PF != 0u) {
                if (c + 1u < MC) { f = fetch_qk(c + 1u, r0, k0, qb, kb, lidx); } else { f = fetch_v(k0, vb, lidx); }
            }
            // Unrolled by 4 (DC is a multiple of 4); one column's operands live at a time.
            for (var dd = 0u; dd < DC; dd += 4u) {
                for (var u = 0u; u < 4u; u++) {
                    let c4 = dd + u;
                    let a = q_s[c4][rg];              // column c4 of rows i0 .. i0 + 3
                    let x = k_s[c4][g];               // keys 4 g .. 4 g + 3
                    s00 = fma(vec4<f32>(a.x), x, s00);
                    s10 = fma(vec4<f32>(a.y), x, s10);
                    s20 = fma(vec4<f32>(a.z), x, s20);
                    s30 = fma(vec4<f32>(a.w), x, s30);
                    if (NKV > 1u) {
                        let y = k_s[c4][g + 8u];      // keys 32 + 4 g ..
                        s01 = fma(vec4<f32>(a.x), y, s01);
                        s11 = fma(vec4<f32>(a.y), y, s11);
                        s21 = fma(vec4<f32>(a.z), y, s21);
                        s31 = fma(vec4<f32>(a.w), y, s31);
                    }
                }
            }
        }

        // Visibility: everything off the diagonal tile.
        var v00 = vec4<bool>(true); var v10 = vec4<bool>(true); var v20 = vec4<bool>(true); var v30 = vec4<bool>(true);
        var v01 = vec4<bool>(true); var v11 = vec4<bool>(true); var v21 = vec4<bool>(true); var v31 = vec4<bool>(true);
        if (masked) {
            let j0 = k0 + 4u * g;
            v00 = vis4(j0, i0, ac);
            v10 = vis4(j0, i0 + 1u, ac);
            v20 = vis4(j0, i0 + 2u, ac);
            v30 = vis4(j0, i0 + 3u, ac);
            v01 = vis4(j0 + 32u, i0, ac);
            v11 = vis4(j0 + 32u, i0 + 1u, ac);
            v21 = vis4(j0 + 32u, i0 + 2u, ac);
            v31 = vis4(j0 + 32u, i0 + 3u, ac);
        }
        let sc = p.scale;
        let l00 = lane4(sc * s00, v00);
        let l10 = lane4(sc * s10, v10);
        let l20 = lane4(sc * s20, v20);
        let l30 = lane4(sc * s30, v30);
        var l01 = Lane4(vec4<f32>(0.0), 0.0);
        var l11 = l01;
        var l21 = l01;
        var l31 = l01;
        if (NKV > 1u) {
            l01 = lane4(sc * s01, v01);
            l11 = lane4(sc * s11, v11);
            l21 = lane4(sc * s21, v21);
            l31 = lane4(sc * s31, v31);
        }
        // Across the row's lanes: (lanes to the right, whole row), per segment.
        let sums = lane_scan(vec4<f32>(l00.t, l10.t, l20.t, l30.t), vec4<f32>(l01.t, l11.t, l21.t, l31.t), rg, g, sg_lane);
        // Segment 0 also has all of segment 1 to its right.
        let base0 = carry + sums.right0 + sums.total1;
        let base1 = carry + sums.right1;
        carry += sums.total0 + sums.total1;

        // Weights, transposed into p_s: p_s[key][rg] = rows i0 .. i0 + 3 of that key.
        let w00 = weight4(l00, base0.x, v00);
        let w10 = weight4(l10, base0.y, v10);
        let w20 = weight4(l20, base0.z, v20);
        let w30 = weight4(l30, base0.w, v30);
        let j = 4u * g;
        p_s[j][rg] = vec4<f32>(w00.x, w10.x, w20.x, w30.x);
        p_s[j + 1u][rg] = vec4<f32>(w00.y, w10.y, w20.y, w30.y);
        p_s[j + 2u][rg] = vec4<f32>(w00.z, w10.z, w20.z, w30.z);
        p_s[j + 3u][rg] = vec4<f32>(w00.w, w10.w, w20.w, w30.w);
        if (NKV > 1u) {
            let w01 = weight4(l01, base1.x, v01);
            let w11 = weight4(l11, base1.y, v11);
            let w21 = weight4(l21, base1.z, v21);
            let w31 = weight4(l31, base1.w, v31);
            p_s[j + 32u][rg] = vec4<f32>(w01.x, w11.x, w21.x, w31.x);
            p_s[j + 33u][rg] = vec4<f32>(w01.y, w11.y, w21.y, w31.y);
            p_s[j + 34u][rg] = vec4<f32>(w01.z, w11.z, w21.z, w31.z);
            p_s[j + 35u][rg] = vec4<f32>(w01.w, w11.w, w21.w, w31.w);
        }

        // O += P V, VK keys at a time.
        for (var vc = 0u; vc < NV; vc++) {
            if (vc > 0u) { workgroupBarrier(); }  // everyone is done with v chunk vc - 1
            if (PF == 0u) { f = fetch_v(k0 + vc * VK, vb, lidx); }
            put_v(f, lidx);
            workgroupBarrier();
            // Prefetch the next stage: v chunk vc + 1, or the next tile's first chunk of S.
            if (PF != 0u) {
                if (vc + 1u < NV) {
                    f = fetch_v(k0 + (vc + 1u) * VK, vb, lidx);
                } else if (kt > 0u) {
                    f = fetch_qk(0u, r0, k0 - BN, qb, kb, lidx);
                }
            }
            // Unrolled by 4 (VK is a multiple of 4); one key's operands live at a time:
            // w, z = its weights for rows o0 .. o0 + 3 and o0 + 4 .. o0 + 7, x = its columns
            // 4 (co + 16 m) .. + 3.
            for (var kk = 0u; kk < VK; kk += 4u) {
                for (var u = 0u; u < 4u; u++) {
                    let k4 = kk + u;
                    let w = p_s[vc * VK + k4][2u * ro];
                    let z = p_s[vc * VK + k4][2u * ro + 1u];
                    {
                        let x = v_s[k4][co];
                        o00 = fma(vec4<f32>(w.x), x, o00);
                        o10 = fma(vec4<f32>(w.y), x, o10);
                        o20 = fma(vec4<f32>(w.z), x, o20);
                        o30 = fma(vec4<f32>(w.w), x, o30);
                        o40 = fma(vec4<f32>(z.x), x, o40);
                        o50 = fma(vec4<f32>(z.y), x, o50);
                        o60 = fma(vec4<f32>(z.z), x, o60);
                        o70 = fma(vec4<f32>(z.w), x, o70);
                    }
                    if (NM > 1u) {
                        let x = v_s[k4][co + 16u];
                        o01 = fma(vec4<f32>(w.x), x, o01);
                        o11 = fma(vec4<f32>(w.y), x, o11);
                        o21 = fma(vec4<f32>(w.z), x, o21);
                        o31 = fma(vec4<f32>(w.w), x, o31);
                        o41 = fma(vec4<f32>(z.x), x, o41);
                        o51 = fma(vec4<f32>(z.y), x, o51);
                        o61 = fma(vec4<f32>(z.z), x, o61);
                        o71 = fma(vec4<f32>(z.w), x, o71);
                    }
                    if (NM > 2u) {
                        let x = v_s[k4][co + 32u];
                        o02 = fma(vec4<f32>(w.x), x, o02);
                        o12 = fma(vec4<f32>(w.y), x, o12);
                        o22 = fma(vec4<f32>(w.z), x, o22);
                        o32 = fma(vec4<f32>(w.w), x, o32);
                        o42 = fma(vec4<f32>(z.x), x, o42);
                        o52 = fma(vec4<f32>(z.y), x, o52);
                        o62 = fma(vec4<f32>(z.z), x, o62);
                        o72 = fma(vec4<f32>(z.w), x, o72);
                    }
                    if (NM > 3u) {
                        let x = v_s[k4][co + 48u];
                        o03 = fma(vec4<f32>(w.x), x, o03);
                        o13 = fma(vec4<f32>(w.y), x, o13);
                        o23 = fma(vec4<f32>(w.z), x, o23);
                        o33 = fma(vec4<f32>(w.w), x, o33);
                        o43 = fma(vec4<f32>(z.x), x, o43);
                        o53 = fma(vec4<f32>(z.y), x, o53);
                        o63 = fma(vec4<f32>(z.z), x, o63);
                        o73 = fma(vec4<f32>(z.w), x, o73);
                    }
                }
            }
        }

        // Early exit: every key further left weighs less than the stick left, exp(carry).
        if ((p.flags & FLAG_EARLY_EXIT) != 0u) {
            if (g == 0u) {
                let rows = vec4<u32>(i0) + vec4<u32>(0u, 1u, 2u, 3u);
                let live = (rows < vec4<u32>(seq.tq)) & (carry >= vec4<f32>(p.log_eps));
                live_s[rg] = select(0u, 1u, any(live));
            }
            workgroupBarrier();
            if (lidx == 0u) {
                var any_live = 0u;
                for (var r = 0u; r < RG; r++) { any_live |= live_s[r]; }
                alive_s = any_live;
            }
            if (workgroupUniformLoad(&alive_s) == 0u) { break; }
        }
    }

    // rem and log rem from the S layout; the carry to the O layout through carry_s.
    if (g == 0u) {
        finish_rem(i0, carry.x, b, h);
        finish_rem(i0 + 1u, carry.y, b, h);
        finish_rem(i0 + 2u, carry.z, b, h);
        finish_rem(i0 + 3u, carry.w, b, h);
        carry_s[4u * rg] = carry.x;
        carry_s[4u * rg + 1u] = carry.y;
        carry_s[4u * rg + 2u] = carry.z;
        carry_s[4u * rg + 3u] = carry.w;
    }
    workgroupBarrier();
    finish_row(o0, 8u * ro, co, b, h, vb, o00, o01, o02, o03);
    finish_row(o0 + 1u, 8u * ro + 1u, co, b, h, vb, o10, o11, o12, o13);
    finish_row(o0 + 2u, 8u * ro + 2u, co, b, h, vb, o20, o21, o22, o23);
    finish_row(o0 + 3u, 8u * ro + 3u, co, b, h, vb, o30, o31, o32, o33);
    finish_row(o0 + 4u, 8u * ro + 4u, co, b, h, vb, o40, o41, o42, o43);
    finish_row(o0 + 5u, 8u * ro + 5u, co, b, h, vb, o50, o51, o52, o53);
    finish_row(o0 + 6u, 8u * ro + 6u, co, b, h, vb, o60, o61, o62, o63);
    finish_row(o0 + 7u, 8u * ro + 7u, co, b, h, vb, o70, o71, o72, o73);
}
