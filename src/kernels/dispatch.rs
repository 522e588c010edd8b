//! Kernel-set selection: detect the CPU once, pick the fastest set it supports, or the one named
//! by `EDGECSM_KERNELS` (for tests and for pinning a deployment).

use super::gemm::{self, GemmKernel};
use super::packed::PackedFormat;
use super::q8::{QK, blocks};
use super::scalar;
use super::vector::{self, VectorOps};
use crate::{Error, Result};
use std::sync::OnceLock;

/// The kernel sets this build knows about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelSet {
    /// Portable Rust, the reference.
    Scalar,
    /// x86_64 AVX2 + FMA + F16C.
    Avx2,
    /// x86_64 AVX2 + AVX-512 (F, VL, DQ) + VNNI: `vpdpbusd`, 512-bit FMAs and 32 registers.
    Avx512Vnni,
    /// x86_64 AVX2 + FMA + F16C + AVX-VNNI (the VEX `vpdpbusd` on 256-bit registers: Intel
    /// cores from Alder Lake on, which may lack AVX-512): the `avx2` set with int8 tiles.
    AvxVnni,
    /// aarch64 NEON (ARMv8.0: Raspberry Pi 4).
    Neon,
    /// aarch64 NEON with the `sdot` dot-product instruction (ARMv8.2: Pi 5, Jetson Orin).
    NeonDotprod,
}

impl KernelSet {
    pub const ALL: [KernelSet; 6] = [
        KernelSet::Scalar,
        KernelSet::Avx2,
        KernelSet::Avx512Vnni,
        KernelSet::AvxVnni,
        KernelSet::Neon,
        KernelSet::NeonDotprod,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KernelSet::Scalar => "scalar",
            KernelSet::Avx2 => "avx2",
            KernelSet::Avx512Vnni => "avx512-vnni",
            KernelSet::AvxVnni => "avx-vnni",
            KernelSet::Neon => "neon",
            KernelSet::NeonDotprod => "neon-dotprod",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|k| k.name()).collect();
                Error::Kernels(format!(
                    "unknown kernel set `{s}` (known: {})",
                    names.join(", ")
                ))
            })
    }

    /// Whether this CPU can run the set.
    pub fn supported(self) -> bool {
        match self {
            KernelSet::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            KernelSet::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            KernelSet::Avx512Vnni => {
                KernelSet::Avx2.supported()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512dq")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "x86_64")]
            KernelSet::AvxVnni => {
                KernelSet::Avx2.supported() && is_x86_feature_detected!("avxvnni")
            }
            #[cfg(target_arch = "aarch64")]
            KernelSet::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(target_arch = "aarch64")]
            KernelSet::NeonDotprod => {
                std::arch::is_aarch64_feature_detected!("neon")
                    && std::arch::is_aarch64_feature_detected!("dotprod")
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The best set this CPU supports.
    pub fn detect() -> Self {
        [
            KernelSet::NeonDotprod,
            KernelSet::Neon,
            KernelSet::Avx512Vnni,
            KernelSet::AvxVnni,
            KernelSet::Avx2,
        ]
        .into_iter()
        .find(|k| k.supported())
        .unwrap_or(KernelSet::Scalar)
    }

    /// The set whose kernels this one uses for the formats it has none of its own for (the
    /// scalar set is everyone's last resort).
    pub fn base(self) -> Option<KernelSet> {
        match self {
            KernelSet::AvxVnni => Some(KernelSet::Avx2),
            _ => None,
        }
    }

    /// Every set this CPU supports (the scalar one first).
    pub fn available() -> Vec<KernelSet> {
        Self::ALL.into_iter().filter(|k| k.supported()).collect()
    }
}

type QuantQ8 = unsafe fn(&[f32], &mut [i8], &mut [f32]);

/// The kernels of one [`KernelSet`]: a [`GemmKernel`] per packed weight format (see
/// [`super::gemm`]) and the activation quantizer.
///
/// The quantizer pointer is `unsafe` because a SIMD twin may only run on a CPU with its
/// features; a `Kernels` value is only built by [`Kernels::new`] after that check, so the
/// methods may call it. The methods also do all bounds checking.
#[derive(Clone, Copy)]
pub struct Kernels {
    set: KernelSet,
    gemm: [&'static GemmKernel; PackedFormat::ALL.len()],
    /// The microkernels for one-token products (the decode step's matrix-vector products).
    gemv: [&'static GemmKernel; PackedFormat::ALL.len()],
    quant_q8: QuantQ8,
    vector: VectorOps,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kernels({})", self.set.name())
    }
}

static SELECTED: OnceLock<Kernels> = OnceLock::new();

impl Kernels {
    /// The table for `set`, or an error if this CPU (or this build) cannot run it.
    pub fn new(set: KernelSet) -> Result<Self> {
        if !set.supported() {
            return Err(Error::Kernels(format!(
                "kernel set `{}` is not supported by this CPU (supported: {})",
                set.name(),
                KernelSet::available()
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let quant_q8: QuantQ8 = match set {
            KernelSet::Scalar => scalar::quantize_q8,
            #[cfg(target_arch = "x86_64")]
            KernelSet::Avx2 | KernelSet::Avx512Vnni | KernelSet::AvxVnni => super::x86::quantize_q8,
            #[cfg(target_arch = "aarch64")]
            KernelSet::Neon | KernelSet::NeonDotprod => super::neon::quantize_q8,
            #[allow(unreachable_patterns)]
            _ => unreachable!("supported() is false for sets of other architectures"),
        };
        let vector = match set {
            #[cfg(target_arch = "x86_64")]
            KernelSet::Avx2 | KernelSet::AvxVnni => vector::AVX2,
            #[cfg(target_arch = "x86_64")]
            KernelSet::Avx512Vnni => vector::AVX512,
            _ => vector::PORTABLE,
        };
        // One token: the AVX-512 set's tiles (16 rows for Q8P/Q4P, 32 for F32P/F16P) stream
        // their weights slower than the AVX2 set's (8 and 16 rows): `cargo bench --bench
        // kernels` with each set forced, Q8 2048x2048 from DRAM at 24.6 against 36.5 GB/s, F32
        // 525 against 454 us; the csm-1b q8 frame 173-183 against 137-143 ms. Many tokens are
        // faster on its tiles. So its one-token products use the AVX2 microkernels, which this
        // CPU also runs. (The `avx-vnni` set's one-panel `vpdpbusd` tiles, on a CPU with both,
        // measured at parity with AVX2's for one token: csm-1b q8 frames within the noise.)
        let gemv_set = match set {
            KernelSet::Avx512Vnni => KernelSet::Avx2,
            s => s,
        };
        Ok(Kernels {
            set,
            gemm: PackedFormat::ALL.map(|f| gemm::select(set, f)),
            gemv: PackedFormat::ALL.map(|f| gemm::select(gemv_set, f)),
            quant_q8,
            vector,
        })
    }

    /// Chooses the process-wide kernel set once: `EDGECSM_KERNELS` if set, else detection.
    /// Later calls return the first choice. Call it at start-up to report a bad override as an
    /// error instead of a panic in [`Kernels::get`].
    pub fn init() -> Result<&'static Kernels> {
        if let Some(k) = SELECTED.get() {
            return Ok(k);
        }
        let set = match std::env::var("EDGECSM_KERNELS") {
            Ok(s) if !s.is_empty() => KernelSet::parse(&s)?,
            _ => KernelSet::detect(),
        };
        let k = Kernels::new(set)?;
        Ok(SELECTED.get_or_init(|| k))
    }

    /// The process-wide kernel set (see [`Kernels::init`]), for tests and benchmarks: it
    /// panics on a bad `EDGECSM_KERNELS`. The models' constructors call [`Kernels::init`] and
    /// return its error instead.
    pub fn get() -> &'static Kernels {
        match Kernels::init() {
            Ok(k) => k,
            Err(e) => panic!("{e}"),
        }
    }

    pub fn set(&self) -> KernelSet {
        self.set
    }

    /// The microkernel this set uses for `format` in products of several tokens.
    pub fn gemm(&self, format: PackedFormat) -> &'static GemmKernel {
        self.gemm[format as usize]
    }

    /// The microkernel for a product of `n` tokens of `format` (see [`Kernels::new`]: on the
    /// AVX-512 set one token takes the AVX2 microkernel).
    pub fn gemm_for(&self, format: PackedFormat, n: usize) -> &'static GemmKernel {
        if n == 1 {
            self.gemv[format as usize]
        } else {
            self.gemm[format as usize]
        }
    }

    /// Quantizes one activation vector `x` into `blocks(x.len())` Q8 blocks.
    pub fn quantize_q8(&self, x: &[f32], xq: &mut [i8], xd: &mut [f32]) {
        let nb = blocks(x.len());
        assert_eq!(xd.len(), nb, "q8 quantize: scale length");
        assert_eq!(xq.len(), nb * QK, "q8 quantize: int8 length");
        // SAFETY: the table was built for a CPU with this set's features; lengths checked above.
        unsafe { (self.quant_q8)(x, xq, xd) }
    }

    /// ELU (alpha 1) in place ([`super::act::elu`]).
    pub fn elu(&self, x: &mut [f32]) {
        // SAFETY: the table was built for a CPU with this set's features.
        unsafe { (self.vector.elu)(x) }
    }

    /// Exact (erf) GELU in place ([`super::act::gelu`]).
    pub fn gelu(&self, x: &mut [f32]) {
        // SAFETY: the table was built for a CPU with this set's features.
        unsafe { (self.vector.gelu)(x) }
    }

    /// Softmax of one row in place ([`super::act::softmax`]).
    pub fn softmax(&self, x: &mut [f32]) {
        // SAFETY: the table was built for a CPU with this set's features.
        unsafe { (self.vector.softmax)(x) }
    }

    /// `gate = silu(gate) * up` ([`super::act::silu_mul`]; panics if the lengths differ).
    pub fn silu_mul(&self, gate: &mut [f32], up: &[f32]) {
        // SAFETY: the table was built for a CPU with this set's features.
        unsafe { (self.vector.silu_mul)(gate, up) }
    }

    /// `scores[r * len + s] = dot(q[r], keys[s * ld..][..hd]) * scale` for `q.len()` (1 to 4)
    /// query rows of `hd` values and `len = scores.len() / q.len()` slots (panics if `keys` is
    /// too short or the block too large).
    pub fn attention_scores(
        &self,
        q: &[&[f32]],
        keys: &[f32],
        ld: usize,
        scale: f32,
        scores: &mut [f32],
    ) {
        // SAFETY: the table was built for a CPU with this set's features.
        unsafe { (self.vector.scores)(q, keys, ld, scale, scores) }
    }

    /// `outs[r] = sum_s p[r * len + s] * values[s * ld..][..hd]` for `outs.len()` (1 to 4) rows
    /// of `hd` values and `len = p.len() / outs.len()` slots (panics if `values` is too short or
    /// the block too large).
    pub fn weighted_sum(&self, p: &[f32], values: &[f32], ld: usize, outs: &mut [&mut [f32]]) {
        // SAFETY: the table was built for a CPU with this set's features.
        unsafe { (self.vector.weighted_sum)(p, values, ld, outs) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_token_products_take_the_measured_faster_tiles() {
        for set in KernelSet::available() {
            let k = Kernels::new(set).unwrap();
            for f in PackedFormat::ALL {
                let (one, many) = (k.gemm_for(f, 1), k.gemm_for(f, 2));
                // many tokens: the set's own kernel, else its base set's (avx-vnni's floats)
                assert_eq!(many.format, f);
                assert!(
                    many.set == set || Some(many.set) == set.base(),
                    "{set:?} {f:?}: {}",
                    many.name
                );
                let want = if set == KernelSet::Avx512Vnni {
                    gemm::select(KernelSet::Avx2, f)
                } else {
                    many
                };
                assert_eq!(one.name, want.name, "{set:?} {f:?}");
            }
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx_vnni_has_its_own_integer_tiles_and_the_avx2_float_ones() {
        use PackedFormat::*;
        let owner = |f| gemm::select(KernelSet::AvxVnni, f).set;
        assert_eq!(owner(Q8P), KernelSet::AvxVnni);
        assert_eq!(owner(Q4P), KernelSet::AvxVnni);
        assert_eq!(owner(F32P), KernelSet::Avx2);
        assert_eq!(owner(F16P), KernelSet::Avx2);
        assert_eq!(KernelSet::parse("avx-vnni").unwrap(), KernelSet::AvxVnni);
    }
}
