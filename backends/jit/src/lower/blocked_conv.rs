//! Convolutions over channel-blocked activations, on the ahead-of-time kernels: direct
//! convolutions (from a blocked input, or from the first layer's padded planar input),
//! Winograd (over a blocked input, or over the four input phases of a first layer's
//! strided 5×5 or 7×7 kernel) and depthwise windows, each with its epilogue applied in
//! registers.

use super::*;
use dnnc_kernels::conv::{ConvShape as DirectShape, DirectConv, InputLayout};
use dnnc_kernels::epilogue::{Activation, Epilogue};
use dnnc_kernels::layout::PhaseSplit;
use dnnc_kernels::window::{Window, WindowOp as NativeWindowOp, WindowShape};
use dnnc_kernels::winograd::{Winograd, WinogradShape};

/// The part of a node's epilogue the kernels apply as they store (`act2(act1(x·scale +
/// shift) + residual)`), and the steps left over.
pub(super) struct FusedEpilogue {
    /// Which steps the kernel applies.
    pub spec: Epilogue,
    /// Per-channel scale.
    pub scale: Option<Vec<f32>>,
    /// Per-channel shift (the bias folded in).
    pub shift: Option<Vec<f32>>,
    /// The residual.
    pub residual: Option<Value>,
    /// Steps applied afterwards, in order.
    pub rest: Vec<Epi>,
}

/// Splits `epilogue` (after an optional `bias`) into the kernels' form and the rest.
pub(super) fn fuse_epilogue(epilogue: &[Epi], bias: Option<Vec<f32>>) -> FusedEpilogue {
    let mut scale = None;
    let mut shift = bias;
    let mut i = 0;
    if let Some(Epi::Affine { scale: s, shift: t }) = epilogue.first() {
        // (x + b)·s + t = x·s + (b·s + t)
        // Channels: of whichever part is present (an affine map of neither keeps the bias).
        let n = s
            .as_ref()
            .or(t.as_ref())
            .or(shift.as_ref())
            .map_or(0, Vec::len);
        shift = match (shift, s, t) {
            (None, _, None) => None,
            (b, s, t) => Some(
                (0..n)
                    .map(|c| {
                        b.as_ref().map_or(0.0, |b| b[c]) * s.as_ref().map_or(1.0, |s| s[c])
                            + t.as_ref().map_or(0.0, |t| t[c])
                    })
                    .collect(),
            ),
        };
        scale = s.clone();
        i = 1;
    }
    let activation = |e: Option<&Epi>| match e {
        Some(Epi::Relu) => Some(Activation::Relu),
        Some(Epi::Relu6) => Some(Activation::Relu6),
        _ => None,
    };
    let act1 = activation(epilogue.get(i));
    if act1.is_some() {
        i += 1;
    }
    let residual = match epilogue.get(i) {
        Some(Epi::Add(v)) => {
            i += 1;
            Some(*v)
        }
        _ => None,
    };
    let act2 = if residual.is_some() {
        activation(epilogue.get(i))
    } else {
        None
    };
    if act2.is_some() {
        i += 1;
    }
    FusedEpilogue {
        spec: Epilogue {
            scale: scale.is_some(),
            shift: shift.is_some(),
            act1: act1.unwrap_or_default(),
            residual: residual.is_some(),
            act2: act2.unwrap_or_default(),
        },
        scale,
        shift,
        residual,
        rest: epilogue[i..].to_vec(),
    }
}

/// The input phases of a first layer's strided 5×5 or 7×7 convolution run as Winograd
/// over them ([`Winograd::applies_to_phases`]), if it does: a planar input, one group, and
/// `jit.form "winograd"`, or, unstated, the options' Winograd from three input channels
/// ([`phases_pay`]).
pub(crate) fn phase_split(
    c: &dnnc_ir::ops::Conv2d,
    [sx, sw, sy]: [&[usize]; 3],
    input: Act,
    form: Option<ConvForm>,
    options: &JitOptions,
) -> Option<PhaseSplit> {
    let wanted = match form {
        Some(ConvForm::Winograd) => true,
        Some(ConvForm::Direct | ConvForm::Im2col | ConvForm::Planar) => false,
        None => options.winograd && phases_pay(sx[1]),
    };
    let applies = Winograd::applies_to_phases([sw[2], sw[3]], c.stride, c.dilation);
    if !wanted || !applies || input != Act::Planar || c.groups != 1 {
        return None;
    }
    let half = sw[2].div_ceil(2);
    Some(PhaseSplit {
        input: [sx[0], sx[1], sx[2], sx[3]],
        pad: [c.pad.0[0], c.pad.0[1]],
        phase: [sy[2] + half - 1, sy[3] + half - 1],
        lanes: options.cpu.lanes(),
    })
}

/// Whether a strided first layer of `channels` input channels runs faster over its input
/// phases than direct (`dnnc bench --runs 200`, 64 output channels over 224×224, 7×7/2,
/// AMD EPYC Zen 4, 2 rounds): 3 channels 2.35 ms direct against 1.80 over phases at
/// avx512, 2.83 against 2.63 at avx2, 6.97 against 4.54 at sse4; 2 channels 1.65 against
/// 1.58 (avx512) and 2.07 against 2.09 (avx2); 1 channel 0.93 against 1.24 (avx512): the
/// transforms cost the same however few channels a vector holds. NEON is not measured
/// (compile-checked only); the rule is the x86 levels'. `explore` may choose otherwise
/// from measured costs.
pub fn phases_pay(channels: usize) -> bool {
    channels >= 3
}

/// Scratch of a blocked convolution: the input phases ([`phase_split`]), or the
/// zero-padded copy of a planar input.
pub(super) fn blocked_conv_scratch(
    c: &dnnc_ir::ops::Conv2d,
    shapes: [&[usize]; 3],
    input: Act,
    form: Option<ConvForm>,
    options: &JitOptions,
) -> Vec<usize> {
    if let Some(split) = phase_split(c, shapes, input, form, options) {
        return vec![4 * split.output_len()];
    }
    let sx = shapes[0];
    let [top, left, bottom, right] = c.pad.0;
    if input == Act::Planar && c.pad.0 != [0; 4] {
        vec![4 * sx[0] * sx[1] * (sx[2] + top + bottom) * (sx[3] + left + right)]
    } else {
        Vec::new()
    }
}

/// Whether a blocked convolution runs faster as Winograd F(4×4, 3×3) than direct: stride
/// 1, 3×3, at least a vector of channels each side, and planes of at least 12×12 (on 7×7
/// planes the 8×8 tiles waste a third, and the transformed weights, 4× the direct ones,
/// stream from memory for too little work: measured no faster on AVX-512).
fn winograd_pays(c: &dnnc_ir::ops::Conv2d, sx: &[usize], sw: &[usize], sy: &[usize]) -> bool {
    c.groups == 1
        && Winograd::applies([sw[2], sw[3]], c.stride, c.dilation)
        && sx[1] >= 16
        && sw[0] >= 16
        && sy[2] * sy[3] >= 144
}

impl Lower<'_> {
    /// A dense convolution writing a blocked output.
    pub(super) fn blocked_conv(
        &mut self,
        index: usize,
        node: &Node,
        c: &dnnc_ir::ops::Conv2d,
    ) -> Result<(), CompileError> {
        let (x, w, y) = (node.inputs[0], node.inputs[1], node.outputs[0]);
        let (sx, sw, sy) = (self.shape(x), self.shape(w), self.shape(y));
        let level = self.options.cpu;
        let lanes = level.lanes();
        let bias = match node.inputs.get(2) {
            Some(&b) => Some(
                self.konst_vec(b)
                    .ok_or_else(|| unsupported(node, "the bias must be a weight or constant"))?,
            ),
            None => None,
        };
        let weights = self
            .konst(w)
            .ok_or_else(|| unsupported(node, "the weight must be a weight or constant"))?;
        let fused = fuse_epilogue(&node.epilogue, bias);
        let scale = fused
            .scale
            .clone()
            .map(|v| self.f32_data(elementwise_padded(v, lanes)));
        let shift = fused
            .shift
            .clone()
            .map(|v| self.f32_data(elementwise_padded(v, lanes)));
        let residual = fused.residual.map(|v| self.addr(v));
        let epilogue_args = [
            scale.unwrap_or(Addr::Null),
            shift.unwrap_or(Addr::Null),
            residual.unwrap_or(Addr::Null),
        ];
        let [top, left, bottom, right] = c.pad.0;
        let mut px = self.addr(x);
        let py = self.addr(y);
        let depthwise = c.groups == sx[1] && c.groups == sw[0] && sw[1] == 1;
        if depthwise {
            let shape = WindowShape {
                batch: sx[0],
                channels: sx[1],
                in_h: sx[2],
                in_w: sx[3],
                out_h: sy[2],
                out_w: sy[3],
                kernel: [sw[2], sw[3]],
                stride: c.stride,
                dilation: c.dilation,
                pad: c.pad.0,
            };
            let kernel = Window::new(level, shape, NativeWindowOp::Depthwise(fused.spec));
            let pw = self.f32_data(kernel.pack(&weights));
            let mut args = vec![px, py, pw];
            args.extend(epilogue_args);
            let (tiles, work) = (kernel.tiles(), kernel.work_per_tile());
            self.variant = Some("depthwise");
            self.native_step(Native::Window(Box::new(kernel)), args, tiles, work);
            return self.rest_of_epilogue(&fused.rest, y);
        }
        let mut shape = DirectShape {
            batch: sx[0],
            in_channels: sx[1],
            in_h: sx[2],
            in_w: sx[3],
            out_channels: sw[0],
            out_h: sy[2],
            out_w: sy[3],
            kernel: [sw[2], sw[3]],
            stride: c.stride,
            dilation: c.dilation,
            pad: [top, left],
        };
        let layout = if self.blocked(x) {
            Act::Blocked
        } else {
            Act::Planar
        };
        let shapes = [&sx[..], &sw[..], &sy[..]];
        if let Some(split) = phase_split(c, shapes, layout, node.form, self.options) {
            // The phases into the scratch, then Winograd over them with the kernel split
            // the same way.
            let phases = Addr::Arena(self.plan.scratch[index][0]);
            let work = split.phase[1] * split.channels();
            self.native_step(
                Native::PhaseSplit(split),
                vec![px, phases],
                split.units(),
                work,
            );
            let shape = WinogradShape {
                kernel: sw[2].div_ceil(2),
                batch: sx[0],
                in_channels: split.channels(),
                in_h: split.phase[0],
                in_w: split.phase[1],
                out_channels: sw[0],
                out_h: sy[2],
                out_w: sy[3],
                pad: [0, 0],
            };
            let split_weights = dnnc_kernels::layout::phase_kernel(&weights, sw[0], sx[1], sw[2]);
            self.winograd_step(
                shape,
                &split_weights,
                fused.spec,
                [phases, py],
                epilogue_args,
            );
            self.variant = Some("winograd-phases");
            return self.rest_of_epilogue(&fused.rest, y);
        }
        let winograd = match node.form {
            Some(crate::graph::ConvForm::Winograd) => true,
            Some(
                crate::graph::ConvForm::Direct
                | crate::graph::ConvForm::Im2col
                | crate::graph::ConvForm::Planar,
            ) => false,
            None => self.options.winograd && winograd_pays(c, &sx, &sw, &sy),
        };
        if winograd && !Winograd::applies([sw[2], sw[3]], c.stride, c.dilation) {
            return Err(unsupported(
                node,
                "jit.form \"winograd\" on a strided 5×5 or 7×7 kernel needs the planar input of a first layer (split into phases), one group: use \"direct\"",
            ));
        }
        if winograd && !self.blocked(x) {
            return Err(unsupported(
                node,
                format!(
                    "jit.form \"winograd\" needs a channel-blocked input; this convolution reads its {} input channels planar (a first layer): use \"direct\"",
                    sx[1]
                ),
            ));
        }
        if winograd {
            let shape = WinogradShape {
                kernel: 3,
                batch: sx[0],
                in_channels: sx[1],
                in_h: sx[2],
                in_w: sx[3],
                out_channels: sw[0],
                out_h: sy[2],
                out_w: sy[3],
                pad: [top, left],
            };
            self.winograd_step(shape, &weights, fused.spec, [px, py], epilogue_args);
            self.variant = Some("winograd");
            return self.rest_of_epilogue(&fused.rest, y);
        }
        let input = if self.blocked(x) {
            InputLayout::Blocked
        } else {
            // The first layer: broadcast from its planar channels, padded beforehand.
            if c.pad.0 != [0; 4] {
                let padded = Addr::Arena(self.plan.scratch[index][0]);
                let (h, wd) = (sx[2], sx[3]);
                let kernel = Native::PadPlanar {
                    h,
                    w: wd,
                    pad: c.pad.0,
                };
                self.native_step(kernel, vec![px, padded], sx[0] * sx[1], h * wd);
                px = padded;
                shape.in_h += top + bottom;
                shape.in_w += left + right;
                shape.pad = [0, 0];
            }
            InputLayout::Planar
        };
        let kernel = DirectConv::new(level, shape, input, fused.spec, self.options.threads.max(1));
        let pw = self.f32_data(kernel.pack(&weights));
        let mut args = vec![px, py, pw];
        args.extend(epilogue_args);
        let (tiles, work) = (kernel.tiles(), kernel.work_per_tile());
        self.variant = Some(match input {
            InputLayout::Blocked => "direct",
            InputLayout::Planar => "direct-planar",
        });
        self.native_step(Native::Conv(Box::new(kernel)), args, tiles, work);
        self.rest_of_epilogue(&fused.rest, y)
    }
}

impl Lower<'_> {
    /// A Winograd step of `shape` from input `io[0]` to output `io[1]`, its weights
    /// `[out][in][r][r]` transformed and packed, its epilogue applied as it stores.
    fn winograd_step(
        &mut self,
        shape: WinogradShape,
        weights: &[f32],
        epilogue: Epilogue,
        io: [Addr; 2],
        epilogue_args: [Addr; 3],
    ) {
        let threads = self.options.threads.max(1);
        let kernel = Winograd::new(self.options.cpu, shape, epilogue, threads);
        let pw = self.f32_data(kernel.pack(weights));
        let mut args = vec![io[0], io[1], pw];
        args.extend(epilogue_args);
        let (tiles, work) = (kernel.tiles(), kernel.work_per_tile());
        self.native_step(Native::Winograd(Box::new(kernel)), args, tiles, work);
    }
}

fn elementwise_padded(v: Vec<f32>, lanes: usize) -> Vec<f32> {
    super::elementwise::padded(v, lanes)
}
