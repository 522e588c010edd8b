//! What a conversion did: one record per tensor, and a summary (counts per format, bytes
//! before/after, SNR statistics), both printable.

use super::policy::Target;
use crate::weights::Dtype;
use std::collections::BTreeMap;
use std::fmt;

/// Signal and noise energies accumulated over a tensor, row by row (the same quantity as
/// [`crate::kernels::q8::snr_db`] over the whole tensor, without holding it in memory).
#[derive(Clone, Copy, Debug, Default)]
pub struct SnrAcc {
    signal: f64,
    noise: f64,
}

impl SnrAcc {
    pub fn add(&mut self, x: &[f32], y: &[f32]) {
        for (a, b) in x.iter().zip(y) {
            let (a, b) = (*a as f64, *b as f64);
            self.signal += a * a;
            self.noise += (a - b) * (a - b);
        }
    }

    /// Decibels (infinite when exact).
    pub fn db(&self) -> f64 {
        if self.noise == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (self.signal / self.noise).log10()
        }
    }
}

/// One converted tensor.
#[derive(Clone, Debug)]
pub struct TensorReport {
    pub name: String,
    pub source_dtype: Dtype,
    pub shape: Vec<usize>,
    pub target: Target,
    /// Reconstruction SNR for lossy conversions (Q8, F32/BF16 -> F16).
    pub snr_db: Option<f64>,
    pub bytes_in: usize,
    pub bytes_out: usize,
}

impl fmt::Display for TensorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}  {:?}{:?} -> {}",
            self.name,
            self.source_dtype,
            self.shape,
            self.target.name()
        )?;
        if let Some(s) = self.snr_db {
            write!(f, "  SNR {s:.1} dB")?;
        }
        Ok(())
    }
}

/// The whole conversion.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub tensors: Vec<TensorReport>,
    /// Bytes of tensor data read and written.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Other files copied along (file names).
    pub copied: Vec<String>,
}

impl Summary {
    /// Tensors per output format.
    pub fn counts(&self) -> BTreeMap<Target, usize> {
        let mut m = BTreeMap::new();
        for t in &self.tensors {
            *m.entry(t.target).or_insert(0) += 1;
        }
        m
    }

    /// Tensors per output format name, in the order of [`Target`] (the packed arrangements
    /// of one format counted together).
    pub fn counts_by_name(&self) -> Vec<(&'static str, usize)> {
        let mut v: Vec<(&'static str, usize)> = Vec::new();
        for (t, n) in self.counts() {
            match v.iter_mut().find(|(name, _)| *name == t.name()) {
                Some((_, m)) => *m += n,
                None => v.push((t.name(), n)),
            }
        }
        v
    }

    /// (min, median) SNR of the tensors converted to the format named `name`, if any were lossy.
    pub fn snr_stats(&self, name: &str) -> Option<(f64, f64)> {
        let mut v: Vec<f64> = self
            .tensors
            .iter()
            .filter(|t| t.target.name() == name)
            .filter_map(|t| t.snr_db)
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some((v[0], v[v.len() / 2]))
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let by_name = self.counts_by_name();
        let counts: Vec<String> = by_name.iter().map(|(t, n)| format!("{n} {t}")).collect();
        writeln!(f, "{} tensors: {}", self.tensors.len(), counts.join(", "))?;
        let mb = |b: u64| b as f64 / (1 << 20) as f64;
        write!(
            f,
            "tensor data: {:.1} MiB -> {:.1} MiB",
            mb(self.bytes_before),
            mb(self.bytes_after)
        )?;
        if self.bytes_before > 0 {
            write!(
                f,
                " ({:.0}%)",
                100.0 * self.bytes_after as f64 / self.bytes_before as f64
            )?;
        }
        for (name, _) in &by_name {
            if let Some((min, med)) = self.snr_stats(name) {
                write!(f, "\n{name} SNR: min {min:.1} dB, median {med:.1} dB")?;
            }
        }
        if !self.copied.is_empty() {
            write!(f, "\ncopied: {}", self.copied.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::q8::snr_db;

    #[test]
    fn row_accumulation_equals_whole_tensor_snr() {
        let x: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin()).collect();
        let y: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, v)| v + (i % 7) as f32 * 1e-3)
            .collect();
        let mut acc = SnrAcc::default();
        for (a, b) in x.chunks(30).zip(y.chunks(30)) {
            acc.add(a, b);
        }
        assert!((acc.db() - snr_db(&x, &y)).abs() < 1e-9);
        let mut exact = SnrAcc::default();
        exact.add(&x, &x);
        assert_eq!(exact.db(), f64::INFINITY);
    }
}
