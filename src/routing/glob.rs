//! `*` wildcards in policy names: `groq/*`, `gpt-5*`, `team-*`.

/// A name pattern; `*` matches any run of characters (including `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
}

impl Glob {
    pub fn new(pattern: &str) -> Self {
        Glob { pattern: pattern.to_owned() }
    }

    pub fn is_literal(&self) -> bool {
        !self.pattern.contains('*')
    }

    pub fn matches(&self, name: &str) -> bool {
        let mut pieces = self.pattern.split('*');
        let Some(first) = pieces.next() else { return name.is_empty() };
        let Some(mut rest) = name.strip_prefix(first) else { return false };
        let pieces: Vec<&str> = pieces.collect();
        let Some((last, middle)) = pieces.split_last() else { return rest.is_empty() };
        for piece in middle {
            match rest.find(piece) {
                Some(at) => rest = &rest[at + piece.len()..],
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last)
    }
}

/// True when `name` matches any of `globs`.
pub fn any_matches(globs: &[Glob], name: &str) -> bool {
    globs.iter().any(|glob| glob.matches(name))
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn wildcards() {
        let cases = [
            ("groq/*", "groq/openai/gpt-oss-20b", true),
            ("groq/*", "openai/gpt-5", false),
            ("gpt-*-mini", "gpt-5-mini", true),
            ("gpt-*-mini", "gpt-5-mini-x", false),
            ("*", "", true),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("*-flash", "deepseek-flash", true),
            ("a*b*c", "a-b-b-c", true),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(Glob::new(pattern).matches(name), expected, "{pattern} vs {name}");
        }
    }
}
