//! One dnnc function lowered op by op into a `func.func` of TOSA ops.

use super::*;
use dnnc_ir::ops::Arith;
use melior::ir::operation::OperationRef;

pub(super) fn lower_function<'c>(
    ctx: &'c Context,
    m: &Module,
    f: &Function,
) -> Result<melior::ir::Operation<'c>, ExportError> {
    let floc = location(ctx, &f.loc);
    // A named parameter keeps its name as a NameLoc on its block argument.
    let params: Vec<(Type, Location)> = f
        .params
        .iter()
        .map(|&p| {
            let loc = match &f.values[p].name {
                Some(name) => Location::name(ctx, name, floc),
                None => floc,
            };
            (tensor_type(ctx, &f.ty(p).shape), loc)
        })
        .collect();
    let block = Block::new(&params);
    let mut values: HashMap<dnnc_ir::Value, Value> = HashMap::new();
    for (i, &p) in f.params.iter().enumerate() {
        values.insert(p, block.argument(i).expect("a parameter").into());
    }
    let mut last_lowered: Option<OperationRef> = None;
    for (position, &op) in f.body.iter().enumerate() {
        let data = &f.ops[op];
        let lw = Lower {
            ctx,
            block: &block,
            loc: location(ctx, &data.loc),
        };
        let arg = |i: usize| values[&data.operands[i]];
        let shape_of = |i: usize| f.ty(data.operands[i]).shape.to_vec();
        let out = f.ty(data.results[0]).shape.to_vec();
        // Recurrences have several results; every other op one.
        let mut several = Vec::new();
        let first = match &data.kind {
            OpKind::Weight(w) => {
                let t = m.weight_value(w.weight).expect("weights were materialised");
                lw.constant(&out, &dense_f32(&t))
            }
            OpKind::Constant(c) => lw.constant(&out, &dense_f32(&c.value)),
            OpKind::Conv2d(c) => {
                let bias = (data.operands.len() > 2).then(|| arg(2));
                lw.conv(
                    c,
                    (arg(0), &shape_of(0)),
                    (arg(1), &shape_of(1)),
                    bias,
                    &out,
                )
            }
            OpKind::Linear(_) => {
                // Leading axes of the input are batch: contract the last one.
                let (xs, ws) = (shape_of(0), shape_of(1));
                let k = xs[xs.len() - 1];
                let (n, o) = (xs[..xs.len() - 1].iter().product::<usize>(), ws[0]);
                let x3 = lw.reshape(arg(0), &[1, n, k]);
                let wt = lw.transpose(arg(1), &ws, &[1, 0]);
                let w3 = lw.reshape(wt, &[1, k, o]);
                let (azp, bzp) = (lw.zero_point(), lw.zero_point());
                let y3 = lw.op("tosa.matmul", &[x3, w3, azp, bzp], &[], &[1, n, o]);
                let y = lw.reshape(y3, &[n, o]);
                let y = if data.operands.len() > 2 {
                    let b = lw.reshape(arg(2), &[1, o]);
                    lw.op("tosa.add", &[y, b], &[], &[n, o])
                } else {
                    y
                };
                lw.reshape(y, &out)
            }
            OpKind::MatMul(_) => {
                let (a, b) = (shape_of(0), shape_of(1));
                let r = a.len();
                let batch: usize = a[..r - 2].iter().product();
                let (mm, k, n) = (a[r - 2], a[r - 1], b[r - 1]);
                let a3 = lw.reshape(arg(0), &[batch, mm, k]);
                let b3 = lw.reshape(arg(1), &[batch, k, n]);
                let (azp, bzp) = (lw.zero_point(), lw.zero_point());
                let y = lw.op("tosa.matmul", &[a3, b3, azp, bzp], &[], &[batch, mm, n]);
                lw.reshape(y, &out)
            }
            OpKind::BatchNorm(bn) => {
                let xs = shape_of(0);
                let mut cs = vec![1; xs.len()];
                cs[1] = xs[1];
                let per_channel = |i: usize| lw.reshape(arg(i), &cs);
                let (scale, shift, mean, var) = (
                    per_channel(1),
                    per_channel(2),
                    per_channel(3),
                    per_channel(4),
                );
                let eps = lw.constant(&vec![1; xs.len()], &[bn.epsilon as f32]);
                let var_eps = lw.op("tosa.add", &[var, eps], &[], &cs);
                let inv = lw.op("tosa.rsqrt", &[var_eps], &[], &cs);
                let centred = lw.op("tosa.sub", &[arg(0), mean], &[], &xs);
                let normal = lw.mul(centred, inv, &xs);
                let scaled = lw.mul(normal, scale, &xs);
                lw.op("tosa.add", &[scaled, shift], &[], &out)
            }
            OpKind::Add(_) | OpKind::Sub(_) | OpKind::Mul(_) | OpKind::Div(_) => {
                let a = lw.to_rank(arg(0), &shape_of(0), out.len());
                let b = lw.to_rank(arg(1), &shape_of(1), out.len());
                let bs = {
                    let s = shape_of(1);
                    let mut full = vec![1; out.len() - s.len()];
                    full.extend(s);
                    full
                };
                let arith = data.kind.arith().expect("the arithmetic arm");
                match arith {
                    Arith::Add => lw.op("tosa.add", &[a, b], &[], &out),
                    Arith::Sub => lw.op("tosa.sub", &[a, b], &[], &out),
                    Arith::Mul => lw.mul(a, b, &out),
                    Arith::Div => {
                        let r = lw.op("tosa.reciprocal", &[b], &[], &bs);
                        lw.mul(a, r, &out)
                    }
                }
            }
            OpKind::Relu(_) => lw.clamp(arg(0), 0.0, f32::MAX as f64, &out),
            OpKind::Relu6(_) => lw.clamp(arg(0), 0.0, 6.0, &out),
            OpKind::Sigmoid(_) => lw.op("tosa.sigmoid", &[arg(0)], &[], &out),
            OpKind::Tanh(_) => lw.op("tosa.tanh", &[arg(0)], &[], &out),
            OpKind::Softmax(s) => {
                let ax = axis(s.axis, out.len());
                let (max, ms) = lw.reduce("tosa.reduce_max", arg(0), &out, ax);
                let shifted = lw.op("tosa.sub", &[arg(0), max], &[], &out);
                let e = lw.op("tosa.exp", &[shifted], &[], &out);
                let (sum, _) = lw.reduce("tosa.reduce_sum", e, &out, ax);
                let inv = lw.op("tosa.reciprocal", &[sum], &[], &ms);
                lw.mul(e, inv, &out)
            }
            OpKind::MaxPool2d(p) => lw.pool(
                "tosa.max_pool2d",
                &p.window,
                None,
                arg(0),
                &shape_of(0),
                &out,
            ),
            OpKind::AvgPool2d(p) => lw.pool(
                "tosa.avg_pool2d",
                &p.window,
                Some(p.count_include_pad),
                arg(0),
                &shape_of(0),
                &out,
            ),
            OpKind::GlobalAvgPool2d(_) => {
                let xs = shape_of(0);
                let (h_sum, hs) = lw.reduce("tosa.reduce_sum", arg(0), &xs, 2);
                let (sum, _) = lw.reduce("tosa.reduce_sum", h_sum, &hs, 3);
                let inv = lw.constant(&[1, 1, 1, 1], &[1.0 / (xs[2] * xs[3]) as f32]);
                lw.mul(sum, inv, &out)
            }
            OpKind::Reshape(_) | OpKind::Flatten(_) => lw.reshape(arg(0), &out),
            OpKind::Transpose(t) => lw.transpose(arg(0), &shape_of(0), &t.perm),
            OpKind::Concat(c) => {
                let ax = axis(c.axis, out.len());
                let operands: Vec<Value> = (0..data.operands.len()).map(arg).collect();
                let i32: Type = IntegerType::new(ctx, 32).into();
                let attr = IntegerAttribute::new(i32, ax as i64).into();
                lw.op("tosa.concat", &operands, &[("axis", attr)], &out)
            }
            OpKind::Slice(s) => {
                let xs = shape_of(0);
                let ax = axis(s.axis, xs.len());
                let mut start = vec![0; xs.len()];
                start[ax] = s.start;
                lw.slice(arg(0), &start, &out)
            }
            OpKind::Lstm(_) => {
                let operands: Vec<Value> = (0..data.operands.len()).map(arg).collect();
                several = lw.lstm(&operands, &shape_of(0), &shape_of(2));
                several[0]
            }
            OpKind::Gru(g) => {
                let operands: Vec<Value> = (0..data.operands.len()).map(arg).collect();
                several = lw.gru(g.linear_before_reset, &operands, &shape_of(0), &shape_of(2));
                several[0]
            }
            OpKind::BasisConv(_) | OpKind::CoeffConv(_) => {
                unreachable!("rejected by check()")
            }
        };
        let results = if several.is_empty() {
            vec![first]
        } else {
            several
        };
        let operands: Vec<Value> = (0..data.operands.len()).map(arg).collect();
        let results = stamp_provenance(
            &lw,
            m,
            f,
            op,
            position,
            &operands,
            results,
            &mut last_lowered,
        )?;
        for (&r, v) in data.results.iter().zip(results) {
            values.insert(r, v);
        }
    }
    let returns: Vec<Value> = f.returns.iter().map(|v| values[v]).collect();
    block.append_operation(func::r#return(&returns, floc));
    let region = Region::new();
    region.append_block(block);
    let inputs: Vec<Type> = params.iter().map(|(t, _)| *t).collect();
    let results: Vec<Type> = f
        .returns
        .iter()
        .map(|&v| tensor_type(ctx, &f.ty(v).shape))
        .collect();
    Ok(func::func(
        ctx,
        StringAttribute::new(ctx, &f.name),
        TypeAttribute::new(FunctionType::new(ctx, &inputs, &results).into()),
        region,
        &[],
        floc,
    ))
}
