//! The tools crate's integration tests: one test binary with a module per file, so that the
//! crate and its dependencies are linked once rather than once per file.

mod sandbox;
mod search;
mod ssrf;
