//! Configuration problems, each naming the file, the line when known, and the key path.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub line: Option<usize>,
    /// `pools.cards.providers[1].weight`; empty for problems with the whole file.
    pub key: String,
    pub message: String,
}

/// Every problem found in one configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub issues: Vec<ConfigIssue>,
}

impl ConfigErrors {
    pub fn single(file: &Path, line: Option<usize>, key: &str, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            issues: vec![ConfigIssue {
                line,
                key: key.to_string(),
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.file.display())?;
            if let Some(line) = issue.line {
                write!(f, ":{line}")?;
            }
            if issue.key.is_empty() {
                write!(f, ": {}", issue.message)?;
            } else {
                write!(f, ": {}: {}", issue.key, issue.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
