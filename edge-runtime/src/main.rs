//! The `thermo` binary: parse the command line, run the subcommand, report errors.

mod cli;

use clap::Parser;
use cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    if let Command::Train(args) = &cli.command
        && let Err(e) = cli::train::ensure_threads(args)
    {
        eprintln!("error: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Run(args) => cli::run::run(args),
        Command::Chat(args) => cli::run::chat(args),
        Command::ImportGguf(args) => cli::import::import(args),
        Command::FetchModel(args) => cli::import::fetch(args),
        Command::BenchLlm(args) => cli::bench_llm::bench(args),
        Command::Bench(args) => cli::bench_governor::bench(args),
        Command::Sensors(args) => cli::sensors::sensors(args),
        Command::Fleet(args) => cli::fleet::fleet(args),
        Command::Perplexity(args) => cli::perplexity::run(args),
        Command::Serve(args) => cli::serve::serve(args),
        Command::Config(args) => cli::serve::config(args),
        Command::Train(args) => cli::train::train(args),
        Command::Eco(args) => cli::ledger::eco(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
