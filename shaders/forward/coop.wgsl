// Causal stick-breaking attention, forward, with cooperative matrices (tensor cores) for
// S = Q K^T and O += P V. f16 storage and operands; scores, the scan and O accumulate in f32.
//
// src/kernel/source.rs assembles: the generated prelude (`enable f16; enable
// wgpu_cooperative_matrix;`, `alias ST = f16;`, the flag bits and
//   const WG: u32;   invocations: NSG subgroups of 32
//   const BM: u32;   query rows per workgroup, 16 per subgroup
//   const BN: u32;   keys per tile (32 or 64)
//   const ND: u32;   head-dim blocks of 16 (head dim D = 16 * ND, 1 <= ND <= 8)
//   const PF: u32;   1: the next K or V tile's loads in registers during the current math;
//                    0: loaded right before they are stored (fewer live registers)
//   const QS: u32;   1: Q blocks in workgroup memory (q_s), loaded per tile; 0: in registers
//   const HI: u32;   work order (forward/io.wgsl `work_of`)
//   const SP: u32;   the scan's form: 0 log space (3 transcendentals per key), 1 products of
//                    sigmoids (an exp and a reciprocal per key, a log per four keys; below)
// from src/ops/forward/plan.rs), common/addr.wgsl, forward/io.wgsl (Params, bindings), the
// matrix operations (forward/coop_mat.wgsl on tensor cores, or forward/coop_emu.wgsl, their
// emulation for tests: types MA, MB, MC, `mma` and one load or store function per operand),
// this file and common/stick.wgsl (log1p_small).
//
// The host picks this path only where subgroups are 32 wide, D is a multiple of 16 and the
// offsets and token strides of q, k and v are multiples of 8 elements (16 bytes), so 16 x 16
// blocks load straight from global memory as matrix operands.
//
// Subgroup g owns query rows 16g .. 16g+16 of the tile: its Q blocks (ND A matrices, loaded
// once) and O blocks (ND f32 accumulators held for the whole walk). K and V tiles pass through
// one workgroup buffer `kv_s`, [key][d], staged once per tile for all subgroups: every
// invocation copies NV vec4<f16> of the tile by plain 8-byte loads (through the vec4 views k4,
// v4 of the k and v bindings) into registers, issued before the math that precedes their use so
// that they are in flight meanwhile, and stores them after the next barrier (tools/coop-probe:
// this copy beat cooperative load-and-store copies 97 to 79 TFLOP/s in a matrix product, 190
// to 79 without index clamping). Keys past T load as zeros.
// Per key tile, from the diagonal tile down to tile 0 (kv_s holds K on entry):
//   1. V's loads issued; S = Q K^T from kv_s -> s_s (f32)            coop, per subgroup
//      barrier: S ready, K no longer needed
//   2. V stored into kv_s; the next K tile's loads issued
//   3. each row's keys scanned right to left by TPR invocations (the invocations of a row are
//      neighbours in one subgroup and exchange their run totals by shuffle): weights times the
//      stick left -> p_s (f16); carry                                  all invocations
//      barrier: P and V ready
//   4. O += P V from p_s, kv_s                                          coop, per subgroup
//      barrier: V no longer needed; next K stored; barrier
// Only tiles that reach past a row's last key (the diagonal ones) apply the causal mask. Every
// cooperative index and stride is a `let` of its own.

const NSG: u32 = WG / 32u;                 // subgroups
const TPR: u32 = WG / BM;                  // invocations per row in the scan
const_assert TPR == 2u;                    // (the scan trades run totals with one shuffle)
const KPT: u32 = BN / TPR;                 // keys per invocation in the scan
const DP: u32 = 16u * ND;                  // head dim
const XS: u32 = DP + 8u;                   // row stride (halves) of kv_s: 16-byte multiple, rows in other banks
const SS: u32 = BN + 4u;                   // row stride (f32) of s_s
const PS: u32 = BN + 8u;                   // row stride (halves) of p_s
const KR: u32 = max(BM * (1u - QS), BN);   // rows of kv_s (Q passes through it first unless QS)
const QR: u32 = 1u + (BM - 1u) * QS;       // rows of q_s (1: unused)
const C4: u32 = DP / 4u;                   // vec4<f16> of one key row
const NV: u32 = BN * C4 / WG;              // vec4<f16> of a tile each invocation copies (1 ..= 16)
const_assert NV * WG == BN * C4;

// The k and v bindings again, as vec4<f16> (the host binds the same ranges; their element
// offsets and token strides are multiples of 8, so every key row starts on a vec4).
@group(0) @binding(9) var<storage, read> k4: array<vec4<f16>>;
@group(0) @binding(10) var<storage, read> v4: array<vec4<f16>>;

// One invocation's share of a K or V tile in flight: vec4 j is tile element lidx + WG j.
struct Tile {
    t0: vec4<f16>, t1: vec4<f16>, t2: vec4<f16>, t3: vec4<f16>,
    t4: vec4<f16>, t5: vec4<f16>, t6: vec4<f16>, t7: vec4<f16>,
    t8: vec4<f16>, t9: vec4<f16>, t10: vec4<f16>, t11: vec4<f16>,
    t12: vec4<f16>, t13: vec4<f16>, t14: vec4<f16>, t15: vec4<f16>,
}

// Cooperative loads and stores need 16-byte aligned addresses. WGSL cannot align a workgroup
// variable, and drivers place them in their own order, so every workgroup variable here is a
// multiple of 16 bytes long: wherever each lands, all stay 16-byte aligned.
var<workgroup> s_s: array<f32, BM * SS>;     // [BM][BN] scores, then partial weights; epilogue
var<workgroup> kv_s: array<f16, KR * XS>;    // [key][DP] the K or V tile; [BM][DP] Q at the start
var<workgroup> q_s: array<f16, QR * XS>;     // [BM][DP] Q for the whole walk (QS = 1)
var<workgroup> p_s: array<f16, BM * PS>;     // [BM][BN] weights (A operand of P V)
var<workgroup> carry_s: array<f32, BM>;      // final carry per row, for the epilogue
var<workgroup> live_s: array<u32, BM>;       // early exit: row still has stick >= eps
var<workgroup> alive_s: array<u32, 4>;       // early exit: [0] some row of the tile has

// Rows [t0, t0 + n) of q, k or v (row r at base + r * stride) into kv_s, zero past T.
fn stage_rows(which: u32, base: u32, stride: u32, t0: u32, n: u32, lidx: u32) {
    for (var x = lidx; x < n * DP; x += WG) {
        let r = x / DP;
        let d = x % DP;
        let src = base + (t0 + r) * stride + d;
        var val = f16(0.0);
        if (t0 + r < sq.tq) {
            if (which == 0u) { val = q[src]; } else if (which == 1u) { val = k[src]; } else { val = v[src]; }
        }
        if (QS == 1u && which == 0u) { q_s[r * XS + d] = val; } else { kv_s[r * XS + d] = val; }
    }
}

// Tile element x (key x / C4, head dims 4 (x % C4) ..) of K (v = false) or V at key k0, zero
// past T.
fn fetch1(v: bool, base: u32, k0: u32, x: u32) -> vec4<f16> {
    let key = k0 + x / C4;
    if (key >= sq.tk) { return vec4<f16>(0.0h); }
    if (v) { return v4[(base + val_off(key)) / 4u + x % C4]; }
    return k4[(base + key_off(key)) / 4u + x % C4];
}

fn fetch(v: bool, base: u32, k0: u32, lidx: u32) -> Tile {
    var t = Tile();
    t.t0 = fetch1(v, base, k0, lidx);
    if (NV > 1u) { t.t1 = fetch1(v, base, k0, lidx + WG); }
    if (NV > 2u) { t.t2 = fetch1(v, base, k0, lidx + 2u * WG); }
    if (NV > 3u) { t.t3 = fetch1(v, base, k0, lidx + 3u * WG); }
    if (NV > 4u) { t.t4 = fetch1(v, base, k0, lidx + 4u * WG); }
    if (NV > 5u) { t.t5 = fetch1(v, base, k0, lidx + 5u * WG); }
    if (NV > 6u) { t.t6 = fetch1(v, base, k0, lidx + 6u * WG); }
    if (NV > 7u) { t.t7 = fetch1(v, base, k0, lidx + 7u * WG); }
    if (NV > 8u) { t.t8 = fetch1(v, base, k0, lidx + 8u * WG); }
    if (NV > 9u) { t.t9 = fetch1(v, base, k0, lidx + 9u * WG); }
    if (NV > 10u) { t.t10 = fetch1(v, base, k0, lidx + 10u * WG); }
    if (NV > 11u) { t.t11 = fetch1(v, base, k0, lidx + 11u * WG); }
    if (NV > 12u) { t.t12 = fetch1(v, base, k0, lidx + 12u * WG); }
    if (NV > 13u) { t.t13 = fetch1(v, base, k0, lidx + 13u * WG); }
    if (NV > 14u) { t.t14 = fetch1(v, base, k0, lidx + 14u * WG); }
    if (NV > 15u) { t.t15 = fetch1(v, base, k0, lidx + 15u * WG); }
    return t;
}

fn put1(x: u32, h: vec4<f16>) {
    let i = (x / C4) * XS + 4u * (x % C4);
    kv_s[i] = h.x;
    kv_s[i + 1u] = h.y;
    kv_s[i + 2u] = h.z;
    kv_s[i + 3u] = h.w;
}

fn put(t: Tile, lidx: u32) {
    put1(lidx, t.t0);
    if (NV > 1u) { put1(lidx + WG, t.t1); }
    if (NV > 2u) { put1(lidx + 2u * WG, t.t2); }
    if (NV > 3u) { put1(lidx + 3u * WG, t.t3); }
    if (NV > 4u) { put1(lidx + 4u * WG, t.t4); }
    if (NV > 5u) { put1(lidx + 5u * WG, t.t5); }
    if (NV > 6u) { put1(lidx + 6u * WG, t.t6); }
    if (NV > 7u) { put1(lidx + 7u * WG, t.t7); }
    if (NV > 8u) { put1(lidx + 8u * WG, t.t8); }
    if (NV > 9u) { put1(lidx + 9u * WG, t.t9); }
    if (NV > 10u) { put1(lidx + 10u * WG, t.t10); }
    if (NV > 11u) { put1(lidx + 11u * WG, t.t11); }
    if (NV > 12u) { put1(lidx + 12u * WG, t.t12); }
    if (NV > 13u) { put1(lidx + 13u * WG, t.t13); }
    if (NV > 14u) { put1(lidx + 14u * WG, t.t14); }
    if (NV > 15u) { put1(lidx + 15u * WG, t.t15); }
}

// S for this subgroup's rows and the tile's BN keys, accumulated in BN/16 independent blocks
// (s2, s3 unused when BN = 32) so the matrix units overlap them: one head-dim block db (this
// subgroup's Q block q) at a time.
fn score(q: MA, db: u32, s0: ptr<function, MC>, s1: ptr<function, MC>, s2: ptr<function, MC>, s3: ptr<function, MC>) {
    *s0 = mma(q, kt_s(0u, db), *s0);
    *s1 = mma(q, kt_s(1u, db), *s1);
    if (BN > 32u) {
        *s2 = mma(q, kt_s(2u, db), *s2);
        *s3 = mma(q, kt_s(3u, db), *s3);
    }
}

// acc += P[this subgroup's rows, all BN keys] V[all BN keys, head-dim block db]; the P blocks
// p0..p3 (keys 16 kb ..) are loaded once per tile by the caller (p2, p3 unused when BN = 32).
fn pv(acc: MC, p0: MA, p1: MA, p2: MA, p3: MA, db: u32) -> MC {
    var r = mma(p0, v_s(0u, db), acc);
    r = mma(p1, v_s(1u, db), r);
    if (BN > 32u) {
        r = mma(p2, v_s(2u, db), r);
        r = mma(p3, v_s(3u, db), r);
    }
    return r;
}

// Writes this subgroup's O block of head-dim block db, with the remainder term, via s_s.
fn store_block(acc: MC, g: u32, db: u32, lane: u32, r0: u32, h: u32, ob: u32, vb0: u32) {
    workgroupBarrier();
    store_s(acc, g, 0u);
    workgroupBarrier();
    let mode = (p.flags >> REM_SHIFT) & 3u;
    for (var e = lane; e < 256u; e += 32u) {
        let row = 16u * g + e / 16u;
        let i = r0 + row;
        let d = 16u * db + e % 16u;
        if (i < sq.tq) {
            var x = s_s[row * SS + e % 16u];
            let rem = exp(carry_s[row]);
            if (mode == REM_ADD_VALUE) {
                x += rem * f32(v[vb0 + val_off(sq.p0 + i) + d]);   // the query's own token
            } else if (mode == REM_ADD_BIAS) {
                x += rem * f32(bias[p.bias_off + h * p.d + d]);
            }
            o[ob + i * p.o.st + d] = ST(x);
        }
    }
}

// Which of keys j .. j+3 a row whose keys end before `end` sees (all of them off the diagonal).
fn visible4(masked: bool, j: u32, end: u32) -> vec4<bool> {
    if (!masked) { return vec4<bool>(true); }
    return vec4<u32>(j) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(end);
}

// This workgroup's sequence (the schedule's record, clamped).
var<private> sq: Seq;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) lidx: u32,
        @builtin(subgroup_id) sg_id: u32,
        @builtin(subgroup_size) sg_size: u32,
        @builtin(subgroup_invocation_id) sg_lane: u32) {
    let work = work_of(wid);                  // work items come heaviest first
    if (work.pad) { return; }                 // the grid's padding (the whole workgroup)
    let item = schedule(work.wi, lidx);
    // A local copy for every decision the workgroup must take together: a module-scope
    // variable counts as non-uniform to WGSL's uniformity analysis (Tint enforces it).
    let seq = seq_of(item);
    sq = seq;
    let b = item.b;
    let qt = item.qt;
    let h = work.h;
    let hk = h / p.group;
    let r0 = qt * BM;
    if (r0 >= seq.tq) { return; }             // an empty or corrupt record (uniform)
    let ac = p.flags & FLAG_ATTEND_CURRENT;
    let qb0 = p.q.off + b * p.q.sb + seq.q0 * p.q.st + h * p.q.sh;
    let kb0 = seq_base(p.k, p.pg, b, seq.k0) + hk * p.k.sh;
    let vb0 = seq_base(p.v, p.pg, b, seq.k0) + hk * p.v.sh;
    let ob = p.o.off + b * p.o.sb + seq.q0 * p.o.st + h * p.o.sh;
    // Slots numbered from the subgroups' own ids (32 wide on the hardware this runs on), so
    // that the 32 slots of a matrix operation and the two of a scanned row are one subgroup's.
    let slot = sg_id * sg_size + sg_lane;
    let g = slot / 32u;          // matrix subgroup (rows 16g ..)
    let lane = slot % 32u;
    mat_init(g, lane);

    // Scan roles: row `row`, keys [part * KPT, (part + 1) * KPT) of each tile.
    let row = slot / TPR;
    let part = slot % TPR;
    let i = r0 + row;
    var carry = 0.0;

    // Q blocks of this subgroup's rows, once (zero past T).
    stage_rows(0u, qb0, p.q.st, r0, BM, lidx);
    workgroupBarrier();
    // (QS = 1: read from q_s per tile instead, these stay unused.)
    var q0 = MA(); var q1 = MA(); var q2 = MA(); var q3 = MA();
    var q4 = MA(); var q5 = MA(); var q6 = MA(); var q7 = MA();
    if (QS == 0u) {
        q0 = load_q(g, 0u);
        if (ND > 1u) { q1 = load_q(g, 1u); }
        if (ND > 2u) { q2 = load_q(g, 2u); }
        if (ND > 3u) { q3 = load_q(g, 3u); }
        if (ND > 4u) { q4 = load_q(g, 4u); }
        if (ND > 5u) { q5 = load_q(g, 5u); }
        if (ND > 6u) { q6 = load_q(g, 6u); }
        if (ND > 7u) { q7 = load_q(g, 7u); }
        workgroupBarrier();                   // kv_s is free for K
    }

    var o0 = MC(); var o1 = MC(); var o2 = MC(); var o3 = MC();
    var o4 = MC(); var o5 = MC(); var o6 = MC(); var o7 = MC();
    // This invocation's share of the next tile, global memory -> registers -> kv_s.
    var nxt = Tile();

    // Keys any row of this tile sees: 0 .. p0 + min(r0 + BM, tq) - 1 + ac (exclusive end).
    let n_keys = seq.p0 + min(r0 + BM, seq.tq) + ac - 1u;
    var kt = (n_keys + BN - 1u) / BN;
    // The first tile's K.
    if (kt > 0u) {
        put(fetch(false, kb0, (kt - 1u) * BN, lidx), lidx);
        workgroupBarrier();                   // K ready
    }

    loop {
        if (kt == 0u) { break; }
        kt -= 1u;
        let k0 = kt * BN;
        let masked = k0 + BN > seq.p0 + r0 + ac;   // the diagonal tile(s): apply the causal mask

        // 1. V's loads in flight while S is computed.
        if (PF == 1u) { nxt = fetch(true, vb0, k0, lidx); }
        {
            var s0 = MC(); var s1 = MC(); var s2 = MC(); var s3 = MC();
            if (QS == 1u) {
                score(load_q(g, 0u), 0u, &s0, &s1, &s2, &s3);
                if (ND > 1u) { score(load_q(g, 1u), 1u, &s0, &s1, &s2, &s3); }
                if (ND > 2u) { score(load_q(g, 2u), 2u, &s0, &s1, &s2, &s3); }
                if (ND > 3u) { score(load_q(g, 3u), 3u, &s0, &s1, &s2, &s3); }
                if (ND > 4u) { score(load_q(g, 4u), 4u, &s0, &s1, &s2, &s3); }
                if (ND > 5u) { score(load_q(g, 5u), 5u, &s0, &s1, &s2, &s3); }
                if (ND > 6u) { score(load_q(g, 6u), 6u, &s0, &s1, &s2, &s3); }
                if (ND > 7u) { score(load_q(g, 7u), 7u, &s0, &s1, &s2, &s3); }
            } else {
                score(q0, 0u, &s0, &s1, &s2, &s3);
                if (ND > 1u) { score(q1, 1u, &s0, &s1, &s2, &s3); }
                if (ND > 2u) { score(q2, 2u, &s0, &s1, &s2, &s3); }
                if (ND > 3u) { score(q3, 3u, &s0, &s1, &s2, &s3); }
                if (ND > 4u) { score(q4, 4u, &s0, &s1, &s2, &s3); }
                if (ND > 5u) { score(q5, 5u, &s0, &s1, &s2, &s3); }
                if (ND > 6u) { score(q6, 6u, &s0, &s1, &s2, &s3); }
                if (ND > 7u) { score(q7, 7u, &s0, &s1, &s2, &s3); }
            }
            store_s(s0, g, 0u);
            store_s(s1, g, 1u);
            if (BN > 32u) {
                store_s(s2, g, 2u);
                store_s(s3, g, 3u);
            }
        }
        workgroupBarrier();                   // S ready; K no longer needed

        // 2. V into kv_s; the next K tile's loads in flight during the scan and P V.
        if (PF == 1u) { put(nxt, lidx); } else { put(fetch(true, vb0, k0, lidx), lidx); }
        let more = kt > 0u;
        if (more && PF == 1u) {
            nxt = fetch(false, kb0, k0 - BN, lidx);
        }

        // 3. Scan this invocation's KPT keys right to left, four at a time: each weight without
        // the stick used by the keys right of the run, and the run's sum of log(1 - beta); then
        // the other runs of the row (neighbouring invocations) by shuffle, and the weights
        // scaled by the stick left at the run's right edge, into p_s.
        var run = 0.0;
        let c0 = part * KPT;
        if (SP == 1u) {
            // Product form. With t = exp(-|z|) and r = 1 / (1 + t): beta = (z >= 0 ? 1 : t) r
            // and 1 - beta = (z >= 0 ? t : 1) r, so each weight is beta times the product of
            // the (1 - beta) of the run's keys to its right (in linear space: a product that
            // underflows is a stick below 1e-38, whose weights are negligible), and the run's
            // log(1 - beta) sum is -(sum of max(z, 0) + log prod (1 + t)), the product taken
            // four keys at a time as prod - 1 (u + v + u v) so that log1p keeps small t.
            var keep_right = 1.0;             // product of (1 - beta) right of these keys
            var pos_sum = 0.0;
            var log_sum = 0.0;
            for (var x = 0u; x < KPT / 4u; x++) {
                let c = c0 + KPT - 4u - 4u * x;           // keys c .. c+3
                let a = row * SS + c;
                let z = vec4<f32>(s_s[a], s_s[a + 1u], s_s[a + 2u], s_s[a + 3u]) * p.scale;
                let vis = visible4(masked, k0 + c, seq.p0 + i + ac);
                let t = exp(-abs(z));
                let r = 1.0 / (1.0 + t);
                let up = z >= vec4<f32>(0.0);
                let keep = select(vec4<f32>(1.0), select(vec4<f32>(1.0), t, up) * r, vis);
                let beta = select(vec4<f32>(0.0), select(t, vec4<f32>(1.0), up) * r, vis);
                let sx = vec4<f32>(keep.y * keep.z * keep.w, keep.z * keep.w, keep.w, 1.0);
                let w = beta * sx * keep_right;
                s_s[a] = w.x;
                s_s[a + 1u] = w.y;
                s_s[a + 2u] = w.z;
                s_s[a + 3u] = w.w;
                keep_right *= keep.x * sx.x;
                let tv = select(vec4<f32>(0.0), t, vis);
                let u = tv.x + tv.y + tv.x * tv.y;
                let v2 = tv.z + tv.w + tv.z * tv.w;
                let g = u + v2 + u * v2;                  // prod (1 + t) - 1 over the four
                log_sum += log1p_small(vec4<f32>(g)).x;
                let zp = select(vec4<f32>(0.0), max(z, vec4<f32>(0.0)), vis);
                pos_sum += (zp.x + zp.y) + (zp.z + zp.w);
            }
            run = -(pos_sum + log_sum);
        }
        for (var x = 0u; x < KPT / 4u * (1u - SP); x++) {
            let c = c0 + KPT - 4u - 4u * x;           // keys c .. c+3
            let a = row * SS + c;
            let z = vec4<f32>(s_s[a], s_s[a + 1u], s_s[a + 2u], s_s[a + 3u]) * p.scale;
            let vis = visible4(masked, k0 + c, seq.p0 + i + ac);
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
        // TPR = 2: the row's other run is the neighbouring invocation's.
        let other = subgroupShuffleXor(run, 1u);   // slot ^ 1: the same row
        let right = select(0.0, other, part == 0u);
        let f = exp(carry + right);
        for (var x = 0u; x < KPT / 4u; x++) {
            let a = row * SS + c0 + 4u * x;
            let w = vec4<f16>(vec4<f32>(s_s[a], s_s[a + 1u], s_s[a + 2u], s_s[a + 3u]) * f);
            let pb = row * PS + c0 + 4u * x;
            p_s[pb] = w.x;
            p_s[pb + 1u] = w.y;
            p_s[pb + 2u] = w.z;
            p_s[pb + 3u] = w.w;
        }
        carry += run + other;
        workgroupBarrier();                   // P and V ready

        // 4. O += P V.
        let pa0 = load_p(g, 0u);
        let pa1 = load_p(g, 1u);
        var pa2 = pa0;
        var pa3 = pa0;
        if (BN > 32u) {
            pa2 = load_p(g, 2u);
            pa3 = load_p(g, 3u);
        }
        o0 = pv(o0, pa0, pa1, pa2, pa3, 0u);
        if (ND > 1u) { o1 = pv(o1, pa0, pa1, pa2, pa3, 1u); }
        if (ND > 2u) { o2 = pv(o2, pa0, pa1, pa2, pa3, 2u); }
        if (ND > 3u) { o3 = pv(o3, pa0, pa1, pa2, pa3, 3u); }
        if (ND > 4u) { o4 = pv(o4, pa0, pa1, pa2, pa3, 4u); }
        if (ND > 5u) { o5 = pv(o5, pa0, pa1, pa2, pa3, 5u); }
        if (ND > 6u) { o6 = pv(o6, pa0, pa1, pa2, pa3, 6u); }
        if (ND > 7u) { o7 = pv(o7, pa0, pa1, pa2, pa3, 7u); }

        if ((p.flags & FLAG_EARLY_EXIT) != 0u) {
            if (part == 0u) { live_s[row] = select(0u, 1u, i < seq.tq && carry >= p.log_eps); }
            workgroupBarrier();
            if (lidx == 0u) {
                var any = 0u;
                for (var r = 0u; r < BM; r++) { any |= live_s[r]; }
                alive_s[0] = any;
            }
            if (workgroupUniformLoad(&alive_s[0]) == 0u) { break; }
        }
        workgroupBarrier();                   // V (and P) no longer needed

        // The next tile's K.
        if (more) {
            if (PF == 1u) { put(nxt, lidx); } else { put(fetch(false, kb0, k0 - BN, lidx), lidx); }
            workgroupBarrier();               // K ready
        }
    }

    // Epilogue: per-row outputs, then O block by block through s_s.
    if (part == 0u && i < seq.tq) {
        let row_idx = seq.row0 + h * p.rows_h + i;
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
