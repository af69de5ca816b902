//! Boot-flow models (pure). See docs/adr/0001-boot-flow.md.
