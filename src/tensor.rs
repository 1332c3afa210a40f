//! Tensors on GPU buffers: a buffer, an element offset and strides, validated before binding.

use crate::{Error, Layout, Result, Strides};

/// A `[B, T, heads, D]`-shaped tensor somewhere in a buffer, head dim contiguous.
///
/// Any layout whose last axis is contiguous works without copies: `[B, T, H, D]`, `[B, H, T, D]`,
/// or one slice of a fused QKV buffer (offset to the slice, token stride over all of it).
#[derive(Clone, Copy, Debug)]
pub struct TensorRef<'a> {
    /// The buffer (needs `BufferUsages::STORAGE`).
    pub buffer: &'a wgpu::Buffer,
    /// Offset of element `(0, 0, 0, 0)`, in elements of the call's dtype.
    pub offset: u64,
    /// Element strides of the batch, token and head axes.
    pub strides: Strides,
}

impl<'a> TensorRef<'a> {
    /// A tensor with explicit strides at element `offset`.
    pub fn new(buffer: &'a wgpu::Buffer, offset: u64, strides: Strides) -> Self {
        TensorRef { buffer, offset, strides }
    }

    /// A contiguous tensor in `layout` starting at element 0.
    pub fn with_layout(buffer: &'a wgpu::Buffer, layout: Layout, seq_len: u32, heads: u32, head_dim: u32) -> Self {
        TensorRef { buffer, offset: 0, strides: layout.strides(seq_len, heads, head_dim) }
    }

    /// A contiguous `[B, T, H, D]` tensor starting at element 0.
    pub fn bthd(buffer: &'a wgpu::Buffer, seq_len: u32, heads: u32, head_dim: u32) -> Self {
        Self::with_layout(buffer, Layout::Bthd, seq_len, heads, head_dim)
    }

    /// A contiguous `[B, H, T, D]` tensor starting at element 0.
    pub fn bhtd(buffer: &'a wgpu::Buffer, seq_len: u32, heads: u32, head_dim: u32) -> Self {
        Self::with_layout(buffer, Layout::Bhtd, seq_len, heads, head_dim)
    }

    /// The same tensor starting at element `offset`.
    pub fn at_offset(self, offset: u64) -> Self {
        TensorRef { offset, ..self }
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

/// A validated binding: the byte range to bind and the tensor's addressing inside it, in
/// elements relative to the binding start, all small enough for the shader's `u32` indices.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Binding<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub start: u64,
    pub size: u64,
    pub offset: u32,
    pub strides: [u32; 3],
}

impl<'a> Binding<'a> {
    pub fn entry(&self, binding: u32) -> wgpu::BindGroupEntry<'a> {
        wgpu::BindGroupEntry {
            binding,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: self.buffer,
                offset: self.start,
                size: wgpu::BufferSize::new(self.size),
            }),
        }
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
    let mut last = offset.checked_add(inner - 1).ok_or_else(overflow)?;
    for a in axes {
        let span = (a.extent - 1).checked_mul(a.stride).ok_or_else(overflow)?;
        last = last.checked_add(span).ok_or_else(overflow)?;
    }
    if output {
        check_injective(name, axes, inner)?;
    }
    let end = last.checked_add(1).and_then(|e| e.checked_mul(elem_size)).ok_or_else(overflow)?;
    let align = limits.min_storage_buffer_offset_alignment.max(4) as u64;
    let first = offset * elem_size;
    let start = first / align * align;
    let size = (end - start).next_multiple_of(4);
    if start + size > buffer.size() {
        return Err(Error::BufferTooSmall { tensor: name, needed: start + size, size: buffer.size() });
    }
    if size > limits.max_storage_buffer_binding_size as u64 {
        return Err(Error::Limit {
            what: "storage binding size",
            value: size,
            limit: limits.max_storage_buffer_binding_size as u64,
        });
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
    Ok(Binding { buffer, start, size, offset: to_u32(rel)?, strides })
}

/// Distinct indices must address distinct elements: sorted by stride, each axis must step
/// over everything the smaller axes span.
fn check_injective(name: &'static str, axes: &[Axis], inner: u64) -> Result<()> {
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
        span = a.stride * (a.extent - 1) + span;
    }
    Ok(())
}

/// Fails when two written bindings share bytes of one buffer, or when a written and a read
/// binding share a buffer at all (wgpu forbids a buffer bound read-only and writable in one
/// dispatch). Read bindings may share freely (a fused QKV buffer).
pub(crate) fn check_disjoint(a: (&'static str, &Binding<'_>, bool), b: (&'static str, &Binding<'_>, bool)) -> Result<()> {
    let ((na, ba, wa), (nb, bb, wb)) = (a, b);
    if ba.buffer != bb.buffer {
        return Ok(());
    }
    let (alo, ahi) = ba.range();
    let (blo, bhi) = bb.range();
    let overlap = alo < bhi && blo < ahi;
    if wa != wb || (wa && overlap) {
        return Err(Error::Aliasing { a: na, b: nb });
    }
    Ok(())
}
