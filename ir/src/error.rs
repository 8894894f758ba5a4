//! The errors of `dnnc-ir`'s functions that are not about one op or weight (those are
//! [`crate::attr::AttrError`] and [`crate::weights::WeightError`]): each says what was
//! expected, and the caller adds the location it knows (an op's, a file's).

/// An op's operands, attributes or result do not fit its definition (type inference,
/// the verifier, the builder).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TypeError(pub String);

impl From<String> for TypeError {
    fn from(message: String) -> TypeError {
        TypeError(message)
    }
}

impl From<&str> for TypeError {
    fn from(message: &str) -> TypeError {
        TypeError(message.to_string())
    }
}

/// Tensor data that cannot be made or read: an initializer that does not fit its type,
/// bytes that are not a tensor of the stated shape, a `.npy` or `.safetensors` file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// An initializer (`#init<...>`) that cannot fill its type.
    #[error("{0}")]
    Init(String),
    /// Raw bytes that are not the stated tensor.
    #[error("{0}")]
    Bytes(String),
    /// A `.npy` file that cannot be read or written.
    #[error("{0}")]
    Npy(String),
    /// A `.safetensors` file that cannot be read or written.
    #[error("{0}")]
    Safetensors(String),
}

// Private helpers across the workspace still build messages as strings; `?` turns these
// errors into their message there.
impl From<TypeError> for String {
    fn from(e: TypeError) -> String {
        e.0
    }
}

impl From<DataError> for String {
    fn from(e: DataError) -> String {
        e.to_string()
    }
}

/// Why running a function failed, on any backend: which op (or `input`, `weight`), where
/// it is, what went wrong, and what to do about it where there is something to say.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{loc}: error: '{op}' op {message}")]
pub struct RunError {
    /// The op's name (or `input`, `weight`).
    pub op: String,
    /// The op's location (the function's for its inputs).
    pub loc: crate::diag::Location,
    /// What went wrong.
    pub message: String,
    /// What to do about it.
    pub help: Option<String>,
}

impl RunError {
    /// An error of `op` at `loc`.
    pub fn new(
        op: impl Into<String>,
        loc: crate::diag::Location,
        message: impl Into<String>,
    ) -> RunError {
        RunError {
            op: op.into(),
            loc,
            message: message.into(),
            help: None,
        }
    }

    /// The error with a suggestion.
    pub fn with_help(mut self, help: impl Into<String>) -> RunError {
        self.help = Some(help.into());
        self
    }

    /// The error as a diagnostic, for [`crate::diag::SourceMap::render`].
    pub fn to_diagnostic(&self) -> crate::diag::Diagnostic {
        let d = crate::diag::Diagnostic::error(
            self.loc.clone(),
            format!("'{}' op {}", self.op, self.message),
        );
        match &self.help {
            Some(h) => d.with_help(h.clone()),
            None => d,
        }
    }
}
