//! The text crate's integration tests: one test binary with a module per file, so that the
//! crate and its dependencies are linked once rather than once per file.

mod control_tokens;
mod hf_golden;
mod reasoning;
mod streaming_props;
mod templates;
mod tool_parser;
