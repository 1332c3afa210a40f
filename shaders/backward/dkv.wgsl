// Backward pass, step 3: dk and dv. One workgroup per (key tile, key/value head, batch); for
// each query head of the group in order, for each query tile from the key tile's diagonal to
// the end, it rebuilds the block's A, u and dz from the carries the dq kernel stored
// (tile.wgsl, the same code and tiles as the dq kernel) and accumulates
//   dv_j += sum_i A_ij do_i,   dk_j += s sum_i dz_ij q_i
// in registers, then (AddToValue) dv_j += rem_j do_j of each head of the group (row j). Every
// sum runs in a fixed order and nothing is shared between workgroups: no atomics, bitwise
// reproducible.
//
// src/kernel/source.rs assembles: the prelude, common/addr.wgsl, backward/io.wgsl, this file,
// backward/tile.wgsl, one scan file and common/stick.wgsl.
//
// Barriers per block: 2 MC per score product, 2 + 2 + 2 BN / VK per accumulation (A^T dO, then
// dz^T Q through the same p_s), +4 for the shared-memory scans.

@group(0) @binding(1) var<storage, read> q: array<ST>;
@group(0) @binding(2) var<storage, read> k: array<ST>;
@group(0) @binding(3) var<storage, read> v: array<ST>;
@group(0) @binding(4) var<storage, read> d_o: array<ST>;
@group(0) @binding(5) var<storage, read> state: array<f32>;
@group(0) @binding(6) var<storage, read_write> dk: array<ST>;
@group(0) @binding(7) var<storage, read_write> dv: array<ST>;

// Field f of row i's scratch entry (0 past the sequence).
fn row_in(rowbase: u32, i: u32, f: u32) -> f32 {
    if (i < p.t) { return state[p.rows_off + 4u * (rowbase + i) + f]; }
    return 0.0;
}

// Carry f (0: C, 1: U) of row i at this key tile (`at`: the tile's row 0; 0 past the sequence).
fn carry(at: u32, i: u32, f: u32) -> f32 {
    if (i < p.t) { return state[at + 2u * i + f]; }
    return 0.0;
}

// Stores key j of dk (times the scale) and dv, columns 4 (g + 8 c) ..; with AddToValue, dv_j
// also gets rem_j do_j of each head of the group, in order (the remainder of row j goes to
// its own value). The epilogue's loops run over constants or the group: not hot.
fn store_kv(j: u32, b: u32, hk: u32, ka: Acc, va: Acc, g: u32, mode: u32) {
    if (j >= p.t) { return; }
    let kbo = p.dk.off + b * p.dk.sb + j * p.dk.st + hk * p.dk.sh;
    let vbo = p.dv.off + b * p.dv.sb + j * p.dv.st + hk * p.dv.sh;
    for (var c = 0u; c < NJ; c++) {
        let d0 = 4u * (g + 8u * c);
        let x = p.scale * col(ka, c);
        var y = col(va, c);
        if (mode == REM_ADD_VALUE) {
            for (var gi = 0u; gi < p.group; gi++) {
                let h = hk * p.group + gi;
                let rem = state[p.rows_off + 4u * ((b * p.h + h) * p.t + j) + 1u];
                y += rem * do4(p.d_o.off + b * p.d_o.sb + j * p.d_o.st + h * p.d_o.sh, d0, true);
            }
        }
        for (var e = 0u; e < 4u; e++) {
            if (d0 + e < p.d) {
                dk[kbo + d0 + e] = ST(x[e]);
                dv[vbo + d0 + e] = ST(y[e]);
            }
        }
    }
}

fn body(wid: vec3<u32>, lidx: u32, slot: u32, sg_lane: u32) {
    let kt = wid.x;                          // tile 0 (the most rows) first
    let hk = wid.y;
    let b = wid.z;
    let rg = slot / G;
    let g = slot % G;
    let k0 = kt * BN;
    let ac = p.flags & FLAG_ATTEND_CURRENT;
    let mode = (p.flags >> REM_SHIFT) & 3u;
    let kb = p.k.off + b * p.k.sb + hk * p.k.sh;
    let vb = p.v.off + b * p.v.sb + hk * p.v.sh;

    var dka = Acc4();                        // keys k0 + 4 rg + r: sum_i dz_ij q_i
    var dva = Acc4();                        // sum_i A_ij do_i
    // The first row that sees a key of this tile; its query tile is the first one the dq
    // kernel walked this key tile for, so every block below has its carries.
    let first = k0 + 1u - ac;
    let q_first = select(p.n_ktiles, first / BM, first < p.t);
    // Every (head of the group, query tile) pair in order, as one loop (a nested loop costs
    // llvmpipe a third more compile time).
    let nq = p.n_ktiles - q_first;
    for (var it = 0u; it < p.group * nq; it++) {
        let h = hk * p.group + it / nq;
        let qt = q_first + it % nq;
        let qb = p.q.off + b * p.q.sb + h * p.q.sh;
        let dob = p.d_o.off + b * p.d_o.sb + h * p.d_o.sh;
        let rowbase = (b * p.h + h) * p.t;
        let cb = p.carry_off + 2u * ((b * p.h + h) * p.n_ktiles + kt) * p.t;
        let r0 = qt * BM;
        let i0 = r0 + 4u * rg;
        let c = vec4<f32>(carry(cb, i0, 0u), carry(cb, i0 + 1u, 0u), carry(cb, i0 + 2u, 0u), carry(cb, i0 + 3u, 0u));
        let u = vec4<f32>(carry(cb, i0, 1u), carry(cb, i0 + 1u, 1u), carry(cb, i0 + 2u, 1u), carry(cb, i0 + 3u, 1u));
        let w = vec4<f32>(row_in(rowbase, i0, 3u), row_in(rowbase, i0 + 1u, 3u), row_in(rowbase, i0 + 2u, 3u), row_in(rowbase, i0 + 3u, 3u));
        let dr = vec4<f32>(row_in(rowbase, i0, 0u), row_in(rowbase, i0 + 1u, 0u), row_in(rowbase, i0 + 2u, 0u), row_in(rowbase, i0 + 3u, 0u));
        let sc = scores(r0, k0, qb, kb, dob, vb, rg, g, lidx);
        let gr = tile_grad(sc, k0, i0, ac, c, u, w, dr, rg, g, sg_lane);
        dva = accumulate(dva, gr.a, true, 2u, r0, dob, rg, g, lidx);
        dka = accumulate(dka, gr.dz, true, 1u, r0, qb, rg, g, lidx);
    }
    let j = k0 + 4u * rg;
    store_kv(j, b, hk, dka.a0, dva.a0, g, mode);
    store_kv(j + 1u, b, hk, dka.a1, dva.a1, g, mode);
    store_kv(j + 2u, b, hk, dka.a2, dva.a2, g, mode);
    store_kv(j + 3u, b, hk, dka.a3, dva.a3, g, mode);
}
