//! The models' row operations outside the products — ELU, GELU, SwiGLU's `silu * up`, the
//! softmax, and attention's query-key dot products and weighted value sums — as one table per
//! kernel set ([`VectorOps`], reached through [`super::Kernels`]).
//!
//! There is one body per operation, the portable Rust of [`super::act`] and
//! [`super::attention`], written so that a compiler vectorizes it (branch-free, fixed
//! reassociation: independent partial sums, no reliance on fast-math). That body is the scalar
//! reference. The crate is built for the baseline of its target: on aarch64 that includes
//! NEON, so the reference already runs 4 lanes wide; on x86_64 the baseline is SSE2, so the
//! x86 sets compile the same bodies again inside `#[target_feature]` wrappers, 8 lanes wide
//! (AVX2) or 16 (AVX-512) (the attention loops ran at half speed in SSE2 code, a tenth of
//! Mimi's streaming time). Because the bodies fix their order of additions and Rust never
//! fuses a multiply and an add by itself, the twins give the reference's bits exactly
//! (tested below).

use super::act;
use super::attention;

/// `x` in place.
pub(crate) type InPlace = unsafe fn(&mut [f32]);
/// `gate = silu(gate) * up`.
pub(crate) type SiluMul = unsafe fn(&mut [f32], &[f32]);
/// `scores[r * len + s] = dot(q[r], keys[s * ld..]) * scale` for a block of query rows.
pub(crate) type Scores = unsafe fn(&[&[f32]], &[f32], usize, f32, &mut [f32]);
/// `outs[r] = sum_s p[r * len + s] * values[s * ld..]` for a block of rows.
pub(crate) type WeightedSum = unsafe fn(&[f32], &[f32], usize, &mut [&mut [f32]]);

/// One kernel set's row operations. The pointers are `unsafe` because a twin may only run on a
/// CPU with its features; [`super::Kernels::new`] checks them before building the table.
#[derive(Clone, Copy)]
pub(crate) struct VectorOps {
    pub elu: InPlace,
    pub gelu: InPlace,
    pub softmax: InPlace,
    pub silu_mul: SiluMul,
    pub scores: Scores,
    pub weighted_sum: WeightedSum,
}

/// The reference: the bodies as the baseline target compiles them.
pub(crate) const PORTABLE: VectorOps = VectorOps {
    elu: act::elu,
    gelu: act::gelu,
    softmax: act::softmax,
    silu_mul: act::silu_mul,
    scores: attention::block_scores,
    weighted_sum: attention::block_weighted_sum,
};

/// `twins!(module, "features", CONST, "doc")`: the bodies compiled again with `features`
/// enabled, as module `module`, and their table `CONST`.
#[cfg(target_arch = "x86_64")]
macro_rules! twins {
    ($m:ident, $features:literal, $table:ident, $doc:literal) => {
        mod $m {
            // SAFETY (every function here): only reached through the table below, which
            // `Kernels::new` installs for a CPU it has checked has these features; the bodies
            // are safe Rust.
            use super::{act, attention};

            #[target_feature(enable = $features)]
            pub(super) unsafe fn elu(x: &mut [f32]) {
                act::elu(x)
            }

            #[target_feature(enable = $features)]
            pub(super) unsafe fn gelu(x: &mut [f32]) {
                act::gelu(x)
            }

            #[target_feature(enable = $features)]
            pub(super) unsafe fn softmax(x: &mut [f32]) {
                act::softmax(x)
            }

            #[target_feature(enable = $features)]
            pub(super) unsafe fn silu_mul(gate: &mut [f32], up: &[f32]) {
                act::silu_mul(gate, up)
            }

            #[target_feature(enable = $features)]
            pub(super) unsafe fn scores(
                q: &[&[f32]],
                keys: &[f32],
                ld: usize,
                scale: f32,
                s: &mut [f32],
            ) {
                attention::block_scores(q, keys, ld, scale, s)
            }

            #[target_feature(enable = $features)]
            pub(super) unsafe fn weighted_sum(
                p: &[f32],
                values: &[f32],
                ld: usize,
                o: &mut [&mut [f32]],
            ) {
                attention::block_weighted_sum(p, values, ld, o)
            }
        }

        #[doc = $doc]
        pub(crate) const $table: VectorOps = VectorOps {
            elu: $m::elu,
            gelu: $m::gelu,
            softmax: $m::softmax,
            silu_mul: $m::silu_mul,
            scores: $m::scores,
            weighted_sum: $m::weighted_sum,
        };
    };
}

#[cfg(target_arch = "x86_64")]
twins!(avx2, "avx2,fma", AVX2, "The AVX2 set's twins (8 lanes).");
#[cfg(target_arch = "x86_64")]
twins!(
    avx512,
    "avx2,fma,avx512f,avx512vl,avx512dq",
    AVX512,
    "The AVX-512 set's twins (16 lanes)."
);

#[cfg(test)]
mod tests {
    use crate::kernels::test_rand::rand_vec;
    use crate::kernels::{KernelSet, Kernels};

    /// An in-place row operation through a kernel table.
    type Op = fn(&Kernels, &mut [f32]);

    #[test]
    fn every_set_gives_the_reference_bits() {
        let reference = Kernels::new(KernelSet::Scalar).unwrap();
        for set in KernelSet::available() {
            let k = Kernels::new(set).unwrap();
            for n in [1, 7, 8, 33, 250, 1000] {
                let x: Vec<f32> = rand_vec(n, n as u64).iter().map(|v| v * 8.0).collect();
                let up = rand_vec(n, 7 + n as u64);
                let ops: [(&str, Op); 4] = [
                    ("elu", |k, x| k.elu(x)),
                    ("gelu", |k, x| k.gelu(x)),
                    ("softmax", |k, x| k.softmax(x)),
                    ("silu_mul", |k, x| {
                        let up: Vec<f32> = x.iter().map(|v| v * 0.5 - 0.1).collect();
                        k.silu_mul(x, &up)
                    }),
                ];
                for (name, op) in ops {
                    let (mut a, mut b) = (x.clone(), x.clone());
                    op(&reference, &mut a);
                    op(&k, &mut b);
                    let (a, b): (Vec<u32>, Vec<u32>) = (
                        a.iter().map(|v| v.to_bits()).collect(),
                        b.iter().map(|v| v.to_bits()).collect(),
                    );
                    assert_eq!(a, b, "{set:?} {name} n {n}");
                }
                // attention: n slots of a head of width hd inside rows of ld values, blocks
                // of 1 to 4 query rows
                for (hd, ld) in [(64, 128), (20, 24), (3, 5)] {
                    let kv = rand_vec(n * ld, 12);
                    for rows in 1..=4 {
                        let q = rand_vec(rows * hd, 11);
                        let qs: Vec<&[f32]> = q.chunks_exact(hd).collect();
                        let (mut sa, mut sb) = (vec![0f32; rows * n], vec![0f32; rows * n]);
                        reference.attention_scores(&qs, &kv, ld, 0.125, &mut sa);
                        k.attention_scores(&qs, &kv, ld, 0.125, &mut sb);
                        assert_eq!(sa, sb, "{set:?} scores n {n} hd {hd} rows {rows}");
                        let p: Vec<f32> = (0..rows)
                            .flat_map(|_| up.iter().map(|v| if *v < -0.5 { 0.0 } else { *v }))
                            .collect();
                        let (mut oa, mut ob) = (vec![0f32; rows * hd], vec![0f32; rows * hd]);
                        let mut ra: Vec<&mut [f32]> = oa.chunks_exact_mut(hd).collect();
                        let mut rb: Vec<&mut [f32]> = ob.chunks_exact_mut(hd).collect();
                        reference.weighted_sum(&p, &kv, ld, &mut ra);
                        k.weighted_sum(&p, &kv, ld, &mut rb);
                        assert_eq!(oa, ob, "{set:?} weighted sum n {n} hd {hd} rows {rows}");
                    }
                }
            }
        }
    }
}
