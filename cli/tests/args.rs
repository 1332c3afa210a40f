//! The command line (no GPU): subcommands, lists, shapes, profiles and their defaults.

use clap::Parser;
use sbattn::{Dtype, KernelPath, ShaderChecks};
use sbattn_cli::args::{
    Auto, BenchCommand, Cli, Command, DtypeArg, Inputs, PathArg, Profile, VecLoad, expand_paths,
    parse_decode_shape, parse_forward_shape, parse_vec,
};

fn parse(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("sbattn").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn forward(args: &[&str]) -> sbattn_cli::args::ForwardArgs {
    let mut all = vec!["bench", "forward"];
    all.extend_from_slice(args);
    match parse(&all).command {
        Command::Bench(BenchCommand::Forward(a)) => a,
        c => panic!("not bench forward: {c:?}"),
    }
}

fn decode(args: &[&str]) -> sbattn_cli::args::DecodeArgs {
    let mut all = vec!["bench", "decode"];
    all.extend_from_slice(args);
    match parse(&all).command {
        Command::Bench(BenchCommand::Decode(a)) => a,
        c => panic!("not bench decode: {c:?}"),
    }
}

#[test]
fn subcommands() {
    assert!(matches!(parse(&["info"]).command, Command::Info));
    match parse(&["check", "--quick"]).command {
        Command::Check(c) => assert!(c.quick),
        c => panic!("{c:?}"),
    }
    match parse(&["check"]).command {
        Command::Check(c) => assert!(!c.quick && c.seed == 1),
        c => panic!("{c:?}"),
    }
    assert!(
        Cli::try_parse_from(["sbattn", "bench"]).is_err(),
        "bench needs forward or decode"
    );
    assert!(Cli::try_parse_from(["sbattn", "frobnicate"]).is_err());
}

#[test]
fn backward_and_prefill() {
    use sbattn_cli::args::{BenchCommand, Profile};
    match parse(&["bench", "backward"]).command {
        Command::Bench(BenchCommand::Backward(a)) => {
            let names: Vec<String> = a.shapes().iter().map(sbattn_cli::report::shape_name).collect();
            assert_eq!(names, ["4x12x4096x128", "1x32x4096x64"]);
            assert_eq!(a.bench.profile, Profile::Default);
        }
        c => panic!("{c:?}"),
    }
    match parse(&["bench", "backward", "--profile", "ci", "--paths", "shared"]).command {
        Command::Bench(BenchCommand::Backward(a)) => {
            assert_eq!(a.shapes().len(), 1);
            assert_eq!(a.paths.len(), 1);
        }
        c => panic!("{c:?}"),
    }
    match parse(&["bench", "prefill", "--len", "1024", "--chunks", "128,256", "--varlen", "5,7"]).command {
        Command::Bench(BenchCommand::Prefill(a)) => {
            assert_eq!((a.len, a.sequences, a.heads, a.kv_heads, a.head_dim), (1024, 1, 32, 8, 128));
            assert_eq!(a.chunks, [128, 256]);
            assert_eq!(a.page_sizes, [16, 128]);
            assert_eq!(a.varlen, [5, 7]);
        }
        c => panic!("{c:?}"),
    }
    assert_eq!(decode(&["--page-size", "64"]).page_size, Some(64));
    assert_eq!(decode(&[]).page_size, None);
    assert!(Cli::try_parse_from(["sbattn", "bench", "prefill", "--sequences", "0"]).is_err());
}

#[test]
fn forward_defaults_follow_the_profile() {
    let a = forward(&[]);
    assert_eq!(a.bench.profile, Profile::Default);
    assert_eq!(a.shapes().len(), 6);
    let s = a.bench.sampling();
    assert_eq!((s.iters, s.warmup, s.batch), (10, 3, 0));
    assert_eq!(a.dtypes, vec![DtypeArg::F16, DtypeArg::F32]);
    assert_eq!(a.paths, vec![PathArg::All]);
    assert_eq!(a.eps, vec![0.0]);
    assert_eq!(a.inputs, vec![Inputs::Random]);
    assert_eq!(a.coop_block_n, vec![Auto::Auto]);
    assert_eq!(
        a.bench.checks(),
        vec![ShaderChecks::Trusted],
        "`default` is the library's default"
    );
    assert_eq!((a.sets, a.check_t), (2, 200));

    let ci = forward(&["--profile", "ci"]);
    let s = ci.bench.sampling();
    assert_eq!((s.iters, s.warmup, s.batch), (3, 1, 2));
    assert!(
        ci.shapes()
            .iter()
            .all(|s| s.batch() == 1 && s.heads() == 2 && s.head_dim() == 64)
    );
    // Given values win over the profile's.
    let s = forward(&["--profile", "ci", "--iters", "7", "--batch", "0"])
        .bench
        .sampling();
    assert_eq!((s.iters, s.warmup, s.batch), (7, 1, 0));
}

#[test]
fn forward_lists() {
    let a = forward(&[
        "--shapes",
        "4x12x4096x128,8x32/8x4096x128",
        "--paths",
        "subgroup,auto,all",
        "--dtypes",
        "f32",
        "--eps",
        "0,1e-3",
        "--inputs",
        "random,long-range",
        "--coop-block-n",
        "auto,32,64",
        "--checks",
        "default,full,unchecked",
        "--json",
        "/tmp/a.json",
        "--plot",
        "/tmp/a.png",
        "--baselines",
        "/tmp/b.json",
    ]);
    let shapes = a.shapes();
    assert_eq!(shapes.len(), 2);
    assert_eq!(
        (shapes[1].heads(), shapes[1].kv_heads(), shapes[1].group()),
        (32, 8, 4)
    );
    assert_eq!(
        expand_paths(&a.paths, true),
        vec![
            KernelPath::Subgroup,
            KernelPath::Auto,
            KernelPath::SharedMemory,
            KernelPath::CooperativeMatrix
        ]
    );
    assert_eq!(
        a.dtypes.iter().map(|d| d.dtype()).collect::<Vec<_>>(),
        vec![Dtype::F32]
    );
    assert_eq!(a.eps, vec![0.0, 1e-3]);
    assert_eq!(a.inputs, vec![Inputs::Random, Inputs::LongRange]);
    assert_eq!(
        a.coop_block_n,
        vec![Auto::Auto, Auto::Fixed(32), Auto::Fixed(64)]
    );
    assert_eq!(
        a.bench.checks(),
        vec![ShaderChecks::Trusted, ShaderChecks::Full, ShaderChecks::Off]
    );
    assert!(a.bench.json.is_some() && a.bench.plot.is_some() && a.bench.baselines.is_some());
}

#[test]
fn forward_rejects() {
    let bad: &[&[&str]] = &[
        &["--shapes", "4x12x4096"],
        &["--shapes", "4x12x0x128"],
        &["--shapes", "4x12x64x300"],
        &["--shapes", "1x12/5x64x64"],
        &["--eps", "1.5"],
        &["--eps", "-0.1"],
        &["--paths", "tensor"],
        &["--dtypes", "bf16"],
        &["--iters", "0"],
        &["--sets", "1"],
        &["--coop-block-n", "many"],
        &["--baselines", "b.json"], // needs --plot
        &["--profile", "huge"],
        &["--timer", "sundial"],
    ];
    for args in bad {
        let mut all = vec!["sbattn", "bench", "forward"];
        all.extend_from_slice(args);
        assert!(Cli::try_parse_from(&all).is_err(), "{args:?} was accepted");
    }
}

#[test]
fn decode_sweeps() {
    let a = decode(&[]);
    assert_eq!(
        a.shapes().len(),
        9,
        "default: B 1,8,32 x L 4096,32768,131072"
    );
    assert_eq!((a.heads, a.kv_heads, a.head_dim), (32, 8, 128));
    assert_eq!(a.probe_bytes(), 1 << 30);
    let q = decode(&["--profile", "quick"]);
    assert_eq!(q.shapes(), vec![(1, 64), (1, 500), (2, 64), (2, 500)]);
    assert_eq!(q.probe_bytes(), 16 << 20);
    let l = decode(&[
        "--batch-sizes",
        "4",
        "--lengths",
        "100,200",
        "--probe-mb",
        "0",
    ]);
    assert_eq!(l.shapes(), vec![(4, 100), (4, 200)]);
    assert_eq!(l.probe_bytes(), 0);
    let s = decode(&[
        "--shapes",
        "1x32768,8x4096",
        "--lanes",
        "auto,8,16",
        "--vec",
        "auto,scalar,8,16",
        "--keys",
        "1,2",
        "--splits",
        "auto,32",
        "--paths",
        "all",
        "--dtypes",
        "f16,f32",
        "--checks",
        "bounds,off",
    ]);
    assert_eq!(s.shapes(), vec![(1, 32768), (8, 4096)]);
    assert_eq!(s.lanes, vec![Auto::Auto, Auto::Fixed(8), Auto::Fixed(16)]);
    assert_eq!(
        s.vec,
        vec![
            Auto::Auto,
            Auto::Fixed(VecLoad::Scalar),
            Auto::Fixed(VecLoad::Bytes(8)),
            Auto::Fixed(VecLoad::Bytes(16))
        ]
    );
    assert_eq!(s.keys, vec![Auto::Fixed(1), Auto::Fixed(2)]);
    assert_eq!(s.splits, vec![Auto::Auto, Auto::Fixed(32)]);
    assert_eq!(
        expand_paths(&s.paths, false),
        vec![KernelPath::Subgroup, KernelPath::SharedMemory],
        "decode has no coop"
    );
    assert_eq!(
        s.bench.checks(),
        vec![ShaderChecks::Bounds, ShaderChecks::Off]
    );
    for bad in [
        &["--shapes", "8"][..],
        &["--shapes", "0x10"],
        &["--vec", "12"],
        &["--lengths", "0"],
        &["--lanes", "x"],
    ] {
        let mut all = vec!["sbattn", "bench", "decode"];
        all.extend_from_slice(bad);
        assert!(Cli::try_parse_from(&all).is_err(), "{bad:?} was accepted");
    }
}

#[test]
fn value_parsers() {
    let s = parse_forward_shape("2x8/2x100x50").expect("valid");
    assert_eq!(
        (
            s.batch(),
            s.heads(),
            s.kv_heads(),
            s.seq_len(),
            s.head_dim()
        ),
        (2, 8, 2, 100, 50)
    );
    assert!(parse_forward_shape("2x8x100").is_err());
    assert_eq!(parse_decode_shape("8x131072"), Ok((8, 131072)));
    assert!(parse_decode_shape("8x").is_err());
    assert_eq!(parse_vec("16B"), Ok(Auto::Fixed(VecLoad::Bytes(16))));
    assert_eq!(parse_vec("auto"), Ok(Auto::Auto));
    assert!(parse_vec("4").is_err());
    assert_eq!(Auto::Fixed(32).to_string(), "32");
    assert_eq!(Auto::<u32>::Auto.to_string(), "auto");
    assert_eq!(Profile::Ci.forward_shapes().len(), 2);
}

#[test]
fn a_later_option_wins() {
    // scripts/device-bench.sh appends EXTRA options to its own: they must replace, not add.
    let a = forward(&[
        "--shapes",
        "4x12x4096x128,4x12x8192x128",
        "--iters",
        "10",
        "--shapes",
        "1x2x128x64",
        "--iters",
        "3",
    ]);
    assert_eq!(a.shapes().len(), 1);
    assert_eq!(a.shapes()[0].seq_len(), 128);
    assert_eq!(a.bench.sampling().iters, 3);
    let a = forward(&["--dtypes", "f16", "--dtypes", "f32"]);
    assert_eq!(a.dtypes, vec![DtypeArg::F32]);
    let d = decode(&["--lengths", "1,2", "--lengths", "3"]);
    assert_eq!(d.lengths, vec![3]);
}
