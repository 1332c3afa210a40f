//! The read-bandwidth probe of `sbattn bench decode` (cli/shaders/read_probe.wgsl) parses and
//! validates in naga, as wgpu will ask of it (no GPU needed).

#[test]
fn read_probe_validates() {
    let module = naga::front::wgsl::parse_str(sbattn_cli::decode::READ_PROBE_WGSL)
        .expect("read_probe.wgsl parses");
    let mut validator = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::empty(),
    );
    let info = validator
        .validate(&module)
        .expect("read_probe.wgsl validates with no optional capability");
    let main = module
        .entry_points
        .iter()
        .position(|e| e.name == "main")
        .expect("entry point `main`");
    assert_eq!(module.entry_points[main].stage, naga::ShaderStage::Compute);
    assert_eq!(
        module.entry_points[main].workgroup_size,
        [256, 1, 1],
        "the probe's grid assumes 256 invocations"
    );
    // Two storage bindings, as the bind group of bench decode has.
    let bound = module
        .global_variables
        .iter()
        .filter(|(_, v)| v.binding.is_some())
        .count();
    assert_eq!(bound, 2);
    let _ = info;
}
