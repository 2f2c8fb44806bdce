//! The `tollgate` binary: parses the command line and hands over to the command.

use tollgate_server::cli::{Command, PolicyCommand};
use tollgate_server::{commands, configuration, startup, telemetry};

fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = match configuration::parse_command_line() {
        Ok(cli) => cli,
        // Usage errors, --help and --version print as clap prints them.
        Err(e) => match e.downcast::<clap::Error>() {
            Ok(clap) => clap.exit(),
            Err(e) => return Err(e),
        },
    };
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    match cli.command {
        Command::Serve(options) => {
            let settings = configuration::Settings::validate(*options)?;
            let _telemetry =
                telemetry::init(settings.options.log_format, &settings.options.traces)?;
            startup::Application::build(settings)?.run_until_stopped()?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Policy { command } => match command {
            PolicyCommand::Validate(args) => Ok(commands::validate::run(&args)),
            PolicyCommand::Apply(args) => runtime()?.block_on(commands::admin::apply(&args)),
            PolicyCommand::Get(args) => runtime()?.block_on(commands::admin::get(&args)),
            PolicyCommand::List(args) => runtime()?.block_on(commands::admin::list(&args)),
            PolicyCommand::Delete(args) => runtime()?.block_on(commands::admin::delete(&args)),
        },
        Command::Migrate(args) => runtime()?.block_on(commands::migrate::run(&args)),
        Command::Keys(args) => runtime()?.block_on(commands::keys::run(&args)),
        Command::Check(args) => runtime()?.block_on(commands::check::run(&args)),
        Command::Bench(args) => commands::bench::run(&args),
        Command::Events { command } => {
            telemetry::init_for_commands();
            runtime()?.block_on(commands::events::run(&command))
        }
        Command::Usage { command } => {
            telemetry::init_for_commands();
            runtime()?.block_on(commands::events::usage(&command))
        }
    }
}
