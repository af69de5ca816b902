//! Reading the samples out of the documents, so a test parses exactly what a reader copies.
//!
//! Self-contained (std only): fleet-proto's document tests include this file by path, since
//! fleet-proto cannot depend on the test kit that depends on it.

/// The bodies of the fenced blocks of `doc` whose info string is exactly `info` (after the
/// three backticks, surrounding blanks ignored), in document order.
#[must_use]
pub fn fenced_blocks(doc: &str, info: &str) -> Vec<String> {
    let open = format!("```{info}");
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in doc.lines() {
        match &mut cur {
            None if line.trim() == open => cur = Some(String::new()),
            Some(body) if line.trim() == "```" => {
                out.push(std::mem::take(body));
                cur = None;
            }
            Some(body) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::fenced_blocks;

    #[test]
    fn only_blocks_with_exactly_the_info_string_are_read_in_order() {
        let doc = "text\n```toml\na = 1\n```\n```toml other\nb = 2\n```\n  ```toml  \nc = 3\nd = 4\n```\n```toml\nunclosed\n";
        assert_eq!(fenced_blocks(doc, "toml"), ["a = 1\n", "c = 3\nd = 4\n"]);
        assert_eq!(fenced_blocks(doc, "toml other"), ["b = 2\n"]);
        assert!(fenced_blocks(doc, "json").is_empty());
    }
}
