// Cache loads of partial.wgsl, scalar path: any head dim, offsets and strides (in elements).
// One "load" is four element loads gathered into a vec4 of the storage type (W = 1).

@group(0) @binding(2) var<storage, read> kc: array<ST>;
@group(0) @binding(3) var<storage, read> vc: array<ST>;

alias RAW = vec4<ST>;

fn ld1(v: bool, row: u32, d: u32) -> ST {
    if (d >= p.d) { return ST(0.0); }
    if (v) { return vc[row + d]; }
    return kc[row + d];
}

// Head-dim vec4 i of the value (v) or key row starting at element `row`; 0 past the head dim.
fn ld(v: bool, row: u32, i: u32) -> RAW {
    let d = 4u * i;
    return RAW(ld1(v, row, d), ld1(v, row, d + 1u), ld1(v, row, d + 2u), ld1(v, row, d + 3u));
}

// The load in f32 (one vec4 per load: e is 0).
fn widen(x: RAW, e: u32) -> vec4<f32> {
    return vec4<f32>(x);
}
