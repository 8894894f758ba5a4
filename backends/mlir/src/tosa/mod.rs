//! The `tosa` lowering: one `func.func` per dnnc function, each dnnc op a short sequence
//! of TOSA ops (MLIR 22's TOSA: zero points and shapes as operands).

mod builder;
mod function;
mod recurrent;
mod runner;
pub(crate) use runner::RUNNER;
mod stamp;
mod window;

use builder::Lower;
use function::lower_function;
use runner::runner_entry;
use stamp::stamp_provenance;

use crate::{ExportError, Unsupported};
use dnnc_ir::attr::Padding;
use dnnc_ir::ops::{Conv2d, Window};
use dnnc_ir::{ElemType, Function, Module, OpKind, Tensor};
use melior::Context;
use melior::dialect::{DialectRegistry, func};
use melior::ir::attribute::{
    DenseElementsAttribute, DenseI32ArrayAttribute, DenseI64ArrayAttribute, FloatAttribute,
    IntegerAttribute, StringAttribute, TypeAttribute,
};
use melior::ir::operation::{OperationBuilder, OperationLike, OperationMutLike};
use melior::ir::r#type::{FunctionType, IntegerType, RankedTensorType};
use melior::ir::{
    Attribute, Block, BlockLike, Identifier, Location, Region, RegionLike, Type, Value,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Why an op cannot be lowered, or `None` when it can.
fn unsupported_reason(f: &Function, op: dnnc_ir::OpId) -> Option<String> {
    let data = &f.ops[op];
    let all_f32 = data
        .operands
        .iter()
        .chain(&data.results)
        .all(|&v| f.ty(v).elem == ElemType::F32);
    if !all_f32 {
        return Some("only f32 tensors export (quantised and integer forms do not yet)".into());
    }
    match &data.kind {
        OpKind::BasisConv(_) | OpKind::CoeffConv(_) => Some(
            "ESCALATE's decomposed convolutions have no lowering: export the model before \
             `decompose`"
                .into(),
        ),
        OpKind::Conv2d(c) => {
            let x = f.ty(data.operands[0]);
            let w = f.ty(data.operands[1]);
            let depthwise = c.groups == x.shape[1] && w.shape[1] == 1;
            (c.groups != 1 && !depthwise).then(|| {
                format!(
                    "grouped convolution ({} groups of {} channels) has no TOSA form; only \
                     dense and depthwise do",
                    c.groups,
                    x.shape[1] / c.groups.max(1)
                )
            })
        }
        OpKind::MatMul(_) => {
            let (a, b) = (f.ty(data.operands[0]), f.ty(data.operands[1]));
            (a.rank() != b.rank() || a.shape[..a.rank() - 2] != b.shape[..b.rank() - 2])
                .then(|| "matmul with broadcast batch dimensions does not export yet".into())
        }
        OpKind::Weight(_)
        | OpKind::Constant(_)
        | OpKind::Linear(_)
        | OpKind::BatchNorm(_)
        | OpKind::Add(_)
        | OpKind::Sub(_)
        | OpKind::Mul(_)
        | OpKind::Div(_)
        | OpKind::Relu(_)
        | OpKind::Relu6(_)
        | OpKind::Sigmoid(_)
        | OpKind::Tanh(_)
        | OpKind::Softmax(_)
        | OpKind::MaxPool2d(_)
        | OpKind::AvgPool2d(_)
        | OpKind::GlobalAvgPool2d(_)
        | OpKind::Reshape(_)
        | OpKind::Flatten(_)
        | OpKind::Transpose(_)
        | OpKind::Concat(_)
        | OpKind::Slice(_)
        | OpKind::Lstm(_)
        | OpKind::Gru(_) => None,
    }
}

/// Every op kind that cannot be lowered, once per kind, at its first instance.
fn check(m: &Module) -> Vec<Unsupported> {
    let mut out: Vec<Unsupported> = Vec::new();
    for f in m.funcs.values() {
        for p in &f.params {
            if f.ty(*p).elem != ElemType::F32 {
                out.push(Unsupported {
                    op: "func.func",
                    reason: format!("parameter of type {} (only f32 exports)", f.ty(*p)),
                    loc: f.loc.clone(),
                    count: 1,
                });
            }
        }
        for &op in &f.body {
            if let Some(reason) = unsupported_reason(f, op) {
                let name = f.ops[op].kind.name();
                match out.iter_mut().find(|u| u.op == name) {
                    Some(u) => u.count += 1,
                    None => out.push(Unsupported {
                        op: name,
                        reason,
                        loc: f.ops[op].loc.clone(),
                        count: 1,
                    }),
                }
            }
        }
    }
    out
}

/// A context with every dialect MLIR 22 ships registered and loaded.
pub(crate) fn context() -> Context {
    let registry = DialectRegistry::new();
    melior::utility::register_all_dialects(&registry);
    let context = Context::new();
    context.append_dialect_registry(&registry);
    context.load_all_available_dialects();
    context
}

/// MLIR's own conversion from TOSA to `linalg`/`arith`/`tensor` on tensors, then its
/// canonicaliser (which drops the shape operands TOSA leaves behind).
const TOSA_TO_LINALG: &str = "builtin.module(func.func(tosa-to-linalg-named,tosa-to-linalg,tosa-to-arith,tosa-to-tensor,canonicalize))";

pub(crate) fn export(
    m: &Module,
    options: &crate::ExportOptions,
    linalg: bool,
) -> Result<String, ExportError> {
    let problems = check(m);
    if !problems.is_empty() {
        return Err(ExportError::Unsupported(problems));
    }
    let ctx = context();
    let messages = Rc::new(RefCell::new(Vec::<String>::new()));
    let sink = messages.clone();
    let handler = ctx.attach_diagnostic_handler(move |d| {
        sink.borrow_mut().push(format!("{}: {d}", d.location()));
        true
    });
    let mut module = melior::ir::Module::new(Location::unknown(&ctx));
    if let Some(name) = &m.name {
        let mut op = module.as_operation_mut();
        op.set_attribute("sym_name", StringAttribute::new(&ctx, name).into());
    }
    module.as_operation_mut().set_attribute(
        crate::provenance::MODULE_WEIGHTS,
        stamp::weight_order(&ctx, m),
    );
    for f in m.funcs.values() {
        module.body().append_operation(lower_function(&ctx, m, f)?);
    }
    if let Some(inputs) = options.runner_inputs {
        let f = m
            .func_by_name("main")
            .or_else(|| m.funcs.keys().next())
            .ok_or_else(|| ExportError::Verify("the module has no function to run".into()))?;
        for op in runner_entry(&ctx, &m.funcs[f], inputs)? {
            module.body().append_operation(op);
        }
    }
    let mut ok = module.as_operation().verify();
    if ok && linalg {
        melior::utility::register_all_passes();
        let pm = melior::pass::PassManager::new(&ctx);
        melior::utility::parse_pass_pipeline(pm.as_operation_pass_manager(), TOSA_TO_LINALG)
            .expect("a pipeline of registered passes");
        ok = pm.run(&mut module).is_ok() && module.as_operation().verify();
    }
    ctx.detach_diagnostic_handler(handler);
    if !ok {
        return Err(ExportError::Verify(messages.borrow().join("\n")));
    }
    // With locations: each op keeps its .dnn file:line:col, each weight its name.
    let flags = melior::ir::operation::OperationPrintingFlags::new().enable_debug_info(true, false);
    let text = module
        .as_operation()
        .to_string_with_flags(flags)
        .map_err(|e| ExportError::Verify(format!("cannot print the module: {e}")))?;
    Ok(format!("{text}\n"))
}

use crate::provenance::location;

fn tensor_type<'c>(ctx: &'c Context, shape: &[usize]) -> Type<'c> {
    let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    RankedTensorType::new(&dims, Type::float32(ctx), None).into()
}

/// Normalises a possibly negative axis.
pub(super) fn axis(a: i64, rank: usize) -> usize {
    dnnc_ir::ops::axis_index(a, rank).expect("verified axis")
}

pub(super) fn dense_f32(t: &Tensor) -> Vec<f32> {
    t.to_f32_vec()
}
