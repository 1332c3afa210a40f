// Lane reduction of partial.wgsl: subgroup shuffles. Appended by src/kernel/source.rs.
//
// The P lanes of a key slot are P consecutive invocations of one subgroup: the host only picks
// this path when P divides every subgroup size the adapter may use (P <= its minimum, both
// powers of two), and the slot is built from the subgroup's own ids, so it holds for any
// subgroup size (8 on lavapipe, 32 on NVIDIA, 64 on AMD, up to 128).

const Q: u32 = P / 4u;          // lanes that finish each row of a quad (P >= 8)

var<private> sg_lane_p: u32;    // this invocation's index in its subgroup

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) lidx: u32,
        @builtin(subgroup_id) sg_id: u32,
        @builtin(subgroup_size) sg_size: u32,
        @builtin(subgroup_invocation_id) sg_lane: u32) {
    sg_lane_p = sg_lane;
    decode(wid, lidx, sg_id * sg_size + sg_lane);
}

// One key for rows 4q .. 4q+3 from this lane's partial logits x. The P lanes reduce-scatter
// the four sums (log2(P) + 1 shuffles, where a plain butterfly takes 4 log2(P)): lane g ends
// with row g / Q's logit, takes that row's stick step alone (not four rows in every lane),
// and all lanes then read each row's weight and log(1 - beta) from the row's first owner
// (lane r * Q of the slot), so all P lanes hold the same values, bit for bit.
fn quad_step(x: vec4<f32>, carry: vec4<f32>, vis: vec4<bool>, slot: u32, g: u32) -> Step {
    // Lanes with bit P/2 keep rows 2 and 3 (their partner 0 and 1), then bit Q picks one.
    let hi = (g & (2u * Q)) != 0u;
    let pair = select(x.xy, x.zw, hi) + subgroupShuffleXor(select(x.zw, x.xy, hi), 2u * Q);
    let odd = (g & Q) != 0u;
    var z = select(pair.x, pair.y, odd) + subgroupShuffleXor(select(pair.y, pair.x, odd), Q);
    for (var d = Q / 2u; d > 0u; d >>= 1u) {
        z += subgroupShuffleXor(z, d);
    }
    let r = g / Q;
    // Only component x is used: the other three are dead code.
    let own = stick_step(vec4<f32>(z), vec4<f32>(carry[r]), vec4<bool>(vis[r]));
    let mine = vec2<f32>(own.w.x, own.nl.x);
    let lane0 = sg_lane_p - g;
    let a = subgroupShuffle(mine, lane0);
    let b = subgroupShuffle(mine, lane0 + Q);
    let c = subgroupShuffle(mine, lane0 + 2u * Q);
    let d = subgroupShuffle(mine, lane0 + 3u * Q);
    return Step(vec4<f32>(a.x, b.x, c.x, d.x), vec4<f32>(a.y, b.y, c.y, d.y));
}
