//! The thermo edge runtime.
pub mod engine;
pub mod governor;
