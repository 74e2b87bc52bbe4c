//! piforge-node: skeleton; filled in by its own issue.
#![forbid(unsafe_code)]

fn main() {
    println!("piforge-node {}", env!("CARGO_PKG_VERSION"));
}
