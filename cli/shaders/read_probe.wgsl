// Read-bandwidth probe of `sbattn bench decode` (not a library kernel): what a WGSL kernel
// can stream from device memory on this adapter, the ceiling of the decode kernels, which are
// bound by reading the KV cache. Each invocation reads 16-byte words a grid apart, four loads in
// flight per step, and writes one word (the XOR of what it read) so nothing is optimized away.

const PW: u32 = 256u;

@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;   // one word per invocation

@compute @workgroup_size(PW)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = arrayLength(&src);
    let stride = nwg.x * PW;
    var acc = vec4<u32>(0u);
    var i = gid.x;
    for (; i + 3u * stride < n; i += 4u * stride) {
        let a = src[i];
        let b = src[i + stride];
        let c = src[i + 2u * stride];
        let d = src[i + 3u * stride];
        acc ^= a ^ b ^ c ^ d;
    }
    for (; i < n; i += stride) {
        acc ^= src[i];
    }
    dst[gid.x] = acc.x ^ acc.y ^ acc.z ^ acc.w;
}
