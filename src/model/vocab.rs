//! One token space for every output: special tokens, coordinate bins, then class tokens.
//! Classes come last so that the vocabulary grows by appending rows when a checkpoint is fine-tuned on more classes.

pub const EOS: u32 = 0;
pub const TASK_CLASSIFY: u32 = 1;
pub const TASK_DETECT: u32 = 2;
/// The class of fake boxes added by Pix2Seq sequence augmentation.
pub const NOISE: u32 = 3;
pub const N_SPECIAL: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vocab {
    pub n_bins: usize,
    pub n_classes: usize,
}

impl Vocab {
    pub fn new(n_bins: usize, n_classes: usize) -> Vocab {
        Vocab { n_bins, n_classes }
    }
    pub fn size(&self) -> usize {
        N_SPECIAL as usize + self.n_bins + self.n_classes
    }
    pub fn bin_token(&self, bin: usize) -> u32 {
        N_SPECIAL + bin.min(self.n_bins - 1) as u32
    }
    pub fn first_bin(&self) -> u32 {
        N_SPECIAL
    }
    pub fn class_token(&self, class: usize) -> u32 {
        debug_assert!(class < self.n_classes);
        N_SPECIAL + (self.n_bins + class) as u32
    }
    pub fn first_class(&self) -> u32 {
        N_SPECIAL + self.n_bins as u32
    }
    pub fn token_to_bin(&self, t: u32) -> Option<usize> {
        (t >= N_SPECIAL && t < self.first_class()).then(|| (t - N_SPECIAL) as usize)
    }
    pub fn token_to_class(&self, t: u32) -> Option<usize> {
        let c = t.checked_sub(self.first_class())? as usize;
        (c < self.n_classes).then_some(c)
    }
    /// Quantises a coordinate in input pixels `[0, size]` to a bin.
    pub fn quantize(&self, coord: f32, size: f32) -> usize {
        let x = (coord / size).clamp(0.0, 1.0) * (self.n_bins - 1) as f32;
        x.round() as usize
    }
    /// The input-pixel coordinate a bin stands for.
    pub fn dequantize(&self, bin: usize, size: f32) -> f32 {
        bin as f32 / (self.n_bins - 1) as f32 * size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ranges_do_not_overlap() {
        let v = Vocab::new(64, 3);
        assert_eq!(v.size(), 4 + 64 + 3);
        assert_eq!(v.token_to_bin(v.bin_token(63)), Some(63));
        assert_eq!(v.token_to_bin(v.class_token(0)), None);
        assert_eq!(v.token_to_class(v.class_token(2)), Some(2));
        assert_eq!(v.token_to_class(EOS), None);
        assert_eq!(v.token_to_class(v.first_class() + 3), None);
    }

    #[test]
    fn quantize_round_trips_within_half_a_bin() {
        let v = Vocab::new(64, 1);
        for c in [0.0f32, 1.3, 31.7, 64.0] {
            let back = v.dequantize(v.quantize(c, 64.0), 64.0);
            assert!((back - c).abs() <= 0.5 * 64.0 / 63.0 + 1e-4, "{c} -> {back}");
        }
    }
}
