//! The thermo edge runtime: a governed language-model engine for single-board computers.
//! `engine` is the only module that touches tract; `governor` is pure control logic, `pacing`
//! drives it on the board (actuators, permits) and `bench` holds the benchmarks; `cli` maps
//! the command line onto the library; `models` knows where models live and how the default
//! one is fetched.
pub mod bench;
pub mod cli;
pub mod config;
pub mod eco;
pub mod engine;
pub mod governor;
pub mod models;
pub mod pacing;
pub mod sensing;
pub mod serve;
pub mod shutdown;
pub mod telemetry;
pub mod train;
