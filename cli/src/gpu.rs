//! Device helpers every command shares: contexts with the runtime checks asked for and the
//! persistent pipeline cache, waiting, reading buffers back, allocations that may fail, errors
//! nothing else catches, and the names of the library's enums as the command line spells them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use sbattn::{Attention, Dtype, KernelPath, PipelineCacheStatus, Readback, ShaderChecks};

use crate::Result;

/// The environment variable that turns the pipeline cache off (any value but empty or `0`),
/// as `--no-pipeline-cache` does. Read by the tool only: the library reads no variable.
pub const NO_CACHE_VAR: &str = "SBATTN_NO_PIPELINE_CACHE";
/// The environment variable naming the pipeline cache's folder, as `--pipeline-cache-dir`.
pub const CACHE_DIR_VAR: &str = "SBATTN_PIPELINE_CACHE_DIR";

/// The folder of the pipeline cache files this run uses (`None`: no cache), set once by
/// [`crate::run`]; unset (tests calling commands directly) means no cache.
static CACHE_DIR: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Sets the pipeline cache folder of this process (the first call wins).
pub fn set_cache_dir(dir: Option<PathBuf>) {
    let _ = CACHE_DIR.set(dir);
}

/// The pipeline cache folder of this process, if any.
pub fn cache_dir() -> Option<&'static Path> {
    CACHE_DIR.get().and_then(|d| d.as_deref())
}

/// Where the pipeline cache lives: nowhere with `--no-pipeline-cache` or
/// `SBATTN_NO_PIPELINE_CACHE`; else `--pipeline-cache-dir`, `SBATTN_PIPELINE_CACHE_DIR`, or
/// `sbattn/` in the user's cache folder ([`user_cache_dir`]). `env` looks a variable up.
pub fn resolve_cache_dir(
    no_cache: bool,
    dir: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Option<PathBuf> {
    let off = env(NO_CACHE_VAR).is_some_and(|v| !v.is_empty() && v != "0");
    if no_cache || off {
        return None;
    }
    if let Some(d) = dir {
        return Some(d.to_path_buf());
    }
    if let Some(d) = env(CACHE_DIR_VAR).filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    user_cache_dir(&env).map(|d| d.join("sbattn"))
}

/// The user's cache folder: `$XDG_CACHE_HOME` when it is an absolute path, else
/// `~/Library/Caches` on macOS, `%LOCALAPPDATA%` on Windows, `~/.cache` elsewhere.
pub fn user_cache_dir(env: &impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(x) = env("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        return Some(x);
    }
    if cfg!(windows) {
        return env("LOCALAPPDATA")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from);
    }
    let home = env("HOME").filter(|h| !h.is_empty()).map(PathBuf::from)?;
    Some(if cfg!(target_os = "macos") {
        home.join("Library").join("Caches")
    } else {
        home.join(".cache")
    })
}

/// The pipeline cache file of `attn` in `dir`: `<dir>/<key>.bin`, `None` on a device without
/// a pipeline cache.
pub fn cache_file(attn: &Attention, dir: &Path) -> Option<PathBuf> {
    attn.pipeline_cache_key()
        .map(|k| dir.join(format!("{k}.bin")))
}

/// A context of the tool: the library's [`Attention`], which saves its persistent pipeline
/// cache (if it has one) to its file when dropped.
pub struct Context {
    attn: Attention,
    cache: Option<PathBuf>,
}

impl Context {
    /// `attn` with the pipeline cache of `dir` (`None`: none), loaded from its file.
    pub fn with_cache(attn: Attention, dir: Option<&Path>) -> Context {
        let cache = dir.and_then(|d| cache_file(&attn, d));
        let attn = match &cache {
            Some(path) => {
                let attn = attn.with_pipeline_cache_file(path);
                if let PipelineCacheStatus::Rejected(why) = attn.pipeline_cache_status() {
                    eprintln!(
                        "sbattn: pipeline cache {} not used ({why}); starting a new one",
                        path.display()
                    );
                }
                attn
            }
            None => attn,
        };
        Context { attn, cache }
    }

    /// The pipeline cache file, if there is one.
    pub fn cache_file(&self) -> Option<&Path> {
        self.cache.as_deref()
    }

    /// Saves the pipeline cache now (also done when dropped).
    ///
    /// # Errors
    /// Writing the file failed.
    pub fn save_cache(&self) -> Result<()> {
        if let Some(path) = &self.cache {
            self.attn
                .save_pipeline_cache(path)
                .map_err(|e| format!("saving the pipeline cache to {}: {e}", path.display()))?;
        }
        Ok(())
    }
}

impl std::ops::Deref for Context {
    type Target = Attention;
    fn deref(&self) -> &Attention {
        &self.attn
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        if let Err(e) = self.save_cache() {
            eprintln!("sbattn: {e}");
        }
    }
}

/// A context on the library's default adapter compiling with `checks`, with this run's
/// pipeline cache ([`cache_dir`]).
///
/// # Errors
/// No adapter, or the device request failed.
pub fn context(checks: ShaderChecks) -> Result<Context> {
    let attn = Attention::with_default_adapter_blocking().map_err(|e| e.to_string())?;
    let attn = match checks {
        ShaderChecks::Full => attn.with_full_runtime_checks(),
        ShaderChecks::Bounds => attn.with_index_clamping(),
        // SAFETY: the documented opt-in of `without_runtime_checks`: every call this tool makes
        // goes through the library's host-side validation, which is what the setting measures.
        ShaderChecks::Off => unsafe { attn.without_runtime_checks() },
        _ => attn,
    };
    // The cache last: the runtime-check settings start a new set of pipelines.
    Ok(Context::with_cache(attn, cache_dir()))
}

/// Waits for everything submitted to `attn`'s queue.
///
/// # Errors
/// A lost device or a timeout.
pub fn wait(attn: &Attention) -> Result<()> {
    attn.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .map(|_| ())
        .map_err(|e| format!("poll: {e}"))
}

/// Copies the first `bytes` of `buf` (which needs `COPY_SRC`) back as f32 values of `dtype`.
///
/// # Errors
/// Mapping failed.
pub fn read_back(
    attn: &Attention,
    buf: &wgpu::Buffer,
    bytes: u64,
    dtype: Dtype,
) -> Result<Vec<f32>> {
    let dev = attn.device();
    let mut enc = dev.create_command_encoder(&Default::default());
    let rb = Readback::record(dev, &mut enc, buf, bytes);
    attn.queue().submit([enc.finish()]);
    Ok(sbattn::from_bytes(
        &rb.read_blocking(dev).map_err(|e| e.to_string())?,
        dtype,
    ))
}

/// Runs `f` (which allocates) under an out-of-memory and a validation error scope.
///
/// # Errors
/// What the device reported.
pub fn try_alloc<T>(dev: &wgpu::Device, f: impl FnOnce() -> T) -> Result<T> {
    let oom = dev.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let val = dev.push_error_scope(wgpu::ErrorFilter::Validation);
    let v = f();
    let errors = [pollster::block_on(val.pop()), pollster::block_on(oom.pop())];
    match errors.into_iter().flatten().next() {
        Some(e) => Err(format!("allocation failed: {e}")),
        None => Ok(v),
    }
}

/// The first error no scope caught (device loss, a failed dispatch), kept so that a sweep can
/// record it against the configuration in flight instead of aborting.
#[derive(Clone, Default)]
pub struct ErrorSlot(Arc<Mutex<Option<String>>>);

impl ErrorSlot {
    /// Installs the slot as `attn`'s uncaptured-error handler.
    pub fn install(attn: &Attention) -> ErrorSlot {
        let slot = ErrorSlot::default();
        let inner = slot.0.clone();
        attn.device().on_uncaptured_error(Arc::new(move |e| {
            let mut s = inner.lock().unwrap_or_else(|p| p.into_inner());
            s.get_or_insert_with(|| e.to_string());
        }));
        slot
    }

    /// The error caught since the last call, if any.
    pub fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// `result`, unless an uncaptured error came first.
    ///
    /// # Errors
    /// `result`'s error or the uncaptured one.
    pub fn check<T>(&self, result: Result<T>) -> Result<T> {
        match (result, self.take()) {
            (Ok(v), None) => Ok(v),
            (Err(e), _) | (Ok(_), Some(e)) => Err(e),
        }
    }
}

/// The command line's name of a path.
pub fn path_name(p: KernelPath) -> &'static str {
    match p {
        KernelPath::Auto => "auto",
        KernelPath::Subgroup => "subgroup",
        KernelPath::SharedMemory => "shared",
        KernelPath::CooperativeMatrix => "coop",
        KernelPath::EmulatedCooperativeMatrix => "coop-emu",
        _ => "other",
    }
}

/// The command line's name of a storage type.
pub fn dtype_name(d: Dtype) -> &'static str {
    match d {
        Dtype::F32 => "f32",
        Dtype::F16 => "f16",
        _ => "other",
    }
}

/// The command line's name of a runtime-check setting.
pub fn checks_name(c: ShaderChecks) -> &'static str {
    match c {
        ShaderChecks::Trusted => "default",
        ShaderChecks::Bounds => "clamped",
        ShaderChecks::Full => "full",
        ShaderChecks::Off => "unchecked",
    }
}

/// How a one-token decode step of `heads` query heads would run on a full cache of `desc`
/// (its capacity as every sequence's length), on `path` with `tuning`: the library's
/// `decode_plan` on a scratch cache.
///
/// # Errors
/// The library's reasons (an unsupported path, a bad forced value, a limit).
pub fn plan_decode(
    attn: &Attention,
    desc: &sbattn::KvCacheDesc,
    heads: u32,
    path: KernelPath,
    tuning: &sbattn::DecodeTuning,
) -> std::result::Result<sbattn::DecodePlan, sbattn::Error> {
    let dev = attn.device();
    let mut cache = sbattn::KvCache::new(attn, *desc)?;
    // Only the host mirror of the lengths matters to a plan: the encoder is never submitted.
    let mut enc = dev.create_command_encoder(&Default::default());
    cache.set_lengths(attn, &mut enc, &vec![desc.capacity; desc.batch as usize])?;
    let bytes = (desc.batch * heads * desc.head_dim) as u64 * desc.dtype.size();
    let (q, o) = (
        sbattn::zeroed(dev, "plan q", bytes),
        sbattn::zeroed(dev, "plan o", bytes),
    );
    let call = sbattn::Decode::new(
        &cache,
        heads,
        1,
        sbattn::TensorRef::bthd(&q),
        sbattn::TensorRef::bthd(&o),
    )
    .with_path(path)
    .with_tuning(*tuning);
    attn.decode_plan(&call)
}
