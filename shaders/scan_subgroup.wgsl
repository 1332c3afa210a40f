// Scan path: subgroup shuffles. Appended to forward.wgsl by src/shader.rs.
//
// The G lanes of a query row are G consecutive invocations of one subgroup: the host only
// picks this path when G divides every subgroup size the adapter may use (G <= its minimum,
// both powers of two), and the slot is built from the subgroup's own ids, so it holds for any
// subgroup size (8 on lavapipe, 32 on NVIDIA, 64 on AMD, up to 128).

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) lidx: u32,
        @builtin(subgroup_id) sg_id: u32,
        @builtin(subgroup_size) sg_size: u32,
        @builtin(subgroup_invocation_id) sg_lane: u32) {
    forward(wid, lidx, sg_id * sg_size + sg_lane, sg_lane);
}

// (sum of `total` over lanes g+1 .. G-1 of this row, sum over all G lanes).
// Hillis-Steele suffix scan over the row's lanes; every invocation runs every shuffle.
fn lane_suffix(total: f32, slot: u32, g: u32, sg_lane: u32) -> vec2<f32> {
    var inc = total;
    for (var d = 1u; d < G; d <<= 1u) {
        let other = subgroupShuffleDown(inc, d);
        if (g + d < G) { inc += other; }
    }
    let right = subgroupShuffleDown(inc, 1u);
    let row_total = subgroupShuffle(inc, sg_lane - g);
    return vec2<f32>(select(0.0, right, g + 1u < G), row_total);
}
