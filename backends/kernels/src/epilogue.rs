//! What a kernel applies to its accumulators before it stores them: a per-channel affine
//! map (bias, folded batch norm), an activation, a residual add, and a second activation,
//! in that order (`act2(act1(x·scale + shift) + residual)`), each optional.

use crate::simd::Simd;

/// An activation function an epilogue applies.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum Activation {
    /// None.
    #[default]
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
}

/// Which epilogue steps a kernel applies (the data comes with each call).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Epilogue {
    /// Multiply by a per-channel scale.
    pub scale: bool,
    /// Add a per-channel shift.
    pub shift: bool,
    /// The activation before the residual add.
    pub act1: Activation,
    /// Add a tensor laid out like the output.
    pub residual: bool,
    /// The activation after the residual add.
    pub act2: Activation,
}

/// The data of an epilogue: per-channel vectors (padded to whole vectors) and the
/// residual tensor (laid out like the output). Null where the step is absent.
#[derive(Copy, Clone, Debug)]
pub struct EpilogueArgs {
    /// Per-channel scale.
    pub scale: *const f32,
    /// Per-channel shift.
    pub shift: *const f32,
    /// The residual, at the same offsets as the output.
    pub residual: *const f32,
}

impl Default for EpilogueArgs {
    fn default() -> Self {
        EpilogueArgs {
            scale: std::ptr::null(),
            shift: std::ptr::null(),
            residual: std::ptr::null(),
        }
    }
}

// SAFETY: the pointers are read only, by kernels that write disjoint outputs.
unsafe impl Send for EpilogueArgs {}
unsafe impl Sync for EpilogueArgs {}

impl Epilogue {
    /// Whether the epilogue does nothing.
    pub fn is_identity(&self) -> bool {
        *self == Epilogue::default()
    }
}

#[inline(always)]
unsafe fn activate<S: Simd>(act: Activation, v: S::V) -> S::V {
    unsafe {
        match act {
            Activation::Identity => v,
            Activation::Relu => S::max(v, S::zero()),
            Activation::Relu6 => S::min(S::max(v, S::zero()), S::splat(6.0)),
        }
    }
}

/// The per-channel vectors of one channel vector: scale and shift.
#[derive(Copy, Clone)]
pub(crate) struct ChannelVectors<S: Simd> {
    scale: S::V,
    shift: S::V,
}

impl<S: Simd> ChannelVectors<S> {
    /// The scale and shift of the channels from `channel` on (any channel: the loads are
    /// unaligned).
    #[inline(always)]
    pub(crate) unsafe fn load(e: &Epilogue, a: &EpilogueArgs, channel: usize) -> Self {
        unsafe {
            ChannelVectors {
                scale: if e.scale {
                    S::load(a.scale.add(channel))
                } else {
                    S::splat(1.0)
                },
                shift: if e.shift {
                    S::load(a.shift.add(channel))
                } else {
                    S::zero()
                },
            }
        }
    }

    /// The scale and shift of the `live` channels at `channel` (the other lanes zero).
    #[inline(always)]
    pub(crate) unsafe fn load_partial(
        e: &Epilogue,
        a: &EpilogueArgs,
        channel: usize,
        live: usize,
    ) -> Self {
        unsafe {
            ChannelVectors {
                scale: if e.scale {
                    S::load_partial(a.scale.add(channel), live)
                } else {
                    S::splat(1.0)
                },
                shift: if e.shift {
                    S::load_partial(a.shift.add(channel), live)
                } else {
                    S::zero()
                },
            }
        }
    }

    /// The scale and shift of one channel, in every lane (a layout with a channel per row).
    #[inline(always)]
    pub(crate) unsafe fn splat(e: &Epilogue, a: &EpilogueArgs, channel: usize) -> Self {
        unsafe {
            ChannelVectors {
                scale: S::splat(if e.scale { *a.scale.add(channel) } else { 1.0 }),
                shift: S::splat(if e.shift { *a.shift.add(channel) } else { 0.0 }),
            }
        }
    }

    /// Applies the epilogue to `v`, whose residual (if any) is at `residual_offset`.
    #[inline(always)]
    pub(crate) unsafe fn apply(
        &self,
        e: &Epilogue,
        a: &EpilogueArgs,
        v: S::V,
        residual_offset: usize,
    ) -> S::V {
        unsafe {
            let residual = if e.residual {
                S::load(a.residual.add(residual_offset))
            } else {
                S::zero()
            };
            self.apply_loaded(e, v, residual)
        }
    }

    /// Applies the epilogue to `v` with its residual already loaded (ignored without one).
    #[inline(always)]
    pub(crate) unsafe fn apply_loaded(&self, e: &Epilogue, v: S::V, residual: S::V) -> S::V {
        unsafe {
            let mut v = v;
            if e.scale {
                v = S::mul_add(v, self.scale, self.shift);
            } else if e.shift {
                v = S::add(v, self.shift);
            }
            v = activate::<S>(e.act1, v);
            if e.residual {
                v = S::add(v, residual);
            }
            activate::<S>(e.act2, v)
        }
    }
}
