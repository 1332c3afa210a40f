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
//! let shape = Shape::new().with_seq_len(128).with_heads(4).with_head_dim(64);
//! let n = 128 * 4 * 64;
//! let (q, k, v) = (vec![0.1f32; n], vec![0.2f32; n], vec![0.3f32; n]);
//! let out = attn.run_host_blocking(&HostInput::new(shape, &q, &k, &v))?;
//! assert_eq!(out.o.len(), n);
//! # Ok(()) }
//! ```
//!
//! For real work, record calls into your own encoder with [`Attention::forward`],
//! [`Attention::backward`], [`Attention::append`] and [`Attention::decode`]: each only
//! validates, writes the call's parameters and records its dispatches. `docs/ARCHITECTURE.md`
//! describes the layers.
#![deny(missing_docs)]

mod caps;
mod context;
mod error;
mod host;
pub mod kernel;
pub mod ops;
pub mod reference;
mod tensor;
mod types;
mod warm;

pub use caps::Capabilities;
pub use context::{Attention, DeviceOptions};
pub use error::{Error, Result};
pub use host::{from_bytes, round_to, to_bytes, upload, zeroed, HostInput, HostOutput, HostRemainder, Readback};
pub use kernel::{PipelineCacheStatus, ShaderChecks, Target};
pub use ops::backward::plan::{BackwardTiles, BackwardVariant};
pub use ops::backward::{Backward, HostGradients};
pub use ops::cache::{Append, CacheTensor, KvCache, KvCacheDesc, Paging, MAX_PAGE_SIZE, MIN_PAGE_SIZE, NO_PAGE};
pub use ops::common::Remainder;
pub use ops::decode::plan::{DecodePlan, DecodeTuning, DecodeVariant, Load};
pub use ops::decode::partial::{Merge, Partials};
pub use ops::decode::{Decode, MAX_NEW_TOKENS};
pub use ops::forward::plan::{ForwardTuning, ForwardVariant, KernelOptions, TileConfig};
pub use ops::forward::{Forward, Keys};
pub use ops::weights::{weights_bytes, HostWeights, Weights, MAX_WEIGHTS_SEQ_LEN};
pub use tensor::{Addressing, BufferRef, TensorRef};
pub use types::{Dtype, KernelPath, Layout, Mask, Shape, Strides, MAX_HEAD_DIM};
pub use warm::Kernel;

/// The README's code examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
