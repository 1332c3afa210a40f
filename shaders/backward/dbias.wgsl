// Backward pass, last step (AddBias): dbias_h = sum over batches and prep tiles, in order, of
// the partial sums the prep kernel wrote (f32 output). One workgroup per head.
//
// src/kernel/source.rs assembles: the generated prelude (WG), common/addr.wgsl,
// backward/io.wgsl and this file.

@group(0) @binding(1) var<storage, read> state: array<f32>;
@group(0) @binding(2) var<storage, read_write> dbias: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lidx: u32) {
    let h = wid.x;
    for (var c = lidx; c < p.d; c += WG) {
        var s = 0.0;
        for (var b = 0u; b < p.batch; b++) {
            for (var pt = 0u; pt < p.n_ptiles; pt++) {
                s += state[p.part_off + ((b * p.n_ptiles + pt) * p.h + h) * p.d + c];
            }
        }
        dbias[p.dbias_off + h * p.d + c] = s;
    }
}
