// Scan path: subgroup shuffles, for the portable forward kernel and the backward dq and dkv
// kernels (each defines `body` and the `Scan` it returns). Appended by src/kernel/source.rs.
//
// The 8 lanes of a row group are 8 consecutive invocations of one subgroup, starting at a
// multiple of 8: the host only picks this path when every subgroup size the adapter may use is
// a power of two of at least 8, and the slot is built from the subgroup's own ids, so it holds
// for any subgroup size (8 on lavapipe and some Intel, 32 on NVIDIA and Apple, 64 on AMD, up to
// 128), whatever size the pipeline runs at.

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) lidx: u32,
        @builtin(subgroup_id) sg_id: u32,
        @builtin(subgroup_size) sg_size: u32,
        @builtin(subgroup_invocation_id) sg_lane: u32) {
    body(wid, lidx, sg_id * sg_size + sg_lane, sg_lane);
}

// Per row of the row group: sums of t0 and t1 over lanes g+1 .. 7 and over all 8 lanes.
// Hillis-Steele suffix scan over the 8 lanes (3 steps), then one shift for the exclusive sum
// and one broadcast from lane 0 for the total; every invocation runs every shuffle. No
// workgroup memory, no barrier. Every lane of a row gets the same total, and the backward's
// dq and dkv kernels the same sums for the same inputs.
fn lane_scan(t0: vec4<f32>, t1: vec4<f32>, rg: u32, g: u32, sg_lane: u32) -> Scan {
    var i0 = t0;
    var i1 = t1;
    for (var d = 1u; d < G; d <<= 1u) {
        let o0 = subgroupShuffleDown(i0, d);
        if (g + d < G) { i0 += o0; }
        if (NKV > 1u) {
            let o1 = subgroupShuffleDown(i1, d);
            if (g + d < G) { i1 += o1; }
        }
    }
    let last = g + 1u >= G;
    let lane0 = sg_lane - g;
    var s = Scan(select(subgroupShuffleDown(i0, 1u), vec4<f32>(0.0), last), vec4<f32>(0.0),
                 subgroupShuffle(i0, lane0), vec4<f32>(0.0));
    if (NKV > 1u) {
        s.right1 = select(subgroupShuffleDown(i1, 1u), vec4<f32>(0.0), last);
        s.total1 = subgroupShuffle(i1, lane0);
    }
    return s;
}
