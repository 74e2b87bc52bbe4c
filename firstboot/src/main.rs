//! piforge-firstboot: skeleton; filled in by its own issue.
#![forbid(unsafe_code)]

fn main() {
    println!("piforge-firstboot {}", env!("CARGO_PKG_VERSION"));
}
