// KV cache append: two entry points, dispatched one after the other with one bind group.
//   append:  copies token t < counts[b] of the new k and v to position lengths[b] + t
//   advance: lengths[b] += counts[b] (a second dispatch, so `append` reads the old lengths)
//
// The generated prelude declares `alias ST = f32 | f16;` (the cache's storage type) and
// `const AW: u32` (invocations).

// Must match `AppendParams` in src/ops/cache/params.rs (tests/shaders.rs checks the layout).
struct Params {
    n: u32,          // tokens in the new tensors
    batch: u32,
    d: u32,          // head dim
    capacity: u32,   // tokens the cache holds per sequence
    kn: Addr,        // elements: offset; batch, token, head strides
    vn: Addr,
    kc: Addr,
    vc: Addr,
    pg: Pages,       // paging of kc and vc (shift 0: contiguous)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> counts: array<u32>;          // [B] tokens to append
@group(0) @binding(2) var<storage, read_write> lengths: array<u32>;   // [B] tokens held, then
                                                                     // a paged cache's table
@group(0) @binding(3) var<storage, read> kn: array<ST>;
@group(0) @binding(4) var<storage, read> vn: array<ST>;
@group(0) @binding(5) var<storage, read_write> kc: array<ST>;
@group(0) @binding(6) var<storage, read_write> vc: array<ST>;

fn page_entry(i: u32) -> u32 {
    return lengths[min(i, arrayLength(&lengths) - 1u)];
}

// Workgroup (token stride start = wid.x, kv head = wid.y, sequence = wid.z).
@compute @workgroup_size(AW)
fn append(@builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lidx: u32) {
    let hk = wid.y;
    let b = wid.z;
    let len = min(lengths[b], p.capacity);   // clamped: positions never wrap
    let count = min(counts[b], p.n);
    let kcs = seq_base(p.kc, p.pg, b, 0u) + hk * p.kc.sh;
    let vcs = seq_base(p.vc, p.pg, b, 0u) + hk * p.vc.sh;
    for (var t = wid.x; t < count; t += nwg.x) {
        let pos = len + t;
        if (pos >= p.capacity) { break; }   // the host checks; this keeps writes in the cache
        let knb = p.kn.off + b * p.kn.sb + t * p.kn.st + hk * p.kn.sh;
        let vnb = p.vn.off + b * p.vn.sb + t * p.vn.st + hk * p.vn.sh;
        let kcb = kcs + token_off(p.kc, p.pg, b, pos);
        let vcb = vcs + token_off(p.vc, p.pg, b, pos);
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
