// The full stick-breaking weight matrix, for inspection (src/ops/weights): one workgroup per
// query row i of one (batch, head), WG invocations.
//
//   A[i][j] = beta_ij prod_{j<l<vis} (1 - beta_il)   for j < vis (vis = i, or i + 1 with
//   FLAG_ATTEND_CURRENT), 0 for vis <= j < T;   rem_i = prod_{j<vis} (1 - beta_ij).
//
// In log space, as common/stick.wgsl: log beta = min(z, 0) - l, log(1 - beta) = -(max(z, 0) + l),
// l = log1p(exp(-|z|)). Each invocation owns a contiguous run of key groups (4 keys, one vec4),
// runs over them twice:
//   1. the logits z (4 named dot-product accumulators over the head dim, q from workgroup
//      memory), written into A as scratch, and the sum of their softplus(z) = -log(1 - beta);
//   2. after a suffix scan of those sums over the workgroup (the stick spent by the keys nearer
//      to i than the run), from its nearest group to its farthest: each weight from its z and
//      the log of the stick left, overwriting z.
// An invocation reads back only what it wrote itself, so no barrier is needed between the two
// passes but the scan's. Every loop's trip count is bounded by T, D and WG.

// Must match `WeightsParams` in src/ops/weights/params.rs (tests/shaders.rs checks the layout).
struct Params {
    t: u32,        // sequence length
    h: u32,        // query heads
    group: u32,    // query heads per key/value head
    d: u32,        // head dim
    q: Addr,       // elements, relative to each binding's start
    k: Addr,
    a_off: u32,    // [B, H, T, T] f32, element offset into a_out
    rem_off: u32,  // [B, H, T] f32, element offset into rem_out
    flags: u32,    // FLAG_ATTEND_CURRENT; REM_RETURN << REM_SHIFT: write rem
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<ST>;
@group(0) @binding(2) var<storage, read> k: array<ST>;
@group(0) @binding(3) var<storage, read_write> a_out: array<f32>;
@group(0) @binding(4) var<storage, read_write> rem_out: array<f32>;

const MAX_D: u32 = 256u;

var<workgroup> q_s: array<f32, MAX_D>;
var<workgroup> scan_s: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = wid.x;
    let h = wid.y;
    let b = wid.z;
    let hk = h / p.group;
    let d = p.d;
    let t = p.t;

    // q_i, scaled, in workgroup memory.
    let q0 = p.q.off + b * p.q.sb + i * p.q.st + h * p.q.sh;
    for (var x = lid; x < d; x += WG) {
        q_s[x] = f32(q[q0 + x]) * p.scale;
    }
    workgroupBarrier();

    let vis = select(i, i + 1u, (p.flags & FLAG_ATTEND_CURRENT) != 0u);
    let groups = (vis + 3u) / 4u;
    let per = (groups + WG - 1u) / WG;
    let g0 = min(lid * per, groups);
    let g1 = min(g0 + per, groups);
    let row = ((b * p.h + h) * t + i) * t + p.a_off;
    let kb = p.k.off + b * p.k.sb + hk * p.k.sh;
    let last = t - 1u;

    // Pass 1: logits into A, and the stick the run spends.
    var spent = 0.0;
    for (var g = g0; g < g1; g++) {
        let j = 4u * g;
        let k0 = kb + min(j, last) * p.k.st;
        let k1 = kb + min(j + 1u, last) * p.k.st;
        let k2 = kb + min(j + 2u, last) * p.k.st;
        let k3 = kb + min(j + 3u, last) * p.k.st;
        var z0 = 0.0;
        var z1 = 0.0;
        var z2 = 0.0;
        var z3 = 0.0;
        for (var x = 0u; x < d; x++) {
            let qx = q_s[x];
            z0 += qx * f32(k[k0 + x]);
            z1 += qx * f32(k[k1 + x]);
            z2 += qx * f32(k[k2 + x]);
            z3 += qx * f32(k[k3 + x]);
        }
        let z = vec4<f32>(z0, z1, z2, z3);
        let valid = vec4<u32>(j, j + 1u, j + 2u, j + 3u) < vec4<u32>(vis);
        let l = log1p_small(exp(-abs(z)));
        spent += dot(select(vec4<f32>(0.0), max(z, vec4<f32>(0.0)) + l, valid), vec4<f32>(1.0));
        a_out[row + j] = z0; // j < vis <= T: the first key of a group is always visible
        if (valid.y) { a_out[row + j + 1u] = z1; }
        if (valid.z) { a_out[row + j + 2u] = z2; }
        if (valid.w) { a_out[row + j + 3u] = z3; }
    }

    // Suffix sums of the runs' spent stick: scan_s[lid] = sum over invocations >= lid.
    scan_s[lid] = spent;
    workgroupBarrier();
    for (var off = 1u; off < WG; off <<= 1u) {
        var s = scan_s[lid];
        if (lid + off < WG) {
            s += scan_s[lid + off];
        }
        workgroupBarrier();
        scan_s[lid] = s;
        workgroupBarrier();
    }
    // The log of the stick left at this run's nearest key: what the runs nearer to i spent.
    var acc = 0.0;
    if (lid + 1u < WG) {
        acc = -scan_s[lid + 1u];
    }

    // Pass 2: the weights, nearest group first, overwriting the logits.
    for (var g = g1; g > g0; g--) {
        let j = 4u * (g - 1u);
        let valid = vec4<u32>(j, j + 1u, j + 2u, j + 3u) < vec4<u32>(vis);
        var z = vec4<f32>(a_out[row + j], 0.0, 0.0, 0.0);
        if (valid.y) { z.y = a_out[row + j + 1u]; }
        if (valid.z) { z.z = a_out[row + j + 2u]; }
        if (valid.w) { z.w = a_out[row + j + 3u]; }
        let l = log1p_small(exp(-abs(z)));
        let sp = select(vec4<f32>(0.0), max(z, vec4<f32>(0.0)) + l, valid);
        // The stick left before each key of the group, walking from its last key to its first.
        let e3 = acc;
        let e2 = e3 - sp.w;
        let e1 = e2 - sp.z;
        let e0 = e1 - sp.y;
        acc = e0 - sp.x;
        let w = exp(min(z, vec4<f32>(0.0)) - l + vec4<f32>(e0, e1, e2, e3));
        a_out[row + j] = w.x;
        if (valid.y) { a_out[row + j + 1u] = w.y; }
        if (valid.z) { a_out[row + j + 2u] = w.z; }
        if (valid.w) { a_out[row + j + 3u] = w.w; }
    }

    // Keys the row does not see.
    for (var j = vis + lid; j < t; j += WG) {
        a_out[row + j] = 0.0;
    }
    // The first invocation ends at key 0: what it holds is log rem_i.
    if (lid == 0u && ((p.flags >> REM_SHIFT) & 3u) == REM_RETURN) {
        rem_out[p.rem_off + (b * p.h + h) * t + i] = exp(acc);
    }
}
