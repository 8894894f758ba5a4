//! f32 buffers whose first value is 64-byte aligned: a cache line, and one AVX-512
//! vector, per 16 values.
//!
//! The allocator aligns a `Vec<f32>` to 16 bytes at best, so a kernel's vector loads of
//! its packed weights or scratch split cache lines at random, depending on where the
//! buffer landed: two compilations of resnet18 ran 2–5% apart (Intel Xeon, AVX-512) with
//! 5 or 2 of their 20 large buffers 64-byte aligned.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// f32 values per 64 bytes.
const LINE: usize = 16;

/// A growable f32 buffer whose values start on a 64-byte boundary: a `Vec<f32>` with up to
/// 15 values of slack before them, so that zeroed buffers come from zeroed memory (`calloc`:
/// pages untouched until used) as a `Vec`'s do; an allocation aligned by the allocator is
/// written zero in full (0.15 s of VGG-16's compilation).
#[derive(Default)]
pub struct AlignedVec {
    /// `start` values of slack, then the values: `buf.len() == start + len`.
    buf: Vec<f32>,
    start: usize,
    len: usize,
}

thread_local! {
    /// Each thread's kernel scratch, grown as needed.
    static SCRATCH: RefCell<AlignedVec> = const { RefCell::new(AlignedVec::new()) };
}

/// This thread's scratch of at least `floats` floats, 64-byte aligned, its contents
/// whatever the last kernel left (valid until the next call on this thread).
pub(crate) fn thread_scratch(floats: usize) -> *mut f32 {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        if scratch.len() < floats {
            scratch.resize(floats, 0.0);
        }
        scratch.as_mut_ptr()
    })
}

/// Values to skip from `p` to the next 64-byte boundary.
fn slack(p: *const f32) -> usize {
    (64 - p as usize % 64) % 64 / 4
}

impl AlignedVec {
    /// An empty buffer.
    pub const fn new() -> AlignedVec {
        AlignedVec {
            buf: Vec::new(),
            start: 0,
            len: 0,
        }
    }

    /// An empty buffer with room for `capacity` values.
    pub fn with_capacity(capacity: usize) -> AlignedVec {
        let mut v = AlignedVec::new();
        v.reserve(capacity);
        v
    }

    /// `len` zeros.
    pub fn zeroed(len: usize) -> AlignedVec {
        let mut buf = vec![0f32; len + LINE - 1];
        let start = slack(buf.as_ptr());
        buf.truncate(start + len);
        AlignedVec { buf, start, len }
    }

    /// A copy of `values`.
    pub fn from_slice(values: &[f32]) -> AlignedVec {
        let mut v = AlignedVec::with_capacity(values.len());
        v.buf.extend_from_slice(values);
        v.len = values.len();
        v
    }

    /// Room for `additional` more values without moving them.
    fn reserve(&mut self, additional: usize) {
        if self.buf.capacity() - self.buf.len() >= additional {
            return;
        }
        let capacity = (2 * self.len).max(self.len + additional);
        let mut buf = Vec::with_capacity(capacity + LINE - 1);
        let start = slack(buf.as_ptr());
        buf.resize(start, 0.0);
        buf.extend_from_slice(self);
        *self = AlignedVec {
            buf,
            start,
            len: self.len,
        };
    }

    /// Appends `value`.
    #[inline]
    pub fn push(&mut self, value: f32) {
        if self.buf.len() == self.buf.capacity() {
            self.reserve(1);
        }
        self.buf.push(value);
        self.len += 1;
    }

    /// Grows (with `value`) or shrinks to `len` values.
    pub fn resize(&mut self, len: usize, value: f32) {
        self.reserve(len.saturating_sub(self.len));
        self.buf.resize(self.start + len, value);
        self.len = len;
    }
}

impl Clone for AlignedVec {
    fn clone(&self) -> AlignedVec {
        AlignedVec::from_slice(self)
    }
}

impl Deref for AlignedVec {
    type Target = [f32];
    #[inline]
    fn deref(&self) -> &[f32] {
        &self.buf[self.start..]
    }
}

impl DerefMut for AlignedVec {
    #[inline]
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[self.start..]
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
        let mut p = AlignedVec::with_capacity(3);
        for i in 0..40 {
            p.push(i as f32);
            assert_eq!(p.as_ptr() as usize % 64, 0);
        }
        assert!(p.iter().enumerate().all(|(i, &x)| x == i as f32) && p.len() == 40);
        let z = AlignedVec::zeroed(1000);
        assert_eq!(z.as_ptr() as usize % 64, 0);
        assert!(z.len() == 1000 && z.iter().all(|&x| x == 0.0));
        assert_eq!(&z.clone()[..], &z[..]);
        assert!(AlignedVec::new().is_empty());
    }
}
