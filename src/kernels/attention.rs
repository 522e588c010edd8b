//! Causal multi-head attention with grouped-query heads over a preallocated KV cache.
//!
//! The [`KvCache`] is a ring of `capacity` steps holding each step's keys, values and absolute
//! position (`u64`, never wrapping). A key at position `k` is visible to a query at position
//! `q` iff `k <= q` and, with a window `w`, `q - k < w`. So it serves both Mimi (window 250,
//! capacity = window + the largest chunk of queries processed at once) and CSM (no window,
//! capacity = the maximum context, `reset` per depth-decoder frame). The cache checks that no
//! key a query may see has been overwritten and panics if so (the capacity was sized wrong).
//!
//! Query head `h` reads KV head `h / (n_heads / n_kv_heads)` (transformers' `repeat_kv`).
//! Scores are scaled by `1 / sqrt(head_dim)` and soft-maxed in f32. Work is split over KV heads
//! on the [`Pool`]; a KV head's query rows (the steps of a chunk times the query heads of its
//! group) go in blocks of four that share each key and value read. The inner loops (the block
//! scores and weighted sums, the softmax) are the kernel set's row operations
//! (`super::vector`).

use super::dispatch::Kernels;
use super::pool::{Pool, SyncPtr};

/// Keys and values of the most recent `capacity` steps (see the module docs).
#[derive(Debug)]
pub struct KvCache {
    capacity: usize,
    n_kv_heads: usize,
    head_dim: usize,
    /// `[capacity, n_kv_heads * head_dim]`, slot-major.
    k: Vec<f32>,
    v: Vec<f32>,
    pos: Vec<u64>,
    /// Valid slots (`<= capacity`).
    len: usize,
    /// Slot the next step is written to.
    next: usize,
    /// Position of the newest step.
    last: Option<u64>,
    /// Newest position ever overwritten (a query must not be able to see it).
    evicted: Option<u64>,
}

impl KvCache {
    pub fn new(capacity: usize, n_kv_heads: usize, head_dim: usize) -> Self {
        assert!(
            capacity > 0 && n_kv_heads > 0 && head_dim > 0,
            "KvCache::new: zero capacity, heads or head_dim"
        );
        let row = n_kv_heads * head_dim;
        KvCache {
            capacity,
            n_kv_heads,
            head_dim,
            k: vec![0.0; capacity * row],
            v: vec![0.0; capacity * row],
            pos: vec![0; capacity],
            len: 0,
            next: 0,
            last: None,
            evicted: None,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Steps currently held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Position of the newest step held.
    pub fn last_pos(&self) -> Option<u64> {
        self.last
    }

    /// Forgets every step (keeps the memory).
    pub fn reset(&mut self) {
        self.len = 0;
        self.next = 0;
        self.last = None;
        self.evicted = None;
    }

    /// Appends `n` steps at positions `first_pos ..`: `k_new` and `v_new` are `[n, n_kv_heads *
    /// head_dim]`. Positions must continue the sequence (`first_pos` = last + 1) unless the
    /// cache is empty. With more than `capacity` steps held the oldest are overwritten.
    pub fn append(&mut self, k_new: &[f32], v_new: &[f32], first_pos: u64) {
        let row = self.n_kv_heads * self.head_dim;
        assert!(
            k_new.len() == v_new.len() && k_new.len().is_multiple_of(row),
            "KvCache::append: k ({}) and v ({}) must both be [n, {row}]",
            k_new.len(),
            v_new.len()
        );
        if let Some(last) = self.last {
            assert_eq!(
                first_pos,
                last + 1,
                "KvCache::append: positions must continue the sequence"
            );
        }
        for (t, (kr, vr)) in k_new
            .chunks_exact(row)
            .zip(v_new.chunks_exact(row))
            .enumerate()
        {
            let s = self.next;
            if self.len == self.capacity {
                self.evicted = Some(self.pos[s]);
            } else {
                self.len += 1;
            }
            self.k[s * row..(s + 1) * row].copy_from_slice(kr);
            self.v[s * row..(s + 1) * row].copy_from_slice(vr);
            self.pos[s] = first_pos + t as u64;
            self.last = Some(self.pos[s]);
            self.next = (s + 1) % self.capacity;
        }
    }

    /// Attention of `n` queries at positions `first_pos ..` (`q`, `out`: `[n, n_heads *
    /// head_dim]`, `n_heads` a multiple of the cache's KV heads) over the held keys, causal and
    /// optionally windowed. The queries' own keys must already be appended.
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &self,
        k: &Kernels,
        pool: &Pool,
        q: &[f32],
        first_pos: u64,
        window: Option<usize>,
        out: &mut [f32],
        scratch: &mut AttnScratch,
    ) {
        let hd = self.head_dim;
        let n_heads = scratch.n_heads;
        assert!(
            n_heads.is_multiple_of(self.n_kv_heads),
            "attend: {n_heads} query heads are not a multiple of {} KV heads",
            self.n_kv_heads
        );
        assert!(
            scratch.capacity >= self.capacity,
            "attend: AttnScratch sized for {} keys, cache holds up to {}",
            scratch.capacity,
            self.capacity
        );
        let qrow = n_heads * hd;
        assert!(
            q.len().is_multiple_of(qrow) && out.len() == q.len(),
            "attend: q ({}) and out ({}) must both be [n, {n_heads} * {hd}]",
            q.len(),
            out.len()
        );
        let n = q.len() / qrow;
        if n == 0 {
            return;
        }
        if let Some(w) = window {
            assert!(w > 0, "attend: zero window");
        }
        let last_q = first_pos + (n - 1) as u64;
        assert!(
            self.last.is_some_and(|l| l >= last_q),
            "attend: keys up to position {last_q} must be appended first (cache ends at {:?})",
            self.last
        );
        if let Some(e) = self.evicted {
            let gone = match window {
                Some(w) => e >= first_pos || first_pos - e < w as u64,
                None => true,
            };
            assert!(
                !gone,
                "attend: the key at position {e}, visible to the query at {first_pos}, was \
                 overwritten: KV capacity {} is too small for this window and chunk",
                self.capacity
            );
        }
        let oldest = self.pos[(self.next + self.capacity - self.len) % self.capacity];
        assert!(
            oldest <= first_pos,
            "attend: the query at position {first_pos} precedes the cache's first key ({oldest})"
        );
        let group = n_heads / self.n_kv_heads;
        let kvrow = self.n_kv_heads * hd;
        let scale = 1.0 / (hd as f32).sqrt();
        let cap = scratch.capacity;
        let len = self.len;
        let sp = SyncPtr(scratch.scores.as_mut_ptr());
        let op = SyncPtr(out.as_mut_ptr());
        // A KV head's query rows — step t, head g * group + i — in blocks of QB, each block
        // reading the head's keys and values once.
        let rows = n * group;
        let parts = pool.parts_for(self.n_kv_heads, 1);
        let job = |part: usize| {
            for g in Pool::split(self.n_kv_heads, part, parts, 1) {
                // SAFETY: KV head g alone uses scores[g * QB * cap ..][.. QB * cap]; scores
                // holds n_heads * QB * cap >= n_kv_heads * QB * cap values (AttnScratch::new)
                // and KV heads are split disjointly.
                let block =
                    unsafe { std::slice::from_raw_parts_mut(sp.get().add(g * QB * cap), QB * cap) };
                let keys = &self.k[g * hd..];
                let values = &self.v[g * hd..];
                for r0 in (0..rows).step_by(QB) {
                    let nr = (rows - r0).min(QB);
                    // row r: step r / group, query head g * group + r % group
                    let at = |r: usize| (r / group) * qrow + (g * group + r % group) * hd;
                    let mut qs: [&[f32]; QB] = [&[]; QB];
                    for (j, qr) in qs.iter_mut().enumerate().take(nr) {
                        *qr = &q[at(r0 + j)..][..hd];
                    }
                    let sc = &mut block[..nr * len];
                    k.attention_scores(&qs[..nr], keys, kvrow, scale, sc);
                    for (j, row) in sc.chunks_exact_mut(len).enumerate() {
                        let qp = first_pos + ((r0 + j) / group) as u64;
                        for (v, &kp) in row.iter_mut().zip(&self.pos) {
                            let visible = kp <= qp && window.is_none_or(|w| qp - kp < w as u64);
                            if !visible {
                                *v = f32::NEG_INFINITY;
                            }
                        }
                        k.softmax(row);
                    }
                    let mut outs: [&mut [f32]; QB] = Default::default();
                    for (j, o) in outs.iter_mut().enumerate().take(nr) {
                        // SAFETY: row r0 + j alone writes out[at(r0 + j)..][..hd]: one step's
                        // one query head, inside out's n * n_heads * hd values (checked
                        // above); rows are split disjointly over blocks and KV heads.
                        *o =
                            unsafe { std::slice::from_raw_parts_mut(op.get().add(at(r0 + j)), hd) };
                    }
                    k.weighted_sum(sc, values, kvrow, &mut outs[..nr]);
                }
            }
        };
        pool.run(parts, &job);
    }
}

/// Score buffers for [`KvCache::attend`]: four rows of `capacity` per query head.
#[derive(Debug)]
pub struct AttnScratch {
    n_heads: usize,
    capacity: usize,
    scores: Vec<f32>,
}

impl AttnScratch {
    /// For `n_heads` query heads over caches of up to `capacity` steps.
    pub fn new(n_heads: usize, capacity: usize) -> Self {
        assert!(n_heads > 0, "AttnScratch::new: zero heads");
        AttnScratch {
            n_heads,
            capacity,
            scores: vec![0.0; n_heads * QB * capacity],
        }
    }
}

/// Query rows (queries of one KV head: several steps, or the heads of a group) that share each
/// key and value read from the cache.
pub(crate) const QB: usize = 4;

/// `scores[r * len + s] = dot(q[r], keys[s * ld..][..hd]) * scale` for the `q.len() <= QB`
/// query rows (each `hd` long) and the `len = scores.len() / q.len()` slots: four keys at a
/// time (four independent accumulator chains), each block of keys read from memory once and
/// then from L1 for every row.
#[inline(always)]
pub(crate) fn block_scores(q: &[&[f32]], keys: &[f32], ld: usize, scale: f32, scores: &mut [f32]) {
    let rows = q.len();
    assert!(
        (1..=QB).contains(&rows),
        "attention: {rows} query rows in a block (1 to {QB})"
    );
    let hd = q[0].len();
    let len = scores.len() / rows;
    let quads = len / 4 * 4;
    for s in (0..quads).step_by(4) {
        let k: [&[f32]; 4] = std::array::from_fn(|j| &keys[(s + j) * ld..][..hd]);
        for (r, qr) in q.iter().enumerate() {
            let d = dot4(qr, k);
            for (v, d) in scores[r * len + s..][..4].iter_mut().zip(d) {
                *v = d * scale;
            }
        }
    }
    for s in quads..len {
        let k = &keys[s * ld..][..hd];
        for (r, qr) in q.iter().enumerate() {
            scores[r * len + s] = dot(qr, k) * scale;
        }
    }
}

/// Four dot products of `q` with `k[0..4]` (each `q.len()` long), eight lanes each.
#[inline(always)]
fn dot4(q: &[f32], k: [&[f32]; 4]) -> [f32; 4] {
    let mut acc = [[0f32; 8]; 4];
    let body = q.len() / 8 * 8;
    for (c, qc) in q[..body].chunks_exact(8).enumerate() {
        for (a, kr) in acc.iter_mut().zip(&k) {
            let kc = &kr[c * 8..c * 8 + 8];
            for i in 0..8 {
                a[i] += qc[i] * kc[i];
            }
        }
    }
    let mut out = [0f32; 4];
    for ((o, a), kr) in out.iter_mut().zip(&acc).zip(&k) {
        *o = (a[0] + a[4]) + (a[1] + a[5]) + (a[2] + a[6]) + (a[3] + a[7]);
        for (x, y) in q[body..].iter().zip(&kr[body..]) {
            *o += x * y;
        }
    }
    out
}

/// Dot product with eight independent accumulators (so it vectorizes without reassociation).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, ar) = a.split_at(a.len() / 8 * 8);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(8).zip(bc.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]);
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

/// `outs[r] = sum_s p[r * len + s] * values[s * ld..][..hd]` for the `outs.len() <= QB` rows
/// (each `hd` long; `len = p.len() / outs.len()`): each value is read once for all the rows,
/// and the outputs are built 16 at a time in registers. (Every held value is finite, so a
/// zero weight adds nothing; no slot is skipped.)
#[inline(always)]
pub(crate) fn block_weighted_sum(p: &[f32], values: &[f32], ld: usize, outs: &mut [&mut [f32]]) {
    match outs {
        [a] => wsum_q::<1>(p, values, ld, [a]),
        [a, b] => wsum_q::<2>(p, values, ld, [a, b]),
        [a, b, c] => wsum_q::<3>(p, values, ld, [a, b, c]),
        [a, b, c, d] => wsum_q::<4>(p, values, ld, [a, b, c, d]),
        _ => panic!(
            "attention: {} output rows in a block (1 to {QB})",
            outs.len()
        ),
    }
}

#[inline(always)]
fn wsum_q<const Q: usize>(p: &[f32], values: &[f32], ld: usize, outs: [&mut &mut [f32]; Q]) {
    const W: usize = 16;
    let len = p.len() / Q;
    let hd = outs[0].len();
    let full = hd / W * W;
    let rows: [&[f32]; Q] = std::array::from_fn(|r| &p[r * len..(r + 1) * len]);
    for c0 in (0..full).step_by(W) {
        let mut acc = [[0f32; W]; Q];
        for s in 0..len {
            let v: &[f32; W] = values[s * ld + c0..][..W].try_into().expect("W values");
            for r in 0..Q {
                let pr = rows[r][s];
                for i in 0..W {
                    acc[r][i] += pr * v[i];
                }
            }
        }
        for r in 0..Q {
            outs[r][c0..c0 + W].copy_from_slice(&acc[r]);
        }
    }
    for c in full..hd {
        for r in 0..Q {
            let mut a = 0f32;
            for (s, &pr) in rows[r].iter().enumerate() {
                a += pr * values[s * ld + c];
            }
            outs[r][c] = a;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::kernels::test_rand::rand_vec;

    /// Full-sequence masked attention in f64; row t of q/k/v is sequence step t.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        len: usize,
        heads: usize,
        kv_heads: usize,
        hd: usize,
        window: Option<usize>,
    ) -> Vec<f32> {
        let mut out = vec![0f32; len * heads * hd];
        let group = heads / kv_heads;
        for t in 0..len {
            for h in 0..heads {
                let g = h / group;
                let keys: Vec<usize> = (0..=t)
                    .filter(|&s| window.is_none_or(|w| t - s < w))
                    .collect();
                let sc: Vec<f64> = keys
                    .iter()
                    .map(|&s| {
                        (0..hd)
                            .map(|d| {
                                q[(t * heads + h) * hd + d] as f64
                                    * k[(s * kv_heads + g) * hd + d] as f64
                            })
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..hd {
                    let val: f64 = keys
                        .iter()
                        .zip(&e)
                        .map(|(&s, p)| p / z * v[(s * kv_heads + g) * hd + d] as f64)
                        .sum();
                    out[(t * heads + h) * hd + d] = val as f32;
                }
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn run_chunked(
        pool: &Pool,
        heads: usize,
        kv_heads: usize,
        hd: usize,
        len: usize,
        chunk: usize,
        window: Option<usize>,
        capacity: usize,
        start: u64,
    ) {
        let q = rand_vec(len * heads * hd, 1)
            .iter()
            .map(|x| x * 3.0)
            .collect::<Vec<_>>();
        let k = rand_vec(len * kv_heads * hd, 2);
        let v = rand_vec(len * kv_heads * hd, 3);
        let want = naive(&q, &k, &v, len, heads, kv_heads, hd, window);
        let mut cache = KvCache::new(capacity, kv_heads, hd);
        let mut scratch = AttnScratch::new(heads, capacity);
        let mut out = vec![f32::NAN; len * heads * hd];
        let (qr, kr) = (heads * hd, kv_heads * hd);
        let mut t0 = 0;
        while t0 < len {
            let t1 = (t0 + chunk).min(len);
            let p = start + t0 as u64;
            cache.append(&k[t0 * kr..t1 * kr], &v[t0 * kr..t1 * kr], p);
            cache.attend(
                Kernels::get(),
                pool,
                &q[t0 * qr..t1 * qr],
                p,
                window,
                &mut out[t0 * qr..t1 * qr],
                &mut scratch,
            );
            t0 = t1;
        }
        for (i, (a, b)) in out.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() < 2e-5,
                "heads {heads}/{kv_heads} window {window:?} chunk {chunk} start {start}: [{i}] {a} vs {b}"
            );
        }
    }

    #[test]
    fn matches_naive_masked_attention() {
        for threads in [1, 3] {
            let pool = Pool::new(threads);
            for (heads, kv) in [(4, 1), (3, 3), (8, 2)] {
                for start in [0u64, 5_000_000_000_000] {
                    // no window: the cache holds the whole sequence
                    run_chunked(&pool, heads, kv, 16, 37, 37, None, 40, start);
                    run_chunked(&pool, heads, kv, 16, 37, 1, None, 37, start);
                    run_chunked(&pool, heads, kv, 16, 37, 5, None, 64, start);
                    // sliding window through a ring smaller than the sequence
                    run_chunked(&pool, heads, kv, 8, 60, 1, Some(10), 10, start);
                    // head widths off the 8- and 16-lane blocks
                    run_chunked(&pool, heads, kv, 20, 41, 3, Some(9), 12, start);
                    run_chunked(&pool, heads, kv, 37, 23, 1, None, 23, start);
                    run_chunked(&pool, heads, kv, 8, 60, 4, Some(10), 13, start);
                    run_chunked(&pool, heads, kv, 8, 60, 7, Some(10), 17, start);
                    run_chunked(&pool, heads, kv, 8, 60, 60, Some(10), 70, start);
                }
            }
        }
    }

    #[test]
    fn reset_starts_a_new_sequence() {
        let pool = Pool::new(1);
        let mut cache = KvCache::new(4, 1, 4);
        let mut scratch = AttnScratch::new(2, 4);
        let k = rand_vec(12, 5);
        let v = rand_vec(12, 6);
        let q = rand_vec(8, 7);
        let mut out = vec![0f32; 8];
        cache.append(&k[..8], &v[..8], 0);
        cache.reset();
        assert!(cache.is_empty());
        cache.append(&k[8..], &v[8..], 0);
        cache.attend(Kernels::get(), &pool, &q, 0, None, &mut out, &mut scratch);
        // one visible key: the output is its value
        for h in 0..2 {
            assert_eq!(&out[h * 4..(h + 1) * 4], &v[8..12]);
        }
    }

    #[test]
    #[should_panic(expected = "too small")]
    fn an_overwritten_visible_key_panics() {
        let pool = Pool::new(1);
        let mut cache = KvCache::new(10, 1, 4);
        let mut scratch = AttnScratch::new(1, 10);
        let x = rand_vec(4 * 4, 1);
        let mut out = vec![0f32; 4 * 4];
        for step in 0..3u64 {
            cache.append(&x, &x, step * 4);
            // window 10 with chunks of 4 needs capacity 13
            cache.attend(
                Kernels::get(),
                &pool,
                &x,
                step * 4,
                Some(10),
                &mut out,
                &mut scratch,
            );
        }
    }
}
