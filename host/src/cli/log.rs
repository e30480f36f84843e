//! `replica-host log ...`: one-off work on the replication log itself.

use super::fail;
use std::process::ExitCode;

use crate::replication_log::{LogError, pg_change_feed, redact_password};
use clap::Subcommand;

/// Commands that change the log's schema (run by an operator, once).
#[derive(Subcommand)]
pub(super) enum LogCommand {
    /// Add the PostgreSQL change feed (an indexed `replica_tx xid8` column
    /// filled by default) so that idle discovery polls read only new rows.
    /// Prints the DDL it runs; idempotent.
    EnableChangeFeed {
        /// The log's PostgreSQL URL.
        #[arg(long)]
        url: String,
        /// Only print the DDL that would run.
        #[arg(long)]
        dry_run: bool,
    },
}

pub(super) fn run(cmd: LogCommand) -> ExitCode {
    match cmd {
        LogCommand::EnableChangeFeed { url, dry_run } => enable_change_feed(&url, dry_run),
    }
}

fn enable_change_feed(url: &str, dry_run: bool) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(1, &format!("cannot start the async runtime: {e}")),
    };
    let shown = redact_password(url);
    let result = runtime.block_on(pg_change_feed::enable(url, dry_run, |statement| {
        println!("{statement}");
    }));
    match result {
        Ok(done) if done.statements.is_empty() => {
            println!(
                "the change feed is already enabled on {shown} (column {}, default {}, \
                 valid index {}); nothing to do",
                pg_change_feed::COLUMN,
                pg_change_feed::DEFAULT,
                pg_change_feed::INDEX
            );
            ExitCode::SUCCESS
        }
        Ok(done) if !done.applied => {
            println!("-- dry run: would run on {shown}:");
            for statement in &done.statements {
                println!("{statement}");
            }
            ExitCode::SUCCESS
        }
        Ok(_) => {
            println!("change feed enabled on {shown}");
            ExitCode::SUCCESS
        }
        Err(e @ LogError::Config { .. }) => fail(2, &e.to_string()),
        Err(e) => fail(1, &e.to_string()),
    }
}
