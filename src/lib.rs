//! # sbattn: stick-breaking attention on any GPU
//!
//! Stick-breaking attention (Tan et al., 2024) replaces softmax with a stick that each key,
//! from the nearest to the farthest, breaks off a share of: `A_ij = sigmoid(z_ij) *
//! prod_{j<l<=i} (1 - sigmoid(z_il))`. The recency bias is built in, so no positional encoding
//! is needed, and the part of the stick no key takes, `rem_i`, is returned or reused.
//!
//! This crate runs it as WGSL compute shaders through wgpu (Vulkan, Metal, DX12, WebGPU).
//!
//! ```no_run
//! # fn main() -> Result<(), sbattn::Error> {
//! use sbattn::{Attention, HostInput, Shape};
//! let attn = Attention::with_default_adapter_blocking()?;
//! let shape = Shape::new(1, 128, 4, 64); // B, T, H, D
//! let n = (1 * 128 * 4 * 64) as usize;
//! let (q, k, v) = (vec![0.1f32; n], vec![0.2f32; n], vec![0.3f32; n]);
//! let out = attn.run_host_blocking(&HostInput::new(shape, &q, &k, &v))?;
//! assert_eq!(out.o.len(), n);
//! # Ok(()) }
//! ```
//!
//! For real work, record calls into your own encoder with [`Attention::forward`]: it only
//! validates, writes the call's parameters and records one dispatch.

mod attention;
pub mod config;
pub mod decode;
mod error;
mod host;
pub mod params;
mod pipelines;
pub mod reference;
pub mod shader;
mod tensor;
mod types;

pub use attention::{Attention, Forward, Remainder};
pub use pipelines::ShaderChecks;
pub use config::{Capabilities, TileConfig, Variant};
pub use decode::{Append, Decode, Decoder, KvCache, KvCacheDesc};
pub use error::{Error, Result};
pub use host::{from_bytes, readback_later, round_to, to_bytes, HostInput, HostOutput, HostRemainder, Readback};
pub use tensor::{BufferRef, TensorRef};
pub use types::{Dtype, Layout, Mask, Path, Shape, Strides, MAX_HEAD_DIM};
