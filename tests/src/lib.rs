pub mod harness;
pub mod host;
pub mod readme;
