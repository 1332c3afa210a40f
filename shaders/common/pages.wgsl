// Addressing of a KV cache's K or V through a block table (a paged cache), or directly (a
// contiguous one). Mirrors `Pages` in src/kernel/uniform.rs.
//
// Paged: token t of sequence b is slot t % page_size of page table[b][t / page_size], and an
// `Addr`'s batch stride `sb` is the page stride. The kernel that includes this file defines
// `fn page_entry(i: u32) -> u32`: word i of the binding that holds the table, clamped to it.
// The table is written by the caller's engine through the host, but a word of it may be
// anything: the page is clamped to the pool, so no index leaves the K and V buffers.
// 1 (the default): addresses through the table whenever `shift` says the cache is paged; 0: a
// contiguous cache only, the table's code folded away (the host sets it per call from the same
// `Pages` it writes: src/kernel/source.rs `Recipe::with_paging`). Measured on the H200: the
// table's code in a contiguous call cost the tensor-core forward 40% and decode 8%.
override PAGED: u32 = 1u;

struct Pages {
    shift: u32,      // log2(page_size); 0: a contiguous cache (no table)
    max_pages: u32,  // table entries per sequence
    num_pages: u32,  // pages in the pool (at least 1)
    table: u32,      // word of the table's entry (0, 0) in its binding
}

// Element (or load) offset of token 0 of sequence b's head 0, with the tensor's own offset:
// add `token_off(.., t)` for token t. Contiguous: the batch row b, from token t0; paged: the
// tensor's offset only (the page comes with each token; t0 must be 0).
fn seq_base(a: Addr, pg: Pages, b: u32, t0: u32) -> u32 {
    if (PAGED == 0u || pg.shift == 0u) { return a.off + b * a.sb + t0 * a.st; }
    return a.off;
}

// Offset of token t (counted from `seq_base`'s t0) of sequence b from `seq_base`.
fn token_off(a: Addr, pg: Pages, b: u32, t: u32) -> u32 {
    if (PAGED == 0u || pg.shift == 0u) { return t * a.st; }
    let slot = t & ((1u << pg.shift) - 1u);
    let row = min(t >> pg.shift, pg.max_pages - 1u);
    let page = min(page_entry(pg.table + b * pg.max_pages + row), pg.num_pages - 1u);
    return page * a.sb + slot * a.st;
}
