//! Offline shader checks (no GPU): every variant the crate can build parses and validates in
//! naga, and translates to SPIR-V, MSL and WGSL, to HLSL (all but the cooperative-matrix
//! variants, which DX12 lacks in wgpu) and to GLSL where naga's GLSL backend can express it
//! (f32 without subgroups); the Rust parameter structs match naga's layout of the WGSL ones.
#![cfg(not(target_arch = "wasm32"))]

use naga::valid::{Capabilities, SubgroupOperationSet, ValidationFlags, Validator};
use sbattn::shader::{all_sources, Target};

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

fn entry(module: &naga::Module) -> (naga::ShaderStage, String) {
    let ep = &module.entry_points[0];
    (ep.stage, ep.name.clone())
}

#[test]
fn every_variant_validates_and_translates() {
    let sources = all_sources(Target::Native);
    assert!(!sources.is_empty());
    let mut glsl_ok = 0;
    for (name, src) in &sources {
        let (module, info) = validate(name, src);
        // The decode kernel has an overridable constant (keys per step): translate with its
        // default, as a pipeline would with its value.
        let (module, info) = naga::back::pipeline_constants::process_overrides(&module, &info, None, &Default::default())
            .unwrap_or_else(|e| panic!("{name}: overrides: {e}"));
        let (stage, ep) = entry(&module);

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
        let (msl, _) = naga::back::msl::write_string(&module, &info, &msl_opts, &msl_pipe)
            .unwrap_or_else(|e| panic!("{name}: MSL: {e}"));
        assert!(msl.contains("kernel"), "{name}: MSL has no kernel");

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
            Ok(_) => assert!(hlsl.contains("numthreads"), "{name}: HLSL has no compute entry"),
            Err(e) if name.contains("CooperativeMatrix") => eprintln!("{name}: no HLSL ({e})"),
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
        let must = name.contains("F32") && name.contains("SharedMemory");
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
    for ((n1, native), (n2, web)) in all_sources(Target::Native).iter().zip(all_sources(Target::Web).iter()) {
        assert_eq!(n1, n2);
        let strip = |s: &str| s.lines().filter(|l| !l.starts_with("enable ")).collect::<Vec<_>>().join("\n");
        assert_eq!(strip(native), strip(web), "{n1}");
        if n1.contains("Subgroup") {
            assert!(web.contains("enable subgroups;"), "{n1}: browsers need `enable subgroups;`");
        }
        if n1.contains("F16") {
            assert!(web.contains("enable f16;"), "{n1}");
        }
    }
}

/// The Rust `ForwardParams` must match naga's layout of the WGSL `Params` struct field by
/// field (name and byte offset), and in total size.
#[test]
fn forward_params_layout_matches_wgsl() {
    let (name, src) = all_sources(Target::Native).into_iter().find(|(n, _)| n.starts_with("forward")).unwrap();
    let (module, _) = validate(&name, &src);
    let (_, ty) = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some("Params"))
        .expect("WGSL struct Params");
    let naga::TypeInner::Struct { members, span } = &ty.inner else { panic!("Params is not a struct") };
    let wgsl: Vec<(String, usize)> =
        members.iter().map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize)).collect();
    let rust: Vec<(String, usize)> =
        sbattn::params::forward_params_fields().into_iter().map(|(n, o)| (n.to_string(), o)).collect();
    assert_eq!(wgsl, rust);
    assert_eq!(*span as usize, std::mem::size_of::<sbattn::params::ForwardParams>());
}
