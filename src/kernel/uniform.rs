//! Per-dispatch parameters: the `Params` trait every kernel's uniform struct implements (with
//! its field list, for the one layout test against naga), and the arena they are written into.

use std::sync::Mutex;

use crate::kernel::layout::ParamSlot;
use crate::tensor::Binding;

/// A kernel's uniform struct, laid out exactly as the WGSL `Params` of its kernel.
pub(crate) trait Params: bytemuck::Pod {
    /// `(field, byte offset)` in declaration order, for the layout test.
    fn fields() -> Vec<(&'static str, usize)>;
}

/// Declares a `#[repr(C)]` parameter struct and its [`Params`] field list.
macro_rules! params {
    ($(#[$m:meta])* pub(crate) struct $name:ident { $($(#[$fm:meta])* $f:ident : $t:ty,)* }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        pub(crate) struct $name { $($(#[$fm])* pub $f: $t,)* }
        impl $crate::kernel::uniform::Params for $name {
            fn fields() -> Vec<(&'static str, usize)> {
                vec![$((stringify!($f), std::mem::offset_of!($name, $f))),*]
            }
        }
    };
}
pub(crate) use params;

/// Addressing of one tensor (WGSL `Addr`, common/addr.wgsl): element offset and batch, token
/// and head strides, relative to its binding, in units of the kernel's loads.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Addr {
    pub off: u32,
    pub sb: u32,
    pub st: u32,
    pub sh: u32,
}

impl Addr {
    /// The addressing of `b`, in units of `unit` elements (a kernel reading vec4s or 16-byte
    /// words of a tensor whose offset and strides the host has checked are multiples of it).
    pub fn of(b: &Binding<'_>, unit: u32) -> Self {
        Addr { off: b.offset / unit, sb: b.strides[0] / unit, st: b.strides[1] / unit, sh: b.strides[2] / unit }
    }
}

/// Field names of [`Addr`], for the layout test.
pub(crate) const ADDR_FIELDS: [&str; 4] = ["off", "sb", "st", "sh"];

/// Paging of a KV cache's K and V (WGSL `Pages`, common/pages.wgsl): `shift` is log2 of the
/// page size, 0 for a contiguous cache; the table has `max_pages` words per sequence from word
/// `table` of the binding that holds it; `num_pages` pages in the pool.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Pages {
    pub shift: u32,
    pub max_pages: u32,
    pub num_pages: u32,
    pub table: u32,
}

/// Field names of [`Pages`], for the layout test.
pub(crate) const PAGES_FIELDS: [&str; 4] = ["shift", "max_pages", "num_pages", "table"];

/// Bytes of one arena buffer: 256 calls of 256-byte-aligned parameters.
const CHUNK: u64 = 64 * 1024;

/// Where calls write their parameters (and small per-call tables, such as the forward
/// schedule): one buffer at a time, filled front to back with `queue.write_buffer`, then
/// replaced by a fresh one; data larger than a chunk gets a buffer of its own. A slot is never
/// written twice, so work recorded now and submitted any time later reads its own data (wgpu
/// keeps a buffer alive while recorded work refers to it). This replaces a buffer per call.
pub(crate) struct Arena {
    label: &'static str,
    usage: wgpu::BufferUsages,
    align: u64,
    current: Mutex<Option<(wgpu::Buffer, u64)>>,
}

impl Arena {
    /// The arena of uniform parameters (bound at dynamic offsets).
    pub fn uniform(limits: &wgpu::Limits) -> Self {
        Self::new("sbattn parameters", wgpu::BufferUsages::UNIFORM, limits.min_uniform_buffer_offset_alignment)
    }

    /// The arena of read-only storage tables.
    pub fn storage(limits: &wgpu::Limits) -> Self {
        Self::new("sbattn tables", wgpu::BufferUsages::STORAGE, limits.min_storage_buffer_offset_alignment)
    }

    fn new(label: &'static str, usage: wgpu::BufferUsages, align: u32) -> Self {
        Arena { label, usage: usage | wgpu::BufferUsages::COPY_DST, align: align.max(16) as u64, current: Mutex::new(None) }
    }

    /// Writes `params` to a fresh slot.
    pub fn push<P: Params>(&self, device: &wgpu::Device, queue: &wgpu::Queue, params: &P) -> ParamSlot {
        self.push_bytes(device, queue, bytemuck::bytes_of(params))
    }

    /// Writes `bytes` (a multiple of 4 long, not empty) to a fresh slot.
    pub fn push_bytes(&self, device: &wgpu::Device, queue: &wgpu::Queue, bytes: &[u8]) -> ParamSlot {
        let size = bytes.len() as u64;
        let make = |size| {
            device.create_buffer(&wgpu::BufferDescriptor { label: Some(self.label), size, usage: self.usage, mapped_at_creation: false })
        };
        if size > CHUNK {
            let buffer = make(size.next_multiple_of(4));
            queue.write_buffer(&buffer, 0, bytes);
            return ParamSlot { buffer, offset: 0, size };
        }
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let fits = cur.as_ref().is_some_and(|(_, at)| at + size <= CHUNK);
        if !fits {
            *cur = Some((make(CHUNK), 0));
        }
        let (buffer, at) = cur.as_mut().expect("set above");
        let offset = *at;
        queue.write_buffer(buffer, offset, bytes);
        *at = (offset + size).next_multiple_of(self.align);
        ParamSlot { buffer: buffer.clone(), offset: offset as u32, size }
    }
}
