// The ceiling of wgpu's cooperative matrices (16 x 16 x 16, f16 x f16 -> f32) on an adapter: a
// matrix product C[M][N] = A[M][K] B[K][N], all row-major, in three ways (entry points):
//   naive   one subgroup per 32 x 32 block of C, operands straight from global memory
//   staged  eight subgroups per 128 x 128 block of C (each 32 rows x 64 columns: 8 blocks), the
//           A and B tiles of each 32-deep step copied into workgroup memory once for all
//           subgroups, each subgroup copying its share block by block (cooperative load from
//           global memory into registers, issued before the current step's products, then a
//           cooperative store after the barrier): the scheme forward/coop.wgsl uses
//   vec     as staged, but the copy is by plain 8-byte loads (vec4<f16>) and scalar stores
// Not a library kernel (tools/): only its timing matters, and tools/src/main.rs checks its result.

enable f16;
enable wgpu_cooperative_matrix;

struct Dims {
    m: u32,
    n: u32,
    k: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> a: array<f16>;
@group(0) @binding(2) var<storage, read> b: array<f16>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> a4: array<vec4<f16>>;
@group(0) @binding(5) var<storage, read> b4: array<vec4<f16>>;

alias MA = coop_mat16x16<f16, A>;
alias MB = coop_mat16x16<f16, B>;
alias MC = coop_mat16x16<f32, C>;

fn ga(i: u32) -> MA { let s = dims.k; return coopLoadT<MA>(&a[i], s); }
fn gb(i: u32) -> MB { let s = dims.n; return coopLoadT<MB>(&b[i], s); }
fn sc(m: MC, i: u32) { let s = dims.n; coopStoreT(m, &c[i], s); }

@compute @workgroup_size(32)
fn naive(@builtin(workgroup_id) wid: vec3<u32>) {
    let r0 = 32u * wid.y;
    let c0 = 32u * wid.x;
    var c00 = MC(); var c01 = MC(); var c10 = MC(); var c11 = MC();
    for (var kk = 0u; kk < dims.k; kk += 16u) {
        let a0 = ga(r0 * dims.k + kk);
        let a1 = ga((r0 + 16u) * dims.k + kk);
        let b0 = gb(kk * dims.n + c0);
        let b1 = gb(kk * dims.n + c0 + 16u);
        c00 = coopMultiplyAdd(a0, b0, c00);
        c01 = coopMultiplyAdd(a0, b1, c01);
        c10 = coopMultiplyAdd(a1, b0, c10);
        c11 = coopMultiplyAdd(a1, b1, c11);
    }
    sc(c00, r0 * dims.n + c0);
    sc(c01, r0 * dims.n + c0 + 16u);
    sc(c10, (r0 + 16u) * dims.n + c0);
    sc(c11, (r0 + 16u) * dims.n + c0 + 16u);
}

// Staged tiles: A [128][KS], B [KS][128], KS = 32, rows padded by 8 halves.
const KS: u32 = 32u;
const AS: u32 = KS + 8u;       // row stride (halves) of a_s
const BS: u32 = 128u + 8u;     // row stride (halves) of b_s
var<workgroup> a_s: array<f16, 128u * AS>;
var<workgroup> b_s: array<f16, KS * BS>;

// Block i of a step's 16 A blocks (row block i / 2, k block i % 2) and 16 B blocks (k block
// i / 8, column block i % 8).
fn ga_blk(r0: u32, kk: u32, i: u32) -> MA { return ga((r0 + 16u * (i / 2u)) * dims.k + kk + 16u * (i % 2u)); }
fn gb_blk(c0: u32, kk: u32, i: u32) -> MB { return gb((kk + 16u * (i / 8u)) * dims.n + c0 + 16u * (i % 8u)); }
fn sa_blk(m: MA, i: u32) { let d = 16u * (i / 2u) * AS + 16u * (i % 2u); let s = AS; coopStoreT(m, &a_s[d], s); }
fn sb_blk(m: MB, i: u32) { let d = 16u * (i / 8u) * BS + 16u * (i % 8u); let s = BS; coopStoreT(m, &b_s[d], s); }
fn la(rb: u32, kb: u32) -> MA { let i = 16u * rb * AS + 16u * kb; let s = AS; return coopLoadT<MA>(&a_s[i], s); }
fn lb(kb: u32, cb: u32) -> MB { let i = 16u * kb * BS + 16u * cb; let s = BS; return coopLoadT<MB>(&b_s[i], s); }

// One step's products of a subgroup: rows 32 (g / 2) .., columns 64 (g % 2) ...
struct Acc {
    c0: MC, c1: MC, c2: MC, c3: MC, c4: MC, c5: MC, c6: MC, c7: MC,
}

fn step(acc: ptr<function, Acc>, g: u32) {
    let rb = 2u * (g / 2u);
    let cb = 4u * (g % 2u);
    for (var kb = 0u; kb < KS / 16u; kb++) {
        let a0 = la(rb, kb);
        let a1 = la(rb + 1u, kb);
        let b0 = lb(kb, cb);
        let b1 = lb(kb, cb + 1u);
        let b2 = lb(kb, cb + 2u);
        let b3 = lb(kb, cb + 3u);
        (*acc).c0 = coopMultiplyAdd(a0, b0, (*acc).c0);
        (*acc).c1 = coopMultiplyAdd(a0, b1, (*acc).c1);
        (*acc).c2 = coopMultiplyAdd(a0, b2, (*acc).c2);
        (*acc).c3 = coopMultiplyAdd(a0, b3, (*acc).c3);
        (*acc).c4 = coopMultiplyAdd(a1, b0, (*acc).c4);
        (*acc).c5 = coopMultiplyAdd(a1, b1, (*acc).c5);
        (*acc).c6 = coopMultiplyAdd(a1, b2, (*acc).c6);
        (*acc).c7 = coopMultiplyAdd(a1, b3, (*acc).c7);
    }
}

fn store_acc(acc: Acc, r0: u32, c0: u32, g: u32) {
    let r = r0 + 32u * (g / 2u);
    let cc = c0 + 64u * (g % 2u);
    sc(acc.c0, r * dims.n + cc);
    sc(acc.c1, r * dims.n + cc + 16u);
    sc(acc.c2, r * dims.n + cc + 32u);
    sc(acc.c3, r * dims.n + cc + 48u);
    sc(acc.c4, (r + 16u) * dims.n + cc);
    sc(acc.c5, (r + 16u) * dims.n + cc + 16u);
    sc(acc.c6, (r + 16u) * dims.n + cc + 32u);
    sc(acc.c7, (r + 16u) * dims.n + cc + 48u);
}

@compute @workgroup_size(256)
fn staged(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_id) g: u32) {
    let r0 = 128u * wid.y;
    let c0 = 128u * wid.x;
    var acc = Acc(MC(), MC(), MC(), MC(), MC(), MC(), MC(), MC());
    // Subgroup g copies A blocks 2g, 2g + 1 and B blocks 2g, 2g + 1 of each step.
    var pa0 = ga_blk(r0, 0u, 2u * g);
    var pa1 = ga_blk(r0, 0u, 2u * g + 1u);
    var pb0 = gb_blk(c0, 0u, 2u * g);
    var pb1 = gb_blk(c0, 0u, 2u * g + 1u);
    for (var kk = 0u; kk < dims.k; kk += KS) {
        workgroupBarrier();                  // the previous step's tiles are read
        sa_blk(pa0, 2u * g);
        sa_blk(pa1, 2u * g + 1u);
        sb_blk(pb0, 2u * g);
        sb_blk(pb1, 2u * g + 1u);
        workgroupBarrier();                  // this step's tiles are ready
        let nk = min(kk + KS, dims.k - KS);  // the next step (the last one again at the end)
        pa0 = ga_blk(r0, nk, 2u * g);
        pa1 = ga_blk(r0, nk, 2u * g + 1u);
        pb0 = gb_blk(c0, nk, 2u * g);
        pb1 = gb_blk(c0, nk, 2u * g + 1u);
        step(&acc, g);
    }
    store_acc(acc, r0, c0, g);
}

@compute @workgroup_size(256)
fn vec(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_id) g: u32,
       @builtin(local_invocation_index) lidx: u32) {
    let r0 = 128u * wid.y;
    let c0 = 128u * wid.x;
    var acc = Acc(MC(), MC(), MC(), MC(), MC(), MC(), MC(), MC());
    // Each invocation copies 4 vec4 of A (128 x 32 halves = 1024 vec4) and 4 of B.
    for (var kk = 0u; kk < dims.k; kk += KS) {
        var ra: array<vec4<f16>, 4>;
        var rb: array<vec4<f16>, 4>;
        for (var j = 0u; j < 4u; j++) {
            let x = lidx + 256u * j;
            let ar = x / (KS / 4u);
            let ac = x % (KS / 4u);
            ra[j] = a4[((r0 + ar) * dims.k + kk) / 4u + ac];
            let br = x / 32u;
            let bc = x % 32u;
            rb[j] = b4[((kk + br) * dims.n + c0) / 4u + bc];
        }
        workgroupBarrier();
        for (var j = 0u; j < 4u; j++) {
            let x = lidx + 256u * j;
            let ai = (x / (KS / 4u)) * AS + 4u * (x % (KS / 4u));
            a_s[ai] = ra[j].x; a_s[ai + 1u] = ra[j].y; a_s[ai + 2u] = ra[j].z; a_s[ai + 3u] = ra[j].w;
            let bi = (x / 32u) * BS + 4u * (x % 32u);
            b_s[bi] = rb[j].x; b_s[bi + 1u] = rb[j].y; b_s[bi + 2u] = rb[j].z; b_s[bi + 3u] = rb[j].w;
        }
        workgroupBarrier();
        step(&acc, g);
    }
    store_acc(acc, r0, c0, g);
}
