//! The one timer of both benchmarks.
//!
//! A *sample* is `batch` calls recorded back to back into one encoder (the caller's `record`
//! closure records call number `i`, so that calls rotate through input sets or cache copies;
//! calls that write the same output are ordered by wgpu's barriers, one after the other, as
//! in a model). Its time, divided by `batch`, is one per-call sample:
//!
//! - **timestamp** (where the device has `TIMESTAMP_QUERY` and
//!   `TIMESTAMP_QUERY_INSIDE_ENCODERS`): `write_timestamp` before and after the calls of each
//!   sample; every sample's encoder is recorded first, then all are submitted back to back (the
//!   GPU never waits for the host), and the queries are resolved and read once.
//!   `(end - start) * timestamp_period / batch`.
//! - **wall** (elsewhere, or `--timer wall`): each sample submitted alone between two
//!   `device.poll(wait)`s, timed on the host: submit to completion, an upper bound.
//!
//! Before the samples, `warmup` calls (at least one) are recorded, submitted and waited for:
//! their recording compiles the pipelines (outside every clock), and their wall time estimates
//! one call, which sizes `batch` (when 0: enough calls for `sample_ms`, at most 100) and cuts the
//! sample count (not under 3) when `iters` samples would pass `time_limit_s`.

use std::time::Instant;

use sbattn::{Attention, Readback};

use crate::Result;
use crate::args::TimerChoice;
use crate::gpu::wait;

/// Most timestamp queries one query set holds (wgpu's `QUERY_SET_MAX_QUERIES`).
const MAX_QUERIES: u32 = 4096;
/// Most calls per sample when sized automatically.
const MAX_AUTO_BATCH: u32 = 100;

/// How many samples of how many calls.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// Timed samples (fewer when `time_limit_s` would be passed, never under 3).
    pub iters: u32,
    /// Untimed calls first.
    pub warmup: u32,
    /// Calls per sample; 0: enough for `sample_ms`.
    pub batch: u32,
    /// Target milliseconds of one sample when `batch` is 0.
    pub sample_ms: f64,
    /// Seconds of timing per configuration.
    pub time_limit_s: f64,
}

impl Sampling {
    /// `(batch, iters)` for calls estimated at `call_s` seconds each.
    pub fn plan(&self, call_s: f64) -> (u32, u32) {
        let call_s = call_s.max(1e-9);
        let batch = if self.batch > 0 {
            self.batch
        } else {
            ((self.sample_ms * 1e-3 / call_s).ceil() as u32).clamp(1, MAX_AUTO_BATCH)
        };
        let per_sample = call_s * batch as f64;
        let iters = if per_sample * self.iters as f64 > self.time_limit_s {
            ((self.time_limit_s / per_sample) as u32).clamp(3.min(self.iters), self.iters)
        } else {
            self.iters
        };
        (batch, iters.min(MAX_QUERIES / 2))
    }
}

/// The per-call samples of one configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    /// `timestamp` or `wall`.
    pub timer: &'static str,
    /// Calls per sample.
    pub batch: u32,
    /// Seconds per call, one per sample.
    pub samples: Vec<f64>,
}

/// Records call number `i` (of this configuration) into the encoder.
pub type Record<'a> = dyn FnMut(&mut wgpu::CommandEncoder, usize) -> Result<()> + 'a;

/// GPU timestamps or submit-to-completion wall time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Timer {
    /// GPU timestamps, `period_ns` nanoseconds per tick.
    Timestamp {
        /// Nanoseconds per tick (`Queue::get_timestamp_period`).
        period_ns: f64,
    },
    /// Wall time on the host, submit to completion.
    Wall,
}

impl Timer {
    /// The timer `choice` asks for on `attn`'s device.
    ///
    /// # Errors
    /// `--timer timestamp` on a device without timestamps inside encoders.
    pub fn new(attn: &Attention, choice: TimerChoice) -> Result<Timer> {
        use wgpu::Features as F;
        let has = attn
            .device()
            .features()
            .contains(F::TIMESTAMP_QUERY | F::TIMESTAMP_QUERY_INSIDE_ENCODERS);
        let stamps = Timer::Timestamp {
            period_ns: attn.queue().get_timestamp_period() as f64,
        };
        match choice {
            TimerChoice::Auto if has => Ok(stamps),
            TimerChoice::Auto | TimerChoice::Wall => Ok(Timer::Wall),
            TimerChoice::Timestamp if has => Ok(stamps),
            TimerChoice::Timestamp => {
                Err("--timer timestamp: the device lacks TIMESTAMP_QUERY and TIMESTAMP_QUERY_INSIDE_ENCODERS".into())
            }
        }
    }

    /// `timestamp` or `wall`.
    pub fn name(&self) -> &'static str {
        match self {
            Timer::Timestamp { .. } => "timestamp",
            Timer::Wall => "wall",
        }
    }

    /// One line for the output's header.
    pub fn describe(&self) -> String {
        match self {
            Timer::Timestamp { period_ns } => format!("GPU timestamps ({period_ns} ns per tick)"),
            Timer::Wall => "submit-to-completion wall time (no GPU timestamps)".into(),
        }
    }

    /// Warms up, then times the samples of one configuration.
    ///
    /// # Errors
    /// What `record` returns, device errors while waiting or reading the timestamps, and
    /// timestamps that do not increase.
    pub fn measure(
        &self,
        attn: &Attention,
        s: &Sampling,
        record: &mut Record<'_>,
    ) -> Result<Timing> {
        let warm = s.warmup.max(1);
        let est = wall_once(attn, encode(attn, 0, warm, None, record)?)? / warm as f64;
        let (batch, iters) = s.plan(est);
        let first = |i: u32| (warm + i * batch) as usize;
        let samples = match *self {
            Timer::Timestamp { period_ns } => {
                let dev = attn.device();
                let qs = dev.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("sbattn-cli timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2 * iters,
                });
                let cmds: Vec<wgpu::CommandBuffer> = (0..iters)
                    .map(|i| encode(attn, first(i), batch, Some((&qs, i)), record))
                    .collect::<Result<_>>()?;
                wait(attn)?;
                attn.queue().submit(cmds);
                let bytes = 16 * iters as u64;
                let resolve = dev.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("sbattn-cli timestamps resolve"),
                    size: bytes,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                });
                let mut enc = dev.create_command_encoder(&Default::default());
                enc.resolve_query_set(&qs, 0..2 * iters, &resolve, 0);
                let rb = Readback::record(dev, &mut enc, &resolve, bytes);
                attn.queue().submit([enc.finish()]);
                let raw = rb.read_blocking(dev).map_err(|e| e.to_string())?;
                let ticks: Vec<u64> = raw
                    .chunks_exact(8)
                    .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .collect();
                ticks_to_seconds(&ticks, period_ns, batch)?
            }
            Timer::Wall => (0..iters)
                .map(|i| {
                    Ok(
                        wall_once(attn, encode(attn, first(i), batch, None, record)?)?
                            / batch as f64,
                    )
                })
                .collect::<Result<_>>()?,
        };
        Ok(Timing {
            timer: self.name(),
            batch,
            samples,
        })
    }
}

/// Seconds per call of each `(start, end)` pair of timestamps.
///
/// # Errors
/// A pair that does not increase, or a period that is not positive.
pub fn ticks_to_seconds(ticks: &[u64], period_ns: f64, batch: u32) -> Result<Vec<f64>> {
    ticks
        .chunks_exact(2)
        .map(|p| {
            if p[1] <= p[0] || period_ns <= 0.0 {
                Err(format!(
                    "timestamps do not increase ({} then {}, period {period_ns} ns)",
                    p[0], p[1]
                ))
            } else {
                Ok((p[1] - p[0]) as f64 * period_ns * 1e-9 / batch as f64)
            }
        })
        .collect()
}

/// Records calls `first..first + calls` into one encoder, between timestamps `2i` and `2i + 1`
/// of `stamps` when given.
fn encode(
    attn: &Attention,
    first: usize,
    calls: u32,
    stamps: Option<(&wgpu::QuerySet, u32)>,
    record: &mut Record<'_>,
) -> Result<wgpu::CommandBuffer> {
    let mut enc = attn.device().create_command_encoder(&Default::default());
    if let Some((qs, i)) = stamps {
        enc.write_timestamp(qs, 2 * i);
    }
    for n in 0..calls as usize {
        record(&mut enc, first + n)?;
    }
    if let Some((qs, i)) = stamps {
        enc.write_timestamp(qs, 2 * i + 1);
    }
    Ok(enc.finish())
}

/// Submit-to-completion of one command buffer, in seconds.
fn wall_once(attn: &Attention, cmd: wgpu::CommandBuffer) -> Result<f64> {
    wait(attn)?;
    let t0 = Instant::now();
    attn.queue().submit([cmd]);
    wait(attn)?;
    Ok(t0.elapsed().as_secs_f64())
}
