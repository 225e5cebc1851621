//! Example workflows for `workflows-runtime`, shared by the runnable examples (`examples/`),
//! the benchmark binary and the tests.

pub mod api_route;
pub mod hello_world;
pub mod order_saga;
pub mod product_count;
