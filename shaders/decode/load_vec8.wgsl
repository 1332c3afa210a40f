// Cache loads of partial.wgsl, 16-byte path (f16 only): the head dim and every offset and stride
// of the cache are multiples of 8 elements (the host checks), so eight f16 come in one
// `vec4<u32>` load (W = 2 vec4s); the cache offsets and strides in Params count such loads.
// `unpack2x16float` widens them (naga cannot bitcast vec2<u32> to vec4<f16>); wgpu allows it
// wherever SHADER_F16 is enabled (DownlevelFlags::SHADER_F16_IN_F32).

@group(0) @binding(2) var<storage, read> kc: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> vc: array<vec4<u32>>;

alias RAW = vec4<u32>;

// Load i (elements 8i .. 8i + 8) of the value (v) or key row starting at load `row`; 0 past
// the head dim. `v` is a constant at every call, so the choice folds away.
fn ld(v: bool, row: u32, i: u32) -> RAW {
    if (8u * i >= p.d) { return RAW(); }
    if (v) { return vc[row + i]; }
    return kc[row + i];
}

// vec4 e (0 or 1) of a load, in f32: f16 pairs, the lower address in the low half.
fn widen(x: RAW, e: u32) -> vec4<f32> {
    let h = select(x.xy, x.zw, e == 1u);
    return vec4<f32>(unpack2x16float(h.x), unpack2x16float(h.y));
}
