// Lane reduction of decode.wgsl: subgroup shuffles. Appended by src/shader.rs.
//
// The P lanes of a key slot are P consecutive invocations of one subgroup: the host only picks
// this path when P divides every subgroup size the adapter may use (P <= its minimum, both
// powers of two), and the slot is built from the subgroup's own ids, so it holds for any
// subgroup size (8 on lavapipe, 32 on NVIDIA, 64 on AMD, up to 128).

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) lidx: u32,
        @builtin(subgroup_id) sg_id: u32,
        @builtin(subgroup_size) sg_size: u32,
        @builtin(subgroup_invocation_id) sg_lane: u32) {
    decode(wid, lidx, sg_id * sg_size + sg_lane);
}

// Sum of x over the P lanes of this key. A butterfly: both sides of every exchange add the same
// two partial sums, so all P lanes end with the same value, bit for bit.
fn lane_sum(x: vec4<f32>, slot: u32, g: u32) -> vec4<f32> {
    var s = x;
    for (var d = 1u; d < P; d <<= 1u) {
        s += subgroupShuffleXor(s, d);
    }
    return s;
}
