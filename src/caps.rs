//! What a device offers the kernels, as plain data: read from a device once, or written by
//! hand (tests build one for an adapter they do not have).

/// Lanes per query row of the portable forward kernels and the smallest subgroup the subgroup
/// paths take (lavapipe, Intel, NVIDIA, AMD, Apple and Qualcomm all report at least 8).
pub(crate) const MIN_SUBGROUP: u32 = 8;
/// Subgroup size the cooperative-matrix kernel is written for.
pub(crate) const COOP_SUBGROUP: u32 = 32;

/// The parts of an adapter and device the kernels care about.
#[derive(Clone, Debug, PartialEq)]
pub struct Capabilities {
    /// Adapter name, as the driver reports it.
    pub name: String,
    /// Backend (Vulkan, Metal, DX12, WebGPU, GL).
    pub backend: wgpu::Backend,
    /// Discrete, integrated, virtual or CPU adapter.
    pub device_type: wgpu::DeviceType,
    /// Driver name and version, as reported.
    pub driver: String,
    /// Smallest subgroup size the adapter may run a compute shader with.
    pub subgroup_min_size: u32,
    /// Largest subgroup size the adapter may run a compute shader with.
    pub subgroup_max_size: u32,
    /// Features enabled on the device.
    pub features: wgpu::Features,
    /// Limits of the device.
    pub limits: wgpu::Limits,
    /// Cooperative-matrix configurations of the adapter (wgpu reports them on the adapter only:
    /// empty for an `Attention` built without it).
    pub cooperative_matrices: Vec<wgpu::CooperativeMatrixProperties>,
}

impl Capabilities {
    /// Reads the capabilities of `device`; `adapter`, when given, adds its cooperative-matrix
    /// configurations.
    pub fn of(device: &wgpu::Device, adapter: Option<&wgpu::Adapter>) -> Self {
        let info = device.adapter_info();
        Capabilities {
            name: info.name,
            backend: info.backend,
            device_type: info.device_type,
            driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
            subgroup_min_size: info.subgroup_min_size,
            subgroup_max_size: info.subgroup_max_size,
            features: device.features(),
            limits: device.limits(),
            cooperative_matrices: adapter.map(|a| a.cooperative_matrix_properties()).unwrap_or_default(),
        }
    }

    /// A plain description for tests and planning without a device: the given features and
    /// limits, subgroups of `subgroup` invocations, no cooperative matrices.
    pub fn plain(features: wgpu::Features, limits: wgpu::Limits, subgroup: u32) -> Self {
        Capabilities {
            name: "plain".into(),
            backend: wgpu::Backend::Noop,
            device_type: wgpu::DeviceType::Other,
            driver: String::new(),
            subgroup_min_size: subgroup,
            subgroup_max_size: subgroup,
            features,
            limits,
            cooperative_matrices: Vec::new(),
        }
    }

    /// f16 storage and arithmetic are enabled.
    pub fn f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    /// The subgroup paths can run: subgroups enabled, and every subgroup size the adapter may
    /// use is a power of two of at least 8 lanes and at most a workgroup.
    pub fn subgroups(&self) -> bool {
        let (min, max) = (self.subgroup_min_size, self.subgroup_max_size);
        self.features.contains(wgpu::Features::SUBGROUP)
            && min >= MIN_SUBGROUP
            && min.is_power_of_two()
            && max.is_power_of_two()
            && max <= self.limits.max_compute_invocations_per_workgroup
    }

    /// The cooperative-matrix kernel can run: the feature is enabled, the adapter lists
    /// 16x16x16 f16 x f16 -> f32, and subgroups are always 32 wide. wgpu offers this on Vulkan
    /// (NVIDIA, and AMD and Intel drivers with `VK_KHR_cooperative_matrix`); its Metal backend
    /// offers only 8x8 matrices, so this kernel does not run on Apple GPUs.
    pub fn cooperative_f16(&self) -> bool {
        use wgpu::CooperativeScalarType as S;
        let listed = self.cooperative_matrices.iter().any(|c| {
            (c.m_size, c.n_size, c.k_size) == (16, 16, 16) && c.ab_type == S::F16 && c.cr_type == S::F32
        });
        self.features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16)
            && listed
            && self.subgroup_min_size == COOP_SUBGROUP
            && self.subgroup_max_size == COOP_SUBGROUP
    }

    /// A CPU adapter (lavapipe, SwiftShader, WARP): kernels are chosen for few cores and
    /// compile time rather than memory latency.
    pub fn is_cpu(&self) -> bool {
        self.device_type == wgpu::DeviceType::Cpu
    }
}
