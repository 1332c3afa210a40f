// Cache loads of decode.wgsl, scalar path: any head dim, offsets and strides (in elements).

@group(0) @binding(2) var<storage, read> kc: array<ST>;
@group(0) @binding(3) var<storage, read> vc: array<ST>;

fn ld_k(row: u32, d: u32) -> f32 {
    if (d < p.d) { return f32(kc[row + d]); }
    return 0.0;
}
fn ld_v(row: u32, d: u32) -> f32 {
    if (d < p.d) { return f32(vc[row + d]); }
    return 0.0;
}

// Head-dim vec4 x of the key (value) row starting at element `row`; 0 past the head dim.
fn ld_k4(row: u32, x: u32) -> vec4<f32> {
    let d = 4u * x;
    return vec4<f32>(ld_k(row, d), ld_k(row, d + 1u), ld_k(row, d + 2u), ld_k(row, d + 3u));
}
fn ld_v4(row: u32, x: u32) -> vec4<f32> {
    let d = 4u * x;
    return vec4<f32>(ld_v(row, d), ld_v(row, d + 1u), ld_v(row, d + 2u), ld_v(row, d + 3u));
}
