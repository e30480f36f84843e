//! `GET /v1/openapi.json` from the real daemon: it parses, every `$ref`
//! resolves, every route the router serves is named, and every documented
//! path answers.

use std::collections::BTreeSet;
use std::time::Duration;

use replica_e2e::daemon::{self, Daemon};
use replica_e2e::log_writer::LogWriter;
use replica_e2e::orlando::{self, CounterState};

/// Every route of `daemon/http/mod.rs`'s router, in OpenAPI's notation.
const ROUTES: &[&str] = &[
    "/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/v1/openapi.json",
    "/v1/plugins",
    "/v1/shards",
    "/v1/admin/reload",
    "/v1/replicas/{grain_type}",
    "/v1/replicas/{grain_type}/{grain_key}",
];

/// Every `$ref` in `value`.
fn refs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v.as_str()) {
                    ("$ref", Some(target)) => out.push(target.to_owned()),
                    _ => refs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn the_openapi_document_parses_and_names_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("log.db").display());
    LogWriter::open(&url).full(
        "Counter",
        "c-1",
        1,
        orlando::bincode(&CounterState { count: 1 }),
    );
    let d = Daemon::start(
        dir.path(),
        &daemon::config(
            &url,
            &daemon::plugins(dir.path(), &[("Counter", "counter-plugin")]),
        ),
    );
    d.wait_for("/readyz", Duration::from_secs(30), |r| r.status == 200);

    let r = d.get("/v1/openapi.json");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc = r.json();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "replica-host");

    let paths: BTreeSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let routes: BTreeSet<&str> = ROUTES.iter().copied().collect();
    assert_eq!(paths, routes, "documented paths vs routes");

    for (path, item) in doc["paths"].as_object().unwrap() {
        let post = item["post"].is_object();
        let get = if post { &item["post"] } else { &item["get"] };
        assert!(get.is_object(), "{path} has no GET or POST");
        let responses = get["responses"].as_object().unwrap();
        assert!(responses.contains_key("200"), "{path}: no 200");
        assert!(
            get["description"].is_string() || get["summary"].is_string(),
            "{path}: undocumented"
        );
        // Path parameters are declared for every `{name}` in the path.
        for name in path.split('{').skip(1).filter_map(|s| s.split('}').next()) {
            let declared = get["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path"));
            assert!(declared, "{path}: parameter {name} undeclared");
        }
        // And the live daemon answers it (not the fallback's 404).
        let live = path
            .replace("{grain_type}", "Counter")
            .replace("{grain_key}", "c-1");
        if post {
            // The admin endpoints are off here: the route answers 403.
            let answer = d.post_with(&live, &[]);
            assert_eq!(answer.status, 403, "{live}: {}", answer.body);
            assert_eq!(answer.json()["error"], "admin_disabled");
            continue;
        }
        let answer = d.get(&live);
        assert_eq!(answer.status, 200, "{live}: {}", answer.body);
    }
    let watch = &doc["paths"]["/v1/replicas/{grain_type}/{grain_key}"]["get"];
    let names: Vec<&str> = watch["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for name in [
        "watch",
        "after",
        "max_staleness_ms",
        "min_sequence",
        "wait_ms",
        "If-None-Match",
        "Last-Event-ID",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    assert!(watch["responses"]["304"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());

    let mut targets = Vec::new();
    refs(&doc, &mut targets);
    assert!(!targets.is_empty());
    for target in targets {
        let pointer = target.strip_prefix('#').expect("a local $ref");
        assert!(doc.pointer(pointer).is_some(), "{target} does not resolve");
    }
}
