// Parameters and bindings shared by the forward kernels (forward.wgsl, forward_coop.wgsl);
// src/shader.rs puts this file right after the prelude.

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
    log_eps: f32,    // early exit once every row's carry is below this (with FLAG_EARLY_EXIT)
    _pad0: u32,
}

const FLAG_EARLY_EXIT: u32 = 16u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<ST>;
@group(0) @binding(2) var<storage, read> k: array<ST>;
@group(0) @binding(3) var<storage, read> v: array<ST>;
@group(0) @binding(4) var<storage, read_write> o: array<ST>;
@group(0) @binding(5) var<storage, read_write> rem_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> lrem_out: array<f32>;
@group(0) @binding(7) var<storage, read> bias: array<ST>;
