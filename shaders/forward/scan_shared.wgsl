// Scan path: workgroup shared memory (any adapter, and what browsers run).
// Appended to forward/portable.wgsl by src/kernel/source.rs.
//
// The lane totals go through q_s (free between the last S chunk and the next tile's staging):
// q_s[8 s + g][rg] holds lane g's totals of segment s for the 4 rows of row group rg.

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) lidx: u32) {
    body(wid, lidx, lidx, 0u);
}

// Per row of the row group: sums of t0 and t1 over lanes g+1 .. 7 and over all 8 lanes.
// Every lane of a row group sums the group's totals in the same order, so all agree on the
// totals (and so on the carry). Two barriers: before the writes (the last S chunk has none
// after it) and between the writes and the reads.
fn lane_scan(t0: vec4<f32>, t1: vec4<f32>, rg: u32, g: u32, sg_lane: u32) -> Scan {
    workgroupBarrier();
    q_s[g][rg] = t0;
    if (NKV > 1u) { q_s[G + g][rg] = t1; }
    workgroupBarrier();
    var s = Scan(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    for (var l = 0u; l < G; l++) {
        let x0 = q_s[l][rg];
        s.total0 += x0;
        if (l > g) { s.right0 += x0; }
        if (NKV > 1u) {
            let x1 = q_s[G + l][rg];
            s.total1 += x1;
            if (l > g) { s.right1 += x1; }
        }
    }
    return s;
}
