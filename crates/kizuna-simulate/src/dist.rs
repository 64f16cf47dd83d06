//! Small, dependency-free random distributions on top of `rand::Rng` (we avoid `rand_distr` to keep the
//! dependency set to the workspace's). All functions are deterministic given the RNG state.

use rand::Rng;

/// SplitMix64 finaliser: a good 64-bit mixing function.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Derives an independent RNG seed for `(seed, stream, index)`.
pub(crate) fn mix(seed: u64, stream: u64, index: u64) -> u64 {
    splitmix64(
        splitmix64(seed ^ stream.wrapping_mul(0xD6E8_FEB8_6659_FD93)) ^ index.wrapping_mul(0xA076_1D64_78BD_642F),
    )
}

/// Uniform in [0, 1).
#[inline]
pub(crate) fn unit<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    rng.random::<f64>()
}

/// Uniform in [lo, hi).
#[inline]
pub(crate) fn uniform<R: Rng + ?Sized>(rng: &mut R, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * unit(rng)
}

#[inline]
pub(crate) fn chance<R: Rng + ?Sized>(rng: &mut R, p: f64) -> bool {
    unit(rng) < p
}

/// Uniform index in `0..n`; `n` must be > 0 (returns 0 for n == 0).
#[inline]
pub(crate) fn index<R: Rng + ?Sized>(rng: &mut R, n: usize) -> usize {
    if n <= 1 { 0 } else { rng.random_range(0..n) }
}

#[inline]
pub(crate) fn pick<'a, R: Rng + ?Sized, T>(rng: &mut R, items: &'a [T]) -> &'a T {
    &items[index(rng, items.len())]
}

/// Picks from `(item, weight)` pairs.
pub(crate) fn pick_weighted<'a, R: Rng + ?Sized, T>(rng: &mut R, items: &'a [(T, f64)]) -> &'a T {
    let total: f64 = items.iter().map(|(_, w)| *w).sum();
    let mut x = unit(rng) * total;
    for (item, w) in items {
        if x < *w {
            return item;
        }
        x -= *w;
    }
    &items[items.len() - 1].0
}

/// Standard normal (Box–Muller).
pub(crate) fn normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    let u1 = 1.0 - unit(rng); // (0, 1]
    let u2 = unit(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Log-normal with the given median and log-scale sigma.
pub(crate) fn lognormal<R: Rng + ?Sized>(rng: &mut R, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

/// Exponential with the given mean.
pub(crate) fn exponential<R: Rng + ?Sized>(rng: &mut R, mean: f64) -> f64 {
    -mean * (1.0 - unit(rng)).ln()
}

/// Gamma(shape, scale) via Marsaglia–Tsang; mean = shape * scale.
pub(crate) fn gamma<R: Rng + ?Sized>(rng: &mut R, shape: f64, scale: f64) -> f64 {
    if shape < 1.0 {
        let u = 1.0 - unit(rng);
        return gamma(rng, shape + 1.0, scale) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = normal(rng);
        let v = 1.0 + c * x;
        if v <= 0.0 {
            continue;
        }
        let v = v * v * v;
        let u = unit(rng);
        if u < 1.0 - 0.0331 * x * x * x * x || u.max(f64::MIN_POSITIVE).ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
            return d * v * scale;
        }
    }
}

/// Beta(a, b) as a ratio of gammas; mean = a / (a + b).
pub(crate) fn beta<R: Rng + ?Sized>(rng: &mut R, a: f64, b: f64) -> f64 {
    let x = gamma(rng, a, 1.0);
    let y = gamma(rng, b, 1.0);
    if x + y <= 0.0 { a / (a + b) } else { x / (x + y) }
}

/// Poisson (Knuth for small means, normal approximation above 30).
pub(crate) fn poisson<R: Rng + ?Sized>(rng: &mut R, mean: f64) -> u32 {
    if mean <= 0.0 {
        return 0;
    }
    if mean > 30.0 {
        return (mean + mean.sqrt() * normal(rng)).round().max(0.0) as u32;
    }
    let l = (-mean).exp();
    let mut k = 0;
    let mut p = 1.0;
    loop {
        p *= unit(rng);
        if p <= l {
            return k;
        }
        k += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn mean_of(f: impl FnMut() -> f64, n: usize) -> f64 {
        let mut f = f;
        (0..n).map(|_| f()).sum::<f64>() / n as f64
    }

    #[test]
    fn moments_are_plausible() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let m = mean_of(|| gamma(&mut rng, 0.7, 3.0), 20_000);
        assert!((m - 2.1).abs() < 0.15, "gamma mean {m}");
        let m = mean_of(|| gamma(&mut rng, 4.0, 0.5), 20_000);
        assert!((m - 2.0).abs() < 0.1, "gamma mean {m}");
        let m = mean_of(|| beta(&mut rng, 1.5, 2.5), 20_000);
        assert!((m - 0.375).abs() < 0.02, "beta mean {m}");
        let m = mean_of(|| f64::from(poisson(&mut rng, 2.5)), 20_000);
        assert!((m - 2.5).abs() < 0.1, "poisson mean {m}");
        let m = mean_of(|| exponential(&mut rng, 10.0), 20_000);
        assert!((m - 10.0).abs() < 0.5, "exp mean {m}");
    }

    #[test]
    fn mix_separates_streams() {
        assert_ne!(mix(1, 0, 0), mix(1, 0, 1));
        assert_ne!(mix(1, 0, 0), mix(1, 1, 0));
        assert_ne!(mix(1, 0, 0), mix(2, 0, 0));
        assert_eq!(mix(5, 3, 9), mix(5, 3, 9));
    }
}
