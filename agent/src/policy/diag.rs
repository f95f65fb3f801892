//! Diagnostics that say what is wrong and exactly where: `file:line:column`.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

/// A position in a policy or config file (1-based line and column). The
/// file name is shared: a large policy has a location per rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceLoc {
    pub file: Arc<Path>,
    pub line: u32,
    pub column: u32,
}

impl SourceLoc {
    pub fn new(file: impl Into<PathBuf>, line: u32, column: u32) -> Self {
        Self {
            file: Arc::from(file.into()),
            line,
            column,
        }
    }

    /// The location of a spanned YAML value in `file`.
    pub fn of(file: &Path, spanned: &impl Located) -> Self {
        let (line, column) = spanned.line_column();
        Self::new(file, line, column)
    }

    /// Same, sharing the file name.
    pub fn in_file(file: &Arc<Path>, spanned: &impl Located) -> Self {
        let (line, column) = spanned.line_column();
        Self {
            file: file.clone(),
            line,
            column,
        }
    }
}

/// A value that knows where it was written.
pub trait Located {
    fn line_column(&self) -> (u32, u32);
}

impl<T> Located for serde_saphyr::Spanned<T> {
    fn line_column(&self) -> (u32, u32) {
        (
            self.referenced.line() as u32,
            self.referenced.column() as u32,
        )
    }
}

impl<T> Located for super::model::Spanned<T> {
    fn line_column(&self) -> (u32, u32) {
        (self.line(), self.column())
    }
}

impl fmt::Display for SourceLoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            // Position unknown (a value read by the JSON fast path).
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

/// One finding about a policy file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub loc: SourceLoc,
    pub message: String,
    /// How to fix it, when there is something useful to say.
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(loc: SourceLoc, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            loc,
            message: message.into(),
            hint: None,
        }
    }

    pub fn warning(loc: SourceLoc, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(loc, message)
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// From a YAML parse error of `file`, keeping its position.
    pub fn from_yaml(file: &Path, err: &serde_saphyr::Error) -> Self {
        let (line, column) = err
            .location()
            .map_or((1, 1), |l| (l.line() as u32, l.column() as u32));
        let text = err.without_snippet().to_string();
        // The library appends " at line L, column C"; we print the position
        // in front, so drop it here.
        let suffix = format!(" at line {line}, column {column}");
        let message = text.strip_suffix(&suffix).unwrap_or(&text).to_string();
        Self::error(SourceLoc::new(file, line, column), message)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.severity {
            Severity::Error => write!(f, "{}: {}", self.loc, self.message)?,
            Severity::Warning => write!(f, "{}: warning: {}", self.loc, self.message)?,
        }
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// A policy that could not be accepted: every error found, in file order.
#[derive(Debug, Clone, thiserror::Error)]
pub struct PolicyErrors {
    pub diagnostics: Vec<Diagnostic>,
}

impl PolicyErrors {
    pub fn single(d: Diagnostic) -> Self {
        Self {
            diagnostics: vec![d],
        }
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for d in &self.diagnostics {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "{d}")?;
        }
        Ok(())
    }
}
