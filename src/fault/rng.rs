//! The random choices of faults: SplitMix64, small, fast and seedable.
//!
//! Every loop has its own generator, seeded from `--fault-seed` and the loop's number, and
//! every faulted connection its own, seeded from its loop's at accept. So a run with the same
//! seed and the same `--threads` makes the same choices for the same connections in the same
//! order, however their messages interleave with other connections'. Not for cryptography.

use super::spec::CERTAIN;

/// A SplitMix64 generator (Steele, Lea and Flood, 2014): a 64-bit counter passed through a
/// mixing function. One word of state; every seed, zero included, gives a full-period stream.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The generator of loop `index` under `seed`: distinct loops get distinct streams.
    pub fn for_loop(seed: u64, index: usize) -> Rng {
        let mut mix = Rng(seed ^ (index as u64).wrapping_mul(0xA076_1D64_78BD_642F));
        Rng(mix.next_u64())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`0` when `n` is 0). Lemire's multiply-shift; its bias, below
    /// `n / 2^64`, does not matter for faults.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `ppm` in a million. A certain or impossible choice draws no
    /// number, so adding `p:100%` to a spec does not shift the choices of the others.
    pub fn chance(&mut self, ppm: u32) -> bool {
        match ppm {
            0 => false,
            CERTAIN.. => true,
            _ => self.below(u64::from(CERTAIN)) < u64::from(ppm),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same seed gives the same stream; different loops, different ones.
    #[test]
    fn seeded_streams_repeat() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::for_loop(7, 0);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::for_loop(7, 0);
                move |_| r.next_u64()
            })
            .collect();
        let c = Rng::for_loop(7, 1).next_u64();
        assert_eq!(a, b);
        assert_ne!(a[0], c);
    }

    /// A chance of p in a million comes up about p times in a million draws.
    #[test]
    fn chance_follows_the_percentage() {
        let mut r = Rng::new(1);
        let hits = (0..100_000).filter(|_| r.chance(100_000)).count();
        assert!((9_000..11_000).contains(&hits), "{hits} of 100000 at 10%");
        assert!(!r.chance(0));
        assert!(r.chance(CERTAIN));
        assert!((0..1000).all(|_| r.below(10) < 10));
    }
}
