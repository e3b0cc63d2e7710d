//! The thermo edge runtime: a governed language-model engine for single-board computers.
//! `engine` is the only module that touches tract; `governor` is pure control logic, `pacing`
//! drives it on the board (actuators, permits) and `bench` holds the benchmarks; `session` is
//! what the jobs share (governed session, telemetry, eco accounting, model and prompt);
//! `models` knows where models live and how the default one is fetched. The command line
//! belongs to the `thermo` binary (`src/cli/`): nothing here imports it.
pub mod bench;
pub mod config;
pub mod deferred;
pub mod eco;
pub mod engine;
pub mod gateway;
pub mod governor;
pub mod index;
pub mod models;
pub mod pacing;
pub mod schedule;
pub mod sensing;
pub mod serve;
pub mod session;
pub mod shutdown;
pub mod telemetry;
pub mod train;
