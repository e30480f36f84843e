//! Golden tests of a plugin: a folder of example payloads, each with the
//! state or the error it must decode to, run through the real component.
//!
//! A case is a file `NAME.payload` and, next to it, either `NAME.json` (the
//! expected state, compared as JSON values) or `NAME.error` (the expected
//! error kind, e.g. `malformed`, on its first line). Other files are
//! ignored. Each case decodes as grain `NAME` of the plugin's grain type at
//! sequence 1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

use crate::decode::CallErrorKind;
use crate::json_diff;
use crate::plugin::{LoadedPlugin, SnapshotRef};

/// Most differences shown for one failing case.
const MAX_DIFF_LINES: usize = 20;

/// What a case expects.
#[derive(Debug, Clone, PartialEq)]
pub enum Expectation {
    /// The payload decodes to this state.
    State(Value),
    /// The payload fails with this kind of error.
    Error(CallErrorKind),
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseResult {
    /// The case's name (the file name without its extension).
    pub name: String,
    /// `None` when it passed; otherwise why it failed, in one line, and
    /// the differences, one per line.
    pub failure: Option<(String, Vec<String>)>,
}

impl CaseResult {
    /// Whether the case passed.
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }

    /// `ok NAME`, or `FAIL NAME: reason` followed by indented difference lines.
    pub fn lines(&self) -> Vec<String> {
        match &self.failure {
            None => vec![format!("ok {}", self.name)],
            Some((reason, details)) => std::iter::once(format!("FAIL {}: {reason}", self.name))
                .chain(details.iter().map(|d| format!("    {d}")))
                .collect(),
        }
    }
}

/// The files of one case, as found in the folder.
#[derive(Debug, Default)]
struct CaseFiles {
    payload: Option<PathBuf>,
    json: Option<PathBuf>,
    error: Option<PathBuf>,
}

/// Runs every case in `dir` through `plugin`, in name order. Fails only
/// when `dir` cannot be read or holds no case at all.
pub fn run(plugin: &LoadedPlugin, dir: &Path) -> anyhow::Result<Vec<CaseResult>> {
    let cases = discover(dir)?;
    if cases.is_empty() {
        anyhow::bail!(
            "{}: no golden cases (NAME.payload with NAME.json or NAME.error)",
            dir.display()
        );
    }
    Ok(cases
        .into_iter()
        .map(|(name, files)| {
            let failure = run_case(plugin, &name, &files).err();
            CaseResult { name, failure }
        })
        .collect())
}

fn discover(dir: &Path) -> anyhow::Result<BTreeMap<String, CaseFiles>> {
    let mut cases: BTreeMap<String, CaseFiles> = BTreeMap::new();
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot read the fixtures folder", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("{}: cannot read the fixtures folder", dir.display()))?
            .path();
        let (Some(stem), Some(ext)) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        if !matches!(ext, "payload" | "json" | "error") {
            continue;
        }
        let files = cases.entry(stem.to_owned()).or_default();
        let slot = match ext {
            "payload" => &mut files.payload,
            "json" => &mut files.json,
            _ => &mut files.error,
        };
        *slot = Some(path.clone());
    }
    Ok(cases)
}

type Failure = (String, Vec<String>);

fn fail(reason: impl Into<String>) -> Failure {
    (reason.into(), Vec::new())
}

fn run_case(plugin: &LoadedPlugin, name: &str, files: &CaseFiles) -> Result<(), Failure> {
    let expectation = expectation(name, files)?;
    let payload_path = files.payload.as_ref().expect("checked by expectation");
    let payload = std::fs::read(payload_path)
        .map_err(|e| fail(format!("{}: {e}", payload_path.display())))?;
    let decoded = plugin.decode(SnapshotRef {
        grain_type: &plugin.description().grain_type,
        grain_key: name,
        sequence: 1,
        timestamp_millis: 0,
        source_cluster: "fixtures",
        payload: &payload,
    });
    match (expectation, decoded) {
        (Expectation::State(expected), Ok(state)) => {
            let got = serde_json::to_value(&state)
                .map_err(|e| fail(format!("the state cannot be rendered as JSON: {e}")))?;
            let differences = json_diff::diff(&expected, &got);
            if differences.is_empty() {
                return Ok(());
            }
            let mut lines: Vec<String> = differences
                .iter()
                .take(MAX_DIFF_LINES)
                .map(|d| d.line("expected", "got"))
                .collect();
            if differences.len() > MAX_DIFF_LINES {
                lines.push(format!(
                    "… and {} more differences",
                    differences.len() - MAX_DIFF_LINES
                ));
            }
            Err((
                format!(
                    "the state differs from {name}.json in {} place{}",
                    differences.len(),
                    if differences.len() == 1 { "" } else { "s" }
                ),
                lines,
            ))
        }
        (Expectation::State(_), Err(e)) => Err(fail(format!(
            "expected a state, got {}: {}",
            e.kind, e.message
        ))),
        (Expectation::Error(kind), Err(e)) if e.kind == kind => Ok(()),
        (Expectation::Error(kind), Err(e)) => Err(fail(format!(
            "expected error {kind}, got {}: {}",
            e.kind, e.message
        ))),
        (Expectation::Error(kind), Ok(state)) => Err(fail(format!(
            "expected error {kind}, got a state: {}",
            state.to_json().unwrap_or_else(|_| format!("{state:?}"))
        ))),
    }
}

/// What the case's files say it expects, or why they say nothing usable.
fn expectation(name: &str, files: &CaseFiles) -> Result<Expectation, Failure> {
    match (&files.payload, &files.json, &files.error) {
        (None, Some(_), _) => Err(fail(format!("{name}.json has no {name}.payload"))),
        (None, None, Some(_)) => Err(fail(format!("{name}.error has no {name}.payload"))),
        (Some(_), None, None) => Err(fail(format!(
            "{name}.payload has no expectation: add {name}.json or {name}.error"
        ))),
        (Some(_), Some(_), Some(_)) => {
            Err(fail(format!("both {name}.json and {name}.error: keep one")))
        }
        (Some(_), Some(json), None) => {
            let text = std::fs::read(json).map_err(|e| fail(format!("{}: {e}", json.display())))?;
            serde_json::from_slice(&text)
                .map(Expectation::State)
                .map_err(|e| fail(format!("{name}.json is not JSON: {e}")))
        }
        (Some(_), None, Some(error)) => {
            let text = std::fs::read_to_string(error)
                .map_err(|e| fail(format!("{}: {e}", error.display())))?;
            let word = text.lines().next().unwrap_or("").trim();
            parse_kind(word).map(Expectation::Error).ok_or_else(|| {
                fail(format!(
                    "{name}.error: unknown error kind `{word}`; expected one of {}",
                    KINDS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                ))
            })
        }
        (None, None, None) => unreachable!("a case has at least one file"),
    }
}

/// The error kinds a `.error` file may name, with their short forms.
const KINDS: &[(&str, CallErrorKind)] = &[
    ("malformed", CallErrorKind::MalformedPayload),
    (
        "unsupported_schema_version",
        CallErrorKind::UnsupportedSchemaVersion,
    ),
    ("rejected", CallErrorKind::Rejected),
    ("trap", CallErrorKind::Trap),
    ("timeout", CallErrorKind::Timeout),
    ("out_of_memory", CallErrorKind::OutOfMemory),
    ("bad_output", CallErrorKind::BadOutput),
];

/// Reads an error kind: its label (`malformed_payload`), or a short form
/// (`malformed`, `unsupported`); `-` and `_` alike, any case.
pub fn parse_kind(word: &str) -> Option<CallErrorKind> {
    let word = word.to_ascii_lowercase().replace('-', "_");
    match word.as_str() {
        "malformed_payload" => Some(CallErrorKind::MalformedPayload),
        "unsupported" | "unsupported_version" => Some(CallErrorKind::UnsupportedSchemaVersion),
        _ => KINDS.iter().find(|(n, _)| *n == word).map(|(_, k)| *k),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_read_in_long_and_short_forms() {
        assert_eq!(
            parse_kind("malformed"),
            Some(CallErrorKind::MalformedPayload)
        );
        assert_eq!(
            parse_kind("Malformed-Payload"),
            Some(CallErrorKind::MalformedPayload)
        );
        assert_eq!(
            parse_kind("unsupported"),
            Some(CallErrorKind::UnsupportedSchemaVersion)
        );
        assert_eq!(parse_kind("trap"), Some(CallErrorKind::Trap));
        assert_eq!(parse_kind("nope"), None);
        assert_eq!(parse_kind(""), None);
    }

    #[test]
    fn cases_without_a_usable_expectation_say_why() {
        let dir = tempfile::tempdir().unwrap();
        for file in [
            "a.payload",
            "b.json",
            "c.payload",
            "c.json",
            "c.error",
            "d.txt",
        ] {
            std::fs::write(dir.path().join(file), "x").unwrap();
        }
        let cases = discover(dir.path()).unwrap();
        assert_eq!(cases.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        let reason = |n: &str| expectation(n, &cases[n]).unwrap_err().0;
        assert_eq!(
            reason("a"),
            "a.payload has no expectation: add a.json or a.error"
        );
        assert_eq!(reason("b"), "b.json has no b.payload");
        assert_eq!(reason("c"), "both c.json and c.error: keep one");
    }

    #[test]
    fn result_lines() {
        let failed = CaseResult {
            name: "n".into(),
            failure: Some(("why".into(), vec![".a: expected 1, got 2".into()])),
        };
        assert_eq!(failed.lines(), ["FAIL n: why", "    .a: expected 1, got 2"]);
        let ok = CaseResult {
            name: "n".into(),
            failure: None,
        };
        assert_eq!(ok.lines(), ["ok n"]);
    }
}
