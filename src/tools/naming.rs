//! Tool names as clients see them: `server__tool`, within `[A-Za-z0-9_-]{1,64}` (Claude
//! and other clients refuse anything else).

use std::collections::BTreeSet;

const MAX: usize = 64;

/// `server__tool` with every other character replaced by `_`, cut to 64 characters.
pub fn exposed_name(server: &str, tool: &str) -> String {
    let clean: String =
        tool.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
    let mut name = format!("{server}__{clean}");
    name.truncate(MAX);
    name
}

/// Exposed names for one server's tools, in the order given: names that come out the
/// same (after replacement or cutting) get `_2`, `_3`… in the order of their original
/// names, so the result does not depend on the order the server listed them in.
/// Returns the names and the collisions found, for the log.
pub fn assign(server: &str, tools: &[String]) -> (Vec<String>, Vec<String>) {
    let mut sorted: Vec<(usize, &String)> = tools.iter().enumerate().collect();
    sorted.sort_by(|a, b| a.1.cmp(b.1));
    let mut taken = BTreeSet::new();
    let mut names = vec![String::new(); tools.len()];
    let mut collisions = Vec::new();
    for (index, tool) in sorted {
        let base = exposed_name(server, tool);
        let mut name = base.clone();
        let mut n = 2;
        while !taken.insert(name.clone()) {
            let suffix = format!("_{n}");
            let mut cut = base.clone();
            cut.truncate(MAX - suffix.len());
            name = format!("{cut}{suffix}");
            n += 1;
        }
        if name != base {
            collisions.push(format!("`{tool}` of {server} is exposed as `{name}` ({base} was taken)"));
        }
        names[index] = name;
    }
    (names, collisions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_clean_bounded_and_unique() {
        assert_eq!(exposed_name("files", "read.file/v2"), "files__read_file_v2");
        let long = "x".repeat(100);
        assert_eq!(exposed_name("s", &long).len(), 64);
        let (names, collisions) = assign("s", &["a.b".into(), "a_b".into(), "c".into()]);
        // "a.b" sorts before "a_b", so it keeps the plain name whatever the listing order.
        assert_eq!(names, ["s__a_b", "s__a_b_2", "s__c"]);
        assert_eq!(collisions.len(), 1);
        let (reordered, _) = assign("s", &["a_b".into(), "a.b".into()]);
        assert_eq!(reordered, ["s__a_b_2", "s__a_b"]);
        let (bounded, _) = assign("s", &[long.clone(), format!("{long}y")]);
        assert!(bounded.iter().all(|name| name.len() <= 64) && bounded[0] != bounded[1]);
    }
}
