//! `tollgate events tail` and `tollgate usage export`: clients of the event broker.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use tollgate_data::usage::EventsHealth;
use tollgate_events::tail::TailFilter;
use tollgate_events::{Broker, EventType, EventsConfig};

use crate::cli::{BrokerArgs, EventsCommand, UsageCommand};

/// Connects, waiting up to 5 s for the broker to answer (a command has nothing to do
/// without it).
async fn connect(args: &BrokerArgs) -> anyhow::Result<Broker> {
    let mut config = EventsConfig::new(&args.events, &crate::configuration::host_name())?;
    config.credentials = args.events_credentials.clone();
    config.ca = args.events_ca.clone();
    let url = config.redacted_url();
    let broker = Broker::connect(config, Arc::new(EventsHealth::default())).await?;
    for _ in 0..100 {
        if broker.is_connected() {
            return Ok(broker);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    bail!("the event broker at {url} does not answer (is nats-server running with -js?)")
}

/// Runs `tollgate events …`.
pub async fn run(command: &EventsCommand) -> anyhow::Result<ExitCode> {
    match command {
        EventsCommand::Tail {
            broker,
            types,
            domain,
            count,
            json,
        } => {
            let types = types
                .iter()
                .map(|t| {
                    EventType::parse(t).with_context(|| {
                        format!("--type: '{t}' is not one of audit, change, denial, usage")
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let broker = connect(broker).await?;
            let filter = TailFilter {
                types,
                domain: domain.clone(),
                count: *count,
            };
            let stdout = std::io::stdout();
            let readable = !json && stdout.is_terminal();
            if readable {
                eprintln!("waiting for events (Ctrl-C to stop)");
            }
            tollgate_events::tail::tail(&broker, &filter, readable, &mut stdout.lock()).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs `tollgate usage …`.
pub async fn usage(command: &UsageCommand) -> anyhow::Result<ExitCode> {
    match command {
        UsageCommand::Export {
            broker,
            to,
            consumer,
            block,
            until_idle,
            flush_after,
        } => {
            let broker = connect(broker).await?;
            let options = tollgate_lakehouse::ExportOptions {
                dir: to.clone(),
                consumer: consumer.clone(),
                block: *block,
                until_idle: *until_idle,
                flush_after: *flush_after,
            };
            let report = tollgate_lakehouse::export(&broker, &options).await?;
            println!(
                "{} rows in {} files written to {} ({} already exported, skipped); last stream sequence {}",
                report.rows,
                report.files,
                to.display(),
                report.skipped,
                report.last_seq
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
