pub mod harness;
pub mod host;
