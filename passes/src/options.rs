//! Typed pass options: each pass declares its options once (name, type, default, help) and
//! reads them as typed values; unknown names and bad values are errors naming the option.

use std::collections::HashMap;
use std::time::Duration;

/// The declaration of one option.
#[derive(Clone, Copy, Debug)]
pub struct OptionSpec {
    /// Option name as written in a pipeline (`rate`).
    pub name: &'static str,
    /// What kind of value it takes, for help and errors (`number`, `RxC`).
    pub kind: &'static str,
    /// Default value as text, if the option may be omitted.
    pub default: Option<&'static str>,
    /// One-line help.
    pub help: &'static str,
}

/// What an option's value should have been.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

impl From<String> for ValueError {
    fn from(message: String) -> ValueError {
        ValueError(message)
    }
}

impl From<&str> for ValueError {
    fn from(message: &str) -> ValueError {
        ValueError(message.to_string())
    }
}

/// A value type an option can take.
pub trait OptionValue: Sized {
    /// Parses the text after `key=`, or says what was expected.
    fn parse_option(s: &str) -> Result<Self, ValueError>;
}

impl OptionValue for f64 {
    fn parse_option(s: &str) -> Result<Self, ValueError> {
        s.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| ValueError(format!("expected a number, got '{s}'")))
    }
}

impl OptionValue for usize {
    fn parse_option(s: &str) -> Result<Self, ValueError> {
        s.parse()
            .map_err(|_| ValueError(format!("expected a non-negative integer, got '{s}'")))
    }
}

impl OptionValue for u64 {
    fn parse_option(s: &str) -> Result<Self, ValueError> {
        s.parse()
            .map_err(|_| ValueError(format!("expected a non-negative integer, got '{s}'")))
    }
}

impl OptionValue for bool {
    fn parse_option(s: &str) -> Result<Self, ValueError> {
        match s {
            "true" | "1" | "on" => Ok(true),
            "false" | "0" | "off" => Ok(false),
            _ => Err(format!("expected true or false, got '{s}'").into()),
        }
    }
}

impl OptionValue for String {
    fn parse_option(s: &str) -> Result<Self, ValueError> {
        Ok(s.to_string())
    }
}

impl OptionValue for Duration {
    fn parse_option(s: &str) -> Result<Self, ValueError> {
        let err = || {
            ValueError(format!(
                "expected a duration like 500ms, 2s or 1.5s, got '{s}'"
            ))
        };
        let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
            (n, 1e-3)
        } else if let Some(n) = s.strip_suffix('s') {
            (n, 1.0)
        } else {
            return Err(err());
        };
        let x: f64 = num.parse().map_err(|_| err())?;
        if !(x.is_finite() && x >= 0.0) {
            return Err(err());
        }
        Ok(Duration::from_secs_f64(x * scale))
    }
}

/// The options given to one pass in a pipeline, checked against its declarations.
#[derive(Clone, Debug)]
pub struct PassOptions {
    pass: String,
    specs: &'static [OptionSpec],
    values: HashMap<String, String>,
}

/// A bad option: which one, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionError {
    /// The option's name (empty when the error is about the pass as a whole).
    pub option: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl PassOptions {
    /// Checks `values` against `specs`: every key must be declared.
    pub fn new(
        pass: &str,
        specs: &'static [OptionSpec],
        values: Vec<(String, String)>,
    ) -> Result<Self, OptionError> {
        let mut map = HashMap::new();
        for (k, v) in values {
            if !specs.iter().any(|s| s.name == k) {
                let known: Vec<&str> = specs.iter().map(|s| s.name).collect();
                let known = if known.is_empty() {
                    "it takes no options".to_string()
                } else {
                    format!("known options: {}", known.join(", "))
                };
                return Err(OptionError {
                    message: format!("unknown option '{k}' for pass '{pass}'; {known}"),
                    option: k,
                });
            }
            if map.insert(k.clone(), v).is_some() {
                return Err(OptionError {
                    message: format!("option '{k}' of pass '{pass}' is given twice"),
                    option: k,
                });
            }
        }
        Ok(PassOptions {
            pass: pass.to_string(),
            specs,
            values: map,
        })
    }

    fn spec(&self, name: &str) -> &OptionSpec {
        self.specs
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("pass '{}' reads undeclared option '{name}'", self.pass))
    }

    /// Whether the option was written in the pipeline.
    pub fn is_set(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// The option's value: as written, else its default; an error if neither exists or the
    /// text does not parse.
    pub fn get<T: OptionValue>(&self, name: &str) -> Result<T, OptionError> {
        self.opt(name)?.ok_or_else(|| OptionError {
            option: name.to_string(),
            message: format!(
                "pass '{}' requires option '{name}' ({})",
                self.pass,
                self.spec(name).help
            ),
        })
    }

    /// The option's value if written or defaulted.
    pub fn opt<T: OptionValue>(&self, name: &str) -> Result<Option<T>, OptionError> {
        let spec = self.spec(name);
        let Some(text) = self.values.get(name).map(String::as_str).or(spec.default) else {
            return Ok(None);
        };
        T::parse_option(text).map(Some).map_err(|e| OptionError {
            option: name.to_string(),
            message: format!(
                "invalid value for option '{name}' of pass '{}': {e}",
                self.pass
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[OptionSpec] = &[
        OptionSpec {
            name: "rate",
            kind: "number",
            default: Some("8"),
            help: "compression",
        },
        OptionSpec {
            name: "limit",
            kind: "duration",
            default: None,
            help: "time limit",
        },
    ];

    #[test]
    fn defaults_values_and_errors() {
        let o = PassOptions::new("p", SPECS, vec![]).unwrap();
        assert_eq!(o.get::<f64>("rate").unwrap(), 8.0);
        assert!(
            o.get::<Duration>("limit")
                .unwrap_err()
                .message
                .contains("requires option 'limit'")
        );
        let o = PassOptions::new("p", SPECS, vec![("limit".into(), "250ms".into())]).unwrap();
        assert_eq!(
            o.get::<Duration>("limit").unwrap(),
            Duration::from_millis(250)
        );
        let e = PassOptions::new("p", SPECS, vec![("rat".into(), "1".into())]).unwrap_err();
        assert_eq!(
            e.message,
            "unknown option 'rat' for pass 'p'; known options: rate, limit"
        );
        let o = PassOptions::new("p", SPECS, vec![("rate".into(), "x".into())]).unwrap();
        assert_eq!(
            o.get::<f64>("rate").unwrap_err().message,
            "invalid value for option 'rate' of pass 'p': expected a number, got 'x'"
        );
    }
}
