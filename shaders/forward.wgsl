// Causal stick-breaking attention, forward (prefill), tiled flash-style.
//
// This file is the kernel body. `src/shader.rs` prepends a prelude and appends one scan file
// (scan_subgroup.wgsl or scan_shared.wgsl) and stick.wgsl (flag bits, `log1p_small`). The prelude declares:
//   alias ST = f32 | f16;  storage element type of q, k, v, o and bias (math is always f32)
//   const G: u32;          lanes per query row (power of two; also vec4s per head-dim chunk)
//   const M: u32;          head-dim chunks: the padded head dim is M * DC (1 <= M <= 8)
// The scan file declares the entry point `main` (which calls `forward`) and
//   fn lane_suffix(total: f32, slot: u32, g: u32, sg_lane: u32) -> vec2<f32>
// returning (sum of `total` over the lanes of this row to the right of g, sum over all lanes).
//
// Thread layout (WG = 256 invocations): slot = row * G + g. Each thread owns
//   scores  s[row][4g .. 4g+4]                     one vec4 per key tile
//   output  o[row][c*DC + 4g .. +4] for chunk c < M  acc[c]
// Keys are walked from the diagonal tile to tile 0; a tile's keys are scanned right to left.

const WG: u32 = 256u;
const BM: u32 = WG / G;        // query rows per tile
const BN: u32 = 4u * G;        // keys per tile (4 per lane)
const DC: u32 = 4u * G;        // head-dim columns per chunk
const DC4: u32 = G;            // vec4s per chunk row
const QS: u32 = DC4 + 1u;      // q_s row stride in vec4 (padded: rows land in different banks)
const PS: u32 = G + 1u;        // p_s row stride in vec4 (padded likewise)

var<workgroup> q_s: array<vec4<f32>, BM * QS>;   // [BM][DC/4] query chunk (f32)
var<workgroup> kv_s: array<vec4<f32>, BN * DC4>; // K chunk transposed [DC][BN/4] or V chunk [BN][DC/4]
var<workgroup> p_s: array<vec4<f32>, BM * PS>;   // [BM][BN/4] attention weights of the tile
var<workgroup> live_s: array<u32, BM>;           // early exit: row still has stick >= eps
var<workgroup> alive_s: u32;                     // early exit: some row of the tile has

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
    // Output accumulators, one vec4 per head-dim chunk. Indexed only once per chunk per key
    // tile (the hot loops run on plain vec4s inside qk_chunk / pv_chunk), so wherever this
    // array lives it costs little, and the kernel stays small for every head dim.
    var acc: array<vec4<f32>, M>;

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
        for (var c = 0u; c < M; c++) {
            acc[c] += pv_chunk(c, k0, vb, lidx, row, g);
        }

        // Early exit: every key further left weighs less than the stick left, exp(carry).
        if ((p.flags & FLAG_EARLY_EXIT) != 0u) {
            if (g == 0u) { live_s[row] = select(0u, 1u, i < p.t && carry >= p.log_eps); }
            workgroupBarrier();
            if (lidx == 0u) {
                var any = 0u;
                for (var r = 0u; r < BM; r++) { any |= live_s[r]; }
                alive_s = any;
            }
            if (workgroupUniformLoad(&alive_s) == 0u) { break; }
        }
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
    for (var c = 0u; c < M; c++) {
        finish_chunk(c, acc[c], rem, mode, ob, vrow, bb, g);
    }
}
