// Backward scan path: workgroup shared memory (any adapter, and what browsers run). Appended
// to backward/dq.wgsl or dkv.wgsl with backward/tile.wgsl by src/kernel/source.rs.
//
// The lane totals go through st_s (free between the score products and the accumulation):
// st_s[(8 s + g) RG + rg] holds lane g's totals of segment s for the 4 rows of row group rg.

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) lidx: u32) {
    body(wid, lidx, lidx, 0u);
}

// Per row of the row group: sums of t0 and t1 over lanes g+1 .. 7 and over all 8 lanes, every
// lane in the same order (so all agree on the totals). Two barriers: before the writes (the
// last readers of st_s have none after them) and between the writes and the reads.
fn lane_scan(t0: vec4<f32>, t1: vec4<f32>, rg: u32, g: u32, sg_lane: u32) -> Scan {
    workgroupBarrier();
    st_s[g * RG + rg] = t0;
    if (NKV > 1u) { st_s[(G + g) * RG + rg] = t1; }
    workgroupBarrier();
    var s = Scan(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    for (var l = 0u; l < G; l++) {
        let x0 = st_s[l * RG + rg];
        s.total0 += x0;
        if (l > g) { s.right0 += x0; }
        if (NKV > 1u) {
            let x1 = st_s[(G + l) * RG + rg];
            s.total1 += x1;
            if (l > g) { s.right1 += x1; }
        }
    }
    return s;
}
