//! f32 buffers whose first value is 64-byte aligned: a cache line, and one AVX-512
//! vector, per 16 values.
//!
//! The allocator aligns a `Vec<f32>` to 16 bytes at best, so a kernel's vector loads of
//! its packed weights or scratch split cache lines at random, depending on where the
//! buffer landed: two compilations of resnet18 ran 2–5% apart (Intel Xeon, AVX-512) with
//! 5 or 2 of their 20 large buffers 64-byte aligned.

use std::ops::{Deref, DerefMut};

/// 16 values, one cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A growable f32 buffer aligned to 64 bytes.
#[derive(Clone, Default)]
pub struct AlignedVec {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedVec {
    /// An empty buffer.
    pub const fn new() -> AlignedVec {
        AlignedVec {
            lines: Vec::new(),
            len: 0,
        }
    }

    /// `len` zeros.
    pub fn zeroed(len: usize) -> AlignedVec {
        AlignedVec {
            lines: vec![Line([0.0; 16]); len.div_ceil(16)],
            len,
        }
    }

    /// A copy of `values`.
    pub fn from_slice(values: &[f32]) -> AlignedVec {
        let mut v = AlignedVec::zeroed(values.len());
        v.copy_from_slice(values);
        v
    }

    /// Grows (with `value`) or shrinks to `len` values.
    pub fn resize(&mut self, len: usize, value: f32) {
        let old = self.len;
        self.lines.resize(len.div_ceil(16), Line([0.0; 16]));
        self.len = len;
        if len > old {
            self[old..].fill(value);
        }
    }
}

impl Deref for AlignedVec {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        // SAFETY: the lines are `16 · lines.len() ≥ len` contiguous initialised f32s.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const f32, self.len) }
    }
}

impl DerefMut for AlignedVec {
    fn deref_mut(&mut self) -> &mut [f32] {
        // SAFETY: as `deref`, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr() as *mut f32, self.len) }
    }
}

impl From<Vec<f32>> for AlignedVec {
    fn from(v: Vec<f32>) -> AlignedVec {
        AlignedVec::from_slice(&v)
    }
}

impl std::fmt::Debug for AlignedVec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedVec")
            .field("len", &self.len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::AlignedVec;

    #[test]
    fn values_start_on_a_cache_line_and_survive_resizing() {
        let mut v = AlignedVec::from_slice(&[1.0, 2.0, 3.0]);
        assert_eq!(v.as_ptr() as usize % 64, 0);
        assert_eq!(&v[..], &[1.0, 2.0, 3.0]);
        v.resize(40, 7.0);
        assert_eq!(v.as_ptr() as usize % 64, 0);
        assert_eq!(v.len(), 40);
        assert_eq!(&v[..4], &[1.0, 2.0, 3.0, 7.0]);
        assert!(v[3..].iter().all(|&x| x == 7.0));
        v.resize(2, 0.0);
        assert_eq!(&v[..], &[1.0, 2.0]);
        v.resize(5, 0.0);
        assert_eq!(&v[..], &[1.0, 2.0, 0.0, 0.0, 0.0]);
        assert!(AlignedVec::new().is_empty());
    }
}
