fn main() {
    let attn = sbattn::Attention::with_default_adapter_blocking().unwrap();
    println!("{:?}", attn.capabilities().adapter.name);
    let shape = sbattn::Shape::new(1, 70, 2, 50);
    let n = (70 * 2 * 50) as usize;
    let mut x = 1u64;
    let mut r = || { x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((x >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0 };
    let q: Vec<f32> = (0..n).map(|_| r()).collect();
    let k: Vec<f32> = (0..n).map(|_| r()).collect();
    let v: Vec<f32> = (0..n).map(|_| r()).collect();
    for path in [sbattn::Path::SharedMemory, sbattn::Path::Subgroup] {
        let mut inp = sbattn::HostInput::new(shape, &q, &k, &v);
        inp.path = path;
        inp.remainder = sbattn::HostRemainder::Return;
        let out = attn.run_host_blocking(&inp).unwrap();
        let rf = sbattn::reference::forward(&shape, sbattn::Layout::Bthd, &q, &k, &v, sbattn::Mask::Strict, None, &sbattn::HostRemainder::Return).unwrap();
        let e = out.o.iter().zip(&rf.o).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
        let er = out.rem.as_ref().unwrap().iter().zip(&rf.rem).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
        println!("{path:?}: max err o {e:e} rem {er:e}; o[0..4] {:?} ref {:?}", &out.o[100..104], &rf.o[100..104]);
    }
}
