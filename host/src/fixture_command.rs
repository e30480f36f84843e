//! The command that captures one grain's snapshot from the log as a
//! golden test case (`replica-host plugin fixture`): what the API and the
//! operator page show for a failing grain, so a production failure becomes
//! a test in one paste. Pure text: the tool itself is `authoring::fixture`
//! (feature `tools`).

use std::path::Path;

/// The command that captures `grain_type/grain_key` at `sequence` from the
/// log at `log_url` (password hidden) with the plugin file `plugin`: what
/// the API and the operator page show for a failing grain.
pub fn command(
    log_url: &str,
    grain_type: &str,
    grain_key: &str,
    sequence: u64,
    plugin: &Path,
) -> String {
    format!(
        "replica-host plugin fixture --log {} --grain {} --sequence {sequence} --plugin {} --out fixtures",
        shell_quote(&crate::replication_log::redact_password(log_url)),
        shell_quote(&format!("{grain_type}/{grain_key}")),
        shell_quote(&plugin.display().to_string()),
    )
}

/// `text` quoted for a POSIX shell when it needs quoting.
fn shell_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_safe_to_paste() {
        let cmd = command(
            "postgres://orlando:secret@db/log",
            "Cart",
            "it's 42",
            9,
            Path::new("/p/cart.wasm"),
        );
        assert_eq!(
            cmd,
            "replica-host plugin fixture --log 'postgres://orlando:***@db/log' --grain 'Cart/it'\\''s 42' --sequence 9 --plugin /p/cart.wasm --out fixtures"
        );
        assert!(!cmd.contains("secret"));
    }
}
