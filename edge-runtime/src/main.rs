//! The `thermo` binary: parse the command line, run the subcommand, report errors. The
//! command line (`cli`) belongs to the binary; the library knows nothing of it.

mod cli;

use clap::Parser;
use cli::{BenchCommand, Cli, Command};

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let parsed = Cli::parse();
    let train = match &parsed.command {
        Command::Train(args) => Some(args),
        Command::Bench(b) => match &b.command {
            BenchCommand::Train(args) => Some(&**args),
            _ => None,
        },
        _ => None,
    };
    if let Some(args) = train
        && let Err(e) = cli::train::ensure_threads(args)
    {
        eprintln!("error: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    let result = match parsed.command {
        Command::Run(args) => cli::run::run(args),
        Command::Chat(args) => cli::run::chat(args),
        Command::ImportGguf(args) => cli::import::import(args),
        Command::FetchModel(args) => cli::import::fetch(args),
        Command::Bench(args) => bench(args.command),
        Command::BenchLlm(args) => cli::bench::llm::bench(args),
        Command::Sensors(args) => cli::sensors::sensors(args),
        Command::Fleet(args) => cli::fleet::fleet(args),
        Command::Perplexity(args) => cli::perplexity::run(args),
        Command::Embed(args) => cli::embed::run(args),
        Command::Index(args) => cli::index::index(args),
        Command::Serve(args) => cli::serve::serve(args),
        Command::Gateway(args) => cli::gateway::gateway(args),
        Command::Config(args) => cli::config::config(args),
        Command::Train(args) => cli::train::train(args),
        Command::Eco(args) => cli::eco::eco(args),
        Command::Agent(args) => cli::agent::agent(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `thermo bench ...`.
fn bench(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Llm(args) => cli::bench::llm::bench(args),
        BenchCommand::Embed(args) => cli::bench::embed::bench(args),
        BenchCommand::Governor(args) => cli::bench::governor::bench(&args),
        BenchCommand::Eco(args) => cli::bench::eco::bench(&args),
        BenchCommand::Rag(args) => cli::bench::rag::bench(&args),
        BenchCommand::Train(args) => cli::train::bench(*args),
        BenchCommand::Index(args) => cli::bench::index::bench(&args),
        BenchCommand::Schedule(args) => cli::bench::schedule::bench(&args),
        BenchCommand::Fleet(args) => cli::bench::fleet::bench(&args),
    }
}
