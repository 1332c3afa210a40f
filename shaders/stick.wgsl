// Shared by the forward, decode and decode-merge kernels (src/shader.rs appends this file to
// each): the bits of `Params.flags` (src/params.rs) and the stable pieces of the weights.

const FLAG_ATTEND_CURRENT: u32 = 1u;
const FLAG_WRITE_LOG_REM: u32 = 8u;
const REM_SHIFT: u32 = 1u;     // bits 1..2: 0 discard, 1 return, 2 add v_i, 3 add bias_h
const REM_RETURN: u32 = 1u;
const REM_ADD_VALUE: u32 = 2u;
const REM_ADD_BIAS: u32 = 3u;


// With l = log1p(exp(-|z|)):
//   log(1 - beta) = -softplus(z)  = -(max(z, 0) + l)
//   log(beta)     = -softplus(-z) = min(z, 0) - l
// Neither overflows for any finite z.

// log1p(x) for x in [0, 1]: the series where 1 + x would round away x's low bits.
fn log1p_small(x: vec4<f32>) -> vec4<f32> {
    return select(log(1.0 + x), x * (1.0 - 0.5 * x), x < vec4<f32>(1e-3));
}
