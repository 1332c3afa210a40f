// KV cache append: two entry points, dispatched one after the other with one bind group.
//   append:  copies token t < counts[b] of the new k and v to position lengths[b] + t
//   advance: lengths[b] += counts[b] (a second dispatch, so `append` reads the old lengths)
//
// src/shader.rs prepends a prelude declaring `alias ST = f32 | f16;` (the cache's storage type).

const AW: u32 = 64u;

// Must match `AppendParams` in src/decode.rs (tests/decode.rs checks the layout with naga).
struct Params {
    n: u32,          // tokens in the new tensors
    batch: u32,
    d: u32,          // head dim
    capacity: u32,   // tokens the cache holds per sequence
    kn_off: u32, kn_sb: u32, kn_st: u32, kn_sh: u32,   // elements: offset; batch, token, head strides
    vn_off: u32, vn_sb: u32, vn_st: u32, vn_sh: u32,
    kc_off: u32, kc_sb: u32, kc_st: u32, kc_sh: u32,
    vc_off: u32, vc_sb: u32, vc_st: u32, vc_sh: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> counts: array<u32>;          // [B] tokens to append
@group(0) @binding(2) var<storage, read_write> lengths: array<u32>;   // [B] tokens held
@group(0) @binding(3) var<storage, read> kn: array<ST>;
@group(0) @binding(4) var<storage, read> vn: array<ST>;
@group(0) @binding(5) var<storage, read_write> kc: array<ST>;
@group(0) @binding(6) var<storage, read_write> vc: array<ST>;

// Workgroup (token stride start = wid.x, kv head = wid.y, sequence = wid.z).
@compute @workgroup_size(AW)
fn append(@builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lidx: u32) {
    let hk = wid.y;
    let b = wid.z;
    let len = lengths[b];
    let count = min(counts[b], p.n);
    for (var t = wid.x; t < count; t += nwg.x) {
        let pos = len + t;
        if (pos >= p.capacity) { break; }   // the host checks; this keeps writes in the cache
        let knb = p.kn_off + b * p.kn_sb + t * p.kn_st + hk * p.kn_sh;
        let vnb = p.vn_off + b * p.vn_sb + t * p.vn_st + hk * p.vn_sh;
        let kcb = p.kc_off + b * p.kc_sb + pos * p.kc_st + hk * p.kc_sh;
        let vcb = p.vc_off + b * p.vc_sb + pos * p.vc_st + hk * p.vc_sh;
        for (var d = lidx; d < p.d; d += AW) {
            kc[kcb + d] = kn[knb + d];
            vc[vcb + d] = vn[vnb + d];
        }
    }
}

@compute @workgroup_size(AW)
fn advance(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = gid.x;
    if (b < p.batch) {
        lengths[b] = min(lengths[b] + counts[b], p.capacity);
    }
}
