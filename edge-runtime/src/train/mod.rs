//! On-device LoRA fine-tuning with candle (CPU, f32) on the weights the engine serves. Owns
//! the training graph, the adapters and their PEFT files, the data pipeline, AdamW and the
//! loop with its checkpoints. It asks the governor for a permit before every optimizer
//! step; it does not import tract (serving an adapter is the engine's job) and knows
//! nothing about sensors.
pub mod atomic;
pub mod augment;
pub mod data;
pub mod lora;
pub mod model;
pub mod notes;
pub mod optim;
pub mod serve;
pub mod source;
#[cfg(any(test, feature = "test-util"))]
pub mod tiny;
pub mod trainer;

#[cfg(test)]
mod tests;
