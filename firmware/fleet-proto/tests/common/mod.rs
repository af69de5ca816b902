//! Shared by the document tests: docs/reference/mqtt-protocol.md and its fenced examples.
use std::path::PathBuf;

/// The protocol document.
pub fn doc() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/reference/mqtt-protocol.md");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// The bodies of the fenced blocks whose info string is `json <tag>`.
pub fn blocks(doc: &str, tag: &str) -> Vec<String> {
    let open = format!("```json {tag}");
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
