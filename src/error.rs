//! The one error type of the crate.

use std::fmt;

/// Everything that can go wrong before, while or after work is recorded.
///
/// Every check on shapes, strides, buffers and features runs before anything is encoded, so a
/// call that returns an error has left the caller's encoder untouched.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// No adapter was found (or none that could give a device).
    NoAdapter(String),
    /// The adapter refused to create a device.
    RequestDevice(String),
    /// A dimension is zero or the shape is otherwise impossible.
    Shape(String),
    /// Head dims outside `1..=MAX_HEAD_DIM`.
    HeadDim { head_dim: u32, max: u32 },
    /// `heads % kv_heads != 0` (grouped-query attention needs whole groups).
    HeadsNotDivisible { heads: u32, kv_heads: u32 },
    /// The scale is NaN or infinite.
    NonFiniteScale(f32),
    /// Strides that would make distinct output rows overlap, or an index past `u32`.
    Stride { tensor: &'static str, reason: String },
    /// A buffer is smaller than the tensor described on it.
    BufferTooSmall { tensor: &'static str, needed: u64, size: u64 },
    /// A buffer lacks a usage the call needs.
    BufferUsage { tensor: &'static str, missing: wgpu::BufferUsages },
    /// Two tensors that must not share memory do (an output on an input's buffer, or two
    /// overlapping outputs).
    Aliasing { a: &'static str, b: &'static str },
    /// The device lacks something this call asked for (f16, subgroups, a forced path).
    Unsupported(String),
    /// A size exceeds a device limit (dispatch size, binding size).
    Limit { what: &'static str, value: u64, limit: u64 },
    /// Host data of the wrong length (blocking helpers).
    HostData { what: &'static str, expected: usize, got: usize },
    /// The device reported an error (pipeline creation, readback, device loss).
    Device(String),
    /// An append would take sequence `sequence` of a KV cache past its capacity.
    CacheOverflow { sequence: u32, length: u32, appending: u32, capacity: u32 },
    /// A call parameter other than a shape is out of range (an early-exit threshold, a forced
    /// split count or lane count).
    InvalidParameter { name: &'static str, reason: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoAdapter(s) => write!(f, "no usable GPU adapter: {s}"),
            Error::RequestDevice(s) => write!(f, "could not create a device: {s}"),
            Error::Shape(s) => write!(f, "bad shape: {s}"),
            Error::HeadDim { head_dim, max } => {
                write!(f, "head dim {head_dim} is not supported (1..={max})")
            }
            Error::HeadsNotDivisible { heads, kv_heads } => {
                write!(f, "{heads} query heads cannot share {kv_heads} key/value heads evenly")
            }
            Error::NonFiniteScale(s) => write!(f, "scale {s} is not finite"),
            Error::Stride { tensor, reason } => write!(f, "strides of `{tensor}`: {reason}"),
            Error::BufferTooSmall { tensor, needed, size } => write!(
                f,
                "buffer of `{tensor}` holds {size} bytes but the tensor needs {needed}"
            ),
            Error::BufferUsage { tensor, missing } => {
                write!(f, "buffer of `{tensor}` lacks usage {missing:?}")
            }
            Error::Aliasing { a, b } => write!(f, "`{a}` and `{b}` must not share memory"),
            Error::Unsupported(s) => write!(f, "unsupported: {s}"),
            Error::Limit { what, value, limit } => {
                write!(f, "{what} is {value}, over the device limit {limit}")
            }
            Error::HostData { what, expected, got } => {
                write!(f, "host data `{what}` has {got} elements, expected {expected}")
            }
            Error::Device(s) => write!(f, "device error: {s}"),
            Error::CacheOverflow { sequence, length, appending, capacity } => write!(
                f,
                "appending {appending} tokens to sequence {sequence} (holding {length}) exceeds the KV cache capacity {capacity}"
            ),
            Error::InvalidParameter { name, reason } => write!(f, "parameter `{name}`: {reason}"),
        }
    }
}

impl std::error::Error for Error {}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
