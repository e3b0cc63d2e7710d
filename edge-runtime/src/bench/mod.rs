//! The benchmarks' library side: what runs offline and what turns measurements into reports.
//! [`governor`] runs every controller on the simulated SoC and writes its tables and plots;
//! [`eco`] rates the eco-benchmark's entries and renders its report; [`rag`] renders the
//! retrieval benchmark's report; [`schedule`] runs a week of deferred jobs on the twins;
//! [`svg`] is the plotting they share. The measuring of the real model (`bench llm`,
//! `bench eco`, `bench rag`, `bench train`) is done by the command line, which feeds these
//! modules.
//!
//! Benchmarks may import any library module; only the command line imports them.

pub mod eco;
pub mod fleet;
pub mod governor;
pub mod rag;
pub mod schedule;
pub mod svg;
