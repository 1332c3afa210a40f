// Stick-breaking decode, second dispatch: merges the chunks of decode.wgsl nearest-first and
// applies the remainder mode (ALGORITHM.md, "Decode and split-K"):
//   o = o_last + exp(s_last) * (o_prev + exp(s_prev) * (...)),   log rem = sum_c s_c
//
// src/shader.rs prepends a prelude declaring `alias ST = f32 | f16;` (storage type of the cache,
// o and the bias) and appends stick.wgsl (flag bits). One workgroup per query row
// (x = head * n + token, y = sequence).

const MW: u32 = 64u;

// Must match `MergeParams` in src/decode.rs (tests/decode.rs checks the layout with naga).
struct Params {
    h: u32,          // query heads
    n: u32,          // new tokens per sequence
    d: u32,          // head dim
    splits: u32,     // chunks per row
    dp4: u32,        // vec4s per partial row
    group: u32,      // query heads per kv head
    flags: u32,
    _pad0: u32,
    o_off: u32, o_sb: u32, o_st: u32, o_sh: u32,   // elements: offset; batch, token, head strides
    v_off: u32, v_sb: u32, v_st: u32, v_sh: u32,   // the value cache, elements
    rem_off: u32,    // [B, H, n] f32
    lrem_off: u32,   // [B, H, n] f32
    bias_off: u32,   // [H, D]
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> o_part: array<vec4<f32>>;   // [B, H, n, splits, dp4]
@group(0) @binding(2) var<storage, read> s_part: array<f32>;         // [B, H, n, splits]
@group(0) @binding(3) var<storage, read> lengths: array<u32>;        // [B]
@group(0) @binding(4) var<storage, read> vc: array<ST>;
@group(0) @binding(5) var<storage, read_write> o: array<ST>;
@group(0) @binding(6) var<storage, read_write> rem_out: array<f32>;
@group(0) @binding(7) var<storage, read_write> lrem_out: array<f32>;
@group(0) @binding(8) var<storage, read> bias: array<ST>;

// Adds the remainder term to element d of the output and stores it.
fn finish(d: u32, x: f32, rem: f32, mode: u32, ob: u32, vrow: u32, bb: u32) {
    if (d >= p.d) { return; }
    var y = x;
    if (mode == REM_ADD_VALUE) {
        y += rem * f32(vc[vrow + d]);
    } else if (mode == REM_ADD_BIAS) {
        y += rem * f32(bias[bb + d]);
    }
    o[ob + d] = ST(y);
}

@compute @workgroup_size(MW)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) lidx: u32) {
    let h = wid.x / p.n;
    let i = wid.x % p.n;
    let b = wid.y;
    let row = (b * p.h + h) * p.n + i;
    let pb = row * p.splits;
    let mode = (p.flags >> REM_SHIFT) & 3u;
    // The query is token len - n + i of its sequence: its own value for REM_ADD_VALUE.
    let pos = max(lengths[b], p.n) - p.n + i;
    let ob = p.o_off + b * p.o_sb + i * p.o_st + h * p.o_sh;
    let vrow = p.v_off + b * p.v_sb + pos * p.v_st + (h / p.group) * p.v_sh;
    let bb = p.bias_off + h * p.d;
    // Every thread sums the chunks' logs in the same order, so all agree on the carry.
    for (var x = lidx; x < (p.d + 3u) / 4u; x += MW) {
        var acc = vec4<f32>(0.0);
        var carry = 0.0;
        for (var c = p.splits; c > 0u; c--) {       // nearest chunk first
            acc += exp(carry) * o_part[(pb + c - 1u) * p.dp4 + x];
            carry += s_part[pb + c - 1u];
        }
        let rem = exp(carry);
        finish(4u * x, acc.x, rem, mode, ob, vrow, bb);
        finish(4u * x + 1u, acc.y, rem, mode, ob, vrow, bb);
        finish(4u * x + 2u, acc.z, rem, mode, ob, vrow, bb);
        finish(4u * x + 3u, acc.w, rem, mode, ob, vrow, bb);
    }
    if (lidx == 0u) {
        var carry = 0.0;
        for (var c = p.splits; c > 0u; c--) { carry += s_part[pb + c - 1u]; }
        if ((p.flags & FLAG_WRITE_LOG_REM) != 0u) { lrem_out[p.lrem_off + row] = carry; }
        if (mode == REM_RETURN) { rem_out[p.rem_off + row] = exp(carry); }
    }
}
