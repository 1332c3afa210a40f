// The stable pieces of the stick-breaking weights, shared by every kernel. The flag bits of
// `Params.flags` (FLAG_*, REM_*) come from the generated prelude (src/kernel/consts.rs).
//
// With l = log1p(exp(-|z|)):
//   log(1 - beta) = -softplus(z)  = -(max(z, 0) + l)
//   log(beta)     = -softplus(-z) = min(z, 0) - l
// Neither overflows for any finite z.

// log1p(x) for x in [0, 1]: the series where 1 + x would round away x's low bits.
fn log1p_small(x: vec4<f32>) -> vec4<f32> {
    return select(log(1.0 + x), x * (1.0 - 0.5 * x), x < vec4<f32>(1e-3));
}
