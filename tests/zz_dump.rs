#[test]
fn dump() {
    for (name, src) in sbattn::shader::all_sources(sbattn::shader::Target::Native) {
        if !name.contains("CooperativeMatrix") || !name.contains("head_chunks: 8") { continue; }
        let module = naga::front::wgsl::parse_str(&src).unwrap();
        let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all()).validate(&module).unwrap();
        let opts = naga::back::spv::Options { lang_version: (1, 3), ..Default::default() };
        let words = naga::back::spv::write_vec(&module, &info, &opts, None).unwrap();
        std::fs::write("/tmp/dump/coop.spv", bytemuck::cast_slice(&words)).unwrap();
        std::fs::write("/tmp/dump/coop.wgsl", &src).unwrap();
    }
}
