//! A TCP relay in front of a server that a test can cut and restore: an
//! outage of the server, as its clients see it, without touching the server.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::{AbortHandle, JoinHandle};

/// A TCP relay to a server, that can be cut and restored on the same port.
pub struct Relay {
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    upstream: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Relay {
    /// Starts relaying 127.0.0.1:`port` (0: any free port) to `upstream`.
    pub async fn start(upstream: SocketAddr, port: u16) -> Relay {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind relay");
        let port = listener.local_addr().unwrap().port();
        let links: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accepted = links.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                accepted.lock().unwrap().push(link.abort_handle());
            }
        });
        Relay {
            port,
            upstream,
            tasks: vec![accept],
            links,
        }
    }

    /// Stops listening and cuts every open link.
    pub async fn cut(mut self) -> (SocketAddr, u16) {
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        (self.upstream, self.port)
    }
}

/// `url` with its host and port replaced by 127.0.0.1:`port`.
pub fn via_port(url: &str, port: u16) -> String {
    let start = url.find("://").unwrap() + 3;
    let end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let userinfo = url[start..end]
        .rfind('@')
        .map_or("", |at| &url[start..start + at + 1]);
    format!("{}{userinfo}127.0.0.1:{port}{}", &url[..start], &url[end..])
}

/// The address of the PostgreSQL server `url` names.
pub async fn upstream_of(url: &str) -> SocketAddr {
    let options = sqlx::postgres::PgConnectOptions::from_str(url).unwrap();
    tokio::net::lookup_host((options.get_host(), options.get_port()))
        .await
        .unwrap()
        .next()
        .unwrap()
}
