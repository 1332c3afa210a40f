// Causal stick-breaking attention, forward, with cooperative matrices (tensor cores) for
// S = Q K^T and O += P V. f16 storage and operands; scores, the scan and O accumulate in f32.
//
// src/shader.rs prepends `enable f16; enable wgpu_cooperative_matrix;`, `alias ST = f16;` and
//   const ND: u32;   head-dim blocks of 16 (padded head dim DP = 16 * ND, 1 <= ND <= 8)
//   const BN: u32;   keys per tile (32 or 64)
// then forward_io.wgsl (Params, bindings), and appends stick.wgsl (flag bits, log1p_small).
//
// Workgroup: 4 subgroups of 32 (the host only picks this path where every subgroup has 32
// invocations). Subgroup s owns query rows 16s .. 16s+16 of the 64-row tile: their S blocks
// (BN/16 of them per tile) and their O blocks (ND of them, f32 accumulators held all kernel).
// Per key tile, from the diagonal down to tile 0:
//   1. K tile -> kv_s (f16, zero beyond T and D)           all invocations
//   2. S = Q K^T (scaled later) -> s_s (f32)                 coop, per subgroup
//   3. V tile -> kv_s; each row's keys scanned right to left by TPR invocations, weights
//      without the carry of the keys to their right -> s_s  all invocations
//   4. weights times that carry -> p_s (f16); carry updated  all invocations
//   5. O += P V                                              coop, per subgroup

const WG: u32 = 128u;
const BM: u32 = 64u;             // query rows per tile
const TPR: u32 = WG / BM;        // invocations per row in the scan (2)
const KPT: u32 = BN / TPR;       // keys per invocation in the scan
const DP: u32 = 16u * ND;        // padded head dim
const XS: u32 = DP + 8u;         // row stride (halves) of q_s / kv_s: rows start in other banks
const SS: u32 = BN + 4u;         // row stride (f32) of s_s
const PS: u32 = BN + 8u;         // row stride (halves) of p_s

var<workgroup> q_s: array<f16, BM * XS>;     // [BM][DP] queries of the tile
var<workgroup> kv_s: array<f16, BN * XS>;    // [BN][DP] keys, then values, of the key tile
var<workgroup> s_s: array<f32, BM * SS>;     // [BM][BN] scores, then partial weights
var<workgroup> p_s: array<f16, BM * PS>;     // [BM][BN] weights (A operand of P V)
var<workgroup> tot_s: array<f32, WG>;        // per-invocation sums of log(1 - beta)
var<workgroup> carry_s: array<f32, BM>;      // final carry per row, for the epilogue
var<workgroup> live_s: array<u32, BM>;      // early exit: row still has stick >= eps
var<workgroup> alive_s: u32;                 // early exit: some row of the tile has

// Rows [t0, t0 + n) of a [.., D] tensor (row r at base + r * stride) into a [n][XS] f16 tile,
// zero beyond T and beyond D.
fn stage_q(base: u32, stride: u32, t0: u32, lidx: u32) {
    for (var x = lidx; x < BM * DP; x += WG) {
        let r = x / DP;
        let d = x % DP;
        var val = f16(0.0);
        if (t0 + r < p.t && d < p.d) { val = q[base + (t0 + r) * stride + d]; }
        q_s[r * XS + d] = val;
    }
}
fn stage_k(base: u32, stride: u32, t0: u32, lidx: u32) {
    for (var x = lidx; x < BN * DP; x += WG) {
        let r = x / DP;
        let d = x % DP;
        var val = f16(0.0);
        if (t0 + r < p.t && d < p.d) { val = k[base + (t0 + r) * stride + d]; }
        kv_s[r * XS + d] = val;
    }
}
fn stage_v(base: u32, stride: u32, t0: u32, lidx: u32) {
    for (var x = lidx; x < BN * DP; x += WG) {
        let r = x / DP;
        let d = x % DP;
        var val = f16(0.0);
        if (t0 + r < p.t && d < p.d) { val = v[base + (t0 + r) * stride + d]; }
        kv_s[r * XS + d] = val;
    }
}

// One 16 x 16 block of S: rows 16s.., keys 16kb.., summed over the head dim.
fn score_block(s: u32, kb: u32) -> coop_mat16x16<f32, C> {
    var acc: coop_mat16x16<f32, C>;
    for (var db = 0u; db < ND; db++) {
        let a = coopLoadT<coop_mat16x16<f16, A>>(&q_s[16u * s * XS + 16u * db], XS);
        // B = K^T block: element (d, key) at kv_s[key * XS + d], i.e. column-major.
        let b = coopLoad<coop_mat16x16<f16, B>>(&kv_s[16u * kb * XS + 16u * db], XS);
        acc = coopMultiplyAdd(a, b, acc);
    }
    return acc;
}

// acc += P[rows 16s.., all BN keys] V[all BN keys, head-dim block db].
fn pv_block(acc: coop_mat16x16<f32, C>, s: u32, db: u32) -> coop_mat16x16<f32, C> {
    var r = acc;
    for (var kb = 0u; kb < BN / 16u; kb++) {
        let a = coopLoadT<coop_mat16x16<f16, A>>(&p_s[16u * s * PS + 16u * kb], PS);
        let b = coopLoadT<coop_mat16x16<f16, B>>(&kv_s[16u * kb * XS + 16u * db], XS);
        r = coopMultiplyAdd(a, b, r);
    }
    return r;
}

// Writes O block (rows 16s.., head-dim block db) with the remainder term, via s_s.
fn store_block(acc: coop_mat16x16<f32, C>, s: u32, db: u32, lane: u32, r0: u32, h: u32, ob: u32, vb: u32) {
    workgroupBarrier();
    coopStoreT(acc, &s_s[16u * s * SS], SS);
    workgroupBarrier();
    let mode = (p.flags >> REM_SHIFT) & 3u;
    // This subgroup's 32 invocations write its 16 x 16 block, 8 elements each.
    for (var e = lane; e < 256u; e += 32u) {
        let rr = e / 16u;
        let row = 16u * s + rr;
        let i = r0 + row;
        let d = 16u * db + e % 16u;
        if (i < p.t && d < p.d) {
            var x = s_s[row * SS + e % 16u];
            let rem = exp(carry_s[row]);
            if (mode == REM_ADD_VALUE) {
                x += rem * f32(v[vb + i * p.v_st + d]);
            } else if (mode == REM_ADD_BIAS) {
                x += rem * f32(bias[p.bias_off + h * p.d + d]);
            }
            o[ob + i * p.o_st + d] = ST(x);
        }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) lidx: u32,
        @builtin(subgroup_id) sg: u32,
        @builtin(subgroup_invocation_id) lane: u32) {
    let qt = p.n_qtiles - 1u - wid.x;
    let h = wid.y;
    let b = wid.z;
    let hk = h / p.group;
    let r0 = qt * BM;
    let ac = p.flags & FLAG_ATTEND_CURRENT;
    let qb = p.q_off + b * p.q_sb + h * p.q_sh;
    let kb = p.k_off + b * p.k_sb + hk * p.k_sh;
    let vb = p.v_off + b * p.v_sb + hk * p.v_sh;
    let ob = p.o_off + b * p.o_sb + h * p.o_sh;

    // Scan roles: row `row`, keys [part * KPT, (part + 1) * KPT) of each tile.
    let row = lidx / TPR;
    let part = lidx % TPR;
    let i = r0 + row;
    var carry = 0.0;

    var o0: coop_mat16x16<f32, C>; var o1: coop_mat16x16<f32, C>;
    var o2: coop_mat16x16<f32, C>; var o3: coop_mat16x16<f32, C>;
    var o4: coop_mat16x16<f32, C>; var o5: coop_mat16x16<f32, C>;
    var o6: coop_mat16x16<f32, C>; var o7: coop_mat16x16<f32, C>;

    stage_q(qb, p.q_st, r0, lidx);

    let n_keys = min(r0 + BM, p.t) + ac - 1u;
    var kt = (n_keys + BN - 1u) / BN;
    loop {
        if (kt == 0u) { break; }
        kt -= 1u;
        let k0 = kt * BN;
        let masked = k0 + BN > r0 + ac;

        workgroupBarrier();                 // previous tile's P V is done with kv_s, p_s
        stage_k(kb, p.k_st, k0, lidx);
        workgroupBarrier();
        for (var j = 0u; j < BN / 16u; j++) {
            coopStoreT(score_block(sg, j), &s_s[16u * sg * SS + 16u * j], SS);
        }
        workgroupBarrier();                 // scores ready; K no longer needed
        stage_v(vb, p.v_st, k0, lidx);

        // Scan this invocation's KPT keys right to left: weight without the carry of the
        // keys right of the run (applied in step 4), and the run's sum of log(1 - beta).
        var run = 0.0;
        let c0 = part * KPT;
        for (var x = 0u; x < KPT; x++) {
            let c = c0 + KPT - 1u - x;
            let j = k0 + c;
            let z = s_s[row * SS + c] * p.scale;
            let vis = !masked || j < i + ac;
            let l = log1p_small(vec4<f32>(exp(-abs(z)))).x;
            let nl = select(0.0, -(max(z, 0.0) + l), vis);
            let lb = min(z, 0.0) - l;
            s_s[row * SS + c] = select(0.0, exp(lb + run), vis);
            run += nl;
        }
        tot_s[lidx] = run;
        workgroupBarrier();
        // Keys right of this run: the runs of the higher parts of the row.
        var right = 0.0;
        var total = 0.0;
        for (var x = 0u; x < TPR; x++) {
            let t = tot_s[row * TPR + x];
            total += t;
            if (x > part) { right += t; }
        }
        let f = exp(carry + right);
        for (var x = 0u; x < KPT; x++) {
            let c = c0 + x;
            p_s[row * PS + c] = f16(s_s[row * SS + c] * f);
        }
        carry += total;
        workgroupBarrier();                 // P and V ready

        o0 = pv_block(o0, sg, 0u);
        if (ND > 1u) { o1 = pv_block(o1, sg, 1u); }
        if (ND > 2u) { o2 = pv_block(o2, sg, 2u); }
        if (ND > 3u) { o3 = pv_block(o3, sg, 3u); }
        if (ND > 4u) { o4 = pv_block(o4, sg, 4u); }
        if (ND > 5u) { o5 = pv_block(o5, sg, 5u); }
        if (ND > 6u) { o6 = pv_block(o6, sg, 6u); }
        if (ND > 7u) { o7 = pv_block(o7, sg, 7u); }

        if ((p.flags & FLAG_EARLY_EXIT) != 0u) {
            if (part == 0u) { live_s[row] = select(0u, 1u, i < p.t && carry >= p.log_eps); }
            workgroupBarrier();
            if (lidx == 0u) {
                var any = 0u;
                for (var r = 0u; r < BM; r++) { any |= live_s[r]; }
                alive_s = any;
            }
            if (workgroupUniformLoad(&alive_s) == 0u) { break; }
        }
    }

    // Epilogue: per-row outputs, then O block by block through s_s.
    if (part == 0u && i < p.t) {
        let row_idx = (b * p.h + h) * p.t + i;
        if ((p.flags & FLAG_WRITE_LOG_REM) != 0u) { lrem_out[p.lrem_off + row_idx] = carry; }
        if (((p.flags >> REM_SHIFT) & 3u) == REM_RETURN) { rem_out[p.rem_off + row_idx] = exp(carry); }
    }
    if (part == 0u) { carry_s[row] = carry; }
    store_block(o0, sg, 0u, lane, r0, h, ob, vb);
    if (ND > 1u) { store_block(o1, sg, 1u, lane, r0, h, ob, vb); }
    if (ND > 2u) { store_block(o2, sg, 2u, lane, r0, h, ob, vb); }
    if (ND > 3u) { store_block(o3, sg, 3u, lane, r0, h, ob, vb); }
    if (ND > 4u) { store_block(o4, sg, 4u, lane, r0, h, ob, vb); }
    if (ND > 5u) { store_block(o5, sg, 5u, lane, r0, h, ob, vb); }
    if (ND > 6u) { store_block(o6, sg, 6u, lane, r0, h, ob, vb); }
    if (ND > 7u) { store_block(o7, sg, 7u, lane, r0, h, ob, vb); }
}
