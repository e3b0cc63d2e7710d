//! The `thermo` binary: parse the command line, run the subcommand, report errors.

use clap::Parser;
use edge_runtime::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    if let Command::Train(args) = &cli.command
        && let Err(e) = edge_runtime::cli::train::ensure_threads(args)
    {
        eprintln!("error: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Run(args) => edge_runtime::cli::run::run(args),
        Command::Chat(args) => edge_runtime::cli::run::chat(args),
        Command::ImportGguf(args) => edge_runtime::cli::import::import(args),
        Command::FetchModel(args) => edge_runtime::cli::import::fetch(args),
        Command::BenchLlm(args) => edge_runtime::cli::bench_llm::bench(args),
        Command::Bench(args) => edge_runtime::cli::bench_governor::bench(args),
        Command::Sensors(args) => edge_runtime::cli::sensors::sensors(args),
        Command::Fleet(args) => edge_runtime::cli::fleet::fleet(args),
        Command::Perplexity(args) => edge_runtime::cli::perplexity::run(args),
        Command::Serve(args) => edge_runtime::cli::serve::serve(args),
        Command::Config(args) => edge_runtime::cli::serve::config(args),
        Command::Train(args) => edge_runtime::cli::train::train(args),
        Command::Eco(args) => edge_runtime::cli::ledger::eco(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
