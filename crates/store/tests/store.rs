//! The store crate's integration tests: one test binary with a module per file, so that the
//! crate and its dependencies are linked once rather than once per file.

mod batches;
mod common;
mod files;
mod keys;
