// Scan path: workgroup shared memory (any adapter, and what browsers run).
// Appended to forward.wgsl by src/shader.rs.

var<workgroup> scan_s: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) lidx: u32) {
    forward(wid, lidx, lidx, 0u);
}

// (sum of `total` over lanes g+1 .. G-1 of this row, sum over all G lanes).
// Every lane of a row sums the row's G totals in the same order, so all agree on the total.
fn lane_suffix(total: f32, slot: u32, g: u32, sg_lane: u32) -> vec2<f32> {
    scan_s[slot] = total;
    workgroupBarrier();
    let base = slot - g;
    var right = 0.0;
    var all = 0.0;
    for (var l = 0u; l < G; l++) {
        let x = scan_s[base + l];
        all += x;
        if (l > g) { right += x; }
    }
    workgroupBarrier();
    return vec2<f32>(right, all);
}
