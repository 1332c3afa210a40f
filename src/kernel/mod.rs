//! The kernel layer every op builds on: shared constants, kernel recipes and their WGSL, the
//! pipeline cache (and the framing of its persistent data), bind-group layouts and per-call
//! parameters. It knows no op.

pub(crate) mod consts;
pub(crate) mod layout;
pub(crate) mod persist;
pub(crate) mod pipelines;
pub(crate) mod source;
pub(crate) mod uniform;

pub use persist::PipelineCacheStatus;
pub use pipelines::ShaderChecks;
pub use source::Target;
