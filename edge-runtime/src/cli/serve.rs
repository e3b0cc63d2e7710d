//! `thermo serve`: the configuration flags and the telemetry flags over the configuration's
//! layers, then the service.

use anyhow::Result;
use clap::Args;

use super::flags::config::ConfigFlags;
use super::flags::telemetry::TelemetryArgs;

/// Flags of `thermo serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on [service.listen].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    #[command(flatten)]
    config: ConfigFlags,
    /// Telemetry flags, on top of the `[telemetry]` section.
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

/// `thermo serve`.
pub fn serve(args: ServeArgs) -> Result<()> {
    let config = args.config.load(&args.listen, |config| {
        args.telemetry.merge_onto(&mut config.telemetry);
    })?;
    edge_runtime::serve::run(&config)
}
