// Matrix operations of forward/coop.wgsl on wgpu's cooperative matrices (tensor cores): one
// 16 x 16 block per subgroup (32 invocations). forward/coop_emu.wgsl implements the same
// functions without them, for testing the kernel on adapters that lack them.

alias MA = coop_mat16x16<f16, A>;
alias MB = coop_mat16x16<f16, B>;
alias MC = coop_mat16x16<f32, C>;

// Nothing to set up: the hardware knows its subgroups.
fn mat_init(g: u32, lane: u32) {}

fn mma(a: MA, b: MB, c: MC) -> MC {
    return coopMultiplyAdd(a, b, c);
}

// Block i (keys 16 (i / ND) .., head dims 16 (i % ND) ..) of the K or V tile at key k0, as a
// row-major [key][d] matrix: loaded from global memory, stored into kv_s.
// Q block (rows 16g .., head-dim block db) from kv_s (q_s with QS = 1), row-major.
fn load_q(g: u32, db: u32) -> MA {
    let i = 16u * g * XS + 16u * db;
    let st = XS;
    if (QS == 1u) { return coopLoadT<MA>(&q_s[i], st); }
    return coopLoadT<MA>(&kv_s[i], st);
}

// B = K^T block (head-dim block db, keys 16 kb ..) of the staged tile: element (d, key) at
// kv_s[key][d], column-major.
fn kt_s(kb: u32, db: u32) -> MB {
    let i = 16u * kb * XS + 16u * db;
    let st = XS;
    return coopLoad<MB>(&kv_s[i], st);
}

// B = V block (keys 16 kb .., head-dim block db) of the staged tile, row-major.
fn v_s(kb: u32, db: u32) -> MB {
    let i = 16u * kb * XS + 16u * db;
    let st = XS;
    return coopLoadT<MB>(&kv_s[i], st);
}

// P block (rows 16g .., keys 16 kb ..) from p_s, row-major.
fn load_p(g: u32, kb: u32) -> MA {
    let i = 16u * g * PS + 16u * kb;
    let st = PS;
    return coopLoadT<MA>(&p_s[i], st);
}

// An f32 block into s_s at row 16 g, column 16 kb, row-major.
fn store_s(acc: MC, g: u32, kb: u32) {
    let i = 16u * g * SS + 16u * kb;
    let st = SS;
    coopStoreT(acc, &s_s[i], st);
}
