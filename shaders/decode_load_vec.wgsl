// Cache loads of decode.wgsl, vector path: the head dim and every offset and stride of the
// cache are multiples of 4 elements (the host checks), so each load is one vec4; the cache
// offsets and strides in Params count vec4s.

@group(0) @binding(2) var<storage, read> kc: array<vec4<ST>>;
@group(0) @binding(3) var<storage, read> vc: array<vec4<ST>>;

// Head-dim vec4 x of the key (value) row starting at vec4 `row`; 0 past the head dim.
fn ld_k4(row: u32, x: u32) -> vec4<f32> {
    if (4u * x < p.d) { return vec4<f32>(kc[row + x]); }
    return vec4<f32>(0.0);
}
fn ld_v4(row: u32, x: u32) -> vec4<f32> {
    if (4u * x < p.d) { return vec4<f32>(vc[row + x]); }
    return vec4<f32>(0.0);
}
