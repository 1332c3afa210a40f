// Stick-breaking decode, second dispatch: merges the chunks of decode.wgsl nearest-first and
// applies the remainder mode (docs/ALGORITHM.md, "Decode and split-K"):
//   o = sum_c exp(E_c) o_c,  E_c = sum of s over the chunks after c (nearer the query),
//   log rem = sum_c s_c
//
// The generated prelude declares `alias ST = f32 | f16;` (storage type of the cache, o and the
// bias), `const MW: u32` (invocations) and the flag bits. One workgroup per query row
// (x = head * n + token, y = sequence). The chunks are taken MW at a time, nearest first: one
// chunk per invocation for the scan of their logs (E_c), then the invocations split into cw
// head-dim columns x MW / cw chunk lanes, each lane summing every (MW / cw)-th chunk, so the
// loads of many chunks are in flight at once; the lanes' sums are added at the end.
//
// With FLAG_PARTIAL_OUT (src/ops/decode/partial.rs) the merged row is not finished: its
// unnormalised output and its log of the stick spent go to slot `part` of po / ps, one partial
// result of a longer sequence; `Attention::merge` runs this kernel on such slots (splits = the
// parts, the values of the queries' own tokens in `vc`).

// Must match `MergeParams` in src/ops/decode/params.rs (tests/shaders.rs checks the layout).
struct Params {
    h: u32,          // query heads
    n: u32,          // new tokens per sequence
    d: u32,          // head dim
    splits: u32,     // chunks per row
    dp4: u32,        // vec4s per partial row
    group: u32,      // query heads per kv head
    flags: u32,
    capacity: u32,   // tokens the cache holds per sequence
    o: Addr,         // elements: offset; batch, token, head strides
    v: Addr,         // the value cache, elements
    rem_off: u32,    // [B, H, n] f32
    lrem_off: u32,   // [B, H, n] f32
    bias_off: u32,   // [H, D]
    cw: u32,         // column invocations: a power of two >= ceil(d / 4), <= MW
    parts: u32,      // FLAG_PARTIAL_OUT: partial results per row in po / ps
    part: u32,       // FLAG_PARTIAL_OUT: which of them this call writes
    po_off: u32,     // [B, H, n, parts, ceil(d / 4)] vec4<f32>, in vec4s
    ps_off: u32,     // [B, H, n, parts] f32
    pg: Pages,       // paging of the value cache (shift 0: contiguous)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> o_part: array<vec4<f32>>;   // [B, H, n, splits, dp4]
@group(0) @binding(2) var<storage, read> s_part: array<f32>;         // [B, H, n, splits]
@group(0) @binding(3) var<storage, read> lengths: array<u32>;        // [B], then a paged
                                                                     // cache's table
@group(0) @binding(4) var<storage, read> vc: array<ST>;
@group(0) @binding(5) var<storage, read_write> o: array<ST>;
@group(0) @binding(6) var<storage, read_write> rem_out: array<f32>;
@group(0) @binding(7) var<storage, read_write> lrem_out: array<f32>;
@group(0) @binding(8) var<storage, read> bias: array<ST>;
@group(0) @binding(9) var<storage, read_write> po: array<vec4<f32>>;  // FLAG_PARTIAL_OUT
@group(0) @binding(10) var<storage, read_write> ps: array<f32>;       // FLAG_PARTIAL_OUT

fn page_entry(i: u32) -> u32 {
    return lengths[min(i, arrayLength(&lengths) - 1u)];
}

var<workgroup> scan_s: array<f32, MW>;         // the tile's logs, scanned; then its weights
var<workgroup> sum_s: array<vec4<f32>, MW>;    // [lane][column] each chunk lane's sum

// Adds the remainder term to element d of the output and stores it.
fn finish(d: u32, x: f32, rem: f32, mode: u32, ob: u32, vrow: u32, bb: u32) {
    if (d >= p.d) { return; }
    var y = x;
    if (mode == REM_ADD_VALUE) {
        y += rem * f32(vc[vrow + d]);
    } else if (mode == REM_ADD_BIAS) {
        y += rem * f32(bias[bb + d]);
    }
    o[ob + d] = ST(y);
}

@compute @workgroup_size(MW)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) lidx: u32) {
    let h = wid.x / p.n;
    let i = wid.x % p.n;
    let b = wid.y;
    let row = (b * p.h + h) * p.n + i;
    let pb = row * p.splits;
    let mode = (p.flags >> REM_SHIFT) & 3u;
    let d4 = (p.d + 3u) / 4u;
    let x = lidx % p.cw;             // head-dim vec4 of this invocation
    let lane = lidx / p.cw;          // chunk lane
    let lanes = MW / p.cw;

    var acc = vec4<f32>(0.0);
    var carry = 0.0;                 // sum of the logs of the tiles done (every invocation agrees)
    for (var t0 = 0u; t0 < p.splits; t0 += MW) {
        // Tile chunk k is chunk splits - 1 - t0 - k (nearest first).
        let count = min(MW, p.splits - t0);
        var s = 0.0;
        if (lidx < count) { s = s_part[pb + p.splits - 1u - t0 - lidx]; }
        scan_s[lidx] = s;
        workgroupBarrier();
        // Inclusive scan (Hillis-Steele) of the tile's chunks: scan_s[k] = sum of the logs of
        // tile chunks 0 ..= k for k < count.
        for (var off = 1u; off < count; off <<= 1u) {
            var v = scan_s[lidx];
            if (lidx >= off) { v += scan_s[lidx - off]; }
            workgroupBarrier();
            scan_s[lidx] = v;
            workgroupBarrier();
        }
        var before = 0.0;            // logs of the tile chunks nearer than this one
        if (lidx > 0u) { before = scan_s[lidx - 1u]; }
        let total = scan_s[count - 1u];
        workgroupBarrier();
        scan_s[lidx] = exp(carry + before);   // weight of tile chunk lidx
        workgroupBarrier();
        carry += total;
        if (x < d4) {
            for (var k = lane; k < count; k += lanes) {
                acc += scan_s[k] * o_part[(pb + p.splits - 1u - t0 - k) * p.dp4 + x];
            }
        }
        workgroupBarrier();          // every weight read before the next tile overwrites them
    }
    sum_s[lidx] = acc;
    workgroupBarrier();

    let partial_out = (p.flags & FLAG_PARTIAL_OUT) != 0u;
    let slot = row * p.parts + p.part;
    if (lane == 0u && x < d4) {
        var y = sum_s[x];
        for (var l = 1u; l < lanes; l++) { y += sum_s[l * p.cw + x]; }
        if (partial_out) {
            po[p.po_off + slot * d4 + x] = y;
        } else {
            // The query is token len - n + i of its sequence: its own value for REM_ADD_VALUE.
            let pos = min(max(lengths[b], p.n), p.capacity) - p.n + i;
            let ob = p.o.off + b * p.o.sb + i * p.o.st + h * p.o.sh;
            let vrow = seq_base(p.v, p.pg, b, 0u) + token_off(p.v, p.pg, b, pos) + (h / p.group) * p.v.sh;
            let bb = p.bias_off + h * p.d;
            let rem = exp(carry);
            finish(4u * x, y.x, rem, mode, ob, vrow, bb);
            finish(4u * x + 1u, y.y, rem, mode, ob, vrow, bb);
            finish(4u * x + 2u, y.z, rem, mode, ob, vrow, bb);
            finish(4u * x + 3u, y.w, rem, mode, ob, vrow, bb);
        }
    }
    if (lidx == 0u) {
        if (partial_out) {
            ps[p.ps_off + slot] = carry;
            return;
        }
        if ((p.flags & FLAG_WRITE_LOG_REM) != 0u) { lrem_out[p.lrem_off + row] = carry; }
        if (mode == REM_RETURN) { rem_out[p.rem_off + row] = exp(carry); }
    }
}
