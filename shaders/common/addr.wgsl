// Addressing of one strided tensor in a kernel's `Params`: the element offset of (0, 0, 0, 0)
// and the batch, token and head strides (head dim contiguous), all relative to the start of the
// tensor's binding. Mirrors `Addr` in src/kernel/uniform.rs.
struct Addr {
    off: u32,
    sb: u32,
    st: u32,
    sh: u32,
}
