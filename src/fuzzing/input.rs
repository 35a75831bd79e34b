//! Reading a fuzz case from the fuzzer's bytes.

/// The fuzzer's bytes, taken from the front. Once they run out every read gives zeros, so
/// any input at all is a case: the fuzzer never wastes a run on a rejected one.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// The case in `data`.
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    /// The next byte.
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next two bytes, big-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    /// The next four bytes, big-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Everything not read yet.
    pub fn rest(self) -> &'a [u8] {
        self.data
    }
}

/// A small generator (splitmix64) for the many choices a target derives from a few bytes of
/// seed — how a stream is cut into reads, how fast the peer reads — so that the fuzzer
/// explores them by mutating the seed while the rest of its bytes stay the stream itself.
pub struct Rng(u64);

impl Rng {
    /// A generator whose choices follow from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A size in `1..=max`, mostly small: cuts of one to a few bytes find the boundary
    /// cases, the occasional large one the bulk paths.
    pub fn size(&mut self, max: usize) -> usize {
        let cap = match self.below(8) {
            0..=3 => 4,
            4..=6 => 64,
            _ => max,
        };
        1 + self.below(cap.min(max).max(1))
    }
}
