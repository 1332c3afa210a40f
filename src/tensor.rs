//! Tensors on GPU buffers: a buffer, an element offset and an addressing, validated into a
//! binding before anything is recorded.

use crate::{Error, Layout, Result, Strides};

/// How a tensor's tokens and heads are placed: a contiguous layout (strides derived from the
/// call's shape) or explicit strides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Addressing {
    /// Contiguous in `layout`, sized by the call's shape.
    Contiguous(Layout),
    /// Explicit element strides (head dim contiguous).
    Strided(Strides),
}

/// A `[B, T, heads, D]`-shaped tensor somewhere in a buffer, head dim contiguous. Its sizes
/// come from the call it is passed to, so it cannot disagree with them.
///
/// Any layout whose last axis is contiguous works without copies: `[B, T, H, D]`
/// ([`TensorRef::bthd`]), `[B, H, T, D]` ([`TensorRef::bhtd`]), or one slice of a fused QKV
/// buffer ([`TensorRef::strided`] with the token stride over all of it, plus
/// [`TensorRef::at_offset`]).
#[derive(Clone, Copy, Debug)]
pub struct TensorRef<'a> {
    /// The buffer (needs `BufferUsages::STORAGE`).
    pub buffer: &'a wgpu::Buffer,
    /// Offset of element `(0, 0, 0, 0)`, in elements of the call's dtype.
    pub offset: u64,
    /// Where each token and head lies.
    pub addressing: Addressing,
}

impl<'a> TensorRef<'a> {
    /// A contiguous `[B, T, H, D]` tensor starting at element 0.
    pub fn bthd(buffer: &'a wgpu::Buffer) -> Self {
        Self::contiguous(buffer, Layout::Bthd)
    }

    /// A contiguous `[B, H, T, D]` tensor starting at element 0.
    pub fn bhtd(buffer: &'a wgpu::Buffer) -> Self {
        Self::contiguous(buffer, Layout::Bhtd)
    }

    /// A contiguous tensor in `layout` starting at element 0.
    pub fn contiguous(buffer: &'a wgpu::Buffer, layout: Layout) -> Self {
        TensorRef { buffer, offset: 0, addressing: Addressing::Contiguous(layout) }
    }

    /// A tensor with explicit element strides, starting at element 0.
    pub fn strided(buffer: &'a wgpu::Buffer, strides: Strides) -> Self {
        TensorRef { buffer, offset: 0, addressing: Addressing::Strided(strides) }
    }

    /// The same tensor starting at element `offset`.
    pub fn at_offset(self, offset: u64) -> Self {
        TensorRef { offset, ..self }
    }

    /// Its strides for `tokens` tokens of `heads` heads of dim `head_dim`.
    pub fn strides(&self, tokens: u32, heads: u32, head_dim: u32) -> Strides {
        match self.addressing {
            Addressing::Contiguous(layout) => layout.strides(tokens, heads, head_dim),
            Addressing::Strided(s) => s,
        }
    }
}

/// A contiguous run of elements in a buffer: `[B, H, T]` row outputs or a `[H, D]` bias.
#[derive(Clone, Copy, Debug)]
pub struct BufferRef<'a> {
    /// The buffer (needs `BufferUsages::STORAGE`).
    pub buffer: &'a wgpu::Buffer,
    /// Offset of the first element, in elements.
    pub offset: u64,
}

impl<'a> BufferRef<'a> {
    /// The run starting at element 0.
    pub fn new(buffer: &'a wgpu::Buffer) -> Self {
        BufferRef { buffer, offset: 0 }
    }

    /// The run starting at element `offset`.
    pub fn at_offset(self, offset: u64) -> Self {
        BufferRef { offset, ..self }
    }
}

/// Whether a kernel reads or writes a binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Access {
    /// `var<storage, read>`.
    Read,
    /// `var<storage, read_write>`.
    Write,
}

/// A validated binding: the byte range to bind and the tensor's addressing inside it, in
/// elements relative to the binding start, all small enough for the shader's `u32` indices.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Binding<'a> {
    pub name: &'static str,
    pub buffer: &'a wgpu::Buffer,
    pub start: u64,
    pub size: u64,
    pub offset: u32,
    pub strides: [u32; 3],
}

impl<'a> Binding<'a> {
    /// All of `buffer` (scratch, lengths and other buffers the library sizes itself).
    pub fn whole(name: &'static str, buffer: &'a wgpu::Buffer) -> Self {
        Binding { name, buffer, start: 0, size: buffer.size(), offset: 0, strides: [0; 3] }
    }

    pub fn resource(&self) -> wgpu::BindingResource<'a> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: self.buffer,
            offset: self.start,
            size: wgpu::BufferSize::new(self.size),
        })
    }

    /// Byte range `[lo, hi)` of the whole binding inside its buffer.
    pub fn range(&self) -> (u64, u64) {
        (self.start, self.start + self.size)
    }
}

/// One axis of a tensor: `extent` entries `stride` elements apart.
#[derive(Clone, Copy)]
pub(crate) struct Axis {
    pub extent: u64,
    pub stride: u64,
}

/// Validates a tensor of `axes` (outer axes; the contiguous inner axis is `inner` elements)
/// at element `offset` of `buffer`, and computes its binding.
///
/// `output` tensors must also map distinct elements to distinct memory.
#[allow(clippy::too_many_arguments)]
pub(crate) fn bind<'a>(
    name: &'static str,
    buffer: &'a wgpu::Buffer,
    offset: u64,
    axes: &[Axis],
    inner: u64,
    elem_size: u64,
    output: bool,
    limits: &wgpu::Limits,
) -> Result<Binding<'a>> {
    if !buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
        return Err(Error::BufferUsage { tensor: name, missing: wgpu::BufferUsages::STORAGE });
    }
    let overflow = || Error::Stride { tensor: name, reason: "addresses overflow 64 bits".into() };
    // Largest element index the tensor touches.
    let mut last = offset.checked_add(inner.saturating_sub(1)).ok_or_else(overflow)?;
    for a in axes {
        let span = a.extent.saturating_sub(1).checked_mul(a.stride).ok_or_else(overflow)?;
        last = last.checked_add(span).ok_or_else(overflow)?;
    }
    if output {
        check_injective(name, axes, inner)?;
    }
    let end = last.checked_add(1).and_then(|e| e.checked_mul(elem_size)).ok_or_else(overflow)?;
    let align = limits.min_storage_buffer_offset_alignment.max(4) as u64;
    let first = offset.checked_mul(elem_size).ok_or_else(overflow)?;
    let start = first / align * align;
    let size = (end - start).next_multiple_of(4);
    if start.checked_add(size).is_none_or(|e| e > buffer.size()) {
        return Err(Error::BufferTooSmall { tensor: name, needed: start.saturating_add(size), size: buffer.size() });
    }
    if size > limits.max_storage_buffer_binding_size {
        return Err(Error::Limit { what: "storage binding size", value: size, limit: limits.max_storage_buffer_binding_size });
    }
    let to_u32 = |x: u64| {
        u32::try_from(x).map_err(|_| Error::Stride {
            tensor: name,
            reason: format!("element index {x} does not fit the shader's 32-bit indices"),
        })
    };
    let rel = (first - start) / elem_size;
    to_u32(rel + (last - offset))?; // the largest relative index the shader forms
    let mut strides = [0u32; 3];
    for (s, a) in strides.iter_mut().zip(axes) {
        // Strides of single-entry axes are never multiplied by more than 0: bind them as 0.
        *s = if a.extent > 1 { to_u32(a.stride)? } else { 0 };
    }
    Ok(Binding { name, buffer, start, size, offset: to_u32(rel)?, strides })
}

/// Validates a `[batch, tokens, heads, D]` tensor of `elem_size`-byte elements.
#[allow(clippy::too_many_arguments)]
pub(crate) fn bind_tensor<'a>(
    name: &'static str,
    t: &TensorRef<'a>,
    [batch, tokens, heads]: [u32; 3],
    head_dim: u32,
    elem_size: u64,
    output: bool,
    limits: &wgpu::Limits,
) -> Result<Binding<'a>> {
    let s = t.strides(tokens, heads, head_dim);
    let axes = [
        Axis { extent: batch as u64, stride: s.batch },
        Axis { extent: tokens as u64, stride: s.token },
        Axis { extent: heads as u64, stride: s.head },
    ];
    bind(name, t.buffer, t.offset, &axes, head_dim as u64, elem_size, output, limits)
}

/// Validates a run of `len` elements of `elem_size` bytes.
pub(crate) fn bind_run<'a>(
    name: &'static str,
    r: &BufferRef<'a>,
    len: u64,
    elem_size: u64,
    output: bool,
    limits: &wgpu::Limits,
) -> Result<Binding<'a>> {
    bind(name, r.buffer, r.offset, &[], len, elem_size, output, limits)
}

/// Distinct indices must address distinct elements: sorted by stride, each axis must step
/// over everything the smaller axes span.
pub(crate) fn check_injective(name: &'static str, axes: &[Axis], inner: u64) -> Result<()> {
    let mut dims: Vec<Axis> = axes.iter().copied().filter(|a| a.extent > 1).collect();
    dims.sort_by_key(|a| a.stride);
    let mut span = inner; // elements covered by the inner axes, as an extent
    for a in dims {
        if a.stride < span {
            return Err(Error::Stride {
                tensor: name,
                reason: format!(
                    "stride {} is smaller than the {span} elements the inner axes span: outputs would overlap",
                    a.stride
                ),
            });
        }
        span = a.stride.saturating_mul(a.extent - 1).saturating_add(span);
    }
    Ok(())
}

/// The one aliasing rule of every call: a written binding may share no bytes with another
/// written binding, and no buffer at all with a read binding (wgpu forbids a buffer bound
/// read-only and writable in one dispatch). Read bindings may share freely (a fused QKV
/// buffer).
pub(crate) fn check_aliasing(bindings: &[(&Binding<'_>, Access)]) -> Result<()> {
    for (i, (a, wa)) in bindings.iter().enumerate() {
        for (b, wb) in &bindings[i + 1..] {
            if a.buffer != b.buffer || (*wa == Access::Read && *wb == Access::Read) {
                continue;
            }
            let ((alo, ahi), (blo, bhi)) = (a.range(), b.range());
            if wa != wb || (alo < bhi && blo < ahi) {
                return Err(Error::Aliasing { a: a.name, b: b.name });
            }
        }
    }
    Ok(())
}
