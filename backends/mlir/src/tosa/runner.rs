//! The `@dnnc_entry` wrapper that lets `mlir-runner` call an exported function.

use super::*;

/// Marks the functions that only drive `mlir-runner` (import skips them).
pub(crate) const RUNNER: &str = "dnn.runner";

/// `printMemrefF32`'s declaration and `@dnnc_entry`, which calls `f` on `inputs` and
/// prints its outputs.
pub(super) fn runner_entry<'c>(
    ctx: &'c Context,
    f: &Function,
    inputs: &[Tensor],
) -> Result<Vec<melior::ir::Operation<'c>>, ExportError> {
    let loc = Location::unknown(ctx);
    if inputs.len() != f.params.len() {
        return Err(ExportError::Verify(format!(
            "@{} takes {} input(s), {} given for the runner entry",
            f.name,
            f.params.len(),
            inputs.len()
        )));
    }
    let unranked = Type::parse(ctx, "tensor<*xf32>").expect("a builtin type");
    let print_decl = func::func(
        ctx,
        StringAttribute::new(ctx, "printMemrefF32"),
        TypeAttribute::new(FunctionType::new(ctx, &[unranked], &[]).into()),
        Region::new(),
        &[
            (
                Identifier::new(ctx, "sym_visibility"),
                StringAttribute::new(ctx, "private").into(),
            ),
            (Identifier::new(ctx, RUNNER), Attribute::unit(ctx)),
        ],
        loc,
    );
    let block = Block::new(&[]);
    let mut args = Vec::new();
    for (t, &p) in inputs.iter().zip(&f.params) {
        if t.shape.as_slice() != f.ty(p).shape.as_slice() {
            return Err(ExportError::Verify(format!(
                "a runner input of shape {:?} for a parameter of type {}",
                t.shape.as_slice(),
                f.ty(p)
            )));
        }
        let ty = tensor_type(ctx, &t.shape);
        let value = DenseElementsAttribute::f32_values(ty, &t.to_f32_vec());
        let op = OperationBuilder::new("arith.constant", loc)
            .add_attributes(&[(Identifier::new(ctx, "value"), value.into())])
            .add_results(&[ty])
            .build()
            .expect("a well-formed operation");
        let v: Value = block
            .append_operation(op)
            .result(0)
            .expect("one result")
            .into();
        args.push(v);
    }
    let results: Vec<Type> = f
        .returns
        .iter()
        .map(|&v| tensor_type(ctx, &f.ty(v).shape))
        .collect();
    let call = block.append_operation(func::call(
        ctx,
        melior::ir::attribute::FlatSymbolRefAttribute::new(ctx, &f.name),
        &args,
        &results,
        loc,
    ));
    for i in 0..results.len() {
        let out: Value = call.result(i).expect("a result").into();
        let cast = OperationBuilder::new("tensor.cast", loc)
            .add_operands(&[out])
            .add_results(&[unranked])
            .build()
            .expect("a well-formed operation");
        let u: Value = block
            .append_operation(cast)
            .result(0)
            .expect("one result")
            .into();
        block.append_operation(func::call(
            ctx,
            melior::ir::attribute::FlatSymbolRefAttribute::new(ctx, "printMemrefF32"),
            &[u],
            &[],
            loc,
        ));
    }
    block.append_operation(func::r#return(&[], loc));
    let region = Region::new();
    region.append_block(block);
    let entry = func::func(
        ctx,
        StringAttribute::new(ctx, "dnnc_entry"),
        TypeAttribute::new(FunctionType::new(ctx, &[], &[]).into()),
        region,
        &[(Identifier::new(ctx, RUNNER), Attribute::unit(ctx))],
        loc,
    );
    Ok(vec![print_decl, entry])
}
