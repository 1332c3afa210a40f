// Backward pass, step 1: the per-row quantities (docs/ALGORITHM.md "Backward"), and for
// AddBias the per-tile partial sums of dbias. One workgroup per (PR rows, head, batch), one
// invocation per row.
//
// src/kernel/source.rs assembles: the generated prelude (alias ST, WG = PR rows per workgroup,
// the FLAG_* / REM_* constants), common/addr.wgsl, backward/io.wgsl and this file.
//
// Per row i of head h (rem_i = exp(log rem_i) from the forward pass):
//   dr_i = 0 (Discard) | drem_i (Return) | dot(do_i, v_i) (AddToValue) | dot(do_i, bias_h) (AddBias)
//   W'_i = dot(do_i, o_i) - dr_i (AddToValue, AddBias) | - dr_i (1 - rem_i) (Return) | (Discard)
// W'_i is sum_j u_ij up to the rounding of o (f16 storage: 2^-11 relative); the dq kernel
// computes the exact sum along its walk and corrects for the difference (dq.wgsl).
// Partials (AddBias): per column c, sum over this tile's rows in order of rem_i do_i[c].

@group(0) @binding(1) var<storage, read> o: array<ST>;
@group(0) @binding(2) var<storage, read> d_o: array<ST>;
@group(0) @binding(3) var<storage, read> v: array<ST>;
@group(0) @binding(4) var<storage, read> lrem: array<f32>;
@group(0) @binding(5) var<storage, read> drem: array<f32>;
@group(0) @binding(6) var<storage, read> bias: array<ST>;
@group(0) @binding(7) var<storage, read_write> state: array<f32>;

var<workgroup> rem_s: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lidx: u32) {
    let pt = wid.x;
    let h = wid.y;
    let b = wid.z;
    let hk = h / p.group;
    let mode = (p.flags >> REM_SHIFT) & 3u;
    let dob = p.d_o.off + b * p.d_o.sb + h * p.d_o.sh;
    let i = pt * WG + lidx;
    var rem = 0.0;
    if (i < p.t) {
        let row = (b * p.h + h) * p.t + i;
        rem = exp(lrem[p.lrem_off + row]);
        let ob = p.o.off + b * p.o.sb + i * p.o.st + h * p.o.sh;
        let vb = p.v.off + b * p.v.sb + i * p.v.st + hk * p.v.sh;
        let bb = p.bias_off + h * p.d;
        let db = dob + i * p.d_o.st;
        var dov = 0.0;
        var dx = 0.0;
        for (var d = 0u; d < p.d; d++) {
            let x = f32(d_o[db + d]);
            dov += x * f32(o[ob + d]);
            if (mode == REM_ADD_VALUE) {
                dx += x * f32(v[vb + d]);
            } else if (mode == REM_ADD_BIAS) {
                dx += x * f32(bias[bb + d]);
            }
        }
        var dr = 0.0;
        var w = dov;
        if (mode == REM_RETURN) {
            dr = drem[p.drem_off + row];
            w = dov - dr * (1.0 - rem);
        } else if (mode != REM_DISCARD) {
            dr = dx;
            w = dov - dr;
        }
        let at = p.rows_off + 4u * row;
        state[at] = dr;
        state[at + 1u] = rem;
        state[at + 2u] = w;
        state[at + 3u] = w;   // replaced by the exact sum in the dq kernel
    }
    rem_s[lidx] = rem;        // 0 past the sequence
    if (mode == REM_ADD_BIAS) {
        workgroupBarrier();
        let rows = min(WG, p.t - pt * WG);
        let out = p.part_off + ((b * p.n_ptiles + pt) * p.h + h) * p.d;
        for (var c = lidx; c < p.d; c += WG) {
            var s = 0.0;
            for (var r = 0u; r < rows; r++) {
                s += rem_s[r] * f32(d_o[dob + (pt * WG + r) * p.d_o.st + c]);
            }
            state[out + c] = s;
        }
    }
}
