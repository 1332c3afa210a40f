//! `sbattn info`: every adapter wgpu enumerates, the features and limits sbattn cares about,
//! and on each the kernels the library would choose (and, for each path it cannot force, the
//! library's reason).

use sbattn::{Attention, DecodeTuning, DeviceOptions, Dtype, KernelPath, KvCacheDesc};

use crate::check::decode_plan_label;
use crate::gpu::{dtype_name, path_name, plan_decode};
use crate::report::{Align, Table};
use crate::{Outcome, Result};

/// Head dims `info` shows the forward variants of.
const HEAD_DIMS: [u32; 3] = [64, 128, 256];
/// The decode step `info` plans: B1, H32 over Hkv8, D128, a 4096-token cache, one new token.
const DECODE: (u32, u32, u32, u32, u32) = (1, 32, 8, 128, 4096);
/// The features that decide which kernels run and how they are timed.
const FEATURES: [(&str, wgpu::Features); 6] = [
    ("SHADER_F16", wgpu::Features::SHADER_F16),
    ("SUBGROUP", wgpu::Features::SUBGROUP),
    (
        "EXPERIMENTAL_COOPERATIVE_MATRIX",
        wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX,
    ),
    ("TIMESTAMP_QUERY", wgpu::Features::TIMESTAMP_QUERY),
    (
        "TIMESTAMP_QUERY_INSIDE_ENCODERS",
        wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS,
    ),
    ("PIPELINE_CACHE", wgpu::Features::PIPELINE_CACHE),
];

/// Runs `sbattn info`.
///
/// # Errors
/// None in practice: adapters that cannot give a device are reported and skipped.
pub fn run() -> Result<Outcome> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    let default = Attention::with_default_adapter_blocking().ok().map(|a| {
        let c = a.capabilities();
        (c.name.clone(), c.backend)
    });
    println!(
        "# {} adapter(s) (wgpu 30; WGPU_BACKEND and WGPU_ADAPTER_NAME narrow the list)",
        adapters.len()
    );
    if adapters.is_empty() {
        println!(
            "\nno adapter: install a Vulkan driver (Mesa's lavapipe runs on the CPU: scripts/setup.sh)"
        );
        return Ok(Outcome::Failed("no adapter".into()));
    }
    for (i, adapter) in adapters.iter().enumerate() {
        let info = adapter.get_info();
        let is_default = default.as_ref() == Some(&(info.name.clone(), info.backend));
        println!(
            "\n## {i}: {}{}\n",
            info.name,
            if is_default {
                " (the library's default)"
            } else {
                ""
            }
        );
        println!("{}", adapter_table(adapter));
        let descriptor = Attention::device_descriptor(adapter, &DeviceOptions::fastest());
        match pollster::block_on(adapter.request_device(&descriptor)) {
            Ok((device, queue)) => {
                let attn = Attention::from_adapter(adapter, &device, &queue);
                println!("\n{}", pipeline_cache_line(&attn));
                println!("\n{}", forward_variants(&attn));
                println!("\n{}", decode_variants(&attn));
            }
            Err(e) => println!("\nno device: {e}"),
        }
    }
    Ok(Outcome::Passed)
}

/// Yes or no.
fn yes(b: bool) -> String {
    if b { "yes".into() } else { "no".into() }
}

/// Bytes, with the binary unit that reads best.
fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{n} ({:.1} GiB)", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{n} ({:.1} MiB)", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{n} ({:.1} KiB)", n as f64 / 1024.0),
        n => format!("{n}"),
    }
}

/// Name, backend, driver, features, limits and cooperative-matrix configurations of `adapter`.
fn adapter_table(adapter: &wgpu::Adapter) -> String {
    let info = adapter.get_info();
    let (f, l) = (adapter.features(), adapter.limits());
    let mut rows = vec![
        vec!["backend".into(), format!("{:?}", info.backend)],
        vec!["device type".into(), format!("{:?}", info.device_type)],
        vec![
            "driver".into(),
            format!("{} {}", info.driver, info.driver_info)
                .trim()
                .to_string(),
        ],
        vec![
            "vendor, device".into(),
            format!("{:#x}, {:#x}", info.vendor, info.device),
        ],
    ];
    rows.extend(
        FEATURES
            .iter()
            .map(|(name, feat)| vec![(*name).into(), yes(f.contains(*feat))]),
    );
    rows.extend([
        vec![
            "subgroup sizes".into(),
            format!("{}..={}", info.subgroup_min_size, info.subgroup_max_size),
        ],
        vec![
            "max workgroup storage".into(),
            bytes(l.max_compute_workgroup_storage_size as u64),
        ],
        vec![
            "max invocations per workgroup".into(),
            l.max_compute_invocations_per_workgroup.to_string(),
        ],
        vec![
            "max workgroups per dimension".into(),
            l.max_compute_workgroups_per_dimension.to_string(),
        ],
        vec![
            "max storage buffers per stage".into(),
            l.max_storage_buffers_per_shader_stage.to_string(),
        ],
        vec![
            "max storage binding".into(),
            bytes(l.max_storage_buffer_binding_size),
        ],
        vec!["max buffer size".into(), bytes(l.max_buffer_size)],
    ]);
    let coop = adapter.cooperative_matrix_properties();
    let coop = if coop.is_empty() {
        "none".to_string()
    } else {
        coop.iter()
            .map(|c| {
                format!(
                    "{}x{}x{} {:?}->{:?}{}",
                    c.m_size,
                    c.n_size,
                    c.k_size,
                    c.ab_type,
                    c.cr_type,
                    if c.saturating_accumulation {
                        " (saturating)"
                    } else {
                        ""
                    }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    rows.push(vec!["cooperative matrices".into(), coop]);
    Table::render(&[("property", Align::Left), ("value", Align::Left)], &rows)
}

/// The reasons collected under a table, each numbered once with the cells it explains.
#[derive(Default)]
struct Reasons(Vec<(String, Vec<String>)>);

impl Reasons {
    /// `no (n)`, `n` the number of reason `why`, which explains the cell `cell`.
    fn cite(&mut self, cell: String, why: String) -> String {
        let n = match self.0.iter().position(|(w, _)| *w == why) {
            Some(i) => {
                self.0[i].1.push(cell);
                i + 1
            }
            None => {
                self.0.push((why, vec![cell]));
                self.0.len()
            }
        };
        format!("no ({n})")
    }

    fn render(&self) -> String {
        if self.0.is_empty() {
            return String::new();
        }
        let lines: Vec<String> = self
            .0
            .iter()
            .enumerate()
            .map(|(i, (why, cells))| format!("{}. {}: {why}", i + 1, cells.join(", ")))
            .collect();
        format!(
            "\n\nwhy not (the library's errors):\n\n{}",
            lines.join("\n")
        )
    }
}

/// Per dtype and head dim: the variant `forward_variant` chooses, and which paths can be forced.
fn forward_variants(attn: &Attention) -> String {
    let forced = crate::check::FORWARD_PATHS;
    let mut reasons = Reasons::default();
    let mut rows = Vec::new();
    for dtype in [Dtype::F32, Dtype::F16] {
        for d in HEAD_DIMS {
            let mut row = vec![dtype_name(dtype).to_string(), d.to_string()];
            match attn.forward_variant(dtype, d, KernelPath::Auto) {
                Ok(v) => {
                    let t = v.tiles;
                    row.push(path_name(v.path).to_string());
                    row.push(format!(
                        "{}x{}, {}x{}, {}",
                        t.block_m, t.block_n, t.head_chunks, t.head_block, t.workgroup_size
                    ));
                    row.push(format!("{:.1} KiB", v.workgroup_bytes() as f64 / 1024.0));
                }
                Err(e) => {
                    row.push(reasons.cite(format!("{} D{d}", dtype_name(dtype)), e.to_string()));
                    row.extend(["-".to_string(), "-".to_string()]);
                }
            }
            for p in forced {
                row.push(match attn.forward_variant(dtype, d, p) {
                    Ok(_) => "yes".into(),
                    Err(e) => reasons.cite(
                        format!("{} {} D{d}", path_name(p), dtype_name(dtype)),
                        e.to_string(),
                    ),
                });
            }
            rows.push(row);
        }
    }
    let cols = [
        ("dtype", Align::Left),
        ("D", Align::Right),
        ("auto ->", Align::Left),
        ("rows x keys, chunks x width, invocations", Align::Left),
        ("workgroup memory", Align::Right),
        ("subgroup", Align::Left),
        ("shared", Align::Left),
        ("coop", Align::Left),
        ("coop-emu", Align::Left),
    ];
    format!(
        "forward kernels (Attention::forward_variant; forcing each path):\n\n{}{}",
        Table::render(&cols, &rows),
        reasons.render()
    )
}

/// The decode plan of a typical step per dtype and path.
fn decode_variants(attn: &Attention) -> String {
    let (b, h, hkv, d, len) = DECODE;
    let mut reasons = Reasons::default();
    let mut rows = Vec::new();
    for dtype in [Dtype::F32, Dtype::F16] {
        for path in [
            KernelPath::Auto,
            KernelPath::Subgroup,
            KernelPath::SharedMemory,
        ] {
            let desc = KvCacheDesc::new(b, hkv, d, len, dtype);
            let cells = match plan_decode(attn, &desc, h, path, &DecodeTuning::default()) {
                Ok(p) => vec![
                    decode_plan_label(&p),
                    format!("{:?}", p.workgroups),
                    bytes(p.variant.workgroup_bytes() as u64),
                ],
                Err(e) => vec![
                    reasons.cite(
                        format!("{} {}", path_name(path), dtype_name(dtype)),
                        e.to_string(),
                    ),
                    "-".into(),
                    "-".into(),
                ],
            };
            let mut row = vec![dtype_name(dtype).to_string(), path_name(path).to_string()];
            row.extend(cells);
            rows.push(row);
        }
    }
    let cols = [
        ("dtype", Align::Left),
        ("path", Align::Left),
        (
            "plan (path, lanes P, vec4s M, rows R, keys U, load, splits, row blocks)",
            Align::Left,
        ),
        ("grid", Align::Left),
        ("workgroup memory", Align::Right),
    ];
    format!(
        "decode kernels (Attention::decode_plan, B{b} H{h}/{hkv} D{d}, {len} cached tokens, one new token):\n\n{}{}",
        Table::render(&cols, &rows),
        reasons.render()
    )
}

/// Where this adapter's persistent pipeline cache is (`gpu::cache_dir`), and what it holds.
fn pipeline_cache_line(attn: &Attention) -> String {
    match (crate::gpu::cache_dir(), attn.pipeline_cache_key()) {
        (_, None) => {
            "pipeline cache: none (the device has no PIPELINE_CACHE: wgpu offers it on Vulkan only)"
                .into()
        }
        (None, Some(_)) => {
            "pipeline cache: off (--no-pipeline-cache or SBATTN_NO_PIPELINE_CACHE)".into()
        }
        (Some(dir), Some(_)) => {
            let path = crate::gpu::cache_file(attn, dir).expect("a key");
            match std::fs::metadata(&path) {
                Ok(m) => format!("pipeline cache: {} ({} bytes)", path.display(), m.len()),
                Err(_) => format!("pipeline cache: {} (nothing saved yet)", path.display()),
            }
        }
    }
}
