//! Calls larger than one binding: a dense forward whose tensors do not fit the device's
//! `max_storage_buffer_binding_size` (128 MiB on lavapipe and WebGPU's default) runs as several
//! dispatches over ranges of sequences, then of heads, then of queries, each an ordinary call
//! on views of the same buffers.
//!
//! A range of sequences keeps every stride and moves the offsets; a range of heads (one
//! sequence) keeps whole groups of query heads with their key/value heads, or, with one
//! key/value head, any run of query heads; a range of queries (one sequence, one head) is a
//! call with an earlier context ([`Keys::Prefix`]) whose keys end at its last query. The row
//! outputs (`[B, H, T]`) of each piece are one contiguous run of the whole call's. Only the
//! key/value slice of one (sequence, head) that does not fit one binding cannot be split here
//! (its keys would have to be split, which the merge of partial results does): that keeps the
//! limit error.

use super::{Forward, Keys, Layout};
use crate::ops::common::Remainder;
use crate::tensor::{check_aliasing, check_injective, Access, Axis, Binding, BufferRef, TensorRef};
use crate::{Error, Result};

/// Whether `e` says a binding is over the device's size limit (what splitting cures).
pub(super) fn over_binding_limit(e: &Error) -> bool {
    matches!(e, Error::Limit { what: "storage binding size", .. })
}

/// The pieces of `call` (a dense call: no packed sequences, keys not in a cache), split in
/// halves until `fits` accepts each piece; `None` when a piece that cannot be split further
/// still does not fit.
pub(super) fn pieces<'a>(call: &Forward<'a>, fits: &dyn Fn(&Forward<'a>) -> Result<()>) -> Result<Option<Vec<Forward<'a>>>> {
    if call.cu_seqlens.is_some() || matches!(call.keys, Keys::Cache(_)) {
        return Ok(None);
    }
    whole_call_checks(call)?;
    let mut out = Vec::new();
    let mut todo = vec![*call];
    while let Some(c) = todo.pop() {
        match fits(&c) {
            Ok(()) => out.push(c),
            Err(e) if over_binding_limit(&e) => match halves(&c)? {
                Some([a, b]) => todo.extend([b, a]),
                None => return Ok(None),
            },
            Err(e) => return Err(e),
        }
    }
    Ok(Some(out))
}

/// What each piece checks only for itself, checked for the whole call: the output maps
/// distinct elements to distinct memory, and the aliasing rule over the byte ranges of every
/// tensor (no binding limit applies here: the pieces' bindings are checked one by one).
fn whole_call_checks<'a>(call: &Forward<'a>) -> Result<()> {
    let s = call.shape;
    let lay = Layout::of(call)?;
    let (d, es) = (s.head_dim() as u64, call.dtype.size());
    let overflow = |name| Error::Stride { tensor: name, reason: "addresses overflow 64 bits".into() };
    let range = |name: &'static str, buffer: &'_ wgpu::Buffer, offset: u64, axes: &[Axis], inner: u64, es: u64| -> Result<(u64, u64)> {
        let mut last = offset.checked_add(inner.saturating_sub(1)).ok_or_else(|| overflow(name))?;
        for a in axes {
            last = a.extent.saturating_sub(1).checked_mul(a.stride).and_then(|x| last.checked_add(x)).ok_or_else(|| overflow(name))?;
        }
        let start = offset.checked_mul(es).ok_or_else(|| overflow(name))?;
        let end = last.checked_add(1).and_then(|x| x.checked_mul(es)).ok_or_else(|| overflow(name))?;
        let _ = buffer;
        Ok((start, end))
    };
    let axes = |t: &TensorRef<'_>, batch: u32, tokens: u32, heads: u32| {
        let st = t.strides(tokens, heads, s.head_dim());
        [Axis { extent: batch as u64, stride: st.batch }, Axis { extent: tokens as u64, stride: st.token }, Axis { extent: heads as u64, stride: st.head }]
    };
    let o_axes = axes(&call.o, lay.q_batch, lay.q_tokens, s.heads());
    check_injective("o", &o_axes, d)?;
    let binding = |name: &'static str, buffer: &'a wgpu::Buffer, (start, end): (u64, u64)| -> Binding<'a> { Binding { name, buffer, start, size: end - start, offset: 0, strides: [0; 3] } };
    let tensor = |name, t: &TensorRef<'_>, batch, tokens, heads| -> Result<(u64, u64)> { range(name, t.buffer, t.offset, &axes(t, batch, tokens, heads), d, es) };
    let mut used = vec![
        (binding("q", call.q.buffer, tensor("q", &call.q, lay.q_batch, lay.q_tokens, s.heads())?), Access::Read),
        (binding("k", call.k.buffer, tensor("k", &call.k, lay.k_batch, lay.k_tokens, s.kv_heads())?), Access::Read),
        (binding("v", call.v.buffer, tensor("v", &call.v, lay.k_batch, lay.k_tokens, s.kv_heads())?), Access::Read),
        (binding("o", call.o.buffer, tensor("o", &call.o, lay.q_batch, lay.q_tokens, s.heads())?), Access::Write),
    ];
    let rows = s.rows();
    let run = |name, r: &BufferRef<'_>, len: u64, es: u64| range(name, r.buffer, r.offset, &[], len, es);
    match &call.remainder {
        Remainder::Return(r) => used.push((binding("rem", r.buffer, run("rem", r, rows, 4)?), Access::Write)),
        Remainder::AddBias(b) => used.push((binding("bias", b.buffer, run("bias", b, s.heads() as u64 * d, es)?), Access::Read)),
        _ => {}
    }
    if let Some(r) = &call.log_rem {
        used.push((binding("log_rem", r.buffer, run("log_rem", r, rows, 4)?), Access::Write));
    }
    let refs: Vec<(&Binding<'_>, Access)> = used.iter().map(|(b, a)| (b, *a)).collect();
    check_aliasing(&refs)
}

/// `call` as two calls: over halves of its sequences, else of its heads, else of its queries.
fn halves<'a>(call: &Forward<'a>) -> Result<Option<[Forward<'a>; 2]>> {
    let s = call.shape;
    let lay = Layout::of(call)?;
    let (t, h, hk, d) = (s.seq_len(), s.heads(), s.kv_heads(), s.head_dim());
    // Every tensor with explicit strides, so that a piece with fewer heads or tokens keeps
    // the whole call's addressing.
    let fix = |x: TensorRef<'a>, tokens, heads| TensorRef::strided(x.buffer, x.strides(tokens, heads, d)).at_offset(x.offset);
    let (q, o) = (fix(call.q, t, h), fix(call.o, t, h));
    let (k, v) = (fix(call.k, lay.k_tokens, hk), fix(call.v, lay.k_tokens, hk));
    let strides = |x: &TensorRef<'a>| x.strides(0, 0, 0);
    let at = |x: TensorRef<'a>, b: u32, tok: u32, head: u32| {
        let st = strides(&x);
        x.at_offset(x.offset + b as u64 * st.batch + tok as u64 * st.token + head as u64 * st.head)
    };
    // Row outputs and the bias, moved to the piece's first row (first head).
    let rows = |r: BufferRef<'a>, first: u64| r.at_offset(r.offset + first);
    let piece = |shape: crate::Shape, q, k, v, o, keys, first_row: u64, first_head: u32| {
        let remainder = match call.remainder {
            Remainder::Return(r) => Remainder::Return(rows(r, first_row)),
            Remainder::AddBias(b) => Remainder::AddBias(rows(b, first_head as u64 * d as u64)),
            other => other,
        };
        Forward { shape, q, k, v, o, keys, remainder, log_rem: call.log_rem.map(|r| rows(r, first_row)), ..*call }
    };
    if s.batch() > 1 {
        let m = s.batch() / 2;
        let keys = |lo: usize, hi: usize| match call.keys {
            Keys::Lengths(l) => Keys::Lengths(&l[lo..hi]),
            other => other,
        };
        let rows_per = h as u64 * t as u64;
        let a = piece(s.with_batch(m), q, k, v, o, keys(0, m as usize), 0, 0);
        let b = piece(
            s.with_batch(s.batch() - m),
            at(q, m, 0, 0),
            at(k, m, 0, 0),
            at(v, m, 0, 0),
            at(o, m, 0, 0),
            keys(m as usize, s.batch() as usize),
            m as u64 * rows_per,
            0,
        );
        return Ok(Some([a, b]));
    }
    // One sequence from here on: its key count.
    let keys_of = lay.seqs[0].tk;
    if h > 1 {
        // Whole groups when there are several key/value heads, else any run of query heads
        // (all of them read key/value head 0).
        let (mh, mk) = if hk > 1 { ((hk / 2) * s.group(), hk / 2) } else { (h / 2, 0) };
        let (kv_a, kv_b) = if hk > 1 { (mk, hk - mk) } else { (1, 1) };
        let a = piece(s.with_heads(mh).with_kv_heads(kv_a), q, k, v, o, call.keys, 0, 0);
        let b = piece(
            s.with_heads(h - mh).with_kv_heads(kv_b),
            at(q, 0, 0, mh),
            at(k, 0, 0, mk),
            at(v, 0, 0, mk),
            at(o, 0, 0, mh),
            call.keys,
            mh as u64 * t as u64,
            mh,
        );
        return Ok(Some([a, b]));
    }
    if t > 1 {
        // Queries [0, m) and [m, t): the first piece's keys end at its last query.
        let m = t / 2;
        let context = keys_of - t;
        let a = piece(s.with_seq_len(m), q, k, v, o, Keys::Prefix(context), 0, 0);
        let b = piece(s.with_seq_len(t - m), at(q, 0, m, 0), k, v, at(o, 0, m, 0), Keys::Prefix(context + m), m as u64, 0);
        return Ok(Some([a, b]));
    }
    Ok(None)
}
