//! Bind-group layouts from a kernel's list of accesses, bind groups from validated bindings,
//! and the buffers bound where a call has nothing to bind.

use crate::tensor::{Access, Binding};

/// A bind group layout with the kernel's uniform parameters at binding 0 (bound at a dynamic
/// offset into the per-device parameter arena) and storage buffers at 1.., and its pipeline
/// layout.
pub(crate) struct KernelLayout {
    pub group: wgpu::BindGroupLayout,
    pub pipeline: wgpu::PipelineLayout,
}

impl KernelLayout {
    pub fn new(device: &wgpu::Device, label: &str, bindings: &[Access]) -> Self {
        let entry = |binding, ty| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer { ty, has_dynamic_offset: binding == 0, min_binding_size: None },
            count: None,
        };
        let mut entries = vec![entry(0, wgpu::BufferBindingType::Uniform)];
        for (i, a) in bindings.iter().enumerate() {
            entries.push(entry(i as u32 + 1, wgpu::BufferBindingType::Storage { read_only: *a == Access::Read }));
        }
        let group = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(label), entries: &entries });
        let pipeline = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(label),
            bind_group_layouts: &[Some(&group)],
            immediate_size: 0,
        });
        KernelLayout { group, pipeline }
    }

    /// The bind group of one dispatch: `params` (a slot of the parameter arena) at binding 0,
    /// then `bindings` in order.
    pub fn bind_group(&self, device: &wgpu::Device, label: &str, params: &ParamSlot, bindings: &[Binding<'_>]) -> wgpu::BindGroup {
        let mut entries = Vec::with_capacity(bindings.len() + 1);
        entries.push(wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &params.buffer,
                offset: 0,
                size: wgpu::BufferSize::new(params.size),
            }),
        });
        for (i, b) in bindings.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource: b.resource() });
        }
        device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(label), layout: &self.group, entries: &entries })
    }
}

/// Where one call's parameters live: a buffer of the arena, the dynamic offset and the size.
pub(crate) struct ParamSlot {
    pub buffer: wgpu::Buffer,
    pub offset: u32,
    pub size: u64,
}

/// Small buffers bound where a call has no buffer for an optional binding: one read-only and
/// two writable ones (a buffer may not be bound writable and read-only in one dispatch, and the
/// two optional row outputs of a call are written).
pub(crate) struct Unused {
    read: wgpu::Buffer,
    write: [wgpu::Buffer; 4],
}

impl Unused {
    pub fn new(device: &wgpu::Device) -> Self {
        let make = |label| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        };
        Unused { read: make("sbattn unused input"), write: ["sbattn unused output 0", "sbattn unused output 1", "sbattn unused output 2", "sbattn unused output 3"].map(make) }
    }

    /// The unused read-only binding.
    pub fn read(&self) -> Binding<'_> {
        Binding::whole("unused", &self.read)
    }

    /// Unused writable binding `i` (0 to 3).
    pub fn write(&self, i: usize) -> Binding<'_> {
        Binding::whole("unused", &self.write[i])
    }
}
