//! The one error type of the crate.

use std::fmt;
use std::sync::Arc;

/// Everything that can go wrong before, while or after work is recorded.
///
/// Every check on shapes, strides, buffers and features runs before anything is encoded, so a
/// call that returns an error has left the caller's encoder untouched. Two errors compare equal
/// when they are the same variant and say the same thing.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// No adapter was found (or none that could give a device).
    NoAdapter(String),
    /// The adapter refused to create a device.
    RequestDevice(String),
    /// A dimension is zero or the shape is otherwise impossible.
    Shape(String),
    /// Head dims outside `1..=MAX_HEAD_DIM`.
    HeadDim {
        /// The head dim asked for.
        head_dim: u32,
        /// The largest supported.
        max: u32,
    },
    /// `heads % kv_heads != 0` (grouped-query attention needs whole groups).
    HeadsNotDivisible {
        /// Query heads.
        heads: u32,
        /// Key/value heads.
        kv_heads: u32,
    },
    /// The scale is NaN or infinite.
    NonFiniteScale(f32),
    /// Strides that would make distinct output rows overlap, or an index past `u32`.
    Stride {
        /// The tensor.
        tensor: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A buffer is smaller than the tensor described on it.
    BufferTooSmall {
        /// The tensor.
        tensor: &'static str,
        /// Bytes the tensor needs (to the end of its binding).
        needed: u64,
        /// Bytes the buffer has.
        size: u64,
    },
    /// A buffer lacks a usage the call needs.
    BufferUsage {
        /// The tensor.
        tensor: &'static str,
        /// The usage it lacks.
        missing: wgpu::BufferUsages,
    },
    /// Two tensors that must not share memory do (an output on an input's buffer, or two
    /// overlapping outputs).
    Aliasing {
        /// One tensor.
        a: &'static str,
        /// The other.
        b: &'static str,
    },
    /// The device lacks something this call asked for (f16, subgroups, a forced path).
    Unsupported(String),
    /// A size exceeds a device limit (dispatch size, binding size).
    Limit {
        /// What is too large.
        what: &'static str,
        /// Its size.
        value: u64,
        /// The device's limit.
        limit: u64,
    },
    /// Host data of the wrong length (host helpers, the reference).
    HostData {
        /// Which data.
        what: &'static str,
        /// Elements expected.
        expected: usize,
        /// Elements given.
        got: usize,
    },
    /// The device reported an error (pipeline creation, readback); `source()` is wgpu's error
    /// where there is one.
    Device {
        /// What failed.
        message: String,
        /// wgpu's error.
        source: Option<Arc<wgpu::Error>>,
    },
    /// The device could not allocate memory for a buffer.
    OutOfMemory(String),
    /// The device is lost (destroyed, reset or removed): make a new one.
    DeviceLost(String),
    /// An append would take sequence `sequence` of a KV cache past its capacity.
    CacheOverflow {
        /// The sequence.
        sequence: u32,
        /// Tokens it holds.
        length: u32,
        /// Tokens appended.
        appending: u32,
        /// Tokens it can hold.
        capacity: u32,
    },
    /// A call parameter other than a shape is out of range (an early-exit threshold, a forced
    /// split count or lane count).
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    /// A device error with no wgpu error behind it.
    pub(crate) fn device(message: impl Into<String>) -> Self {
        Error::Device { message: message.into(), source: None }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoAdapter(s) => write!(f, "no usable GPU adapter: {s}"),
            Error::RequestDevice(s) => write!(f, "could not create a device: {s}"),
            Error::Shape(s) => write!(f, "bad shape: {s}"),
            Error::HeadDim { head_dim, max } => write!(f, "head dim {head_dim} is not supported (1..={max})"),
            Error::HeadsNotDivisible { heads, kv_heads } => {
                write!(f, "{heads} query heads cannot share {kv_heads} key/value heads evenly")
            }
            Error::NonFiniteScale(s) => write!(f, "scale {s} is not finite"),
            Error::Stride { tensor, reason } => write!(f, "strides of `{tensor}`: {reason}"),
            Error::BufferTooSmall { tensor, needed, size } => {
                write!(f, "buffer of `{tensor}` holds {size} bytes but the tensor needs {needed}")
            }
            Error::BufferUsage { tensor, missing } => write!(f, "buffer of `{tensor}` lacks usage {missing:?}"),
            Error::Aliasing { a, b } => write!(f, "`{a}` and `{b}` must not share memory"),
            Error::Unsupported(s) => write!(f, "unsupported: {s}"),
            Error::Limit { what, value, limit } => write!(f, "{what} is {value}, over the device limit {limit}"),
            Error::HostData { what, expected, got } => {
                write!(f, "host data `{what}` has {got} elements, expected {expected}")
            }
            Error::Device { message, .. } => write!(f, "device error: {message}"),
            Error::OutOfMemory(s) => write!(f, "out of device memory: {s}"),
            Error::DeviceLost(s) => write!(f, "device lost: {s}"),
            Error::CacheOverflow { sequence, length, appending, capacity } => write!(
                f,
                "appending {appending} tokens to sequence {sequence} (holding {length}) exceeds the KV cache capacity {capacity}"
            ),
            Error::InvalidParameter { name, reason } => write!(f, "parameter `{name}`: {reason}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Device { source: Some(e), .. } => Some(e.as_ref()),
            _ => None,
        }
    }
}

impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other) && self.to_string() == other.to_string()
    }
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
