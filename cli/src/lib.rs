//! The `sbattn` command-line tool: `info`, `check`, `bench forward`, `bench decode`, `plot`,
//! `heatmap` (cli/README.md). A library as well as a binary so that its tests (`cli/tests/`) reach the
//! argument parser, the statistics, the tables and the plot without a GPU; `main.rs` only parses
//! and dispatches.
//!
//! | module | what |
//! |---|---|
//! | [`args`] | the command line (clap derive) and the profiles' defaults |
//! | [`info`] | `sbattn info`: adapters, features, limits, the variants the library chooses |
//! | [`check`] | `sbattn check`: the conformance sweep, and the one tolerance model every check uses |
//! | [`forward`] | `sbattn bench forward` |
//! | [`decode`] | `sbattn bench decode` (`--page-size`: on a paged cache) |
//! | [`training`] | `sbattn bench backward` |
//! | [`prefill`] | `sbattn bench prefill`: one call, chunks on contiguous and paged caches, varlen vs padded |
//! | [`timer`] | the one timer of both benchmarks (GPU timestamps or submit-to-completion) |
//! | [`stats`] | the one summary of samples (median, min, spread) |
//! | [`report`] | markdown tables, JSON files, the progress bar, number formats |
//! | [`plot`] | PNG plots and the baselines they draw |
//! | [`replot`] | `sbattn plot`: a PNG from saved JSON |
//! | [`heatmap`] | `sbattn heatmap`: the weights of one head from the GPU, next to softmax |
//! | [`gpu`] | device helpers shared by the commands (contexts and their pipeline cache, readback, error capture) |

pub mod args;
pub mod check;
pub mod decode;
pub mod forward;
pub mod gpu;
pub mod heatmap;
pub mod info;
pub mod plot;
pub mod prefill;
pub mod replot;
pub mod report;
pub mod stats;
pub mod timer;
pub mod training;

use std::process::ExitCode;

use args::{BenchCommand, Cli, Command};

/// Runs a parsed command line; the exit status says whether it succeeded (`check` and the
/// benchmarks fail when a correctness check fails).
pub fn run(cli: Cli) -> ExitCode {
    gpu::set_cache_dir(gpu::resolve_cache_dir(
        cli.no_pipeline_cache,
        cli.pipeline_cache_dir.as_deref(),
        |k| std::env::var(k).ok(),
    ));
    let result = match cli.command {
        Command::Info => info::run(),
        Command::Check(a) => check::run(&a),
        Command::Bench(BenchCommand::Forward(a)) => forward::run(&a),
        Command::Bench(BenchCommand::Decode(a)) => decode::run(&a),
        Command::Bench(BenchCommand::Backward(a)) => training::run(&a),
        Command::Bench(BenchCommand::Prefill(a)) => prefill::run(&a),
        Command::Plot(a) => replot::run(&a),
        Command::Heatmap(a) => heatmap::run(&a),
    };
    match result {
        Ok(Outcome::Passed) => ExitCode::SUCCESS,
        Ok(Outcome::Failed(why)) => {
            eprintln!("sbattn: {why}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("sbattn: error: {e}");
            ExitCode::from(2)
        }
    }
}

/// How a command that ran to the end went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Everything it checked passed.
    Passed,
    /// It ran, and something it checked failed (said here).
    Failed(String),
}

impl Outcome {
    /// The outcome of a benchmark sweep in which `failed` configurations failed their
    /// correctness check.
    pub fn of_checks(failed: usize) -> Outcome {
        if failed == 0 {
            Outcome::Passed
        } else {
            Outcome::Failed(format!("{failed} configuration(s) failed their correctness check"))
        }
    }
}

/// Errors of the tool: a message for the user.
pub type Result<T> = std::result::Result<T, String>;
