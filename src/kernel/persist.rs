//! The persistent pipeline cache's data as sbattn hands it out ([`crate::Attention::pipeline_cache_data`]):
//! wgpu's [`wgpu::PipelineCache::get_data`] inside a frame that says which adapter, driver,
//! backend and sbattn version made it and whether it arrived intact, so that data from anywhere
//! else is refused before it reaches wgpu (whose own header check covers the adapter and driver
//! but not the bytes).
//!
//! Frame (little-endian): `b"SBATTNPC"`, format `u32`, 4 zero bytes, key hash `u64`
//! (FNV-1a of [`key_material`]), payload length `u64`, payload FNV-1a `u64`, payload.

/// What the persistent pipeline cache of an [`crate::Attention`] is
/// ([`crate::Attention::pipeline_cache_status`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PipelineCacheStatus {
    /// No persistent cache (the default: pipelines are created without one).
    Off,
    /// One was asked for, but the device lacks `Features::PIPELINE_CACHE` (wgpu offers it on
    /// Vulkan only, and only on devices created with it, as [`crate::Attention::device_descriptor`]
    /// requests): pipelines are created without one.
    Unsupported,
    /// A cache that started empty (no saved data was given).
    Empty,
    /// A cache that started from this many bytes of saved data.
    Loaded {
        /// Bytes of the data given, frame included.
        bytes: usize,
    },
    /// Saved data was given but not used (why: made by another adapter, driver, backend or
    /// sbattn version, damaged, or unreadable); the cache started empty and the next save
    /// replaces the data.
    Rejected(String),
}

impl PipelineCacheStatus {
    /// Whether pipelines are created through a persistent cache.
    pub fn is_active(&self) -> bool {
        matches!(self, PipelineCacheStatus::Empty | PipelineCacheStatus::Loaded { .. } | PipelineCacheStatus::Rejected(_))
    }
}

const MAGIC: &[u8; 8] = b"SBATTNPC";
const FORMAT: u32 = 1;
const HEADER: usize = 8 + 4 + 4 + 8 + 8 + 8;

/// FNV-1a, 64 bits: cheap, and enough to notice a damaged or truncated file.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// Everything saved data must match: the crate's version, the backend, the adapter (name,
/// vendor and device ids) and the driver (name and version).
pub(crate) fn key_material(info: &wgpu::AdapterInfo) -> String {
    format!(
        "sbattn {} | {:?} | {} | vendor {:#x} device {:#x} | {} | {}",
        env!("CARGO_PKG_VERSION"),
        info.backend,
        info.name,
        info.vendor,
        info.device,
        info.driver,
        info.driver_info
    )
}

/// A file-name-safe key for `info`: `sbattn-<version>-<backend>-<adapter>-<hash>`, the adapter
/// name shortened to 32 characters of `[a-z0-9_]`, the hash over all of [`key_material`].
pub(crate) fn file_key(info: &wgpu::AdapterInfo) -> String {
    let name: String = info
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect::<String>()
        .split('_')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("_")
        .chars()
        .take(32)
        .collect();
    let backend = format!("{:?}", info.backend).to_lowercase();
    format!("sbattn-{}-{backend}-{name}-{:016x}", env!("CARGO_PKG_VERSION"), fnv1a(key_material(info).as_bytes()))
}

/// wgpu's cache data `payload` in sbattn's frame for `info`.
pub(crate) fn frame(info: &wgpu::AdapterInfo, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&fnv1a(key_material(info).as_bytes()).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&fnv1a(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of `data` if it was framed for `info` and is intact, else why not.
pub(crate) fn unframe<'a>(info: &wgpu::AdapterInfo, data: &'a [u8]) -> Result<&'a [u8], String> {
    let word = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
    if data.len() < HEADER || &data[..8] != MAGIC {
        return Err("not sbattn pipeline-cache data".into());
    }
    let format = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
    if format != FORMAT {
        return Err(format!("frame format {format}, this sbattn writes {FORMAT}"));
    }
    if word(16) != fnv1a(key_material(info).as_bytes()) {
        return Err(format!("made for another adapter, driver or sbattn version (this one: {})", key_material(info)));
    }
    let payload = &data[HEADER..];
    if word(24) != payload.len() as u64 || word(32) != fnv1a(payload) {
        return Err("damaged (length or checksum does not match)".into());
    }
    Ok(payload)
}
