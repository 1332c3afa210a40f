// The tile machinery shared by the dq and dkv kernels of the backward pass (docs/ALGORITHM.md
// "Backward"): loads, staging, the two score products, the row scans that rebuild A and the
// running sums of u within a key tile, and the accumulation of a weight tile times staged rows.
//
// Both kernels compute every (rows x key tile) block with this same code, the same tiles and
// the same scan file, so the dkv kernel rebuilds from the stored carries exactly the A, u and
// suffix sums the dq kernel summed into W (see tile_grad).
//
// The prelude declares (src/ops/backward/plan.rs chooses them from the workgroup memory):
//   alias ST = f32 | f16;  storage type of q, k, v, do and the gradients (math is always f32)
//   const WG: u32;         invocations (64 or 128); BM = BN = WG / 2 rows and keys per tile
//   const BN: u32;         keys per tile (32 or 64)
//   const DC: u32;         head-dim columns staged at once for the score products (16 or 32)
//   const NJ: u32;         column groups of 32 of the accumulators (1..=8): head dim <= 32 NJ
//   const VK: u32;         rows (keys) of the accumulated operand staged at once (divides BN)
// and the flag bits. The head-dim chunks of the score products, MC, are a parameter (p.mc).
// The kernel file declares the bindings q, k, v, d_o, state and `fn body`; the scan file
// declares the entry point and `lane_scan` (as in the forward pass).
//
// Thread layout (as the forward kernel): slot = 8 rg + g, row group rg = 0 .. RG - 1, lane
// g = 0..7, the 8 lanes of a row group in one subgroup on the subgroup path.
//   scores: 4 rows 4 rg + r (r = 0..3) x keys 32 s + 4 g .. + 3 (segment s < NKV): Blk.x{r}{s}
//   accumulators: 4 rows (dq) or 4 keys (dkv) 4 rg + r x columns 4 (g + 8 j) .. + 3 (j < NJ):
//   Acc4.a{r}.c{j}
// Named vec4s in structs, never arrays with runtime indices (docs/PERFORMANCE.md).
//
// Workgroup memory (f32): st_s, the staging area (score chunks: DC columns x BM rows and DC
// columns x BN keys, transposed, rows padded by one vec4; the accumulated operand: VK rows of
// 32 NJ columns; the shared-memory scan's lane totals), and p_s, one weight tile (dq: per key
// the 4 rows of a row group; dkv: per row the 4 keys of a key quad), padded by one vec4.

const G: u32 = 8u;             // lanes per row group
const RG: u32 = WG / G;        // row groups (dkv accumulation: key quads)
const BM: u32 = 4u * RG;       // rows per query tile (= BN)
const NKV: u32 = BN / 32u;     // key segments of 32 (1 or 2)
const KQ: u32 = BN / 4u;       // key quads per tile (= RG)
const DQ: u32 = DC / 4u;       // head-dim quads per staged chunk
const VW: u32 = 8u * NJ;       // vec4s per staged row of the accumulated operand
const PW: u32 = RG + 1u;       // padded vec4 stride of a column (st_s) or a key / row (p_s)
const KOFF: u32 = DC * PW;     // key side of a staged score chunk in st_s

var<workgroup> st_s: array<vec4<f32>, 2u * DC * PW>;
var<workgroup> p_s: array<vec4<f32>, BN * PW>;

// A 4-row x 4 NKV-key block of one invocation: x{r}{s} = row 4 rg + r, keys 32 s + 4 g .. + 3.
struct Blk {
    x00: vec4<f32>, x10: vec4<f32>, x20: vec4<f32>, x30: vec4<f32>,
    x01: vec4<f32>, x11: vec4<f32>, x21: vec4<f32>, x31: vec4<f32>,
}
// One accumulator row: columns 4 (g + 8 j) .. + 3 in c{j}.
struct Acc {
    c0: vec4<f32>, c1: vec4<f32>, c2: vec4<f32>, c3: vec4<f32>,
    c4: vec4<f32>, c5: vec4<f32>, c6: vec4<f32>, c7: vec4<f32>,
}
struct Acc4 {
    a0: Acc, a1: Acc, a2: Acc, a3: Acc,
}
struct Scores {
    s: Blk,    // dot(q_i, k_j)
    g: Blk,    // dot(do_i, v_j)
}
// What lane_scan returns, per row of the row group (x, y, z, w = rows 4 rg + 0..3).
struct Scan {
    right0: vec4<f32>,   // sum of t0 over lanes g+1 .. 7
    right1: vec4<f32>,   // sum of t1 over lanes g+1 .. 7
    total0: vec4<f32>,   // sum of t0 over all 8 lanes
    total1: vec4<f32>,   // sum of t1 over all 8 lanes
}
// The gradients of one block, and the row carries after the tile.
struct Grad {
    a: Blk,        // A_ij
    dz: Blk,       // dL/dz_ij for the given W (dq: the prep kernel's W'; dkv: the exact W)
    beta: Blk,     // beta_ij (0 where masked)
    c: vec4<f32>,  // C after the tile: sum of log(1 - beta) over the keys right of its left edge
    u: vec4<f32>,  // U after the tile: sum of u over the same keys
}

// Head-dim columns d .. d+3 of one row (`base`: its column 0), 0 past the head dim or for a
// row outside the tensor (`ok` false). Loads only what exists.
fn q4(base: u32, d: u32, ok: bool) -> vec4<f32> {
    var x = vec4<f32>(0.0);
    if (ok) {
        if (d + 3u < p.d) {
            x = vec4<f32>(f32(q[base + d]), f32(q[base + d + 1u]), f32(q[base + d + 2u]), f32(q[base + d + 3u]));
        } else {
            if (d < p.d) { x.x = f32(q[base + d]); }
            if (d + 1u < p.d) { x.y = f32(q[base + d + 1u]); }
            if (d + 2u < p.d) { x.z = f32(q[base + d + 2u]); }
        }
    }
    return x;
}
fn k4(base: u32, d: u32, ok: bool) -> vec4<f32> {
    var x = vec4<f32>(0.0);
    if (ok) {
        if (d + 3u < p.d) {
            x = vec4<f32>(f32(k[base + d]), f32(k[base + d + 1u]), f32(k[base + d + 2u]), f32(k[base + d + 3u]));
        } else {
            if (d < p.d) { x.x = f32(k[base + d]); }
            if (d + 1u < p.d) { x.y = f32(k[base + d + 1u]); }
            if (d + 2u < p.d) { x.z = f32(k[base + d + 2u]); }
        }
    }
    return x;
}
fn v4(base: u32, d: u32, ok: bool) -> vec4<f32> {
    var x = vec4<f32>(0.0);
    if (ok) {
        if (d + 3u < p.d) {
            x = vec4<f32>(f32(v[base + d]), f32(v[base + d + 1u]), f32(v[base + d + 2u]), f32(v[base + d + 3u]));
        } else {
            if (d < p.d) { x.x = f32(v[base + d]); }
            if (d + 1u < p.d) { x.y = f32(v[base + d + 1u]); }
            if (d + 2u < p.d) { x.z = f32(v[base + d + 2u]); }
        }
    }
    return x;
}
fn do4(base: u32, d: u32, ok: bool) -> vec4<f32> {
    var x = vec4<f32>(0.0);
    if (ok) {
        if (d + 3u < p.d) {
            x = vec4<f32>(f32(d_o[base + d]), f32(d_o[base + d + 1u]), f32(d_o[base + d + 2u]), f32(d_o[base + d + 3u]));
        } else {
            if (d < p.d) { x.x = f32(d_o[base + d]); }
            if (d + 1u < p.d) { x.y = f32(d_o[base + d + 1u]); }
            if (d + 2u < p.d) { x.z = f32(d_o[base + d + 2u]); }
        }
    }
    return x;
}

// Stores a 4 x 4 block (rows a, b, e, f; 4 consecutive columns each) transposed: one vec4 of
// the 4 rows per column, columns PW apart.
fn put_t(at: u32, a: vec4<f32>, b: vec4<f32>, e: vec4<f32>, f: vec4<f32>) {
    st_s[at] = vec4<f32>(a.x, b.x, e.x, f.x);
    st_s[at + PW] = vec4<f32>(a.y, b.y, e.y, f.y);
    st_s[at + 2u * PW] = vec4<f32>(a.z, b.z, e.z, f.z);
    st_s[at + 3u * PW] = vec4<f32>(a.w, b.w, e.w, f.w);
}

// Stages head-dim chunk c of the rows r0 .. r0 + BM - 1 (q, or do when `second`) and of the
// keys k0 .. k0 + BN - 1 (k, or v), transposed: item x is head-dim quad x % DQ of 4 rows (keys)
// x / DQ; neighbouring invocations read neighbouring columns of a row.
fn stage_scores(c: u32, r0: u32, k0: u32, rb: u32, kb: u32, second: bool, lidx: u32) {
    let d0 = c * DC;
    for (var x = lidx; x < DQ * RG; x += WG) {
        let cq = x % DQ;
        let rq = x / DQ;
        let d = d0 + 4u * cq;
        let i = r0 + 4u * rq;
        if (second) {
            let st = p.d_o.st;
            put_t(4u * cq * PW + rq, do4(rb + i * st, d, i < p.t), do4(rb + (i + 1u) * st, d, i + 1u < p.t),
                  do4(rb + (i + 2u) * st, d, i + 2u < p.t), do4(rb + (i + 3u) * st, d, i + 3u < p.t));
        } else {
            let st = p.q.st;
            put_t(4u * cq * PW + rq, q4(rb + i * st, d, i < p.t), q4(rb + (i + 1u) * st, d, i + 1u < p.t),
                  q4(rb + (i + 2u) * st, d, i + 2u < p.t), q4(rb + (i + 3u) * st, d, i + 3u < p.t));
        }
    }
    for (var x = lidx; x < DQ * KQ; x += WG) {
        let cq = x % DQ;
        let kq = x / DQ;
        let d = d0 + 4u * cq;
        let j = k0 + 4u * kq;
        if (second) {
            let st = p.v.st;
            put_t(KOFF + 4u * cq * PW + kq, v4(kb + j * st, d, j < p.t), v4(kb + (j + 1u) * st, d, j + 1u < p.t),
                  v4(kb + (j + 2u) * st, d, j + 2u < p.t), v4(kb + (j + 3u) * st, d, j + 3u < p.t));
        } else {
            let st = p.k.st;
            put_t(KOFF + 4u * cq * PW + kq, k4(kb + j * st, d, j < p.t), k4(kb + (j + 1u) * st, d, j + 1u < p.t),
                  k4(kb + (j + 2u) * st, d, j + 2u < p.t), k4(kb + (j + 3u) * st, d, j + 3u < p.t));
        }
    }
}

// One staged chunk of a score product: 16 NKV FMAs per 1 + NKV workgroup loads per column.
fn scores_chunk(acc: Blk, rg: u32, g: u32) -> Blk {
    var s = acc;
    for (var dd = 0u; dd < DC; dd++) {
        let a = st_s[dd * PW + rg];                // column dd of rows 4 rg .. 4 rg + 3
        let k_0 = st_s[KOFF + dd * PW + g];        // column dd of keys 4 g .. 4 g + 3
        s.x00 += a.x * k_0;
        s.x10 += a.y * k_0;
        s.x20 += a.z * k_0;
        s.x30 += a.w * k_0;
        if (NKV > 1u) {
            let k_1 = st_s[KOFF + dd * PW + g + 8u];   // keys 32 + 4 g ..
            s.x01 += a.x * k_1;
            s.x11 += a.y * k_1;
            s.x21 += a.z * k_1;
            s.x31 += a.w * k_1;
        }
    }
    return s;
}

// Q K^T and dO V^T of the block (rows r0 .., keys k0 ..), MC chunks each. The barrier before
// each staging waits for every reader of st_s (the previous chunk, scan or accumulation).
fn scores(r0: u32, k0: u32, qb: u32, kb: u32, dob: u32, vb: u32, rg: u32, g: u32, lidx: u32) -> Scores {
    var s = Blk();
    for (var c = 0u; c < p.mc; c++) {
        workgroupBarrier();
        stage_scores(c, r0, k0, qb, kb, false, lidx);
        workgroupBarrier();
        s = scores_chunk(s, rg, g);
    }
    var gg = Blk();
    for (var c = 0u; c < p.mc; c++) {
        workgroupBarrier();
        stage_scores(c, r0, k0, dob, vb, true, lidx);
        workgroupBarrier();
        gg = scores_chunk(gg, rg, g);
    }
    return Scores(s, gg);
}

// Visibility of keys j .. j + 3 for row i: key j <= i - 1 + ac, and the row exists.
fn vis4(j: u32, i: u32, ac: u32) -> vec4<bool> {
    let seen = (vec4<u32>(j) + vec4<u32>(0u, 1u, 2u, 3u)) < vec4<u32>(i + ac);
    return seen & vec4<bool>(i < p.t);
}

// One lane's four keys of one row, from the logits z: log(beta) plus the sum of log(1 - beta)
// over the lane's keys to the right (`a`), the lane's sum of log(1 - beta) (`t`), and beta and
// 1 - beta, all 0 where masked. Stable for any finite z: with e = exp(-|z|) and
// l = log1p(e), log(1 - beta) = -(max(z, 0) + l), log(beta) = min(z, 0) - l, and
// beta = (z >= 0 ? 1 : e) / (1 + e), 1 - beta = (z >= 0 ? e : 1) / (1 + e).
struct Piece {
    a: vec4<f32>,
    t: f32,
    beta: vec4<f32>,
    omb: vec4<f32>,
}
fn piece(z: vec4<f32>, vis: vec4<bool>) -> Piece {
    let e = exp(-abs(z));
    let l = log1p_small(e);
    let nl = select(vec4<f32>(0.0), -(max(z, vec4<f32>(0.0)) + l), vis);
    let lb = min(z, vec4<f32>(0.0)) - l;
    let ex_z = nl.w;
    let ex_y = nl.z + ex_z;
    let ex_x = nl.y + ex_y;
    let inv = 1.0 / (1.0 + e);
    let pos = z >= vec4<f32>(0.0);
    let beta = select(vec4<f32>(0.0), select(e, vec4<f32>(1.0), pos) * inv, vis);
    let omb = select(vec4<f32>(0.0), select(vec4<f32>(1.0), e, pos) * inv, vis);
    return Piece(lb + vec4<f32>(ex_x, ex_y, ex_z, 0.0), nl.x + ex_x, beta, omb);
}

// The weights of one lane's four keys of one row (`base`: the log of the stick left right of
// the lane), u = A (g - dr), u's exclusive suffix sums within the lane (`e`) and its lane total.
struct U4 {
    a: vec4<f32>,
    u: vec4<f32>,
    e: vec4<f32>,
    t: f32,
}
fn u4(pc: Piece, base: f32, gg: vec4<f32>, dr: f32, vis: vec4<bool>) -> U4 {
    let a = select(vec4<f32>(0.0), exp(pc.a + vec4<f32>(base)), vis);
    let u = a * (gg - vec4<f32>(dr));
    let e_z = u.w;
    let e_y = u.z + e_z;
    let e_x = u.y + e_y;
    return U4(a, u, vec4<f32>(e_x, e_y, e_z, 0.0), u.x + e_x);
}

// dz = (1 - beta) u - beta sum_{l < j} u_l, with sum_{l < j} u_l = W - (sum_{l > j} u_l) - u_j
// and sum_{l > j} u_l = `rbase` (everything right of the lane) + the lane's suffix.
fn dz4(x: U4, pc: Piece, rbase: f32, w: f32, vis: vec4<bool>) -> vec4<f32> {
    let right = vec4<f32>(rbase) + x.e;
    let left = (vec4<f32>(w) - right) - x.u;
    return select(vec4<f32>(0.0), pc.omb * x.u - pc.beta * left, vis);
}

// The gradients of one block: rows i0 .. i0 + 3 (this invocation's) of the tile at key k0,
// whose keys right of the tile carry c (sum of log(1 - beta)) and u (sum of u); w is the row
// total W used for dz, dr the remainder's gradient. Two scans across the row's 8 lanes: the
// log stick (for A, as the forward pass), then u (for the suffix sums of u). Rows past T and
// keys not seen are 0 everywhere (selects, so that nothing unused can leak a NaN).
fn tile_grad(sc: Scores, k0: u32, i0: u32, ac: u32, c: vec4<f32>, u: vec4<f32>, w: vec4<f32>, dr: vec4<f32>,
             rg: u32, g: u32, sg_lane: u32) -> Grad {
    let j0 = k0 + 4u * g;
    let v00 = vis4(j0, i0, ac);
    let v10 = vis4(j0, i0 + 1u, ac);
    let v20 = vis4(j0, i0 + 2u, ac);
    let v30 = vis4(j0, i0 + 3u, ac);
    var v01 = vec4<bool>(false); var v11 = v01; var v21 = v01; var v31 = v01;
    if (NKV > 1u) {
        v01 = vis4(j0 + 32u, i0, ac);
        v11 = vis4(j0 + 32u, i0 + 1u, ac);
        v21 = vis4(j0 + 32u, i0 + 2u, ac);
        v31 = vis4(j0 + 32u, i0 + 3u, ac);
    }
    let sc_ = p.scale;
    let p00 = piece(sc_ * sc.s.x00, v00);
    let p10 = piece(sc_ * sc.s.x10, v10);
    let p20 = piece(sc_ * sc.s.x20, v20);
    let p30 = piece(sc_ * sc.s.x30, v30);
    var p01 = Piece(); var p11 = p01; var p21 = p01; var p31 = p01;
    if (NKV > 1u) {
        p01 = piece(sc_ * sc.s.x01, v01);
        p11 = piece(sc_ * sc.s.x11, v11);
        p21 = piece(sc_ * sc.s.x21, v21);
        p31 = piece(sc_ * sc.s.x31, v31);
    }
    // The log stick right of each lane (as the forward pass: segment 0 has all of segment 1
    // to its right).
    let n = lane_scan(vec4<f32>(p00.t, p10.t, p20.t, p30.t), vec4<f32>(p01.t, p11.t, p21.t, p31.t), rg, g, sg_lane);
    let base0 = c + n.right0 + n.total1;
    let base1 = c + n.right1;
    let u00 = u4(p00, base0.x, sc.g.x00, dr.x, v00);
    let u10 = u4(p10, base0.y, sc.g.x10, dr.y, v10);
    let u20 = u4(p20, base0.z, sc.g.x20, dr.z, v20);
    let u30 = u4(p30, base0.w, sc.g.x30, dr.w, v30);
    var u01 = U4(); var u11 = u01; var u21 = u01; var u31 = u01;
    if (NKV > 1u) {
        u01 = u4(p01, base1.x, sc.g.x01, dr.x, v01);
        u11 = u4(p11, base1.y, sc.g.x11, dr.y, v11);
        u21 = u4(p21, base1.z, sc.g.x21, dr.z, v21);
        u31 = u4(p31, base1.w, sc.g.x31, dr.w, v31);
    }
    // The sums of u right of each lane, the same way.
    let m = lane_scan(vec4<f32>(u00.t, u10.t, u20.t, u30.t), vec4<f32>(u01.t, u11.t, u21.t, u31.t), rg, g, sg_lane);
    let rb0 = u + m.right0 + m.total1;
    let rb1 = u + m.right1;
    var out: Grad;
    out.a = Blk(u00.a, u10.a, u20.a, u30.a, u01.a, u11.a, u21.a, u31.a);
    out.dz = Blk(dz4(u00, p00, rb0.x, w.x, v00), dz4(u10, p10, rb0.y, w.y, v10),
                 dz4(u20, p20, rb0.z, w.z, v20), dz4(u30, p30, rb0.w, w.w, v30),
                 dz4(u01, p01, rb1.x, w.x, v01), dz4(u11, p11, rb1.y, w.y, v11),
                 dz4(u21, p21, rb1.z, w.z, v21), dz4(u31, p31, rb1.w, w.w, v31));
    out.beta = Blk(p00.beta, p10.beta, p20.beta, p30.beta, p01.beta, p11.beta, p21.beta, p31.beta);
    out.c = c + (n.total0 + n.total1);
    out.u = u + (m.total0 + m.total1);
    return out;
}

// Stages rows (keys) t0 .. t0 + VK - 1 of k (`which` 0), q (1) or do (2), all 32 NJ columns:
// st_s[kk VW + c4] = columns 4 c4 .. + 3 of row t0 + kk (0 past T).
fn stage_rows(which: u32, t0: u32, base: u32, lidx: u32) {
    for (var x = lidx; x < VK * VW; x += WG) {
        let c4 = x % VW;
        let kk = x / VW;
        let t = t0 + kk;
        var y = vec4<f32>(0.0);
        if (which == 0u) {
            y = k4(base + t * p.k.st, 4u * c4, t < p.t);
        } else if (which == 1u) {
            y = q4(base + t * p.q.st, 4u * c4, t < p.t);
        } else {
            y = do4(base + t * p.d_o.st, 4u * c4, t < p.t);
        }
        st_s[kk * VW + c4] = y;
    }
}

// Acc4 += one weight vec4 (w.x for a0 .. w.w for a3) times one staged row (`base`: its vec4
// at this lane): 16 NJ FMAs per 1 + NJ workgroup loads.
fn acc4(t: Acc4, w: vec4<f32>, base: u32) -> Acc4 {
    var r = t;
    var x = st_s[base];
    r.a0.c0 += w.x * x; r.a1.c0 += w.y * x; r.a2.c0 += w.z * x; r.a3.c0 += w.w * x;
    if (NJ > 1u) {
        x = st_s[base + 8u];
        r.a0.c1 += w.x * x; r.a1.c1 += w.y * x; r.a2.c1 += w.z * x; r.a3.c1 += w.w * x;
    }
    if (NJ > 2u) {
        x = st_s[base + 16u];
        r.a0.c2 += w.x * x; r.a1.c2 += w.y * x; r.a2.c2 += w.z * x; r.a3.c2 += w.w * x;
    }
    if (NJ > 3u) {
        x = st_s[base + 24u];
        r.a0.c3 += w.x * x; r.a1.c3 += w.y * x; r.a2.c3 += w.z * x; r.a3.c3 += w.w * x;
    }
    if (NJ > 4u) {
        x = st_s[base + 32u];
        r.a0.c4 += w.x * x; r.a1.c4 += w.y * x; r.a2.c4 += w.z * x; r.a3.c4 += w.w * x;
    }
    if (NJ > 5u) {
        x = st_s[base + 40u];
        r.a0.c5 += w.x * x; r.a1.c5 += w.y * x; r.a2.c5 += w.z * x; r.a3.c5 += w.w * x;
    }
    if (NJ > 6u) {
        x = st_s[base + 48u];
        r.a0.c6 += w.x * x; r.a1.c6 += w.y * x; r.a2.c6 += w.z * x; r.a3.c6 += w.w * x;
    }
    if (NJ > 7u) {
        x = st_s[base + 56u];
        r.a0.c7 += w.x * x; r.a1.c7 += w.y * x; r.a2.c7 += w.z * x; r.a3.c7 += w.w * x;
    }
    return r;
}

// p_s[key][rg] = the 4 rows' values of each key (dq: the weights of a row group per key).
fn put_keys(w: Blk, rg: u32, g: u32) {
    let j = 4u * g;
    p_s[j * PW + rg] = vec4<f32>(w.x00.x, w.x10.x, w.x20.x, w.x30.x);
    p_s[(j + 1u) * PW + rg] = vec4<f32>(w.x00.y, w.x10.y, w.x20.y, w.x30.y);
    p_s[(j + 2u) * PW + rg] = vec4<f32>(w.x00.z, w.x10.z, w.x20.z, w.x30.z);
    p_s[(j + 3u) * PW + rg] = vec4<f32>(w.x00.w, w.x10.w, w.x20.w, w.x30.w);
    if (NKV > 1u) {
        p_s[(j + 32u) * PW + rg] = vec4<f32>(w.x01.x, w.x11.x, w.x21.x, w.x31.x);
        p_s[(j + 33u) * PW + rg] = vec4<f32>(w.x01.y, w.x11.y, w.x21.y, w.x31.y);
        p_s[(j + 34u) * PW + rg] = vec4<f32>(w.x01.z, w.x11.z, w.x21.z, w.x31.z);
        p_s[(j + 35u) * PW + rg] = vec4<f32>(w.x01.w, w.x11.w, w.x21.w, w.x31.w);
    }
}

// p_s[row][key quad] = the 4 keys' values of each row (dkv: the weights of a key quad per row).
fn put_rows(w: Blk, rg: u32, g: u32) {
    let r = 4u * rg;
    p_s[r * PW + g] = w.x00;
    p_s[(r + 1u) * PW + g] = w.x10;
    p_s[(r + 2u) * PW + g] = w.x20;
    p_s[(r + 3u) * PW + g] = w.x30;
    if (NKV > 1u) {
        p_s[r * PW + g + 8u] = w.x01;
        p_s[(r + 1u) * PW + g + 8u] = w.x11;
        p_s[(r + 2u) * PW + g + 8u] = w.x21;
        p_s[(r + 3u) * PW + g + 8u] = w.x31;
    }
}

// acc += W^T X over the BN (= BM) tokens t0 .. of one block: `w` is this invocation's part of
// the weight block, written to p_s per key (`per_row` false: dq, X = keys of k) or per row
// (`per_row` true: dkv, X = rows of q or do); X (`which`, at `base`) is staged VK tokens at a
// time; invocation (rg, g) then owns 4 rows (dq) or 4 keys (dkv) 4 rg .. and columns
// 4 (g + 8 j) ... Barriers: before p_s is written (its last readers), and around each staging.
// The chunk count BN / VK is the parameter p.n_stage, not a constant: with a constant trip count
// llvmpipe (lavapipe) unrolls the loop and its barriers, each a coroutine suspension there, and
// compiling the dq kernel took 94 s instead of 4.
fn accumulate(t: Acc4, w: Blk, per_row: bool, which: u32, t0: u32, base: u32, rg: u32, g: u32, lidx: u32) -> Acc4 {
    workgroupBarrier();
    if (per_row) { put_rows(w, rg, g); } else { put_keys(w, rg, g); }
    var acc = t;
    for (var c = 0u; c < p.n_stage; c++) {
        workgroupBarrier();
        stage_rows(which, t0 + c * VK, base, lidx);
        workgroupBarrier();
        for (var kk = 0u; kk < VK; kk++) {
            acc = acc4(acc, p_s[(c * VK + kk) * PW + rg], kk * VW + g);
        }
    }
    return acc;
}

// Column group j of an accumulator row (j a loop counter over the constant NJ: folds away).
fn col(a: Acc, j: u32) -> vec4<f32> {
    switch (j) {
        case 0u: { return a.c0; }
        case 1u: { return a.c1; }
        case 2u: { return a.c2; }
        case 3u: { return a.c3; }
        case 4u: { return a.c4; }
        case 5u: { return a.c5; }
        case 6u: { return a.c6; }
        default: { return a.c7; }
    }
}
