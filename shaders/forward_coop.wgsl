// Causal stick-breaking attention, forward, with cooperative matrices (tensor cores) for
// S = Q K^T and O += P V. f16 storage and operands; scores, the scan and O accumulate in f32.
//
// src/shader.rs prepends `enable f16; enable wgpu_cooperative_matrix;`, `alias ST = f16;` and
//   const ND: u32;   head-dim blocks of 16 (head dim D = 16 * ND, 1 <= ND <= 8)
//   const BN: u32;   keys per tile (a multiple of 16)
//   const SKIP: u32; profiling only (0 in real use): bit 0 skips S = Q K^T, bit 1 the scan,
//                    bit 2 O += P V; timing such variants shows where the time goes
// then forward_io.wgsl (Params, bindings), and appends stick.wgsl (flag bits, log1p_small).
//
// The host picks this path only where subgroups are 32 wide, D is a multiple of 16 and the
// offsets and token strides of k and v are multiples of 8 elements (16 bytes), so whole key
// tiles load straight from global memory as matrix operands.
//
// Workgroup: 4 subgroups of 32. Subgroup g = lidx / 32 owns query rows 16g .. 16g+16 of the
// 64-row tile: its Q blocks (ND A matrices, loaded once), its S blocks (BN/16 per key tile)
// and its O blocks (ND f32 accumulators held for the whole walk).
// Per key tile, from the diagonal down to tile 0:
//   1. S = Q K^T -> s_s (f32). K from global memory, or from `stage` (zero beyond T) for the
//      one tile that reaches past T.                                  coop, per subgroup
//   2. Each row's keys scanned right to left by TPR invocations: weights without the stick
//      used by the keys right of each invocation's run -> s_s.       all invocations
//   3. Those weights times the stick left at the run's right edge -> p_s (f16); carry.
//   4. O += P V, V like K.                                            coop, per subgroup
// Every coop index and stride is a `let` of its own (a pattern known to translate well).

const WG: u32 = 128u;
const BM: u32 = 64u;             // query rows per tile
const TPR: u32 = WG / BM;        // invocations per row in the scan (2)
const KPT: u32 = BN / TPR;       // keys per invocation in the scan
const DP: u32 = 16u * ND;        // head dim
const XS: u32 = DP + 8u;         // row stride (halves) of `stage`: 16-byte multiple, rows in other banks
const SS: u32 = BN + 4u;         // row stride (f32) of s_s
const PS: u32 = BN + 8u;         // row stride (halves) of p_s

alias MA = coop_mat16x16<f16, A>;
alias MB = coop_mat16x16<f16, B>;
alias MC = coop_mat16x16<f32, C>;

// Cooperative loads and stores need 16-byte aligned addresses. WGSL cannot align a workgroup
// variable, and drivers place them in their own order, so every workgroup variable here is a
// multiple of 16 bytes long: wherever each lands, all stay 16-byte aligned.
var<workgroup> s_s: array<f32, BM * SS>;     // [BM][BN] scores, then partial weights; epilogue
var<workgroup> stage: array<f16, BM * XS>;   // [BM][DP] Q at the start; K or V of a tile past T
var<workgroup> p_s: array<f16, BM * PS>;     // [BM][BN] weights (A operand of P V)
var<workgroup> tot_s: array<f32, WG>;        // per-invocation sums of log(1 - beta)
var<workgroup> carry_s: array<f32, BM>;      // final carry per row, for the epilogue
var<workgroup> live_s: array<u32, BM>;       // early exit: row still has stick >= eps
var<workgroup> alive_s: array<u32, 4>;       // early exit: [0] some row of the tile has

// Rows [t0, t0 + n) of q, k or v (row r at base + r * stride) into `stage`, zero past T.
fn stage_rows(which: u32, base: u32, stride: u32, t0: u32, n: u32, lidx: u32) {
    for (var x = lidx; x < n * DP; x += WG) {
        let r = x / DP;
        let d = x % DP;
        let src = base + (t0 + r) * stride + d;
        var val = f16(0.0);
        if (t0 + r < p.t) {
            if (which == 0u) { val = q[src]; } else if (which == 1u) { val = k[src]; } else { val = v[src]; }
        }
        stage[r * XS + d] = val;
    }
}

fn load_q(g: u32, db: u32) -> MA {
    let i = 16u * g * XS + 16u * db;
    let st = XS;
    return coopLoadT<MA>(&stage[i], st);
}

// Matrix operands of a key tile come from global memory (`_g`) or, for the one tile that
// reaches past T, from `stage` (`_s`). Two copies each, because cooperative operations need
// uniform control flow and naga counts a function's parameters as non-uniform.

// B = K^T block (head-dim block db, keys 16 kb ..): element (d, key) at row `key` of K, i.e.
// column-major with the token stride.
fn kt_g(kb0: u32, k0: u32, kb: u32, db: u32) -> MB {
    let i = kb0 + (k0 + 16u * kb) * p.k_st + 16u * db;
    let st = p.k_st;
    return coopLoad<MB>(&k[i], st);
}
fn kt_s(kb: u32, db: u32) -> MB {
    let i = 16u * kb * XS + 16u * db;
    let st = XS;
    return coopLoad<MB>(&stage[i], st);
}

// B = V block (keys 16 kb .., head-dim block db), row-major.
fn v_g(vb0: u32, k0: u32, kb: u32, db: u32) -> MB {
    let i = vb0 + (k0 + 16u * kb) * p.v_st + 16u * db;
    let st = p.v_st;
    return coopLoadT<MB>(&v[i], st);
}
fn v_s(kb: u32, db: u32) -> MB {
    let i = 16u * kb * XS + 16u * db;
    let st = XS;
    return coopLoadT<MB>(&stage[i], st);
}

fn store_s(acc: MC, g: u32, kb: u32) {
    let i = 16u * g * SS + 16u * kb;
    let st = SS;
    coopStoreT(acc, &s_s[i], st);
}

// S for this subgroup's rows and the tile's BN keys, accumulated in BN/16 independent
// blocks (s2, s3 unused when BN = 32) so the matrix units overlap them: one head-dim block
// db (this subgroup's Q block q) at a time, K from global memory (_g) or `stage` (_s).
fn score_g(q: MA, db: u32, kb0: u32, k0: u32, s0: ptr<function, MC>, s1: ptr<function, MC>,
           s2: ptr<function, MC>, s3: ptr<function, MC>) {
    *s0 = coopMultiplyAdd(q, kt_g(kb0, k0, 0u, db), *s0);
    *s1 = coopMultiplyAdd(q, kt_g(kb0, k0, 1u, db), *s1);
    if (BN > 32u) {
        *s2 = coopMultiplyAdd(q, kt_g(kb0, k0, 2u, db), *s2);
        *s3 = coopMultiplyAdd(q, kt_g(kb0, k0, 3u, db), *s3);
    }
}
fn score_s(q: MA, db: u32, s0: ptr<function, MC>, s1: ptr<function, MC>, s2: ptr<function, MC>,
           s3: ptr<function, MC>) {
    *s0 = coopMultiplyAdd(q, kt_s(0u, db), *s0);
    *s1 = coopMultiplyAdd(q, kt_s(1u, db), *s1);
    if (BN > 32u) {
        *s2 = coopMultiplyAdd(q, kt_s(2u, db), *s2);
        *s3 = coopMultiplyAdd(q, kt_s(3u, db), *s3);
    }
}

fn load_p(g: u32, kb: u32) -> MA {
    let i = 16u * g * PS + 16u * kb;
    let st = PS;
    return coopLoadT<MA>(&p_s[i], st);
}

// acc += P[this subgroup's rows, all BN keys] V[all BN keys, head-dim block db]; the P
// blocks p0..p3 (keys 16 kb ..) are loaded once per tile by the caller (p2, p3 unused when
// BN = 32).
fn pv_g(acc: MC, p0: MA, p1: MA, p2: MA, p3: MA, vb0: u32, k0: u32, db: u32) -> MC {
    var r = coopMultiplyAdd(p0, v_g(vb0, k0, 0u, db), acc);
    r = coopMultiplyAdd(p1, v_g(vb0, k0, 1u, db), r);
    if (BN > 32u) {
        r = coopMultiplyAdd(p2, v_g(vb0, k0, 2u, db), r);
        r = coopMultiplyAdd(p3, v_g(vb0, k0, 3u, db), r);
    }
    return r;
}
fn pv_s(acc: MC, p0: MA, p1: MA, p2: MA, p3: MA, db: u32) -> MC {
    var r = coopMultiplyAdd(p0, v_s(0u, db), acc);
    r = coopMultiplyAdd(p1, v_s(1u, db), r);
    if (BN > 32u) {
        r = coopMultiplyAdd(p2, v_s(2u, db), r);
        r = coopMultiplyAdd(p3, v_s(3u, db), r);
    }
    return r;
}

// Writes this subgroup's O block of head-dim block db, with the remainder term, via s_s.
fn store_block(acc: MC, g: u32, db: u32, lane: u32, r0: u32, h: u32, ob: u32, vb0: u32) {
    workgroupBarrier();
    let i0 = 16u * g * SS;
    let st = SS;
    coopStoreT(acc, &s_s[i0], st);
    workgroupBarrier();
    let mode = (p.flags >> REM_SHIFT) & 3u;
    for (var e = lane; e < 256u; e += 32u) {
        let row = 16u * g + e / 16u;
        let i = r0 + row;
        let d = 16u * db + e % 16u;
        if (i < p.t) {
            var x = s_s[row * SS + e % 16u];
            let rem = exp(carry_s[row]);
            if (mode == REM_ADD_VALUE) {
                x += rem * f32(v[vb0 + i * p.v_st + d]);
            } else if (mode == REM_ADD_BIAS) {
                x += rem * f32(bias[p.bias_off + h * p.d + d]);
            }
            o[ob + i * p.o_st + d] = ST(x);
        }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) lidx: u32) {
    let qt = p.n_qtiles - 1u - wid.x;
    let h = wid.y;
    let b = wid.z;
    let hk = h / p.group;
    let r0 = qt * BM;
    let ac = p.flags & FLAG_ATTEND_CURRENT;
    let qb0 = p.q_off + b * p.q_sb + h * p.q_sh;
    let kb0 = p.k_off + b * p.k_sb + hk * p.k_sh;
    let vb0 = p.v_off + b * p.v_sb + hk * p.v_sh;
    let ob = p.o_off + b * p.o_sb + h * p.o_sh;
    let g = lidx / 32u;          // subgroup (rows 16g ..)
    let lane = lidx % 32u;

    // Scan roles: row `row`, keys [part * KPT, (part + 1) * KPT) of each tile.
    let row = lidx / TPR;
    let part = lidx % TPR;
    let i = r0 + row;
    var carry = 0.0;

    // Q blocks of this subgroup's rows, once (zero past T).
    stage_rows(0u, qb0, p.q_st, r0, BM, lidx);
    workgroupBarrier();
    var q0 = load_q(g, 0u);
    var q1 = q0; var q2 = q0; var q3 = q0; var q4 = q0; var q5 = q0; var q6 = q0; var q7 = q0;
    if (ND > 1u) { q1 = load_q(g, 1u); }
    if (ND > 2u) { q2 = load_q(g, 2u); }
    if (ND > 3u) { q3 = load_q(g, 3u); }
    if (ND > 4u) { q4 = load_q(g, 4u); }
    if (ND > 5u) { q5 = load_q(g, 5u); }
    if (ND > 6u) { q6 = load_q(g, 6u); }
    if (ND > 7u) { q7 = load_q(g, 7u); }

    var o0 = MC(); var o1 = MC(); var o2 = MC(); var o3 = MC();
    var o4 = MC(); var o5 = MC(); var o6 = MC(); var o7 = MC();

    let n_keys = min(r0 + BM, p.t) + ac - 1u;
    var kt = (n_keys + BN - 1u) / BN;
    loop {
        if (kt == 0u) { break; }
        kt -= 1u;
        let k0 = kt * BN;
        let masked = k0 + BN > r0 + ac;
        let staged = k0 + BN > p.t;         // only the tile reaching past T

        workgroupBarrier();                 // `stage` (Q, or last tile's V) is free
        if (staged) {
            stage_rows(1u, kb0, p.k_st, k0, BN, lidx);
            workgroupBarrier();
        }
        if ((SKIP & 1u) == 0u) {
            var s0 = MC(); var s1 = MC(); var s2 = MC(); var s3 = MC();
            if (staged) {
                score_s(q0, 0u, &s0, &s1, &s2, &s3);
                if (ND > 1u) { score_s(q1, 1u, &s0, &s1, &s2, &s3); }
                if (ND > 2u) { score_s(q2, 2u, &s0, &s1, &s2, &s3); }
                if (ND > 3u) { score_s(q3, 3u, &s0, &s1, &s2, &s3); }
                if (ND > 4u) { score_s(q4, 4u, &s0, &s1, &s2, &s3); }
                if (ND > 5u) { score_s(q5, 5u, &s0, &s1, &s2, &s3); }
                if (ND > 6u) { score_s(q6, 6u, &s0, &s1, &s2, &s3); }
                if (ND > 7u) { score_s(q7, 7u, &s0, &s1, &s2, &s3); }
            } else {
                score_g(q0, 0u, kb0, k0, &s0, &s1, &s2, &s3);
                if (ND > 1u) { score_g(q1, 1u, kb0, k0, &s0, &s1, &s2, &s3); }
                if (ND > 2u) { score_g(q2, 2u, kb0, k0, &s0, &s1, &s2, &s3); }
                if (ND > 3u) { score_g(q3, 3u, kb0, k0, &s0, &s1, &s2, &s3); }
                if (ND > 4u) { score_g(q4, 4u, kb0, k0, &s0, &s1, &s2, &s3); }
                if (ND > 5u) { score_g(q5, 5u, kb0, k0, &s0, &s1, &s2, &s3); }
                if (ND > 6u) { score_g(q6, 6u, kb0, k0, &s0, &s1, &s2, &s3); }
                if (ND > 7u) { score_g(q7, 7u, kb0, k0, &s0, &s1, &s2, &s3); }
            }
            store_s(s0, g, 0u);
            store_s(s1, g, 1u);
            if (BN > 32u) {
                store_s(s2, g, 2u);
                store_s(s3, g, 3u);
            }
        }
        workgroupBarrier();                 // scores ready; K no longer needed
        if (staged) {
            stage_rows(2u, vb0, p.v_st, k0, BN, lidx);
        }

        // Scan this invocation's KPT keys right to left, four at a time: each weight without
        // the stick used by the keys right of the run (applied in step 3), and the run's sum
        // of log(1 - beta).
        var run = 0.0;
        let c0 = part * KPT;
        for (var x = 0u; x < select(KPT / 4u, 0u, (SKIP & 2u) != 0u); x++) {
            let c = c0 + KPT - 4u - 4u * x;           // keys c .. c+3
            let a = row * SS + c;
            let z = vec4<f32>(s_s[a], s_s[a + 1u], s_s[a + 2u], s_s[a + 3u]) * p.scale;
            var vis = vec4<bool>(true);
            if (masked) {
                vis = vec4<u32>(k0 + c) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(i + ac);
            }
            let l = log1p_small(exp(-abs(z)));
            let nl = select(vec4<f32>(0.0), -(max(z, vec4<f32>(0.0)) + l), vis);
            let lb = min(z, vec4<f32>(0.0)) - l;
            // Exclusive suffix sums of nl within the four, plus the run to their right.
            let ex = vec4<f32>(nl.y + nl.z + nl.w, nl.z + nl.w, nl.w, 0.0) + vec4<f32>(run);
            let w = select(vec4<f32>(0.0), exp(lb + ex), vis);
            s_s[a] = w.x;
            s_s[a + 1u] = w.y;
            s_s[a + 2u] = w.z;
            s_s[a + 3u] = w.w;
            run += (nl.x + nl.y) + (nl.z + nl.w);
        }
        tot_s[lidx] = run;
        workgroupBarrier();
        var right = 0.0;                    // the runs of the higher parts of the row
        var total = 0.0;
        for (var x = 0u; x < TPR; x++) {
            let t = tot_s[row * TPR + x];
            total += t;
            if (x > part) { right += t; }
        }
        let f = exp(carry + right);
        for (var x = 0u; x < KPT / 4u; x++) {
            let a = row * SS + c0 + 4u * x;
            let w = vec4<f16>(vec4<f32>(s_s[a], s_s[a + 1u], s_s[a + 2u], s_s[a + 3u]) * f);
            let b = row * PS + c0 + 4u * x;
            p_s[b] = w.x;
            p_s[b + 1u] = w.y;
            p_s[b + 2u] = w.z;
            p_s[b + 3u] = w.w;
        }
        carry += total;
        workgroupBarrier();                 // P (and a staged V) ready

        let pa0 = load_p(g, 0u);
        let pa1 = load_p(g, 1u);
        var pa2 = pa0;
        var pa3 = pa0;
        if (BN > 32u) {
            pa2 = load_p(g, 2u);
            pa3 = load_p(g, 3u);
        }
        if ((SKIP & 4u) != 0u) {
        } else if (staged) {
            o0 = pv_s(o0, pa0, pa1, pa2, pa3, 0u);
            if (ND > 1u) { o1 = pv_s(o1, pa0, pa1, pa2, pa3, 1u); }
            if (ND > 2u) { o2 = pv_s(o2, pa0, pa1, pa2, pa3, 2u); }
            if (ND > 3u) { o3 = pv_s(o3, pa0, pa1, pa2, pa3, 3u); }
            if (ND > 4u) { o4 = pv_s(o4, pa0, pa1, pa2, pa3, 4u); }
            if (ND > 5u) { o5 = pv_s(o5, pa0, pa1, pa2, pa3, 5u); }
            if (ND > 6u) { o6 = pv_s(o6, pa0, pa1, pa2, pa3, 6u); }
            if (ND > 7u) { o7 = pv_s(o7, pa0, pa1, pa2, pa3, 7u); }
        } else {
            o0 = pv_g(o0, pa0, pa1, pa2, pa3, vb0, k0, 0u);
            if (ND > 1u) { o1 = pv_g(o1, pa0, pa1, pa2, pa3, vb0, k0, 1u); }
            if (ND > 2u) { o2 = pv_g(o2, pa0, pa1, pa2, pa3, vb0, k0, 2u); }
            if (ND > 3u) { o3 = pv_g(o3, pa0, pa1, pa2, pa3, vb0, k0, 3u); }
            if (ND > 4u) { o4 = pv_g(o4, pa0, pa1, pa2, pa3, vb0, k0, 4u); }
            if (ND > 5u) { o5 = pv_g(o5, pa0, pa1, pa2, pa3, vb0, k0, 5u); }
            if (ND > 6u) { o6 = pv_g(o6, pa0, pa1, pa2, pa3, vb0, k0, 6u); }
            if (ND > 7u) { o7 = pv_g(o7, pa0, pa1, pa2, pa3, vb0, k0, 7u); }
        }

        if ((p.flags & FLAG_EARLY_EXIT) != 0u) {
            if (part == 0u) { live_s[row] = select(0u, 1u, i < p.t && carry >= p.log_eps); }
            workgroupBarrier();
            if (lidx == 0u) {
                var any = 0u;
                for (var r = 0u; r < BM; r++) { any |= live_s[r]; }
                alive_s[0] = any;
            }
            if (workgroupUniformLoad(&alive_s[0]) == 0u) { break; }
        }
    }

    // Epilogue: per-row outputs, then O block by block through s_s.
    if (part == 0u && i < p.t) {
        let row_idx = (b * p.h + h) * p.t + i;
        if ((p.flags & FLAG_WRITE_LOG_REM) != 0u) { lrem_out[p.lrem_off + row_idx] = carry; }
        if (((p.flags >> REM_SHIFT) & 3u) == REM_RETURN) { rem_out[p.rem_off + row_idx] = exp(carry); }
    }
    if (part == 0u) { carry_s[row] = carry; }
    store_block(o0, g, 0u, lane, r0, h, ob, vb0);
    if (ND > 1u) { store_block(o1, g, 1u, lane, r0, h, ob, vb0); }
    if (ND > 2u) { store_block(o2, g, 2u, lane, r0, h, ob, vb0); }
    if (ND > 3u) { store_block(o3, g, 3u, lane, r0, h, ob, vb0); }
    if (ND > 4u) { store_block(o4, g, 4u, lane, r0, h, ob, vb0); }
    if (ND > 5u) { store_block(o5, g, 5u, lane, r0, h, ob, vb0); }
    if (ND > 6u) { store_block(o6, g, 6u, lane, r0, h, ob, vb0); }
    if (ND > 7u) { store_block(o7, g, 7u, lane, r0, h, ob, vb0); }
}
