// Backward pass, step 2: dq, and the carries the dkv kernel rebuilds its blocks from. One
// workgroup per (query tile, head, batch), walking the key tiles nearest first as the forward
// pass does (docs/ALGORITHM.md "Backward").
//
// src/kernel/source.rs assembles: the prelude, common/addr.wgsl, backward/io.wgsl, this file,
// backward/tile.wgsl, one scan file (common/scan_subgroup.wgsl or backward/scan_shared.wgsl, with the
// entry point) and common/stick.wgsl.
//
// Per row, from 0 at the diagonal: C (sum of log(1 - beta), for A as the forward pass) and U
// (sum of u = A (g - dr)) over the keys walked so far. Before each key tile the kernel writes
// the row's (C, U) for that tile into the scratch; then per tile (barriers: 2 MC per score
// product, 2 + 2 + 2 BN / VK per accumulation, +4 for the shared-memory scans):
//   S = Q K^T, g = dO V^T (tile.wgsl: scores)
//   A, u, the suffix sums of u, dz' with the prep kernel's W' (tile.wgsl: tile_grad)
//   dq' += dz' K, Y += beta K
// dz needs W = sum_j u_ij before the walk has summed it; W' from dot(do, o) is that sum up to
// the rounding of o, which every dz of the row would inherit times its beta (an error that
// grows with T: 0.5 % of dq at T = 500 from f16 o). The walk's own total U is the exact W, and
// since dz_ij = dz'_ij - beta_ij (W_i - W'_i),
//   dq_i = s (dq'_i - (W_i - W'_i) Y_i),   Y_i = sum_j beta_ij k_j,
// which carries no cancellation (W - W' is small). W goes to the scratch for the dkv kernel.

@group(0) @binding(1) var<storage, read> q: array<ST>;
@group(0) @binding(2) var<storage, read> k: array<ST>;
@group(0) @binding(3) var<storage, read> v: array<ST>;
@group(0) @binding(4) var<storage, read> d_o: array<ST>;
@group(0) @binding(5) var<storage, read_write> dq: array<ST>;
@group(0) @binding(6) var<storage, read_write> state: array<f32>;

// Field f of row i's scratch entry (0 past the sequence).
fn row_in(rowbase: u32, i: u32, f: u32) -> f32 {
    if (i < p.t) { return state[p.rows_off + 4u * (rowbase + i) + f]; }
    return 0.0;
}

// Writes the carries of rows i0 .. i0 + 3 at one key tile (`at`: the tile's row 0).
fn put_carries(at: u32, i0: u32, c: vec4<f32>, u: vec4<f32>) {
    for (var r = 0u; r < 4u; r++) {
        if (i0 + r < p.t) {
            state[at + 2u * (i0 + r)] = c[r];
            state[at + 2u * (i0 + r) + 1u] = u[r];
        }
    }
}

// Stores one row of dq: s (a - dl y), columns 4 (g + 8 j) ...
fn store_dq(i: u32, b: u32, h: u32, a: Acc, y: Acc, dl: f32, g: u32) {
    if (i >= p.t) { return; }
    let ob = p.dq.off + b * p.dq.sb + i * p.dq.st + h * p.dq.sh;
    for (var j = 0u; j < NJ; j++) {
        let x = p.scale * (col(a, j) - dl * col(y, j));
        let d0 = 4u * (g + 8u * j);
        for (var e = 0u; e < 4u; e++) {
            if (d0 + e < p.d) { dq[ob + d0 + e] = ST(x[e]); }
        }
    }
}

fn body(wid: vec3<u32>, lidx: u32, slot: u32, sg_lane: u32) {
    let qt = p.n_ktiles - 1u - wid.x;        // longest rows first
    let h = wid.y;
    let b = wid.z;
    let hk = h / p.group;
    let rg = slot / G;
    let g = slot % G;
    let r0 = qt * BM;
    let i0 = r0 + 4u * rg;                   // this invocation's first row
    let ac = p.flags & FLAG_ATTEND_CURRENT;

    let qb = p.q.off + b * p.q.sb + h * p.q.sh;
    let kb = p.k.off + b * p.k.sb + hk * p.k.sh;
    let vb = p.v.off + b * p.v.sb + hk * p.v.sh;
    let dob = p.d_o.off + b * p.d_o.sb + h * p.d_o.sh;
    let rowbase = (b * p.h + h) * p.t;
    let cb = p.carry_off + 2u * (b * p.h + h) * p.n_ktiles * p.t;

    let dr = vec4<f32>(row_in(rowbase, i0, 0u), row_in(rowbase, i0 + 1u, 0u), row_in(rowbase, i0 + 2u, 0u), row_in(rowbase, i0 + 3u, 0u));
    let w0 = vec4<f32>(row_in(rowbase, i0, 2u), row_in(rowbase, i0 + 1u, 2u), row_in(rowbase, i0 + 2u, 2u), row_in(rowbase, i0 + 3u, 2u));

    var c = vec4<f32>(0.0);                  // sum of log(1 - beta) right of the tile
    var u = vec4<f32>(0.0);                  // sum of u right of the tile
    var acc = Acc4();                        // sum_j dz'_ij k_j
    var y = Acc4();                          // sum_j beta_ij k_j

    // Keys any row of this tile sees: 0 .. min(r0 + BM, T) - 1 + ac (exclusive end).
    let n_keys = min(r0 + BM, p.t) + ac - 1u;
    var kt = (n_keys + BN - 1u) / BN;
    loop {
        if (kt == 0u) { break; }
        kt -= 1u;
        let k0 = kt * BN;
        if (g == 0u) { put_carries(cb + 2u * kt * p.t, i0, c, u); }
        let sc = scores(r0, k0, qb, kb, dob, vb, rg, g, lidx);
        let gr = tile_grad(sc, k0, i0, ac, c, u, w0, dr, rg, g, sg_lane);
        c = gr.c;
        u = gr.u;
        acc = accumulate(acc, gr.dz, false, 0u, k0, kb, rg, g, lidx);
        y = accumulate(y, gr.beta, false, 0u, k0, kb, rg, g, lidx);
    }

    let dl = u - w0;                         // W - W'
    store_dq(i0, b, h, acc.a0, y.a0, dl.x, g);
    store_dq(i0 + 1u, b, h, acc.a1, y.a1, dl.y, g);
    store_dq(i0 + 2u, b, h, acc.a2, y.a2, dl.z, g);
    store_dq(i0 + 3u, b, h, acc.a3, y.a3, dl.w, g);
    if (g == 0u) {
        for (var r = 0u; r < 4u; r++) {
            if (i0 + r < p.t) { state[p.rows_off + 4u * (rowbase + i0 + r) + 3u] = u[r]; }
        }
    }
}
