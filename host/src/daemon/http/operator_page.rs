//! `GET /`: the operator page. One self-contained HTML document (inline
//! CSS, no script, no external resource) that refreshes itself every
//! [`REFRESH_SECS`] seconds: the catch-up, the plugins, per grain type the
//! replicas by status and the lag, the shadow candidates' results, and
//! the failing and behind grains a page at a time (a failing one with the
//! command that captures it as a test case). Protected like the API
//! (`read`); a browser sends its token as the password of HTTP Basic.
//!
//! A fifth of the file is its unit tests, beside the code they check.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::state::ApiState;
use crate::consumer::CatchUpProgress;
use crate::daemon::plugins::InForce;
use crate::daemon::shadow::Shadow;
use crate::daemon::shadow::classify::Class;
use crate::store::ReplicaStatus;

/// Seconds between the page's own refreshes.
pub const REFRESH_SECS: u32 = 5;
/// Failing and behind grains per page.
pub const PROBLEMS_PER_PAGE: usize = 50;

/// Which page of failing and behind grains to show.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Show only this grain type's failing and behind grains.
    #[serde(rename = "type")]
    grain_type: Option<String>,
    /// Continue after this grain type …
    after_type: Option<String>,
    /// … and this key.
    after_key: Option<String>,
}

/// `GET /`: the operator page.
#[utoipa::path(get, path = "/", tag = "operator",
    security(("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "The operator page (HTML, refreshes itself)", body = String, content_type = "text/html"),
        (status = 401, description = "No token or an invalid one", body = super::schema::ErrorDoc),
        (status = 403, description = "The token lacks `read`", body = super::schema::ErrorDoc),
    ))]
pub(super) async fn page(
    State(api): State<ApiState>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        render(&api, &query),
    )
        .into_response()
}

/// Escapes text for HTML content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query or path component.
fn enc(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// A duration in ms, shortly.
fn ms(ms: i64) -> String {
    if ms < 10_000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}\
table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}td.n{text-align:right}.failing{color:#b00020;font-weight:600}.behind{color:#a15c00;font-weight:600}\
.ok{color:#1b7f3b}code{font-size:.92em}.muted{color:#777}";

/// "`state`: N of M grains", and a progress bar.
fn progress_html(state: &str, progress: CatchUpProgress) -> String {
    format!(
        "{state}: {done} of {grains} grains <progress max=\"{max}\" value=\"{done}\"></progress>",
        done = progress.caught_up,
        grains = progress.grains,
        max = progress.grains.max(1),
    )
}

/// The page's HTML.
fn render(api: &ApiState, query: &PageQuery) -> String {
    let mut html = String::new();
    let progress = api.catch_up.progress();
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <title>replica-host {cluster}</title><style>{STYLE}</style></head><body>\
         <h1>replica-host <span class=\"muted\">{cluster}</span></h1>\
         <p class=\"muted\">refreshes every {REFRESH_SECS} s · <a href=\"/v1/openapi.json\">API</a> · <a href=\"/metrics\">metrics</a></p>",
        cluster = esc(&api.cluster_id),
    );

    // Catch-up and re-decode.
    let state = if progress.complete {
        "complete"
    } else {
        "catching up"
    };
    let _ = write!(
        html,
        "<h2>Catch-up</h2><p id=\"catch-up\">{}</p>",
        progress_html(state, progress)
    );
    let redecodes: Vec<_> = api
        .plugins
        .current()
        .iter()
        .filter_map(|(grain_type, p)| Some((grain_type.clone(), p.redecode.as_ref()?.progress())))
        .collect();
    if redecodes.is_empty() {
        html.push_str("<p id=\"re-decode\" class=\"muted\">re-decode: none since startup</p>");
    } else {
        html.push_str("<p id=\"re-decode\">");
        for (grain_type, progress) in redecodes {
            let state = if progress.complete {
                "complete"
            } else {
                "running"
            };
            let _ = write!(
                html,
                "re-decode of {} after a plugin swap: {}<br>",
                esc(&grain_type),
                progress_html(state, progress)
            );
        }
        html.push_str("</p>");
    }

    // Plugins.
    html.push_str(
        "<h2>Plugins</h2><table id=\"plugins\"><tr><th>grain type</th><th>schema</th>\
         <th>sha256</th><th>calls</th><th>failures</th><th>breaker</th>\
         <th title=\"snapshots the host died twice decoding\">quarantined</th></tr>",
    );
    let now = Instant::now();
    let plugins = api.plugins.current();
    let quarantined = api.plugins.quarantined();
    for (grain_type, in_force) in plugins.iter() {
        let plugin = &in_force.plugin;
        let d = plugin.description();
        let breaker = in_force.breaker.as_ref().map_or_else(
            || "off".to_owned(),
            |b| b.status(now).state.as_str().to_owned(),
        );
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{} v{}</td><td><code title=\"{sha}\">{short}…</code></td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td>\
             <td class=\"n{q}\">{quarantined}</td></tr>",
            esc(grain_type),
            esc(&d.schema_name),
            esc(&d.schema_version),
            plugin.stats().calls(),
            plugin.stats().failures(),
            esc(&breaker),
            quarantined = quarantined.get(grain_type).copied().unwrap_or(0),
            q = if quarantined.get(grain_type).copied().unwrap_or(0) > 0 {
                " failing"
            } else {
                ""
            },
            sha = esc(plugin.sha256()),
            short = esc(&plugin.sha256()[..plugin.sha256().len().min(12)]),
        );
    }
    html.push_str("</table>");
    shadows_html(&mut html, &plugins);

    // Grain types.
    html.push_str(
        "<h2>Replicas</h2><table id=\"grain-types\"><tr><th>grain type</th><th>ok</th>\
         <th>behind</th><th>failing</th><th>catch-up</th><th>lag (latest)</th><th>lag (max)</th></tr>",
    );
    for grain_type in plugins.keys() {
        let counts = api.store.status_counts(grain_type);
        let lag = api.problems.lag(grain_type);
        let _ = write!(
            html,
            "<tr><td><a href=\"/?type={link}\">{name}</a></td><td class=\"n ok\">{}</td>\
             <td class=\"n{b}\">{}</td><td class=\"n{f}\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            counts.ok,
            counts.behind,
            counts.failing,
            if api.catch_up.is_catching_up(grain_type) {
                "catching up"
            } else {
                "done"
            },
            lag.map_or_else(|| "–".into(), |l| ms(l.last_ms)),
            lag.map_or_else(|| "–".into(), |l| ms(l.max_ms)),
            link = enc(grain_type),
            name = esc(grain_type),
            b = if counts.behind > 0 { " behind" } else { "" },
            f = if counts.failing > 0 { " failing" } else { "" },
        );
    }
    html.push_str("</table>");

    // Failing and behind grains.
    let after = query.after_type.as_deref().zip(query.after_key.as_deref());
    let (problems, more) = api
        .problems
        .page(query.grain_type.as_deref(), after, PROBLEMS_PER_PAGE);
    let _ = write!(
        html,
        "<h2>Failing and behind grains{}</h2>",
        query
            .grain_type
            .as_deref()
            .map(|t| format!(
                " of {} <a class=\"muted\" href=\"/\">(all types)</a>",
                esc(t)
            ))
            .unwrap_or_default()
    );
    if problems.is_empty() && after.is_none() {
        html.push_str("<p id=\"no-problems\" class=\"ok\">none</p>");
    } else {
        html.push_str(
            "<table id=\"problems\"><tr><th>grain type</th><th>grain key</th><th>status</th>\
             <th>applied sequence</th><th>at sequence</th><th>reason</th>\
             <th>capture as a test case</th></tr>",
        );
        for p in &problems {
            let fixture = match &p.status {
                ReplicaStatus::Failing { sequence, .. } => api
                    .fixture_command(&p.grain_type, &p.grain_key, *sequence)
                    .map(|c| format!("<code class=\"fixture\">{}</code>", esc(&c)))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            let (at, reason) = match &p.status {
                ReplicaStatus::Failing { sequence, reason } => (*sequence, reason.as_str()),
                ReplicaStatus::Behind { delta_sequence } => (
                    *delta_sequence,
                    "a Delta or unreadable entry after the applied snapshot",
                ),
                ReplicaStatus::Ok => (p.sequence, ""),
            };
            let _ = write!(
                html,
                "<tr class=\"problem\"><td>{t}</td><td><a href=\"/v1/replicas/{tl}/{kl}\">{k}</a></td>\
                 <td class=\"{s}\">{s}</td><td class=\"n\">{}</td><td class=\"n\">{at}</td><td>{}</td><td>{fixture}</td></tr>",
                p.sequence,
                esc(reason),
                t = esc(&p.grain_type),
                k = esc(&p.grain_key),
                tl = enc(&p.grain_type),
                kl = enc(&p.grain_key),
                s = p.status.label(),
            );
        }
        html.push_str("</table>");
        if let Some(last) = problems.last().filter(|_| more) {
            let filter = query
                .grain_type
                .as_deref()
                .map(|t| format!("type={}&amp;", enc(t)))
                .unwrap_or_default();
            let _ = write!(
                html,
                "<p><a id=\"next\" href=\"/?{filter}after_type={}&amp;after_key={}\">next {PROBLEMS_PER_PAGE} →</a></p>",
                enc(&last.grain_type),
                enc(&last.grain_key),
            );
        }
    }
    html.push_str("</body></html>\n");
    html
}

/// The shadow candidates beside the plugins in force: per grain type the
/// candidate, its sample rate, a count per class, and the recent examples
/// of every class but `same` with their field-path differences. Everything
/// a plugin produced is escaped for HTML here (and was escaped as text
/// when recorded).
fn shadows_html(html: &mut String, plugins: &BTreeMap<String, InForce>) {
    let shadows: Vec<(&String, &Shadow)> = plugins
        .iter()
        .filter_map(|(t, p)| Some((t, p.shadow.as_deref()?)))
        .collect();
    if shadows.is_empty() {
        html.push_str("<h2>Shadow decoding</h2><p id=\"shadows\" class=\"muted\">no shadow candidate configured</p>");
        return;
    }
    html.push_str("<h2>Shadow decoding</h2><table id=\"shadows\"><tr><th>grain type</th><th>candidate</th><th>sample</th>");
    for class in Class::ALL {
        let _ = write!(html, "<th>{}</th>", class.as_str());
    }
    html.push_str("</tr>");
    for (grain_type, shadow) in &shadows {
        let _ = write!(
            html,
            "<tr class=\"shadow\"><td>{}</td><td>{} <code title=\"{sha}\">{short}…</code></td><td class=\"n\">{}</td>",
            esc(grain_type),
            esc(shadow.plugin.name()),
            shadow.sample,
            sha = esc(shadow.plugin.sha256()),
            short = esc(&shadow.plugin.sha256()[..shadow.plugin.sha256().len().min(12)]),
        );
        for class in Class::ALL {
            let n = shadow.tally.count(class);
            let warn = n > 0 && matches!(class, Class::Differs | Class::CandidateFailed);
            let _ = write!(
                html,
                "<td class=\"n{}\">{n}</td>",
                if warn { " failing" } else { "" }
            );
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
    html.push_str("<table id=\"shadow-examples\"><tr><th>grain type</th><th>result</th><th>grain key</th><th>sequence</th><th>differences or errors</th></tr>");
    for (grain_type, shadow) in &shadows {
        for class in Class::ALL {
            for example in shadow.tally.examples(class) {
                let mut lines: Vec<String> = example.differences.clone();
                if example.more_differences > 0 {
                    lines.push(format!("… {} more", example.more_differences));
                }
                if let Some(e) = &example.served_error {
                    lines.push(format!("served: {e}"));
                }
                if let Some(e) = &example.candidate_error {
                    lines.push(format!("candidate: {e}"));
                }
                let lines: Vec<String> = lines.iter().map(|l| esc(l)).collect();
                let _ = write!(
                    html,
                    "<tr class=\"shadow-example\"><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td><code>{}</code></td></tr>",
                    esc(grain_type),
                    class.as_str(),
                    esc(&example.grain_key),
                    example.sequence,
                    lines.join("<br>"),
                );
            }
        }
    }
    html.push_str("</table>");
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::consumer::CatchUp;
    use crate::daemon::metrics::MetricsExporter;
    use crate::daemon::plugins::LivePlugins;
    use crate::daemon::problems::Problems;
    use crate::replication_log::MemoryLog;
    use crate::store::ReplicaStore;

    /// An API over `store` with no plugins, for handler tests.
    pub(crate) fn api(store: Arc<ReplicaStore>, problems: Arc<Problems>) -> ApiState {
        ApiState {
            store,
            plugins: Arc::new(LivePlugins::default()),
            reloader: None,
            log: Arc::new(MemoryLog::new()),
            metrics: MetricsExporter::new(Arc::default()),
            catch_up: Arc::new(CatchUp::new([])),
            freshness: Arc::default(),
            max_wait: std::time::Duration::from_secs(10),
            ready_during_log_outage: std::time::Duration::from_secs(60),
            shard: None,
            peer_url: None,
            problems,
            cluster_id: "eu-<west>".into(),
            log_url: "sqlite:///var/log.db".into(),
            stop: crate::shutdown::Shutdown::new().signal(),
            draining: crate::shutdown::Shutdown::new().signal(),
        }
    }

    #[test]
    fn failing_grains_come_a_page_at_a_time() {
        let store = Arc::new(ReplicaStore::new());
        for i in 0..PROBLEMS_PER_PAGE + 7 {
            store.set_status(
                "T",
                &format!("k/{i:03}"),
                ReplicaStatus::Failing {
                    sequence: i as u64,
                    reason: "trap: <boom>".into(),
                },
            );
        }
        let problems = Arc::new(Problems::default());
        problems.rebuild(&store);
        let api = api(store, problems);
        let first = render(&api, &PageQuery::default());
        assert!(first.contains("<h1>replica-host <span class=\"muted\">eu-&lt;west&gt;</span>"));
        assert_eq!(
            first.matches("<tr class=\"problem\">").count(),
            PROBLEMS_PER_PAGE
        );
        assert!(first.contains("trap: &lt;boom&gt;") && !first.contains("<boom>"));
        let last = format!("k%2F{:03}", PROBLEMS_PER_PAGE - 1);
        assert!(
            first.contains(&format!("href=\"/?after_type=T&amp;after_key={last}\"")),
            "no next link"
        );
        let second = render(
            &api,
            &PageQuery {
                grain_type: Some("T".into()),
                after_type: Some("T".into()),
                after_key: Some(format!("k/{:03}", PROBLEMS_PER_PAGE - 1)),
            },
        );
        assert_eq!(second.matches("<tr class=\"problem\">").count(), 7);
        assert!(
            !second.contains("id=\"next\""),
            "the last page links nowhere"
        );
        assert!(second.contains("http-equiv=\"refresh\""));
    }

    #[test]
    fn text_is_escaped_and_links_encoded() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(enc("a/b c"), "a%2Fb%20c");
        assert_eq!(ms(250), "250 ms");
        assert_eq!(ms(12_500), "12.5 s");
    }
}
