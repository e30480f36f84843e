//! A real Server-Sent Events client (reqwest and `eventsource-stream`, which
//! parses the stream as the HTML standard says), driven from synchronous
//! tests. Between calls nothing reads the socket: a test that stops calling
//! [`SseClient::next`] is a slow client.

use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};

type Events = Pin<Box<dyn Stream<Item = Result<Event, String>>>>;

/// One open stream with its own single-threaded runtime.
pub struct SseClient {
    rt: tokio::runtime::Runtime,
    events: Events,
    /// The response's status.
    pub status: u16,
    /// The response's `Content-Type`.
    pub content_type: String,
}

impl SseClient {
    /// `GET url` with `headers`, through `client` (for TLS roots), or a
    /// plain client.
    pub fn connect(url: &str, headers: &[(&str, &str)]) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (status, content_type, events) = rt.block_on(async {
            let mut request = reqwest::Client::new().get(url);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let response = request
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {url}: {e}"));
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let events: Events = Box::pin(
                response
                    .bytes_stream()
                    .eventsource()
                    .map(|r| r.map_err(|e| e.to_string())),
            );
            (status, content_type, events)
        });
        Self {
            rt,
            events,
            status,
            content_type,
        }
    }

    /// The next event, or `None` when none comes within `timeout` or the
    /// stream ends.
    pub fn next(&mut self, timeout: Duration) -> Option<Event> {
        let events = &mut self.events;
        self.rt.block_on(async {
            match tokio::time::timeout(timeout, events.next()).await {
                Ok(Some(Ok(event))) => Some(event),
                Ok(Some(Err(e))) => panic!("bad SSE stream: {e}"),
                Ok(None) | Err(_) => None,
            }
        })
    }

    /// The next event of type `message` (a replica), skipping others.
    pub fn next_replica(&mut self, timeout: Duration) -> Option<(Event, serde_json::Value)> {
        loop {
            let event = self.next(timeout)?;
            if event.event == "message" {
                let json = serde_json::from_str(&event.data)
                    .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {}", event.data));
                return Some((event, json));
            }
        }
    }
}
