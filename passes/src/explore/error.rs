//! Why exploring, calibrating or predicting failed.

/// Why exploring, calibrating or predicting failed; each says what and where it could.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExploreError {
    /// The cost table file cannot be read, parsed or written.
    #[error("{0}")]
    Costs(String),
    /// A measurement (a calibration probe, a kernel time) failed.
    #[error("{0}")]
    Measure(String),
    /// The module cannot be explored or written back (a weight that cannot be read, an
    /// op outside the language).
    #[error("{0}")]
    Module(String),
}

impl From<String> for ExploreError {
    fn from(message: String) -> ExploreError {
        ExploreError::Module(message)
    }
}

impl From<&str> for ExploreError {
    fn from(message: &str) -> ExploreError {
        ExploreError::Module(message.to_string())
    }
}

impl From<ExploreError> for String {
    fn from(e: ExploreError) -> String {
        e.to_string()
    }
}
