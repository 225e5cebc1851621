use workflows_runtime::prelude::*;

#[step]
struct NotAFunction;

fn main() {}
