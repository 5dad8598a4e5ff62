//! Problems found while loading configuration, located as `file:line:col`.

use std::fmt;
use std::ops::Range;

/// One problem in one file. Displays as `file:line:col: message`, the shape editors and
/// CI annotations understand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Problem {
    /// A problem at a byte range of `text` (1-based line and column, columns in characters).
    pub fn at_span(file: &str, text: &str, span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        let offset = span.map_or(0, |s| s.start.min(text.len()));
        let before = text.get(..offset).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Problem { file: file.to_owned(), line, column, message: message.into() }
    }

    /// A problem with a whole file (unreadable, missing).
    pub fn in_file(file: &str, message: impl Into<String>) -> Self {
        Problem { file: file.to_owned(), line: 1, column: 1, message: message.into() }
    }

    pub fn from_toml(file: &str, text: &str, error: &toml::de::Error) -> Self {
        Problem::at_span(file, text, error.span(), error.message().trim_end())
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)
    }
}

/// Every problem found in one load; loading goes on past the first so `check` can list all.
#[derive(Debug, Default, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_spans_in_lines_and_characters() {
        let text = "a = 1\nname = \"й\" x\n";
        let offset = text.find('x').unwrap();
        let problem = Problem::at_span("f.toml", text, Some(offset..offset + 1), "bad");
        assert_eq!(problem.to_string(), "f.toml:2:12: bad");
    }
}
