//! The syntax tree the grammar builds. Every node keeps byte offsets into the source so
//! that lowering can point at the exact place of a problem.

/// A byte range in the source.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// A span from `start` to `end`.
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }
}

/// Something with a span.
#[derive(Clone, Debug, PartialEq)]
pub struct Spanned<T> {
    /// The node.
    pub node: T,
    /// Where it is.
    pub span: Span,
}

/// A parsed file (or one chunk of a split file).
#[derive(Clone, Debug, PartialEq)]
pub struct File {
    /// The module name, if the file wrote `module @name { ... }`.
    pub name: Option<Spanned<String>>,
    /// Where the module starts.
    pub span: Span,
    /// Weights and functions, in order.
    pub items: Vec<Item>,
}

/// A module-level item.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// `dnn.weight @name : type = init`.
    Weight(Box<WeightDecl>),
    /// `func.func @name(...) -> ... { ... }`.
    Func(Box<FuncDef>),
    /// A syntax error the parser recovered from.
    Error,
}

/// `KEYWORD @name : type = init`, where KEYWORD must be `dnn.weight`.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightDecl {
    /// The leading keyword (checked during lowering).
    pub keyword: Spanned<String>,
    /// The weight's name.
    pub name: Spanned<String>,
    /// Its type.
    pub ty: Type,
    /// Its initialiser.
    pub init: Spanned<Init>,
    /// The whole declaration.
    pub span: Span,
}

/// A weight initialiser.
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    /// `#name<params>` (only `#init` is valid).
    Hash(HashAttr),
    /// `dense<...>`.
    Dense(Dense),
    /// `file<"path", key = "k">`.
    File {
        /// The path.
        path: String,
        /// Further parameters (only `key` is valid).
        params: Vec<(Spanned<String>, Spanned<Attr>)>,
    },
}

/// `#name` or `#name<p1, key = value, ...>`.
#[derive(Clone, Debug, PartialEq)]
pub struct HashAttr {
    /// The name after `#`.
    pub name: Spanned<String>,
    /// Positional identifiers (`he_normal`).
    pub positional: Vec<Spanned<String>>,
    /// Keyed parameters (`seed = 1`).
    pub params: Vec<(Spanned<String>, Spanned<Attr>)>,
}

/// A `tensor<...>` type.
#[derive(Clone, Debug, PartialEq)]
pub struct Type {
    /// `1x3xf32`, or just `f32` for a scalar.
    pub shape: Spanned<String>,
    /// The optional layout encoding.
    pub encoding: Option<Box<HashAttr>>,
    /// The whole type.
    pub span: Span,
}

/// A `dense<...>` literal.
#[derive(Clone, Debug, PartialEq)]
pub enum Dense {
    /// `dense<"0x...">`: little-endian bytes in hex.
    Hex(Spanned<String>),
    /// `dense<1.0>` or `dense<[[1, 2], [3, 4]]>`.
    Elements(DenseElem),
}

/// An element or nested list of a dense literal.
#[derive(Clone, Debug, PartialEq)]
pub enum DenseElem {
    /// A number, as written.
    Number(Spanned<String>),
    /// A bracketed list.
    List(Vec<DenseElem>, Span),
}

/// A generic attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    /// Integer literal text.
    Int(String),
    /// Float literal text (or `inf`, `nan`, `-inf`).
    Float(String),
    /// `true` / `false`.
    Bool(bool),
    /// String literal (unescaped).
    Str(String),
    /// A list.
    Array(Vec<Spanned<Attr>>),
    /// A bare identifier that is not a number (an error unless `inf` or `nan`).
    Ident(String),
}

/// `func.func @name(%a: type, ...) -> types { body }`.
#[derive(Clone, Debug, PartialEq)]
pub struct FuncDef {
    /// The function's name.
    pub name: Spanned<String>,
    /// Parameters and their types.
    pub params: Vec<(Spanned<String>, Type)>,
    /// Declared result types.
    pub results: Vec<Type>,
    /// Statements, the last of which should be `return`.
    pub body: Vec<Stmt>,
    /// Where the closing brace is.
    pub end: Span,
    /// The header.
    pub span: Span,
}

/// A statement of a function body.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `%r, ... = name operands {attrs} : types loc(...)`.
    Op(Box<OpStmt>),
    /// `return %a, ... : types`.
    Return {
        /// Returned values.
        values: Vec<Spanned<String>>,
        /// The optional type annotation.
        types: Vec<Type>,
        /// The statement.
        span: Span,
    },
    /// A syntax error the parser recovered from.
    Error,
}

/// An op statement.
#[derive(Clone, Debug, PartialEq)]
pub struct OpStmt {
    /// Result names.
    pub results: Vec<Spanned<String>>,
    /// The op name.
    pub name: Spanned<String>,
    /// Operands.
    pub operands: Vec<Spanned<Operand>>,
    /// The attribute dictionary.
    pub attrs: Vec<(Spanned<String>, Spanned<Attr>)>,
    /// Declared result types.
    pub types: Vec<Type>,
    /// `loc("name")`, if written.
    pub loc_name: Option<String>,
    /// The whole statement.
    pub span: Span,
}

/// An op operand.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// `%name`.
    Value(String),
    /// `@name` (for `dnn.weight`).
    Symbol(String),
    /// `dense<...>` (for `dnn.constant`).
    Dense(Dense),
}
