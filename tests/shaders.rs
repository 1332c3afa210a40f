//! Offline shader checks (no GPU): every variant the crate can build (`sbattn::ops::all_sources`)
//! parses and validates in naga, and translates to SPIR-V and WGSL; to MSL and HLSL (all but
//! the cooperative-matrix variants: wgpu's DX12 has no cooperative matrices, and its Metal
//! backend only 8x8 ones, so a 16x16 kernel has no Metal or DX12 form to check); and to GLSL
//! where naga's GLSL backend can express it (f32 without subgroups). The Rust parameter structs
//! match naga's layout of the WGSL ones.
#![cfg(not(target_arch = "wasm32"))]

use naga::valid::{Capabilities, SubgroupOperationSet, ValidationFlags, Validator};
use sbattn::ops::{all_sources, param_layouts};
use sbattn::Target;

fn validate(name: &str, src: &str) -> (naga::Module, naga::valid::ModuleInfo) {
    let module = naga::front::wgsl::parse_str(src).unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
    let caps = Capabilities::SUBGROUP
        | Capabilities::SHADER_FLOAT16
        | Capabilities::SHADER_FLOAT16_IN_FLOAT32
        | Capabilities::COOPERATIVE_MATRIX;
    let info = Validator::new(ValidationFlags::all(), caps)
        .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
        .subgroup_operations(SubgroupOperationSet::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
    (module, info)
}

fn entry(module: &naga::Module, name: &str) -> (naga::ShaderStage, String) {
    let ep = module.entry_points.iter().find(|e| e.name == name).unwrap_or_else(|| panic!("no entry point {name}"));
    (ep.stage, ep.name.clone())
}

#[test]
fn every_variant_validates_and_translates() {
    let sources = all_sources(Target::Native);
    assert!(!sources.is_empty());
    let mut glsl_ok = 0;
    for k in &sources {
        let (name, src) = (&k.name, &k.wgsl);
        let (module, info) = validate(name, src);
        // Override constants (the decode kernel's keys per step) take the values the pipeline
        // would set.
        let constants = k.overrides.iter().cloned().collect();
        let (module, info) = naga::back::pipeline_constants::process_overrides(&module, &info, None, &constants)
            .unwrap_or_else(|e| panic!("{name}: overrides: {e}"));
        let (stage, ep) = entry(&module, &k.entry);
        let coop = name.starts_with("forward/coop ");

        let spv_opts = naga::back::spv::Options { lang_version: (1, 3), ..Default::default() };
        let spv = naga::back::spv::write_vec(
            &module,
            &info,
            &spv_opts,
            Some(&naga::back::spv::PipelineOptions { shader_stage: stage, entry_point: ep.clone() }),
        )
        .unwrap_or_else(|e| panic!("{name}: SPIR-V: {e}"));
        assert!(spv.len() > 100, "{name}: SPIR-V too short");

        let msl_opts = naga::back::msl::Options {
            lang_version: (2, 4),
            fake_missing_bindings: true,
            ..Default::default()
        };
        let msl_pipe = naga::back::msl::PipelineOptions { entry_point: Some((stage, ep.clone())), ..Default::default() };
        // naga writes 16x16 cooperative matrices into MSL as text Metal has no type for
        // (simdgroup matrices are 8x8): that output proves nothing, so it is not checked.
        if !coop {
            let (msl, _) = naga::back::msl::write_string(&module, &info, &msl_opts, &msl_pipe)
                .unwrap_or_else(|e| panic!("{name}: MSL: {e}"));
            assert!(msl.contains("kernel"), "{name}: MSL has no kernel");
        }

        let hlsl_opts = naga::back::hlsl::Options {
            shader_model: naga::back::hlsl::ShaderModel::V6_2,
            fake_missing_bindings: true,
            ..Default::default()
        };
        let hlsl_pipe = naga::back::hlsl::PipelineOptions { entry_point: Some((stage, ep.clone())) };
        let mut hlsl = String::new();
        let res = naga::back::hlsl::Writer::new(&mut hlsl, &hlsl_opts, &hlsl_pipe).write(&module, &info, None);
        // naga's HLSL backend (and wgpu's DX12) has no cooperative matrices: that variant is
        // Vulkan and Metal only; every other variant must translate.
        match res {
            Ok(_) => assert!(!coop && hlsl.contains("numthreads"), "{name}: HLSL has no compute entry"),
            Err(e) if coop => eprintln!("{name}: no HLSL ({e})"),
            Err(e) => panic!("{name}: HLSL: {e}"),
        }

        let wgsl = naga::back::wgsl::write_string(&module, &info, naga::back::wgsl::WriterFlags::empty())
            .unwrap_or_else(|e| panic!("{name}: WGSL: {e}"));
        // The WGSL naga writes must itself validate (round trip).
        validate(&format!("{name} (round trip)"), &wgsl);

        // GLSL: naga's GLSL backend has no f16 and no subgroup shuffles; the shared-memory f32
        // variants must translate, the others are reported.
        let glsl_opts = naga::back::glsl::Options {
            version: naga::back::glsl::Version::Desktop(450),
            ..Default::default()
        };
        let glsl_pipe = naga::back::glsl::PipelineOptions { shader_stage: stage, entry_point: ep.clone(), multiview: None };
        let mut glsl = String::new();
        let res = naga::back::glsl::Writer::new(&mut glsl, &module, &info, &glsl_opts, &glsl_pipe, Default::default())
            .and_then(|mut w| w.write());
        let must = name.contains("F32") && !name.contains("subgroup") && !coop;
        match res {
            Ok(_) => glsl_ok += 1,
            Err(e) if must => panic!("{name}: GLSL: {e}"),
            Err(e) => eprintln!("{name}: no GLSL ({e})"),
        }
    }
    eprintln!("{} variants validated; {glsl_ok} also translated to GLSL", sources.len());
}

#[test]
fn web_sources_differ_only_by_enables() {
    for (n, w) in all_sources(Target::Native).iter().zip(all_sources(Target::Web).iter()) {
        assert_eq!(n.name, w.name);
        let strip = |s: &str| s.lines().filter(|l| !l.starts_with("enable ")).collect::<Vec<_>>().join("\n");
        assert_eq!(strip(&n.wgsl), strip(&w.wgsl), "{}", n.name);
        if n.wgsl.contains("subgroupShuffle") {
            assert!(w.wgsl.contains("enable subgroups;"), "{}: browsers need `enable subgroups;`", n.name);
        }
        if n.name.contains("F16") {
            assert!(w.wgsl.contains("enable f16;"), "{}", n.name);
        }
    }
}

/// Every Rust parameter struct matches naga's layout of its kernel's WGSL `Params` field by
/// field (name and byte offset) and in total size; the Rust `Addr` and `Pages` match the WGSL ones.
#[test]
fn params_layouts_match_wgsl() {
    let layouts = param_layouts(Target::Native);
    assert!(layouts.len() >= 4);
    for (kernel, src, size, fields) in layouts {
        let (module, _) = validate(&kernel, &src);
        let members = |name: &str| -> (Vec<(String, usize)>, usize) {
            let (_, ty) = module.types.iter().find(|(_, t)| t.name.as_deref() == Some(name)).unwrap_or_else(|| panic!("{kernel}: no {name}"));
            let naga::TypeInner::Struct { members, span } = &ty.inner else { panic!("{kernel}: {name} is not a struct") };
            (members.iter().map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize)).collect(), *span as usize)
        };
        let (wgsl, span) = members("Params");
        let rust: Vec<(String, usize)> = fields.iter().map(|(n, o)| (n.to_string(), *o)).collect();
        assert_eq!(wgsl, rust, "{kernel}");
        assert_eq!(span, size, "{kernel}");
        let (addr, addr_span) = members("Addr");
        let want: Vec<(String, usize)> = sbattn::ops::addr_fields().iter().enumerate().map(|(i, n)| (n.to_string(), 4 * i)).collect();
        assert_eq!((addr, addr_span), (want, 16), "{kernel}: Addr");
        if src.contains("struct Pages") {
            let want: Vec<(String, usize)> = sbattn::ops::pages_fields().iter().enumerate().map(|(i, n)| (n.to_string(), 4 * i)).collect();
            assert_eq!(members("Pages"), (want, 16), "{kernel}: Pages");
        }
    }
}
