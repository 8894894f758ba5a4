//! `Lower`, the builder of one function's body, and its general-purpose TOSA helpers.

use super::*;

/// Builds one function's body op by op.
pub(super) struct Lower<'c, 'b> {
    pub(super) ctx: &'c Context,
    pub(super) block: &'b Block<'c>,
    pub(super) loc: Location<'c>,
}

impl<'c, 'b> Lower<'c, 'b> {
    pub(super) fn id(&self, name: &str) -> Identifier<'c> {
        Identifier::new(self.ctx, name)
    }

    /// Appends `name` with `operands` and `attrs`, returning its one f32 result of `shape`.
    pub(super) fn op(
        &self,
        name: &str,
        operands: &[Value<'c, 'b>],
        attrs: &[(&str, Attribute<'c>)],
        shape: &[usize],
    ) -> Value<'c, 'b> {
        let attrs: Vec<_> = attrs.iter().map(|(k, v)| (self.id(k), *v)).collect();
        let op = OperationBuilder::new(name, self.loc)
            .add_operands(operands)
            .add_attributes(&attrs)
            .add_results(&[tensor_type(self.ctx, shape)])
            .build()
            .expect("a well-formed operation");
        self.append(op)
    }

    /// Appends a built single-result op and returns its result.
    fn append(&self, op: melior::ir::Operation<'c>) -> Value<'c, 'b> {
        self.block
            .append_operation(op)
            .result(0)
            .expect("one result")
            .into()
    }

    pub(super) fn constant(&self, shape: &[usize], values: &[f32]) -> Value<'c, 'b> {
        let ty = tensor_type(self.ctx, shape);
        let attr = DenseElementsAttribute::f32_values(ty, values);
        self.op("tosa.const", &[], &[("values", attr.into())], shape)
    }

    pub(super) fn zero_point(&self) -> Value<'c, 'b> {
        self.constant(&[1], &[0.0])
    }

    /// A `!tosa.shape<N>` operand.
    pub(super) fn shape_operand(&self, dims: &[i64]) -> Value<'c, 'b> {
        let index = Type::index(self.ctx);
        let ty: Type = RankedTensorType::new(&[dims.len() as u64], index, None).into();
        let values: Vec<Attribute> = dims
            .iter()
            .map(|&d| IntegerAttribute::new(index, d).into())
            .collect();
        let attr = DenseElementsAttribute::new(ty, &values).expect("index elements");
        let shape_ty = Type::parse(self.ctx, &format!("!tosa.shape<{}>", dims.len()))
            .expect("the tosa dialect is loaded");
        let op = OperationBuilder::new("tosa.const_shape", self.loc)
            .add_attributes(&[(self.id("values"), attr.into())])
            .add_results(&[shape_ty])
            .build()
            .expect("a well-formed operation");
        self.append(op)
    }

    pub(super) fn reshape(&self, v: Value<'c, 'b>, to: &[usize]) -> Value<'c, 'b> {
        let dims: Vec<i64> = to.iter().map(|&d| d as i64).collect();
        let shape = self.shape_operand(&dims);
        self.op("tosa.reshape", &[v, shape], &[], to)
    }

    pub(super) fn transpose(
        &self,
        v: Value<'c, 'b>,
        from: &[usize],
        perm: &[usize],
    ) -> Value<'c, 'b> {
        let to: Vec<usize> = perm.iter().map(|&p| from[p]).collect();
        let perms: Vec<i32> = perm.iter().map(|&p| p as i32).collect();
        let attr = DenseI32ArrayAttribute::new(self.ctx, &perms).into();
        self.op("tosa.transpose", &[v], &[("perms", attr)], &to)
    }

    pub(super) fn slice(&self, v: Value<'c, 'b>, start: &[usize], size: &[usize]) -> Value<'c, 'b> {
        let s: Vec<i64> = start.iter().map(|&d| d as i64).collect();
        let z: Vec<i64> = size.iter().map(|&d| d as i64).collect();
        let (start, sz) = (self.shape_operand(&s), self.shape_operand(&z));
        self.op("tosa.slice", &[v, start, sz], &[], size)
    }

    pub(super) fn i64_array(&self, values: &[i64]) -> Attribute<'c> {
        DenseI64ArrayAttribute::new(self.ctx, values).into()
    }

    pub(super) fn acc_f32(&self) -> Attribute<'c> {
        TypeAttribute::new(Type::float32(self.ctx)).into()
    }

    /// `v` (of `shape`) with leading 1s up to `rank` (TOSA broadcasts only equal ranks).
    pub(super) fn to_rank(&self, v: Value<'c, 'b>, shape: &[usize], rank: usize) -> Value<'c, 'b> {
        if shape.len() == rank {
            return v;
        }
        let mut to = vec![1; rank - shape.len()];
        to.extend_from_slice(shape);
        self.reshape(v, &to)
    }

    pub(super) fn mul(&self, a: Value<'c, 'b>, b: Value<'c, 'b>, shape: &[usize]) -> Value<'c, 'b> {
        let i8: Type = IntegerType::new(self.ctx, 8).into();
        let ty: Type = RankedTensorType::new(&[1], i8, None).into();
        let shift_attr = DenseElementsAttribute::i8_values(ty, &[0]);
        let op = OperationBuilder::new("tosa.const", self.loc)
            .add_attributes(&[(self.id("values"), shift_attr.into())])
            .add_results(&[ty])
            .build()
            .expect("a well-formed operation");
        let shift = self
            .block
            .append_operation(op)
            .result(0)
            .expect("one result")
            .into();
        self.op("tosa.mul", &[a, b, shift], &[], shape)
    }

    pub(super) fn clamp(
        &self,
        v: Value<'c, 'b>,
        low: f64,
        high: f64,
        shape: &[usize],
    ) -> Value<'c, 'b> {
        let f32 = Type::float32(self.ctx);
        let lo = FloatAttribute::new(self.ctx, f32, low).into();
        let hi = FloatAttribute::new(self.ctx, f32, high).into();
        self.op(
            "tosa.clamp",
            &[v],
            &[("min_val", lo), ("max_val", hi)],
            shape,
        )
    }

    pub(super) fn reduce(
        &self,
        name: &str,
        v: Value<'c, 'b>,
        shape: &[usize],
        axis: usize,
    ) -> (Value<'c, 'b>, Vec<usize>) {
        let mut out = shape.to_vec();
        out[axis] = 1;
        let i32: Type = IntegerType::new(self.ctx, 32).into();
        let axis_attr = IntegerAttribute::new(i32, axis as i64).into();
        (self.op(name, &[v], &[("axis", axis_attr)], &out), out)
    }
}
