//! The thermo edge runtime.
pub mod engine;
