//! Deferred work: a job that may finish any time before its deadline (a LoRA run, a
//! re-index) runs in the hours where its grams of CO2e plus the wear it adds are smallest.
//! [`forecast`] reads the hourly grid intensity and ambient, [`plan`] chooses the hours.

pub mod forecast;
pub mod plan;

pub use forecast::{ForecastError, Series, Source, hours, parse_time};
pub use plan::{HOUR_S, Hour, Need, Plan, Rate, Slot, Weights, cheapest, run_now};
