//! Side-by-side benchmark (work in progress).
fn main() {}
