// Parameters shared by the backward kernels (prep.wgsl, dq.wgsl, dkv.wgsl, dbias.wgsl); each
// kernel file declares its own bindings.
//
// Must match `BackwardParams` in src/ops/backward/params.rs (tests/shaders.rs checks the layout
// against naga's).
//
// The scratch buffer `state` (f32 words, owned by the context, reused by every call):
//   rows      at rows_off,  [B, H, T] x 4:  dr (the remainder's gradient), rem, W from o (prep),
//                                           W = sum_j u_ij from the walk (dq)
//   carries   at carry_off, [B, H, NKT, T] x 2: C (sum of log(1 - beta)) and U (sum of u) over the
//                                           keys right of key tile kt, per row (dq, before tile kt)
//   partials  at part_off,  [B, NPT, H, D]: sum of rem_i do_i over the rows of one prep tile
//                                           (AddBias only)
struct Params {
    t: u32,           // sequence length
    h: u32,           // query heads
    group: u32,       // query heads per key/value head
    d: u32,           // head dim
    q: Addr,          // elements, relative to each binding's start
    k: Addr,
    v: Addr,
    o: Addr,
    d_o: Addr,
    dq: Addr,
    dk: Addr,
    dv: Addr,
    lrem_off: u32,    // [B, H, T] f32 log rem of the forward pass
    drem_off: u32,    // [B, H, T] f32 gradient of rem (Return)
    bias_off: u32,    // [H, D] bias (AddBias)
    dbias_off: u32,   // [H, D] f32 gradient of the bias (AddBias)
    flags: u32,       // FLAG_ATTEND_CURRENT | mode << REM_SHIFT
    scale: f32,
    mc: u32,          // head-dim chunks of DC columns for the score products
    n_ktiles: u32,    // key tiles (= query tiles: BM = BN) of BN tokens
    rows_off: u32,    // scratch layout, in f32 words (above)
    carry_off: u32,
    part_off: u32,
    n_ptiles: u32,    // row tiles of the prep kernel (PR rows)
    batch: u32,
    n_stage: u32,     // staged chunks per accumulation, BN / VK (a parameter: see tile.wgsl)
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
