//! `replica-host demo`.

use super::fail;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::daemon;
use crate::daemon::config::Config;
use crate::demo::producer::{ProducerConfig, run_producer};
use crate::demo::{self as demo_lib};
use crate::replication_log;
use crate::shutdown::Shutdown;

pub(super) fn run(dir: PathBuf, listen: String, plugins_dir: PathBuf) -> ExitCode {
    let config_path = match demo_lib::prepare(&plugins_dir, &dir, &listen) {
        Ok(path) => path,
        Err(e) => return fail(1, &format!("{e:#}")),
    };
    let config = match Config::load(&config_path) {
        Ok(c) => c,
        Err(e) => return fail(1, &e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(1, &format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(async move {
        let log = match replication_log::create(&config.log_url()).await {
            Ok(log) => log,
            Err(e) => return fail(1, &e.to_string()),
        };
        let stopping = Shutdown::new();
        let producer = tokio::spawn(run_producer(
            log,
            ProducerConfig::default(),
            stopping.signal(),
        ));
        let config_shown = config_path.display().to_string();
        let result = daemon::run(config, super::run::shutdown_signal(), move |addr| {
            println!();
            println!("replica-host demo is running (config: {config_shown}). Try:");
            println!("  curl http://{addr}/v1/plugins");
            println!("  curl http://{addr}/v1/replicas/Counter");
            println!("  curl http://{addr}/v1/replicas/Counter/counter-0");
            println!("  curl http://{addr}/v1/replicas/BankAccount/account-1");
            println!("  curl http://{addr}/v1/replicas/UserProfile/user-0?max_staleness_ms=5000");
            println!("  curl http://{addr}/metrics");
            println!("Press Ctrl-C to stop.");
        })
        .await;
        stopping.stop();
        let written = producer.await.unwrap_or(0);
        match result {
            Ok(()) => {
                eprintln!("demo stopped; the producer wrote {written} entries");
                ExitCode::SUCCESS
            }
            Err(e) => fail(1, &e.to_string()),
        }
    })
}
