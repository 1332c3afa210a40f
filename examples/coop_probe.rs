//! Diagnostic: checks the cooperative-matrix building blocks the tensor-core kernel uses, one
//! small dispatch each, against the CPU. `cargo run --release --example coop_probe`; needs an
//! adapter with EXPERIMENTAL_COOPERATIVE_MATRIX (prints what it finds otherwise).

use sbattn::Attention;
use wgpu::util::DeviceExt;

const SHADER: &str = r#"
enable f16;
enable wgpu_cooperative_matrix;
alias MA = coop_mat16x16<f16, A>;
alias MB = coop_mat16x16<f16, B>;
alias MC = coop_mat16x16<f32, C>;
@group(0) @binding(0) var<storage, read> a: array<f16>;      // 16 x 24 (row stride 24)
@group(0) @binding(1) var<storage, read> b: array<f16>;      // 16 x 24
@group(0) @binding(2) var<storage, read> zeros: array<f32>;  // 256 zeros
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
var<workgroup> wa: array<f16, 384>;
var<workgroup> wb: array<f16, 384>;
var<workgroup> wc: array<f32, 320>;   // 16 x 20

fn copy_in(l: u32) {
    for (var x = l; x < 384u; x += 32u) { wa[x] = a[x]; wb[x] = b[x]; }
}

// 0: MC() zero-init stored
@compute @workgroup_size(32) fn p0() {
    let c = MC();
    let o = 0u; let st = 16u;
    coopStoreT(c, &out[o], st);
}
// 1: A(row-major, global) x B(row-major, global) + zeros(loaded)
@compute @workgroup_size(32) fn p1() {
    let z0 = 0u; let s16 = 16u; let s24 = 24u;
    var c = coopLoadT<MC>(&zeros[z0], s16);
    let x = coopLoadT<MA>(&a[z0], s24);
    let y = coopLoadT<MB>(&b[z0], s24);
    c = coopMultiplyAdd(x, y, c);
    let o = 256u;
    coopStoreT(c, &out[o], s16);
}
// 2: same with MC() init
@compute @workgroup_size(32) fn p2() {
    let z0 = 0u; let s16 = 16u; let s24 = 24u;
    var c = MC();
    let x = coopLoadT<MA>(&a[z0], s24);
    let y = coopLoadT<MB>(&b[z0], s24);
    c = coopMultiplyAdd(x, y, c);
    let o = 512u;
    coopStoreT(c, &out[o], s16);
}
// 3: B column-major from global (so B = b^T)
@compute @workgroup_size(32) fn p3() {
    let z0 = 0u; let s16 = 16u; let s24 = 24u;
    var c = coopLoadT<MC>(&zeros[z0], s16);
    let x = coopLoadT<MA>(&a[z0], s24);
    let y = coopLoad<MB>(&b[z0], s24);
    c = coopMultiplyAdd(x, y, c);
    let o = 768u;
    coopStoreT(c, &out[o], s16);
}
// 4: A, B from workgroup memory (row-major), zeros loaded
@compute @workgroup_size(32) fn p4(@builtin(local_invocation_index) l: u32) {
    copy_in(l);
    workgroupBarrier();
    let z0 = 0u; let s16 = 16u; let s24 = 24u;
    var c = coopLoadT<MC>(&zeros[z0], s16);
    let x = coopLoadT<MA>(&wa[z0], s24);
    let y = coopLoadT<MB>(&wb[z0], s24);
    c = coopMultiplyAdd(x, y, c);
    let o = 1024u;
    coopStoreT(c, &out[o], s16);
}
// 5: B column-major from workgroup memory
@compute @workgroup_size(32) fn p5(@builtin(local_invocation_index) l: u32) {
    copy_in(l);
    workgroupBarrier();
    let z0 = 0u; let s16 = 16u; let s24 = 24u;
    var c = coopLoadT<MC>(&zeros[z0], s16);
    let x = coopLoadT<MA>(&wa[z0], s24);
    let y = coopLoad<MB>(&wb[z0], s24);
    c = coopMultiplyAdd(x, y, c);
    let o = 1280u;
    coopStoreT(c, &out[o], s16);
}
// 6: result stored to workgroup f32 (stride 20), then copied out by threads
@compute @workgroup_size(32) fn p6(@builtin(local_invocation_index) l: u32) {
    let z0 = 0u; let s16 = 16u; let s20 = 20u; let s24 = 24u;
    var c = coopLoadT<MC>(&zeros[z0], s16);
    let x = coopLoadT<MA>(&a[z0], s24);
    let y = coopLoadT<MB>(&b[z0], s24);
    c = coopMultiplyAdd(x, y, c);
    coopStoreT(c, &wc[z0], s20);
    workgroupBarrier();
    for (var e = l; e < 256u; e += 32u) { out[1536u + e] = wc[(e / 16u) * 20u + e % 16u]; }
}
// 7: literal strides and inline index expressions (no lets)
@compute @workgroup_size(32) fn p7(@builtin(local_invocation_index) l: u32) {
    var c = coopLoadT<MC>(&zeros[0], 16u);
    let x = coopLoadT<MA>(&a[l / 32u], 24u);
    let y = coopLoadT<MB>(&b[0u * l], 24u);
    c = coopMultiplyAdd(x, y, c);
    coopStoreT(c, &out[1792u + 0u * l], 16u);
}
// 8: A from workgroup at an offset row (8) with stride 24: rows 8..24 of a 32-row copy
@compute @workgroup_size(32) fn p8(@builtin(local_invocation_index) l: u32) {
    copy_in(l);
    workgroupBarrier();
    let z0 = 0u; let s16 = 16u; let s24 = 24u;
    var c = MC();
    let x = coopLoadT<MA>(&wa[z0], s24);
    let y = coopLoadT<MB>(&wb[z0], s24);
    c = coopMultiplyAdd(x, y, c);
    c = coopMultiplyAdd(x, y, c);
    let o = 2048u;
    coopStoreT(c, &out[o], s16);
}
"#;

fn main() {
    let attn = Attention::with_default_adapter_blocking().expect("adapter");
    let caps = attn.capabilities();
    println!("adapter {} coop {:?} features coop {}", caps.adapter.name, caps.cooperative_matrices,
        caps.features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX));
    if !caps.cooperative_f16() {
        println!("no cooperative matrices here");
        return;
    }
    let dev = attn.device();
    let n = 16 * 24;
    let av: Vec<f32> = (0..n).map(|i| ((i * 7 + 3) % 11) as f32 - 5.0).collect();
    let bv: Vec<f32> = (0..n).map(|i| ((i * 5 + 1) % 9) as f32 - 4.0).collect();
    let h = |v: &[f32]| v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect::<Vec<u8>>();
    let mk = |bytes: &[u8], usage| dev.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: None, contents: bytes, usage });
    let s = wgpu::BufferUsages::STORAGE;
    let a = mk(&h(&av), s);
    let b = mk(&h(&bv), s);
    let z = mk(&[0u8; 1024], s);
    let out_init: Vec<u8> = (0..9 * 256).flat_map(|_| 12345.0f32.to_le_bytes()).collect();
    let out = mk(&out_init, s | wgpu::BufferUsages::COPY_SRC);
    let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor { label: None, source: wgpu::ShaderSource::Wgsl(SHADER.into()) });
    let entry = |binding, read_only| wgpu::BindGroupLayoutEntry { binding, visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer { ty: wgpu::BufferBindingType::Storage { read_only }, has_dynamic_offset: false, min_binding_size: None }, count: None };
    let bgl = dev.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: None, entries: &[entry(0, true), entry(1, true), entry(2, true), entry(3, false)] });
    let pl = dev.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor { label: None, bind_group_layouts: &[Some(&bgl)], immediate_size: 0 });
    let mut enc = dev.create_command_encoder(&Default::default());
    for i in 0..9 {
        let p = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: None, layout: Some(&pl), module: &module, entry_point: Some(&format!("p{i}")),
            compilation_options: Default::default(), cache: None });
        let bg = dev.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &bgl, entries: &[
            wgpu::BindGroupEntry { binding: 0, resource: a.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 1, resource: b.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 2, resource: z.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 3, resource: out.as_entire_binding() },
        ]});
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(&p);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(1, 1, 1);
    }
    let rb = sbattn::readback_later(dev, &mut enc, &out, 9 * 256 * 4);
    attn.queue().submit([enc.finish()]);
    let got = sbattn::from_bytes(&pollster::block_on(rb.read(dev)).unwrap(), sbattn::Dtype::F32);
    let mm = |bt: bool| -> Vec<f32> {
        let mut c = vec![0.0; 256];
        for r in 0..16 { for col in 0..16 { let mut s = 0.0;
            for k in 0..16 { let bv_ = if bt { bv[col * 24 + k] } else { bv[k * 24 + col] }; s += av[r * 24 + k] * bv_; }
            c[r * 16 + col] = s; } }
        c
    };
    let ab = mm(false);
    let abt = mm(true);
    let ab2: Vec<f32> = ab.iter().map(|x| 2.0 * x).collect();
    let zero = vec![0.0f32; 256];
    let want: [(&str, &Vec<f32>); 9] = [("MC() zero", &zero), ("AxB global, C loaded", &ab), ("AxB global, C=MC()", &ab),
        ("AxB^T colmajor global", &abt), ("AxB workgroup", &ab), ("AxB^T colmajor workgroup", &abt),
        ("store to workgroup", &ab), ("literal strides", &ab), ("2x AxB workgroup MC()", &ab2)];
    for (i, (name, w)) in want.iter().enumerate() {
        let g = &got[i * 256..(i + 1) * 256];
        let err = g.iter().zip(w.iter()).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        println!("p{i} {name:28} max err {err:e}  first {:?} want {:?}", &g[..4], &w[..4]);
    }
}
