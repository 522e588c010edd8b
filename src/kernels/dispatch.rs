//! Kernel-set selection: detect the CPU once, pick the fastest set it supports, or the one named
//! by `EDGECSM_KERNELS` (for tests and for pinning a deployment).

use super::q8::{QK, blocks};
use super::scalar;
use crate::{Error, Result};
use half::f16;
use std::sync::OnceLock;

/// The kernel sets this build knows about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelSet {
    /// Portable Rust, the reference.
    Scalar,
    /// x86_64 AVX2 + FMA + F16C.
    Avx2,
    /// aarch64 NEON (ARMv8.0: Raspberry Pi 4).
    Neon,
    /// aarch64 NEON with the `sdot` dot-product instruction (ARMv8.2: Pi 5, Jetson Orin).
    NeonDotprod,
}

impl KernelSet {
    pub const ALL: [KernelSet; 4] = [
        KernelSet::Scalar,
        KernelSet::Avx2,
        KernelSet::Neon,
        KernelSet::NeonDotprod,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KernelSet::Scalar => "scalar",
            KernelSet::Avx2 => "avx2",
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
        [KernelSet::NeonDotprod, KernelSet::Neon, KernelSet::Avx2]
            .into_iter()
            .find(|k| k.supported())
            .unwrap_or(KernelSet::Scalar)
    }

    /// Every set this CPU supports (the scalar one first).
    pub fn available() -> Vec<KernelSet> {
        Self::ALL.into_iter().filter(|k| k.supported()).collect()
    }
}

type GemmF32 = unsafe fn(&[f32], &[f32], usize, usize, usize, *mut f32, usize);
type GemmF16 = unsafe fn(&[f16], &[f32], usize, usize, usize, *mut f32, usize);
type GemmQ8 = unsafe fn(&[i8], &[f16], &[i8], &[f32], usize, usize, usize, *mut f32, usize);
type QuantQ8 = unsafe fn(&[f32], &mut [i8], &mut [f32]);

/// A table of the hot kernels for one [`KernelSet`].
///
/// The function pointers are `unsafe` because a SIMD twin may only run on a CPU with its
/// features; a `Kernels` value is only built by [`Kernels::new`] after that check, so the
/// methods below may call them. The methods also do all bounds checking: the kernels
/// themselves trust their arguments. See [`scalar`] for the shared shape convention.
#[derive(Clone, Copy)]
pub struct Kernels {
    set: KernelSet,
    gemm_f32: GemmF32,
    gemm_f16: GemmF16,
    gemm_q8: GemmQ8,
    quant_q8: QuantQ8,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kernels({})", self.set.name())
    }
}

static SELECTED: OnceLock<Kernels> = OnceLock::new();

/// Panics unless an output of `n` rows of stride `ldy` with `rows` used columns fits in `len`.
fn check_out(len: usize, rows: usize, n: usize, ldy: usize) {
    if n > 0 && rows > 0 {
        assert!(ldy >= rows, "gemm: output stride {ldy} < rows {rows}");
        assert!(len >= (n - 1) * ldy + rows, "gemm: output too short");
    }
}

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
        Ok(match set {
            KernelSet::Scalar => Kernels {
                set,
                gemm_f32: scalar::gemm_f32,
                gemm_f16: scalar::gemm_f16,
                gemm_q8: scalar::gemm_q8,
                quant_q8: scalar::quantize_q8,
            },
            #[cfg(target_arch = "x86_64")]
            KernelSet::Avx2 => Kernels {
                set,
                gemm_f32: super::x86::gemm_f32,
                gemm_f16: super::x86::gemm_f16,
                gemm_q8: super::x86::gemm_q8,
                quant_q8: super::x86::quantize_q8,
            },
            #[cfg(target_arch = "aarch64")]
            KernelSet::Neon => Kernels {
                set,
                gemm_f32: super::neon::gemm_f32,
                gemm_f16: super::neon::gemm_f16,
                gemm_q8: super::neon::gemm_q8,
                quant_q8: super::neon::quantize_q8,
            },
            #[cfg(target_arch = "aarch64")]
            KernelSet::NeonDotprod => Kernels {
                set,
                gemm_f32: super::neon::gemm_f32,
                gemm_f16: super::neon::gemm_f16,
                gemm_q8: super::neon::gemm_q8_sdot,
                quant_q8: super::neon::quantize_q8,
            },
            #[allow(unreachable_patterns)]
            _ => unreachable!("supported() is false for sets of other architectures"),
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

    /// The process-wide kernel set (see [`Kernels::init`]).
    pub fn get() -> &'static Kernels {
        match Kernels::init() {
            Ok(k) => k,
            Err(e) => panic!("{e}"),
        }
    }

    pub fn set(&self) -> KernelSet {
        self.set
    }

    /// `y[t * ldy + r] = dot(w[r], x[t])`: `rows` x `cols` f32 weights, `n` tokens.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_f32(
        &self,
        w: &[f32],
        x: &[f32],
        rows: usize,
        cols: usize,
        n: usize,
        y: &mut [f32],
        ldy: usize,
    ) {
        check_out(y.len(), rows, n, ldy);
        // SAFETY: output bounds checked above; the rest by gemm_f32_raw.
        unsafe { self.gemm_f32_raw(w, x, rows, cols, n, y.as_mut_ptr(), ldy) }
    }

    /// [`Kernels::gemm_f32`] writing through a raw pointer (for threads sharing an output).
    ///
    /// # Safety
    /// `y` valid for writes at `t * ldy + r`, `t < n`, `r < rows`, and no one else accesses
    /// those elements during the call.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemm_f32_raw(
        &self,
        w: &[f32],
        x: &[f32],
        rows: usize,
        cols: usize,
        n: usize,
        y: *mut f32,
        ldy: usize,
    ) {
        assert_eq!(w.len(), rows * cols, "gemm f32: weight length");
        assert_eq!(x.len(), n * cols, "gemm f32: activation length");
        // SAFETY: the table was built for a CPU with this set's features; inputs checked
        // above, output by the caller.
        unsafe { (self.gemm_f32)(w, x, rows, cols, n, y, ldy) }
    }

    /// As [`Kernels::gemm_f32`] with f16 weights.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_f16(
        &self,
        w: &[f16],
        x: &[f32],
        rows: usize,
        cols: usize,
        n: usize,
        y: &mut [f32],
        ldy: usize,
    ) {
        check_out(y.len(), rows, n, ldy);
        // SAFETY: output bounds checked above; the rest by gemm_f16_raw.
        unsafe { self.gemm_f16_raw(w, x, rows, cols, n, y.as_mut_ptr(), ldy) }
    }

    /// # Safety
    /// As [`Kernels::gemm_f32_raw`].
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemm_f16_raw(
        &self,
        w: &[f16],
        x: &[f32],
        rows: usize,
        cols: usize,
        n: usize,
        y: *mut f32,
        ldy: usize,
    ) {
        assert_eq!(w.len(), rows * cols, "gemm f16: weight length");
        assert_eq!(x.len(), n * cols, "gemm f16: activation length");
        // SAFETY: as in gemm_f32_raw.
        unsafe { (self.gemm_f16)(w, x, rows, cols, n, y, ldy) }
    }

    /// Q8 weights (`rows` x `nb` blocks) times Q8 activations (`n` x `nb` blocks, made by
    /// [`Kernels::quantize_q8`]).
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_q8(
        &self,
        wq: &[i8],
        wd: &[f16],
        xq: &[i8],
        xd: &[f32],
        rows: usize,
        nb: usize,
        n: usize,
        y: &mut [f32],
        ldy: usize,
    ) {
        check_out(y.len(), rows, n, ldy);
        // SAFETY: output bounds checked above; the rest by gemm_q8_raw.
        unsafe { self.gemm_q8_raw(wq, wd, xq, xd, rows, nb, n, y.as_mut_ptr(), ldy) }
    }

    /// # Safety
    /// As [`Kernels::gemm_f32_raw`].
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemm_q8_raw(
        &self,
        wq: &[i8],
        wd: &[f16],
        xq: &[i8],
        xd: &[f32],
        rows: usize,
        nb: usize,
        n: usize,
        y: *mut f32,
        ldy: usize,
    ) {
        assert_eq!(wq.len(), rows * nb * QK, "gemm q8: weight length");
        assert_eq!(wd.len(), rows * nb, "gemm q8: scale length");
        assert_eq!(xq.len(), n * nb * QK, "gemm q8: activation length");
        assert_eq!(xd.len(), n * nb, "gemm q8: activation scale length");
        // SAFETY: as in gemm_f32_raw.
        unsafe { (self.gemm_q8)(wq, wd, xq, xd, rows, nb, n, y, ldy) }
    }

    /// Quantizes one activation vector `x` into `blocks(x.len())` Q8 blocks.
    pub fn quantize_q8(&self, x: &[f32], xq: &mut [i8], xd: &mut [f32]) {
        let nb = blocks(x.len());
        assert_eq!(xd.len(), nb, "q8 quantize: scale length");
        assert_eq!(xq.len(), nb * QK, "q8 quantize: int8 length");
        // SAFETY: the table was built for a CPU with this set's features; lengths checked above.
        unsafe { (self.quant_q8)(x, xq, xd) }
    }
}
