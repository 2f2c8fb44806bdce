//! The `tollgate` binary: parses the command line and hands over to the command.

use clap::Parser;

use tollgate_server::cli::{Cli, Command, PolicyCommand};
use tollgate_server::{commands, configuration, startup, telemetry};

fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let settings = configuration::Settings::load(&args)?;
            telemetry::init(settings.log_format);
            startup::Application::build(settings)?.run_until_stopped()?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Policy { command } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            match command {
                PolicyCommand::Validate(args) => Ok(commands::validate::run(&args)),
                PolicyCommand::Apply(args) => runtime.block_on(commands::admin::apply(&args)),
                PolicyCommand::Get(args) => runtime.block_on(commands::admin::get(&args)),
                PolicyCommand::List(args) => runtime.block_on(commands::admin::list(&args)),
                PolicyCommand::Delete(args) => runtime.block_on(commands::admin::delete(&args)),
            }
        }
        Command::Migrate(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(commands::migrate::run(&args))
        }
        Command::Keys(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(commands::keys::run(&args))
        }
        Command::Check(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(commands::check::run(&args))
        }
    }
}
