//! The router tests on the mock engine: no socket, no model. One test binary with a module per
//! area (rather than a binary per file) so that the server crate and its dependencies are
//! linked once, not sixteen times: the sixteen binaries took ~6 of a clean build's 27 minutes
//! on a 2-core machine.

mod common;

mod api;
mod batches;
mod builtin_tools;
mod errors;
mod files;
mod fine_tunings;
mod health;
mod keys;
mod limits;
mod metrics;
mod policy;
mod responses;
mod structured;
mod tools;
mod vision;
