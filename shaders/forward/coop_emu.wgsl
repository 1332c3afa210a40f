// The matrix operations of forward/coop_mat.wgsl without cooperative matrices, for testing
// forward/coop.wgsl where the adapter has none (lavapipe in CI): the same functions with the
// same results (f16 operands, f32 accumulation), slowly. A "subgroup" here is 32 consecutive
// invocation slots (the kernel numbers slots from the real subgroups' ids); lane l holds
// elements 8l .. 8l + 7 of a block in row-major order. A product trades its operands through
// workgroup memory (between barriers: the kernel calls every matrix operation in uniform
// control flow), everything else is per invocation.

struct EM {
    e: array<f32, 8>,
}
alias MA = EM;
alias MB = EM;
alias MC = EM;

var<private> emu_g: u32;
var<private> emu_lane: u32;
var<workgroup> emu_s: array<f16, NSG * 512u>;   // per subgroup: A [16][16], then B [16][16] (f16 values)

fn mat_init(g: u32, lane: u32) {
    emu_g = g;
    emu_lane = lane;
}

// Row and column of element j of this lane.
fn emu_r(j: u32) -> u32 { return (8u * emu_lane + j) / 16u; }
fn emu_c(j: u32) -> u32 { return (8u * emu_lane + j) % 16u; }

fn mma(a: MA, b: MB, c: MC) -> MC {
    let base = emu_g * 512u;
    for (var j = 0u; j < 8u; j++) {
        emu_s[base + 8u * emu_lane + j] = f16(a.e[j]);
        emu_s[base + 256u + 8u * emu_lane + j] = f16(b.e[j]);
    }
    workgroupBarrier();
    var out = c;
    for (var j = 0u; j < 8u; j++) {
        let r = emu_r(j);
        let col = emu_c(j);
        var acc = 0.0;
        for (var x = 0u; x < 16u; x++) {
            acc += f32(emu_s[base + r * 16u + x]) * f32(emu_s[base + 256u + x * 16u + col]);
        }
        out.e[j] += acc;
    }
    workgroupBarrier();
    return out;
}

fn load_q(g: u32, db: u32) -> MA {
    let i = 16u * g * XS + 16u * db;
    var m = EM();
    for (var j = 0u; j < 8u; j++) {
        let x = i + emu_r(j) * XS + emu_c(j);
        if (QS == 1u) { m.e[j] = f32(q_s[x]); } else { m.e[j] = f32(kv_s[x]); }
    }
    return m;
}
// Column-major: element (r, c) at kv_s[i + c * XS + r].
fn kt_s(kb: u32, db: u32) -> MB {
    let i = 16u * kb * XS + 16u * db;
    var m = EM();
    for (var j = 0u; j < 8u; j++) { m.e[j] = f32(kv_s[i + emu_c(j) * XS + emu_r(j)]); }
    return m;
}
fn v_s(kb: u32, db: u32) -> MB {
    let i = 16u * kb * XS + 16u * db;
    var m = EM();
    for (var j = 0u; j < 8u; j++) { m.e[j] = f32(kv_s[i + emu_r(j) * XS + emu_c(j)]); }
    return m;
}
fn load_p(g: u32, kb: u32) -> MA {
    let i = 16u * g * PS + 16u * kb;
    var m = EM();
    for (var j = 0u; j < 8u; j++) { m.e[j] = f32(p_s[i + emu_r(j) * PS + emu_c(j)]); }
    return m;
}
fn store_s(acc: MC, g: u32, kb: u32) {
    let i = 16u * g * SS + 16u * kb;
    for (var j = 0u; j < 8u; j++) { s_s[i + emu_r(j) * SS + emu_c(j)] = acc.e[j]; }
}
