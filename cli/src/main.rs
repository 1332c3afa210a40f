//! `sbattn`: stick-breaking attention on this machine's GPUs: `info`, `check`, `bench forward`,
//! `bench decode`, `plot`, `heatmap`. The command line is defined in `args.rs` (clap derive);
//! cli/README.md shows each command's output.
use clap::Parser;

fn main() -> std::process::ExitCode {
    sbattn_cli::run(sbattn_cli::args::Cli::parse())
}
