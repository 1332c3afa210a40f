// Cache loads of partial.wgsl, vec4 path: the head dim and every offset and stride of the cache
// are multiples of 4 elements (the host checks), so each load is one vec4 of the storage type
// (W = 1); the cache offsets and strides in Params count vec4s.

@group(0) @binding(2) var<storage, read> kc: array<vec4<ST>>;
@group(0) @binding(3) var<storage, read> vc: array<vec4<ST>>;

alias RAW = vec4<ST>;

// Head-dim vec4 i of the value (v) or key row starting at vec4 `row`; 0 past the head dim.
fn ld(v: bool, row: u32, i: u32) -> RAW {
    if (4u * i >= p.d) { return RAW(); }
    if (v) { return vc[row + i]; }
    return kc[row + i];
}

// The load in f32 (one vec4 per load: e is 0).
fn widen(x: RAW, e: u32) -> vec4<f32> {
    return vec4<f32>(x);
}
