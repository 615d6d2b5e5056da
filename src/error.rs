//! One error type for everything a user can get wrong: a file, a flag, a value. Each names
//! what it is about, the rule it breaks and, where there is one, the fix.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug)]
pub enum Error {
    /// Reading or writing a file failed.
    Io { path: PathBuf, source: std::io::Error },
    /// A value broke a rule: `what` names the file/flag/field, `rule` says what was wrong.
    Invalid { what: String, rule: String, hint: Option<String> },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn invalid(what: impl Into<String>, rule: impl Into<String>) -> Error {
        Error::Invalid { what: what.into(), rule: rule.into(), hint: None }
    }

    pub fn with_hint(self, hint: impl Into<String>) -> Error {
        match self {
            Error::Invalid { what, rule, .. } => Error::Invalid { what, rule, hint: Some(hint.into()) },
            other => other,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Invalid { what, rule, hint } => {
                write!(f, "{what}: {rule}")?;
                if let Some(hint) = hint {
                    write!(f, "\nHINT: {hint}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Error {}
