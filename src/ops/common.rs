//! What every attention op checks and binds the same way: the remainder and `log rem` outputs,
//! the flag bits, the early-exit threshold and the dispatch limits.

use crate::kernel::consts::{
    FLAG_ATTEND_CURRENT, FLAG_EARLY_EXIT, FLAG_WRITE_LOG_REM, REM_ADD_BIAS, REM_ADD_VALUE, REM_DISCARD, REM_RETURN, REM_SHIFT,
};
use crate::kernel::layout::Unused;
use crate::tensor::{bind_run, Binding, BufferRef};
use crate::{Error, Mask, Result};

/// What to do with the stick left over after the last key, `rem_i`.
#[derive(Clone, Copy, Debug, Default)]
pub enum Remainder<'a> {
    /// Drop it.
    #[default]
    Discard,
    /// Write `rem_i` (f32) into a `[B, H, T]` buffer.
    Return(BufferRef<'a>),
    /// `o_i += rem_i * v_i`: the rest of the stick goes to the current token.
    AddToValue,
    /// `o_i += rem_i * bias_h` with a `[H, D]` bias in the call's dtype.
    AddBias(BufferRef<'a>),
}

impl Remainder<'_> {
    /// The kernels' remainder mode (`REM_*`).
    pub(crate) fn mode(&self) -> u32 {
        match self {
            Remainder::Discard => REM_DISCARD,
            Remainder::Return(_) => REM_RETURN,
            Remainder::AddToValue => REM_ADD_VALUE,
            Remainder::AddBias(_) => REM_ADD_BIAS,
        }
    }
}

/// The validated bindings of a call's per-row outputs and bias, unused ones bound to
/// [`Unused`] buffers.
pub(crate) struct RowOutputs<'a> {
    /// `REM_*` mode.
    pub mode: u32,
    pub rem: Binding<'a>,
    pub log_rem: Binding<'a>,
    pub bias: Binding<'a>,
    pub writes_log_rem: bool,
}

impl<'a> RowOutputs<'a> {
    /// Binds `remainder` and `log_rem` for `rows` query rows (f32 `rem` and `log rem`) and a
    /// `bias_len`-element bias of `es`-byte elements.
    pub fn bind(
        remainder: &Remainder<'a>,
        log_rem: Option<&BufferRef<'a>>,
        unused: &'a Unused,
        rows: u64,
        bias_len: u64,
        es: u64,
        limits: &wgpu::Limits,
    ) -> Result<Self> {
        let rem = match remainder {
            Remainder::Return(r) => bind_run("rem", r, rows, 4, true, limits)?,
            _ => unused.write(0),
        };
        let bias = match remainder {
            Remainder::AddBias(b) => bind_run("bias", b, bias_len, es, false, limits)?,
            _ => unused.read(),
        };
        let log_rem_b = match log_rem {
            Some(r) => bind_run("log_rem", r, rows, 4, true, limits)?,
            None => unused.write(1),
        };
        Ok(RowOutputs { mode: remainder.mode(), rem, log_rem: log_rem_b, bias, writes_log_rem: log_rem.is_some() })
    }

    /// The bindings the call really uses, for the aliasing check.
    pub fn used(&self) -> impl Iterator<Item = (&Binding<'a>, crate::tensor::Access)> {
        use crate::tensor::Access::{Read, Write};
        [
            (self.mode == REM_RETURN).then_some((&self.rem, Write)),
            self.writes_log_rem.then_some((&self.log_rem, Write)),
            (self.mode == REM_ADD_BIAS).then_some((&self.bias, Read)),
        ]
        .into_iter()
        .flatten()
    }

    /// The flag bits of a call with `mask` and early exit on or off.
    pub fn flags(&self, mask: Mask, early_exit: bool) -> u32 {
        let ac = if mask == Mask::IncludeCurrent { FLAG_ATTEND_CURRENT } else { 0 };
        let lr = if self.writes_log_rem { FLAG_WRITE_LOG_REM } else { 0 };
        let ee = if early_exit { FLAG_EARLY_EXIT } else { 0 };
        ac | (self.mode << REM_SHIFT) | lr | ee
    }
}

/// Checks an early-exit threshold, `[0, 1)` with 0 meaning off, and returns the kernels'
/// `log_eps` (`-inf` when off).
pub(crate) fn early_exit(eps: f32) -> Result<f32> {
    if !(0.0..1.0).contains(&eps) {
        return Err(Error::InvalidParameter { name: "early_exit_eps", reason: format!("{eps} is not in [0, 1)") });
    }
    Ok(if eps > 0.0 { eps.ln() } else { f32::NEG_INFINITY })
}

/// Checks a dispatch's grid sizes (`(what, size)` per axis) against the device limit.
pub(crate) fn check_grid(limits: &wgpu::Limits, axes: &[(&'static str, u64)]) -> Result<()> {
    let lim = limits.max_compute_workgroups_per_dimension as u64;
    for &(what, value) in axes {
        if value > lim {
            return Err(Error::Limit { what, value, limit: lim });
        }
    }
    Ok(())
}

/// Checks that the device can run a kernel of `invocations` invocations using `workgroup_bytes`
/// of workgroup memory.
pub(crate) fn check_workgroup(limits: &wgpu::Limits, invocations: u32, workgroup_bytes: u32) -> Result<()> {
    let checks = [
        ("workgroup invocations", invocations, limits.max_compute_invocations_per_workgroup),
        ("workgroup size x", invocations, limits.max_compute_workgroup_size_x),
        ("workgroup memory", workgroup_bytes, limits.max_compute_workgroup_storage_size),
    ];
    for (what, value, limit) in checks {
        if value > limit {
            return Err(Error::Limit { what, value: value as u64, limit: limit as u64 });
        }
    }
    Ok(())
}

/// Checks that f16 storage can be used.
pub(crate) fn check_dtype(caps: &crate::Capabilities, dtype: crate::Dtype) -> Result<()> {
    if dtype == crate::Dtype::F16 && !caps.f16() {
        return Err(Error::Unsupported("f16 needs Features::SHADER_F16 on the device".into()));
    }
    Ok(())
}
