// Causal stick-breaking attention, forward (prefill), tiled flash-style.
//
// This file is the kernel body. `src/shader.rs` prepends a prelude and appends one scan file
// (scan_subgroup.wgsl or scan_shared.wgsl). The prelude declares:
//   alias ST = f32 | f16;  storage element type of q, k, v, o and bias (math is always f32)
//   const G: u32;          lanes per query row (power of two; also vec4s per head-dim chunk)
//   const M: u32;          head-dim chunks: the padded head dim is M * DC (1 <= M <= 8)
// The scan file declares the entry point `main` (which calls `forward`) and
//   fn lane_suffix(total: f32, slot: u32, g: u32, sg_lane: u32) -> vec2<f32>
// returning (sum of `total` over the lanes of this row to the right of g, sum over all lanes).
//
// Thread layout (WG = 256 invocations): slot = row * G + g. Each thread owns
//   scores  s[row][4g .. 4g+4]                     one vec4 per key tile
//   output  o[row][c*DC + 4g .. +4] for chunk c < M  vec4s o0..o7 (named, never indexed)
// Keys are walked from the diagonal tile to tile 0; a tile's keys are scanned right to left.

const WG: u32 = 256u;
const BM: u32 = WG / G;        // query rows per tile
const BN: u32 = 4u * G;        // keys per tile (4 per lane)
const DC: u32 = 4u * G;        // head-dim columns per chunk
const DC4: u32 = G;            // vec4s per chunk row
const QS: u32 = DC4 + 1u;      // q_s row stride in vec4 (padded: rows land in different banks)
const PS: u32 = G + 1u;        // p_s row stride in vec4 (padded likewise)

const FLAG_ATTEND_CURRENT: u32 = 1u;
const FLAG_WRITE_LOG_REM: u32 = 8u;
const REM_SHIFT: u32 = 1u;     // bits 1..2: 0 discard, 1 return, 2 add v_i, 3 add bias_h
const REM_RETURN: u32 = 1u;
const REM_ADD_VALUE: u32 = 2u;
const REM_ADD_BIAS: u32 = 3u;

// Must match `ForwardParams` in src/params.rs (a test checks the layout against naga's).
struct Params {
    t: u32,          // sequence length
    h: u32,          // query heads
    group: u32,      // query heads per key/value head (H / Hkv)
    d: u32,          // head dim
    q_off: u32, q_sb: u32, q_st: u32, q_sh: u32,   // element offset; batch, token, head strides
    k_off: u32, k_sb: u32, k_st: u32, k_sh: u32,
    v_off: u32, v_sb: u32, v_st: u32, v_sh: u32,
    o_off: u32, o_sb: u32, o_st: u32, o_sh: u32,
    rem_off: u32,    // [B, H, T] f32, element offset into rem_out
    lrem_off: u32,   // [B, H, T] f32, element offset into lrem_out
    bias_off: u32,   // [H, D] element offset into bias
    flags: u32,
    scale: f32,
    n_qtiles: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<ST>;
@group(0) @binding(2) var<storage, read> k: array<ST>;
@group(0) @binding(3) var<storage, read> v: array<ST>;
@group(0) @binding(4) var<storage, read_write> o: array<ST>;
@group(0) @binding(5) var<storage, read_write> rem_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> lrem_out: array<f32>;
@group(0) @binding(7) var<storage, read> bias: array<ST>;

var<workgroup> q_s: array<vec4<f32>, BM * QS>;   // [BM][DC/4] query chunk (f32)
var<workgroup> kv_s: array<vec4<f32>, BN * DC4>; // K chunk transposed [DC][BN/4] or V chunk [BN][DC/4]
var<workgroup> p_s: array<vec4<f32>, BM * PS>;   // [BM][BN/4] attention weights of the tile

// Element of a [.., T, .., D] tensor row or 0 outside it.
fn ld_q(base: u32, d: u32, ok: bool) -> f32 {
    if (ok && d < p.d) { return f32(q[base + d]); }
    return 0.0;
}
fn ld_k(base: u32, d: u32, ok: bool) -> f32 {
    if (ok && d < p.d) { return f32(k[base + d]); }
    return 0.0;
}
fn ld_v(base: u32, d: u32, ok: bool) -> f32 {
    if (ok && d < p.d) { return f32(v[base + d]); }
    return 0.0;
}

// log1p(x) for x in [0, 1]: the series where 1 + x would round away x's low bits.
fn log1p_small(x: vec4<f32>) -> vec4<f32> {
    return select(log(1.0 + x), x * (1.0 - 0.5 * x), x < vec4<f32>(1e-3));
}

// One head-dim chunk of scores: s[row][4g..4g+4] += q[row][chunk] . k[keys][chunk].
fn qk_chunk(c: u32, r0: u32, k0: u32, qb: u32, kb: u32, lidx: u32, row: u32, g: u32) -> vec4<f32> {
    let d0 = c * DC;
    for (var x = lidx; x < BM * DC4; x += WG) {          // q chunk: [BM][DC/4]
        let r = x / DC4;
        let c4 = x % DC4;
        let i = r0 + r;
        let ok = i < p.t;
        let base = qb + i * p.q_st;
        let d = d0 + 4u * c4;
        q_s[r * QS + c4] = vec4<f32>(ld_q(base, d, ok), ld_q(base, d + 1u, ok),
                                     ld_q(base, d + 2u, ok), ld_q(base, d + 3u, ok));
    }
    for (var x = lidx; x < DC * (BN / 4u); x += WG) {    // k chunk transposed: [DC][BN/4]
        let dd = x % DC;
        let k4 = x / DC;
        let j = k0 + 4u * k4;
        let d = d0 + dd;
        kv_s[dd * (BN / 4u) + k4] = vec4<f32>(
            ld_k(kb + j * p.k_st, d, j < p.t),
            ld_k(kb + (j + 1u) * p.k_st, d, j + 1u < p.t),
            ld_k(kb + (j + 2u) * p.k_st, d, j + 2u < p.t),
            ld_k(kb + (j + 3u) * p.k_st, d, j + 3u < p.t));
    }
    workgroupBarrier();
    var s = vec4<f32>(0.0);
    for (var c4 = 0u; c4 < DC4; c4++) {
        let qv = q_s[row * QS + c4];
        let b = 4u * c4 * (BN / 4u) + g;
        s += qv.x * kv_s[b] + qv.y * kv_s[b + BN / 4u]
           + qv.z * kv_s[b + 2u * (BN / 4u)] + qv.w * kv_s[b + 3u * (BN / 4u)];
    }
    workgroupBarrier();
    return s;
}

// One head-dim chunk of the tile's output: sum over keys of p[row][key] * v[key][c*DC + 4g ..].
fn pv_chunk(c: u32, k0: u32, vb: u32, lidx: u32, row: u32, g: u32) -> vec4<f32> {
    let d0 = c * DC;
    for (var x = lidx; x < BN * DC4; x += WG) {          // v chunk: [BN][DC/4]
        let key = x / DC4;
        let c4 = x % DC4;
        let j = k0 + key;
        let ok = j < p.t;
        let base = vb + j * p.v_st;
        let d = d0 + 4u * c4;
        kv_s[x] = vec4<f32>(ld_v(base, d, ok), ld_v(base, d + 1u, ok),
                            ld_v(base, d + 2u, ok), ld_v(base, d + 3u, ok));
    }
    workgroupBarrier();
    var acc = vec4<f32>(0.0);
    for (var k4 = 0u; k4 < BN / 4u; k4++) {
        let w = p_s[row * PS + k4];
        let b = 4u * k4 * DC4 + g;
        acc += w.x * kv_s[b] + w.y * kv_s[b + DC4] + w.z * kv_s[b + 2u * DC4] + w.w * kv_s[b + 3u * DC4];
    }
    workgroupBarrier();
    return acc;
}

// Adds the remainder term to one output chunk and stores it (row i valid).
fn finish_chunk(c: u32, acc: vec4<f32>, rem: f32, mode: u32, ob: u32, vrow: u32, bb: u32, g: u32) {
    let d0 = c * DC + 4u * g;
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

fn forward(wid: vec3<u32>, lidx: u32, slot: u32, sg_lane: u32) {
    let qt = p.n_qtiles - 1u - wid.x;        // longest rows first
    let h = wid.y;
    let b = wid.z;
    let hk = h / p.group;
    let row = slot / G;
    let g = slot % G;
    let r0 = qt * BM;
    let i = r0 + row;
    let ac = p.flags & FLAG_ATTEND_CURRENT;

    let qb = p.q_off + b * p.q_sb + h * p.q_sh;
    let kb = p.k_off + b * p.k_sb + hk * p.k_sh;
    let vb = p.v_off + b * p.v_sb + hk * p.v_sh;

    var carry = 0.0;                          // log of this row's stick left
    var o0 = vec4<f32>(0.0); var o1 = vec4<f32>(0.0); var o2 = vec4<f32>(0.0); var o3 = vec4<f32>(0.0);
    var o4 = vec4<f32>(0.0); var o5 = vec4<f32>(0.0); var o6 = vec4<f32>(0.0); var o7 = vec4<f32>(0.0);

    // Keys any row of this tile sees: 0 .. min(r0 + BM, T) - 1 + ac (exclusive end).
    let n_keys = min(r0 + BM, p.t) + ac - 1u;
    var kt = (n_keys + BN - 1u) / BN;
    loop {
        if (kt == 0u) { break; }
        kt -= 1u;
        let k0 = kt * BN;
        // Only tiles reaching past the first row's last key need the causal mask.
        let masked = k0 + BN > r0 + ac;

        var z = vec4<f32>(0.0);
        for (var c = 0u; c < M; c++) {
            z += qk_chunk(c, r0, k0, qb, kb, lidx, row, g);
        }
        z *= p.scale;

        // Key j = k0 + 4g + e is visible to row i when j <= i - 1 + ac.
        var vis = vec4<bool>(true);
        if (masked) {
            let j = vec4<u32>(k0 + 4u * g) + vec4<u32>(0u, 1u, 2u, 3u);
            vis = j < vec4<u32>(i + ac);
        }
        // Stable pieces: softplus(z) = max(z,0) + l, softplus(-z) = max(-z,0) + l, l = log1p(e^-|z|).
        let l = log1p_small(exp(-abs(z)));
        let nl = select(vec4<f32>(0.0), -(max(z, vec4<f32>(0.0)) + l), vis);  // log(1 - beta)
        let lb = min(z, vec4<f32>(0.0)) - l;                                  // log(beta)
        // Exclusive suffix sums of nl within the lane's four keys (keys to the right).
        let ex_w = 0.0;
        let ex_z = nl.w;
        let ex_y = nl.z + ex_z;
        let ex_x = nl.y + ex_y;
        let lane_total = nl.x + ex_x;
        let sc = lane_suffix(lane_total, slot, g, sg_lane);      // (lanes to the right, row total)
        let base = carry + sc.x;
        let log_a = lb + vec4<f32>(ex_x, ex_y, ex_z, ex_w) + vec4<f32>(base);
        let w = select(vec4<f32>(0.0), exp(log_a), vis);
        carry += sc.y;

        p_s[row * PS + g] = w;
        workgroupBarrier();
        o0 += pv_chunk(0u, k0, vb, lidx, row, g);
        if (M > 1u) { o1 += pv_chunk(1u, k0, vb, lidx, row, g); }
        if (M > 2u) { o2 += pv_chunk(2u, k0, vb, lidx, row, g); }
        if (M > 3u) { o3 += pv_chunk(3u, k0, vb, lidx, row, g); }
        if (M > 4u) { o4 += pv_chunk(4u, k0, vb, lidx, row, g); }
        if (M > 5u) { o5 += pv_chunk(5u, k0, vb, lidx, row, g); }
        if (M > 6u) { o6 += pv_chunk(6u, k0, vb, lidx, row, g); }
        if (M > 7u) { o7 += pv_chunk(7u, k0, vb, lidx, row, g); }
    }

    if (i >= p.t) { return; }
    let mode = (p.flags >> REM_SHIFT) & 3u;
    let rem = exp(carry);
    let row_idx = (b * p.h + h) * p.t + i;
    if ((p.flags & FLAG_WRITE_LOG_REM) != 0u) { lrem_out[p.lrem_off + row_idx] = carry; }
    if (mode == REM_RETURN) { rem_out[p.rem_off + row_idx] = rem; }
    let ob = p.o_off + b * p.o_sb + i * p.o_st + h * p.o_sh;
    let vrow = vb + i * p.v_st;
    let bb = p.bias_off + h * p.d;
    finish_chunk(0u, o0, rem, mode, ob, vrow, bb, g);
    if (M > 1u) { finish_chunk(1u, o1, rem, mode, ob, vrow, bb, g); }
    if (M > 2u) { finish_chunk(2u, o2, rem, mode, ob, vrow, bb, g); }
    if (M > 3u) { finish_chunk(3u, o3, rem, mode, ob, vrow, bb, g); }
    if (M > 4u) { finish_chunk(4u, o4, rem, mode, ob, vrow, bb, g); }
    if (M > 5u) { finish_chunk(5u, o5, rem, mode, ob, vrow, bb, g); }
    if (M > 6u) { finish_chunk(6u, o6, rem, mode, ob, vrow, bb, g); }
    if (M > 7u) { finish_chunk(7u, o7, rem, mode, ob, vrow, bb, g); }
}
