//! `thermo bench llm|embed|governor|eco|rag|index|schedule|fleet|train`: one module per benchmark, and what
//! they read about the process (`process`). The command group itself is declared with the
//! other commands in `cli/mod.rs`, so that `bench train` can run `thermo train`'s preparation
//! without this module importing the `train` command.

pub mod eco;
pub mod embed;
pub mod fleet;
pub mod governor;
pub mod index;
pub mod llm;
pub mod process;
pub mod rag;
pub mod schedule;
pub mod train;
