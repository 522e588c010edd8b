//! Mimi's split residual vector quantizer.
//!
//! Two groups, semantic (the first `num_semantic_quantizers` codebooks) and acoustic (the
//! rest), each quantize the SAME latent through their own 1x1 input projection; within a group
//! each level takes the nearest codeword of the residual and subtracts it. Decoding sums the
//! selected codewords per group, applies each group's output projection and adds the two.
//!
//! Codebooks are `embed_sum / max(cluster_usage, 1e-5)` row by row, computed once at load with
//! their squared norms; the nearest codeword is `argmin_j ||e_j||^2 - 2 x.e_j` (the same order
//! as the Euclidean distance), ties to the lower index.
//!
//! The search is the heavy part of encoding (32 x 2048 x 256 multiply-adds per frame). Batch
//! encoding splits the frames over rayon's pool; a single streaming frame splits each level's
//! codebook rows over the compute [`Pool`] (rayon's global injector may allocate when work is
//! posted from outside its pool, which a zero-allocation frame path cannot afford), and stays
//! serial below [`DEFAULT_PARALLEL_CUTOVER`] multiply-adds per level.
//!
//! A single frame multiplies one vector by every codebook, so it is bound by reading the
//! codebooks (64 MB of f32 at the kyutai/mimi size, far beyond the caches). It therefore
//! searches a Q8 copy first (a quarter of the bytes) and re-scores in f32 only the codewords
//! whose Q8 score is within a proven error bound of the best (see `Codebook::search`): the
//! result is the codeword the f32 search picks, not an approximation of it.

use super::MimiConfig;
use crate::kernels::matmul::{Act, Mat, QScratch, matmul, matmul_rows};
use crate::kernels::packed::{PANEL, pack_float, pack_q8};
use crate::kernels::pool::SyncPtr;
use crate::kernels::q8::{QK, blocks, dequantize_row, quantize_weight_row};
use crate::kernels::{Kernels, Pool};
use crate::weights::{WeightMatrix, Weights};
use crate::{Error, Result};
use half::f16;
use rayon::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};

/// Codebook size x dimension below which a single frame's search stays on the calling thread.
///
/// Measured by `cargo bench --bench rvq` (`benches/rvq.rs`, release, x86_64 AVX2
/// kernels, 2-thread pool, one level, when the shared machine was quiet): serial / pooled
/// 0.12 / 0.32 us (64 x 16), 0.53 / 0.54 us (256 x 32), 0.71 / 0.61 us (256 x 64), 1.4 / 1.0 us
/// (512 x 64), 2.8 / 1.7 us (1024 x 64), 9.7 / 5.0 us (2048 x 128), 19 / 9.2 us (2048 x 256,
/// kyutai/mimi). Break-even is near 16K multiply-adds; the cut-over sits a step above it. When
/// the machine was oversubscribed (load > 2 per core) a hand-off cost up to 0.8 ms of
/// scheduling and the serial path won at every size: use a 1-thread pool there.
pub const DEFAULT_PARALLEL_CUTOVER: usize = 32 * 1024;

/// Frames per rayon task in batch encoding (each task multiplies its frames by a codebook at
/// once, so the codebook is read once per block).
const BATCH_BLOCK: usize = 8;

/// Relative slack of the Q8 pre-search bound for f32 rounding: far above the rounding error of
/// a 2048-dimensional f32 dot product (`2048 * 2^-24 ~ 1.2e-4` of `sum |x_i c_i|` is the crude
/// worst case; actual errors are orders of magnitude smaller), and it only ever adds candidates.
const ROUNDING_SLACK: f32 = 2e-4;

/// One codebook: `[size, dim]` codewords (row-major for decoding, and packed F32P for the
/// products) and their squared norms, plus a packed Q8 copy for the pre-search with each row's
/// L2 norm and Q8 error norm `||c_j - q8(c_j)||`. (Derived from the EMA buffers at load time,
/// so packing them here copies nothing that was mapped.)
#[derive(Debug)]
pub struct Codebook {
    embed: Vec<f32>,
    packed: Vec<f32>,
    norms: Vec<f32>,
    q8p: Vec<u8>,
    len: Vec<f32>,
    qerr: Vec<f32>,
    size: usize,
    dim: usize,
}

/// The query of one search: `x`, its Q8 form and the norms the error bound needs.
#[derive(Debug)]
struct Query<'a> {
    x: &'a [f32],
    xq: &'a [i8],
    xd: &'a [f32],
    /// `||x||`
    norm: f32,
    /// `||x - q8(x)||`
    qerr: f32,
}

impl Codebook {
    /// The codebook from its EMA buffers: row `j` is `embed_sum[j] / max(usage[j], 1e-5)`.
    pub fn from_ema(embed_sum: &[f32], usage: &[f32], dim: usize) -> Codebook {
        let size = usage.len();
        assert_eq!(
            embed_sum.len(),
            size * dim,
            "codebook: embed_sum is not [size, dim]"
        );
        let mut embed = embed_sum.to_vec();
        for (row, u) in embed.chunks_exact_mut(dim).zip(usage) {
            let d = u.max(1e-5);
            for v in row {
                *v /= d;
            }
        }
        let norms = embed
            .chunks_exact(dim)
            .map(|r| r.iter().map(|v| v * v).sum())
            .collect();
        let nb = blocks(dim);
        let mut q = vec![0i8; size * nb * QK];
        let mut qd = vec![f16::ZERO; size * nb];
        let mut len = vec![0f32; size];
        let mut qerr = vec![0f32; size];
        let mut back = vec![0f32; dim];
        for (j, row) in embed.chunks_exact(dim).enumerate() {
            let (rq, rd) = (&mut q[j * nb * QK..][..nb * QK], &mut qd[j * nb..][..nb]);
            quantize_weight_row(row, rq, rd);
            dequantize_row(rq, rd, &mut back);
            len[j] = l2(row.iter().map(|&v| v as f64));
            qerr[j] = l2(row.iter().zip(&back).map(|(&a, &b)| a as f64 - b as f64));
        }
        Codebook {
            packed: pack_float(&embed, size, dim, 0.0),
            q8p: pack_q8(&q, &qd, size, dim),
            embed,
            norms,
            len,
            qerr,
            size,
            dim,
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn codeword(&self, j: usize) -> &[f32] {
        &self.embed[j * self.dim..(j + 1) * self.dim]
    }

    /// The codewords as packed f32 panels.
    fn mat(&self) -> Mat<'_> {
        Mat::F32P {
            w: &self.packed,
            rows: self.size,
            cols: self.dim,
        }
    }

    /// The lowest f32 score `norm_j - 2 * dot(c_j, x)` over rows `lo..hi` (ties to the lower
    /// index; `(inf, lo)` if no score is below infinity), as the plain f32 search would find
    /// it, reading the Q8 copy and re-scoring few rows. `dots` holds `hi - lo` values.
    ///
    /// With `x~`, `c~` the Q8 forms, `|x.c - x~.c~| <= ||x - x~|| ||c~|| + ||x|| ||c - c~||`
    /// (Cauchy-Schwarz) and `||c~|| <= ||c|| + ||c - c~||`; adding [`ROUNDING_SLACK`] for the
    /// f32 rounding of both scores gives a bound `m_j` with `|score_j - qscore_j| <= m_j`. The
    /// f32 minimum is at most `u = min_j (qscore_j + m_j)`, so only rows with
    /// `qscore_j - m_j <= u` can hold it, and those are re-scored exactly in f32 (one row at a
    /// panel at a time through the same kernel: each lane is one row computed alone, so each
    /// score is the one the full product gives). `lo` and `hi` are multiples of 8 (or `hi` is
    /// the size).
    fn search(
        &self,
        k: &Kernels,
        lo: usize,
        hi: usize,
        x: &Query,
        dots: &mut [f32],
    ) -> (f32, usize) {
        let (n, d) = (hi - lo, self.dim);
        let dots = &mut dots[..n];
        if n == 0 {
            return (f32::INFINITY, lo);
        }
        let q8 = Mat::Q8P {
            w: &self.q8p,
            rows: self.size,
            cols: d,
        };
        let act = Act::Q8 { xq: x.xq, xd: x.xd };
        matmul_rows(k, &q8, lo, hi, act, 1, dots);
        let a = 2.0 * (x.qerr + ROUNDING_SLACK * x.norm);
        let b = 2.0 * (x.qerr + x.norm);
        let mut upper = f32::INFINITY;
        let rows = lo..hi;
        for (((dv, nv), lv), ev) in dots
            .iter_mut()
            .zip(&self.norms[rows.clone()])
            .zip(&self.len[rows.clone()])
            .zip(&self.qerr[rows])
        {
            let s = nv - 2.0 * *dv;
            let m = a * lv + b * ev + ROUNDING_SLACK * nv;
            upper = upper.min(s + m);
            *dv = s - m;
        }
        let mut best = (f32::INFINITY, lo);
        let mut panel = [0f32; PANEL];
        let mut done = usize::MAX;
        for (j, &low) in dots.iter().enumerate() {
            if low <= upper {
                let r = lo + j;
                let p0 = r / PANEL * PANEL;
                let p1 = (p0 + PANEL).min(self.size);
                if done != p0 {
                    matmul_rows(
                        k,
                        &self.mat(),
                        p0,
                        p1,
                        Act::F32(x.x),
                        1,
                        &mut panel[..p1 - p0],
                    );
                    done = p0;
                }
                let s = self.norms[r] - 2.0 * panel[r - p0];
                if s < best.0 {
                    best = (s, r);
                }
            }
        }
        best
    }

    /// Lowest `norm - 2 * dot` over rows `lo..` given their dot products `dots`.
    fn argmin(&self, lo: usize, dots: &[f32]) -> (f32, usize) {
        let mut best = (f32::INFINITY, lo);
        for (j, (d, n)) in dots.iter().zip(&self.norms[lo..]).enumerate() {
            let s = n - 2.0 * d;
            if s < best.0 {
                best = (s, lo + j);
            }
        }
        best
    }
}

/// Euclidean norm of f64 terms, as f32.
fn l2(v: impl Iterator<Item = f64>) -> f32 {
    v.map(|t| t * t).sum::<f64>().sqrt() as f32
}

/// One group (semantic or acoustic): optional projections and its codebooks.
#[derive(Debug)]
struct Group {
    input_proj: Option<WeightMatrix>,
    output_proj: Option<WeightMatrix>,
    books: Vec<Codebook>,
}

impl Group {
    fn load(w: &Weights, name: &str, levels: usize, cfg: &MimiConfig) -> Result<Self> {
        let (h, d, k) = (
            cfg.hidden_size,
            cfg.vector_quantization_hidden_dimension,
            cfg.codebook_size,
        );
        let (input_proj, output_proj) = if cfg.has_quantizer_projections() {
            (
                Some(w.linear(&format!("{name}.input_proj.weight"), &[d, h, 1])?),
                Some(w.linear(&format!("{name}.output_proj.weight"), &[h, d, 1])?),
            )
        } else {
            (None, None)
        };
        let books = (0..levels)
            .map(|l| {
                let p = format!("{name}.layers.{l}.codebook");
                let sum = w.vector(&format!("{p}.embed_sum"), &[k, cfg.codebook_dim])?;
                let usage = w.vector(&format!("{p}.cluster_usage"), &[k])?;
                Ok(Codebook::from_ema(&sum, &usage, cfg.codebook_dim))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Group {
            input_proj,
            output_proj,
            books,
        })
    }
}

/// The split RVQ (see the module docs).
#[derive(Debug)]
pub struct SplitRvq {
    semantic: Group,
    acoustic: Group,
    hidden: usize,
    dim: usize,
    codebook_size: usize,
    cutover: usize,
}

/// Buffers for one stream's RVQ work on up to `max_frames` frames per call.
#[derive(Debug)]
pub struct RvqScratch {
    resid: Vec<f32>,
    dots: Vec<f32>,
    /// The Q8 form of the residual being searched.
    xq: Vec<i8>,
    xd: Vec<f32>,
    sum_sem: Vec<f32>,
    sum_ac: Vec<f32>,
    tmp: Vec<f32>,
    qs: QScratch,
    slots: Vec<AtomicU64>,
    max_frames: usize,
}

fn pack(score: f32, idx: usize) -> u64 {
    ((idx as u64) << 32) | score.to_bits() as u64
}

fn unpack(v: u64) -> (f32, usize) {
    (f32::from_bits(v as u32), (v >> 32) as usize)
}

impl SplitRvq {
    pub fn load(w: &Weights, cfg: &MimiConfig) -> Result<Self> {
        if cfg.codebook_dim != cfg.vector_quantization_hidden_dimension {
            return Err(Error::Invalid(format!(
                "mimi: codebook_dim {} != vector_quantization_hidden_dimension {} is not supported",
                cfg.codebook_dim, cfg.vector_quantization_hidden_dimension
            )));
        }
        Ok(SplitRvq {
            semantic: Group::load(
                w,
                "quantizer.semantic_residual_vector_quantizer",
                cfg.num_semantic_quantizers,
                cfg,
            )?,
            acoustic: Group::load(
                w,
                "quantizer.acoustic_residual_vector_quantizer",
                cfg.num_acoustic_quantizers(),
                cfg,
            )?,
            hidden: cfg.hidden_size,
            dim: cfg.codebook_dim,
            codebook_size: cfg.codebook_size,
            cutover: DEFAULT_PARALLEL_CUTOVER,
        })
    }

    /// A quantizer without projections (latent dimension = codebook dimension) from its
    /// codebooks, all of one size and dimension (benchmarks and tests).
    pub fn from_codebooks(semantic: Vec<Codebook>, acoustic: Vec<Codebook>) -> Result<Self> {
        let first = semantic.first().ok_or_else(|| {
            Error::Invalid("split RVQ: at least one semantic codebook is needed".into())
        })?;
        let (size, dim) = (first.size, first.dim);
        if semantic
            .iter()
            .chain(&acoustic)
            .any(|b| b.size != size || b.dim != dim)
        {
            return Err(Error::Invalid(
                "split RVQ: codebooks differ in size or dimension".into(),
            ));
        }
        let group = |books| Group {
            input_proj: None,
            output_proj: None,
            books,
        };
        Ok(SplitRvq {
            semantic: group(semantic),
            acoustic: group(acoustic),
            hidden: dim,
            dim,
            codebook_size: size,
            cutover: DEFAULT_PARALLEL_CUTOVER,
        })
    }

    pub fn num_semantic(&self) -> usize {
        self.semantic.books.len()
    }

    pub fn num_quantizers(&self) -> usize {
        self.semantic.books.len() + self.acoustic.books.len()
    }

    pub fn codebook_size(&self) -> usize {
        self.codebook_size
    }

    /// The codebook of level `q` (semantic levels first).
    pub fn codebook(&self, q: usize) -> &Codebook {
        let ns = self.num_semantic();
        if q < ns {
            &self.semantic.books[q]
        } else {
            &self.acoustic.books[q - ns]
        }
    }

    /// Multiply-adds per level below which a single frame's search stays serial.
    pub fn set_parallel_cutover(&mut self, macs: usize) {
        self.cutover = macs;
    }

    pub fn parallel_cutover(&self) -> usize {
        self.cutover
    }

    /// Checks `num_semantic <= n_q <= num_quantizers`.
    pub fn check_n_q(&self, n_q: usize) -> Result<()> {
        let (ns, nq) = (self.num_semantic(), self.num_quantizers());
        if n_q < ns || n_q > nq {
            return Err(Error::Invalid(format!(
                "number of codebooks {n_q} out of range: this codec encodes {ns} to {nq}"
            )));
        }
        Ok(())
    }

    /// Checks a decode request: 1 to `num_quantizers` rows of codes below the codebook size.
    pub fn check_codes(&self, rows: &[&[u32]]) -> Result<()> {
        let nq = self.num_quantizers();
        if rows.is_empty() || rows.len() > nq {
            return Err(Error::Invalid(format!(
                "{} rows of codes: this codec decodes 1 to {nq} codebooks",
                rows.len()
            )));
        }
        for (q, r) in rows.iter().enumerate() {
            if r.len() != rows[0].len() {
                return Err(Error::Invalid(format!(
                    "codebook {q} has {} frames, codebook 0 has {}",
                    r.len(),
                    rows[0].len()
                )));
            }
            if let Some((f, c)) = r
                .iter()
                .enumerate()
                .find(|(_, c)| **c as usize >= self.codebook_size)
            {
                return Err(Error::Invalid(format!(
                    "code {c} at codebook {q}, frame {f} is out of range (codebook size {})",
                    self.codebook_size
                )));
            }
        }
        Ok(())
    }

    /// Scratch for calls on up to `max_frames` frames with a pool of `threads` threads.
    pub fn scratch(&self, max_frames: usize, threads: usize) -> RvqScratch {
        let (h, d) = (self.hidden, self.dim);
        RvqScratch {
            resid: vec![0.0; max_frames * d],
            dots: vec![0.0; self.codebook_size],
            xq: vec![0; blocks(d) * QK],
            xd: vec![0.0; blocks(d)],
            sum_sem: vec![0.0; max_frames * d],
            sum_ac: vec![0.0; max_frames * d],
            tmp: vec![0.0; max_frames * h],
            qs: QScratch::new(max_frames, h.max(d)),
            // one per part: a pool cuts a job into at most four parts per thread
            slots: (0..4 * threads.max(1)).map(|_| AtomicU64::new(0)).collect(),
            max_frames,
        }
    }

    /// Projects `latents` (`[f, hidden]`) into the group's space (`out`: `[f, dim]`).
    fn project_in(
        &self,
        k: &Kernels,
        pool: &Pool,
        g: &Group,
        x: &[f32],
        out: &mut [f32],
        qs: &mut QScratch,
    ) {
        match &g.input_proj {
            Some(p) => matmul(k, pool, &p.mat(), x, out, qs),
            None => out.copy_from_slice(x),
        }
    }

    /// Codes of `n_q` levels for every frame of `latents` (`[frames, hidden]`), as
    /// `[n_q][frames]`, the frames split over rayon's pool. `n_q` must be checked.
    pub fn encode_batch(
        &self,
        k: &Kernels,
        pool: &Pool,
        latents: &[f32],
        n_q: usize,
    ) -> Vec<Vec<u32>> {
        let (h, d) = (self.hidden, self.dim);
        let frames = latents.len() / h;
        let ns = self.num_semantic();
        let mut codes_t = vec![0u32; frames * n_q];
        let mut qs = QScratch::new(frames, h);
        for (g, first, levels) in [(&self.semantic, 0, ns), (&self.acoustic, ns, n_q - ns)] {
            if levels == 0 {
                continue;
            }
            let mut resid = vec![0f32; frames * d];
            self.project_in(k, pool, g, latents, &mut resid, &mut qs);
            resid
                .par_chunks_mut(BATCH_BLOCK * d)
                .zip(codes_t.par_chunks_mut(BATCH_BLOCK * n_q))
                .for_each(|(r, c)| {
                    let nf = r.len() / d;
                    let mut dots = vec![0f32; nf * self.codebook_size];
                    for (l, book) in g.books[..levels].iter().enumerate() {
                        matmul_rows(k, &book.mat(), 0, book.size, Act::F32(r), nf, &mut dots);
                        for (t, row) in dots.chunks_exact(book.size).enumerate() {
                            let (_, j) = book.argmin(0, row);
                            c[t * n_q + first + l] = j as u32;
                            for (rv, e) in r[t * d..(t + 1) * d].iter_mut().zip(book.codeword(j)) {
                                *rv -= e;
                            }
                        }
                    }
                });
        }
        (0..n_q)
            .map(|q| (0..frames).map(|f| codes_t[f * n_q + q]).collect())
            .collect()
    }

    /// Codes of `n_q` levels (`codes`, `n_q` long) for one latent frame (`hidden` long), each
    /// level's codebook rows split over `pool` when large enough. Allocates nothing.
    pub fn encode_frame(
        &self,
        k: &Kernels,
        pool: &Pool,
        latent: &[f32],
        codes: &mut [u32],
        sc: &mut RvqScratch,
    ) {
        let d = self.dim;
        let n_q = codes.len();
        let ns = self.num_semantic();
        for (g, first, levels) in [(&self.semantic, 0, ns), (&self.acoustic, ns, n_q - ns)] {
            if levels == 0 {
                continue;
            }
            let r = &mut sc.resid[..d];
            self.project_in(k, pool, g, latent, r, &mut sc.qs);
            for (l, book) in g.books[..levels].iter().enumerate() {
                k.quantize_q8(r, &mut sc.xq, &mut sc.xd);
                let x = Query {
                    x: r,
                    xq: &sc.xq,
                    xd: &sc.xd,
                    norm: l2(r.iter().map(|&v| v as f64)),
                    qerr: l2(sc
                        .xq
                        .iter()
                        .zip(r.iter())
                        .enumerate()
                        .map(|(i, (&q, &v))| v as f64 - q as f64 * sc.xd[i / QK] as f64)),
                };
                let j = self.nearest(k, pool, book, &x, &mut sc.dots, &sc.slots);
                codes[first + l] = j as u32;
                for (rv, e) in r.iter_mut().zip(book.codeword(j)) {
                    *rv -= e;
                }
            }
        }
    }

    /// Index of the codeword of `book` nearest to `x`.
    fn nearest(
        &self,
        k: &Kernels,
        pool: &Pool,
        book: &Codebook,
        x: &Query,
        dots: &mut [f32],
        slots: &[AtomicU64],
    ) -> usize {
        let (size, d) = (book.size, book.dim);
        let dots = &mut dots[..size];
        let parts = pool.parts_for(size.div_ceil(16), 1).min(slots.len());
        if parts < 2 || size * d < self.cutover {
            return book.search(k, 0, size, x, dots).1;
        }
        let dp = SyncPtr(dots.as_mut_ptr());
        pool.run(parts, &|part| {
            let rows = Pool::split(size, part, parts, 16);
            let n = rows.len();
            let best = if n == 0 {
                (f32::INFINITY, size)
            } else {
                // SAFETY: this part alone touches dots[rows], and dots holds `size` values.
                let mine = unsafe { std::slice::from_raw_parts_mut(dp.get().add(rows.start), n) };
                book.search(k, rows.start, rows.end, x, mine)
            };
            slots[part].store(pack(best.0, best.1), Ordering::Relaxed);
        });
        let mut best = (f32::INFINITY, 0usize);
        let mut first = true;
        for s in &slots[..parts] {
            let (score, idx) = unpack(s.load(Ordering::Relaxed));
            if idx < size && (first || score < best.0) {
                best = (score, idx);
                first = false;
            }
        }
        best.1
    }

    /// Dequantizes `nf` frames of `n_rows` codebooks (1 to `num_quantizers`; `code(q, f)` is
    /// the code of codebook `q` at frame `f`, checked below the codebook size) into `out`
    /// (`[nf, hidden]`).
    #[allow(clippy::too_many_arguments)]
    pub fn decode(
        &self,
        k: &Kernels,
        pool: &Pool,
        n_rows: usize,
        code: impl Fn(usize, usize) -> u32,
        nf: usize,
        out: &mut [f32],
        sc: &mut RvqScratch,
    ) {
        let (h, d) = (self.hidden, self.dim);
        assert!(
            nf <= sc.max_frames,
            "RVQ decode: {nf} frames, scratch sized for {}",
            sc.max_frames
        );
        let ns = self.num_semantic().min(n_rows);
        let out = &mut out[..nf * h];
        let sum_into = |buf: &mut [f32], levels: std::ops::Range<usize>| {
            buf.fill(0.0);
            for q in levels {
                let book = self.codebook(q);
                for (f, acc) in buf.chunks_exact_mut(d).enumerate() {
                    for (a, e) in acc.iter_mut().zip(book.codeword(code(q, f) as usize)) {
                        *a += e;
                    }
                }
            }
        };
        let sem = &mut sc.sum_sem[..nf * d];
        sum_into(sem, 0..ns);
        match &self.semantic.output_proj {
            Some(p) => matmul(k, pool, &p.mat(), sem, out, &mut sc.qs),
            None => out.copy_from_slice(sem),
        }
        if n_rows > ns {
            let ac = &mut sc.sum_ac[..nf * d];
            sum_into(ac, ns..n_rows);
            let tmp = &mut sc.tmp[..nf * h];
            match &self.acoustic.output_proj {
                Some(p) => matmul(k, pool, &p.mat(), ac, tmp, &mut sc.qs),
                None => tmp.copy_from_slice(ac),
            }
            for (o, t) in out.iter_mut().zip(tmp.iter()) {
                *o += t;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::kernels::test_rand::rand_vec;

    /// The Q8 pre-searched result equals the plain f32 search, including near-ties: codewords
    /// that differ from another by less than the Q8 error, and queries sitting on them.
    #[test]
    fn q8_pre_search_finds_the_f32_nearest() {
        let k = Kernels::get();
        let (size, dim) = (300, 40); // dim not a whole number of Q8 blocks
        let mut sum = rand_vec(size * dim, 1);
        // rows 1..20 are tiny perturbations of row 0: nearly tied candidates
        for j in 1..20 {
            for i in 0..dim {
                sum[j * dim + i] = sum[i] * (1.0 + 1e-4 * j as f32 * ((i % 3) as f32 - 1.0));
            }
        }
        let usage: Vec<f32> = (0..size).map(|j| 0.5 + (j % 7) as f32).collect();
        let book = Codebook::from_ema(&sum, &usage, dim);
        let nb = blocks(dim);
        let (mut xq, mut xd) = (vec![0i8; nb * QK], vec![0f32; nb]);
        let mut dots = vec![0f32; size];
        let mut rescored_few = false;
        for case in 0..400u64 {
            let mut x = rand_vec(dim, case + 10);
            if case % 2 == 0 {
                // on or near a codeword, often one of the near-tied group
                let j = (case as usize * 7) % 25;
                let scale = 1.0 + (case % 5) as f32 * 1e-3;
                for (xv, c) in x.iter_mut().zip(book.codeword(j)) {
                    *xv = *xv * 1e-3 + c * scale;
                }
            }
            matmul_rows(k, &book.mat(), 0, size, Act::F32(&x), 1, &mut dots);
            let want = book.argmin(0, &dots);
            k.quantize_q8(&x, &mut xq, &mut xd);
            let q = Query {
                x: &x,
                xq: &xq,
                xd: &xd,
                norm: l2(x.iter().map(|&v| v as f64)),
                qerr: l2(xq
                    .iter()
                    .zip(&x)
                    .enumerate()
                    .map(|(i, (&a, &v))| v as f64 - a as f64 * xd[i / QK] as f64)),
            };
            let got = book.search(k, 0, size, &q, &mut dots);
            assert_eq!(got.1, want.1, "case {case}");
            assert_eq!(got.0.to_bits(), want.0.to_bits(), "case {case}: score");
            // a sub-range search (whole panels) is the sub-range argmin
            let (lo, hi) = (40, 208);
            matmul_rows(
                k,
                &book.mat(),
                lo,
                hi,
                Act::F32(&x),
                1,
                &mut dots[..hi - lo],
            );
            let want = book.argmin(lo, &dots[..hi - lo]);
            assert_eq!(book.search(k, lo, hi, &q, &mut dots), want, "case {case}");
            // the pre-search must actually prune (otherwise it only costs time)
            let low_count = dots[..hi - lo].iter().filter(|&&v| v <= want.0).count();
            rescored_few |= low_count < (hi - lo) / 4;
        }
        assert!(rescored_few, "the Q8 bound never pruned anything");
    }
}
