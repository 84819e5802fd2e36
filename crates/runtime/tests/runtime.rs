//! The runtime's tests on the mock engine. One test binary with a module per area, so that the
//! runtime and its dependencies are linked once rather than once per file.

mod support;

mod adapters;
mod cost_model;
mod jump_forward;
mod prefix_offload;
mod speculation;
