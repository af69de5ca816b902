//! Shared by the document tests: docs/reference/mqtt-protocol.md and its fenced examples.
use std::path::PathBuf;

/// The protocol document.
pub fn doc() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/reference/mqtt-protocol.md");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

#[path = "../../../fleet-testkit/src/docs.rs"]
mod docs;

/// The bodies of the fenced blocks whose info string is `json <tag>`.
pub fn blocks(doc: &str, tag: &str) -> Vec<String> {
    docs::fenced_blocks(doc, &format!("json {tag}"))
}
