//! The `folio` binary.

fn main() {
    println!("folio {}", env!("CARGO_PKG_VERSION"));
}
