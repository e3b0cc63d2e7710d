//! Eco accounting and the zombie-compute guard: energy measured at the board (power sensor,
//! RAPL, or the per-board power model over CPU time, each figure saying which), converted into
//! carbon, water, air pollutants, embodied carbon and thermal wear through one sourced factor
//! table; the hidden layers kept apart from those figures (retrieval's memory, the model's
//! declared upstream training, wasted work); CodeCarbon-compatible `emissions.csv`; a guard
//! that stops degenerate generation and enforces per-request budgets; an agent-loop
//! detector; llama.cpp-compatible perplexity and the eco-benchmark's measuring. Nothing here
//! imports tract: models are run through `engine`; the eco-benchmark's report and its rating
//! live in `crate::bench::eco`.
pub mod agent_loop;
pub mod config;
pub mod emissions_csv;
pub mod energy;
pub mod factors;
pub mod footprint;
pub mod guard;
pub mod layers;
pub mod ledger;
pub mod perplexity;
pub mod wear;

pub use config::{EcoConfig, EcoConfigError, Factors};
pub use energy::{EnergyMeter, EnergySource, MeterHandle};
pub use footprint::Footprint;
pub use guard::{GuardConfig, ZombieGuard};
pub use layers::{IndexFootprint, Layers, MemoryCost};
