// Lane reduction of partial.wgsl: workgroup shared memory (any adapter, and what browsers run).
// Appended by src/kernel/source.rs.

var<workgroup> red_s: array<vec4<f32>, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) lidx: u32) {
    decode(wid, lidx, lidx);
}

// Sum of x over the P lanes of this key. Every lane adds the same P values in the same order,
// so all agree bit for bit.
fn lane_sum(x: vec4<f32>, slot: u32, g: u32) -> vec4<f32> {
    red_s[slot] = x;
    workgroupBarrier();
    let base = slot - g;
    var s = red_s[base];
    for (var l = 1u; l < P; l++) {
        s += red_s[base + l];
    }
    workgroupBarrier();
    return s;
}

// One key for rows 4q .. 4q+3 from this lane's partial logits x: every lane sums all P lanes'
// parts and takes the four rows' stick step itself (identical in every lane).
fn quad_step(x: vec4<f32>, carry: vec4<f32>, vis: vec4<bool>, slot: u32, g: u32) -> Step {
    return stick_step(lane_sum(x, slot, g), carry, vis);
}
