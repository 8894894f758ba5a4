//! Running the ahead-of-time kernels of `dnnc-kernels`: each [`Native`] kernel's pointers
//! come from the step's resolved arguments, in the order documented on the variant.

use crate::steps::Native;
use dnnc_kernels::conv::ConvIo;
use dnnc_kernels::epilogue::EpilogueArgs;
use dnnc_kernels::{channelwise, layout, window, winograd};

impl Native {
    /// Runs tiles `[begin, end)` with resolved arguments `a`.
    ///
    /// # Safety
    /// `a` holds the addresses the variant documents, of tensors the plan sized for it.
    pub unsafe fn run(&self, a: &[u64], begin: usize, end: usize) {
        let p = |i: usize| a[i] as *const f32;
        let epilogue = |i: usize| EpilogueArgs {
            scale: p(i),
            shift: p(i + 1),
            residual: p(i + 2),
        };
        // Window kernels, blocked or planar: input, output, weights, epilogue.
        let window_io = || window::WindowIo {
            input: p(0),
            output: a[1] as *mut f32,
            weights: p(2),
            epilogue: epilogue(3),
        };
        unsafe {
            match self {
                Native::Conv(c) => {
                    let io = ConvIo {
                        input: p(0),
                        output: a[1] as *mut f32,
                        weights: p(2),
                        epilogue: epilogue(3),
                    };
                    c.run(&io, begin, end)
                }
                Native::Winograd(c) => {
                    let io = winograd::WinogradIo {
                        input: p(0),
                        output: a[1] as *mut f32,
                        weights: p(2),
                        epilogue: epilogue(3),
                    };
                    c.run(&io, begin, end)
                }
                Native::Window(w) => w.run(&window_io(), begin, end),
                Native::PlanarDepthwise(w) => w.run(&window_io(), begin, end),
                Native::PlanarPool(w) => w.run(&window_io(), begin, end),
                Native::GlobalAverage(g) => g.run(p(0), a[1] as *mut f32, begin, end),
                Native::Softmax(k) => k.run(p(0), a[1] as *mut f32, begin, end),
                Native::Affine(f) => {
                    let io = channelwise::AffineIo {
                        x: p(0),
                        y: a[1] as *mut f32,
                        scale: p(2),
                        shift: p(3),
                    };
                    f.run(&io, begin, end)
                }
                Native::ToBlocked(shape, lanes) => {
                    layout::to_blocked(p(0), a[1] as *mut f32, *shape, *lanes, begin, end)
                }
                Native::ToPlanar(shape, lanes) => {
                    layout::to_planar(p(0), a[1] as *mut f32, *shape, *lanes, begin, end)
                }
                Native::Transpose { t, lanes } => t.run(p(0), a[1] as *mut f32, *lanes, begin, end),
                Native::PhaseSplit(split) => split.run(p(0), a[1] as *mut f32, begin, end),
                Native::PadPlanar { h, w, pad } => {
                    layout::pad_planar(p(0), a[1] as *mut f32, *h, *w, *pad, begin, end)
                }
            }
        }
    }
}
