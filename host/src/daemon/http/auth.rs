//! Bearer-token access control for the HTTP API (`[http.auth]`).
//!
//! Tokens never appear in the config file, the logs or the metrics: the
//! config names files and environment variables that hold one line per
//! token, its sha256 in hex and its scopes:
//!
//! ```text
//! # sha256 of the token                                            scopes
//! 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae read:Counter metrics
//! ```
//!
//! A request presents the token as `Authorization: Bearer TOKEN`, or as the
//! password of HTTP Basic (the user name is ignored), which lets a browser
//! open the operator page. Its sha256 is compared with every configured hash
//! in constant time. Which scope a route needs is declared where it is
//! routed ([`super::access`]).
//!
//! A fifth of the file is its unit tests, beside the code they check.

use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::body::error;
use crate::daemon::reload::Reload;

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `read`: every grain type's replicas, the plugin list, the operator page.
    ReadAll,
    /// `read:GrainType`: one grain type's replicas.
    Read(String),
    /// `metrics`: `/metrics`.
    Metrics,
    /// `admin`: the admin endpoints (`/v1/admin/…`).
    Admin,
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "read" => Ok(Scope::ReadAll),
            "metrics" => Ok(Scope::Metrics),
            "admin" => Ok(Scope::Admin),
            _ => match text.strip_prefix("read:") {
                Some(grain_type) if !grain_type.is_empty() => {
                    Ok(Scope::Read(grain_type.to_owned()))
                }
                _ => Err(format!(
                    "unknown scope `{text}` (expected read, read:GrainType, metrics or admin)"
                )),
            },
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::ReadAll => f.write_str("read"),
            Scope::Read(grain_type) => write!(f, "read:{grain_type}"),
            Scope::Metrics => f.write_str("metrics"),
            Scope::Admin => f.write_str("admin"),
        }
    }
}

/// What a request needs: its route's [`super::access::Access`], resolved
/// on the request's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Nothing: probes (`/healthz`, `/readyz`).
    Open,
    /// Any valid token (the OpenAPI document, unknown paths).
    Token,
    /// `read` or `read:T` for this grain type.
    ReadType(String),
    /// `read` (every grain type).
    ReadAll,
    /// Any read scope (`/v1/plugins`).
    AnyRead,
    /// `metrics`.
    Metrics,
    /// `admin`.
    Admin,
}

impl Need {
    /// The scope to name in a 403.
    fn describe(&self) -> String {
        match self {
            Need::Open | Need::Token => "a valid token".into(),
            Need::ReadType(grain_type) => format!("the scope `read` or `read:{grain_type}`"),
            Need::ReadAll => "the scope `read`".into(),
            Need::AnyRead => "a `read` scope".into(),
            Need::Metrics => "the scope `metrics`".into(),
            Need::Admin => "the scope `admin`".into(),
        }
    }
}

/// Whether `scopes` grant `need`.
pub fn allows(scopes: &[Scope], need: &Need) -> bool {
    let has = |scope: &Scope| scopes.contains(scope);
    match need {
        Need::Open | Need::Token => true,
        Need::ReadType(grain_type) => has(&Scope::ReadAll) || has(&Scope::Read(grain_type.clone())),
        Need::ReadAll => has(&Scope::ReadAll),
        Need::AnyRead => scopes
            .iter()
            .any(|s| matches!(s, Scope::ReadAll | Scope::Read(_))),
        Need::Metrics => has(&Scope::Metrics),
        Need::Admin => has(&Scope::Admin),
    }
}

/// One configured token: its sha256 and its scopes. No `Debug`, so the hash
/// cannot reach a log line by accident.
#[derive(Clone)]
struct TokenEntry {
    /// sha256 of the token's bytes; the token itself is never kept.
    hash: [u8; 32],
    /// What it may do.
    scopes: Vec<Scope>,
}

/// Every configured token.
#[derive(Clone, Default)]
pub struct TokenTable {
    /// In file order; looked through whole on every check.
    entries: Vec<TokenEntry>,
}

impl std::fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenTable({} tokens)", self.entries.len())
    }
}

impl TokenTable {
    /// Parses token lines read from `origin` (a file or `$VAR`), appending
    /// them. Errors name the origin and line, never the line's text (which
    /// may be a token pasted by mistake).
    pub fn parse(&mut self, text: &str, origin: &str) -> Result<(), String> {
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let at = |what: String| format!("{origin}: line {}: {what}", n + 1);
            let mut fields = line.split_whitespace();
            let hash_text = fields.next().unwrap_or_default();
            let hash_text = hash_text.strip_prefix("sha256:").unwrap_or(hash_text);
            let mut hash = [0u8; 32];
            if hex::decode_to_slice(hash_text, &mut hash).is_err() {
                return Err(at("the first field is not a sha256 (64 hex digits); \
                     write the token's sha256, not the token"
                    .into()));
            }
            let scopes = fields
                .map(|f| f.parse::<Scope>().map_err(&at))
                .collect::<Result<Vec<_>, _>>()?;
            if scopes.is_empty() {
                return Err(at("no scopes after the hash".into()));
            }
            self.entries.push(TokenEntry { hash, scopes });
        }
        Ok(())
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The scopes of `token`, `None` for an unknown token. Every entry is
    /// compared, in constant time, whatever matched.
    pub fn scopes_of(&self, token: &[u8]) -> Option<&[Scope]> {
        let presented: [u8; 32] = Sha256::digest(token).into();
        let mut found = None;
        for entry in &self.entries {
            let equal: bool = entry.hash.ct_eq(&presented).into();
            if equal && found.is_none() {
                found = Some(entry.scopes.as_slice());
            }
        }
        found
    }
}

/// Where the tokens come from; read at startup and on every reload.
#[derive(Debug, Clone)]
pub struct TokenSources {
    /// The config file, for error messages.
    pub config: PathBuf,
    /// Token files, resolved.
    pub files: Vec<PathBuf>,
    /// Environment variable names.
    pub env: Vec<String>,
    /// `[admin] token_file`: a file holding one token itself, granted the
    /// `admin` scope.
    pub admin_file: Option<PathBuf>,
    /// Only the admin endpoints need a token (`[admin]` without
    /// `[http.auth]`): everything else is served as without access control.
    pub admin_only: bool,
}

impl TokenSources {
    /// Reads every source. At least one token must result.
    pub fn load(&self) -> Result<TokenTable, String> {
        let config = self.config.display();
        let mut table = TokenTable::default();
        for (i, file) in self.files.iter().enumerate() {
            let text = std::fs::read_to_string(file).map_err(|e| {
                format!(
                    "{config}: http.auth.token_files[{i}]: {}: {e}",
                    file.display()
                )
            })?;
            table
                .parse(&text, &file.display().to_string())
                .map_err(|e| format!("{config}: http.auth.token_files[{i}]: {e}"))?;
        }
        for (i, name) in self.env.iter().enumerate() {
            let text = std::env::var(name)
                .map_err(|e| format!("{config}: http.auth.token_env[{i}]: ${name}: {e}"))?;
            // One variable may hold several lines, or lines separated by `;`.
            table
                .parse(&text.replace(';', "\n"), &format!("${name}"))
                .map_err(|e| format!("{config}: http.auth.token_env[{i}]: {e}"))?;
        }
        if let Some(file) = &self.admin_file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("{config}: admin.token_file: {}: {e}", file.display()))?;
            let token = text.lines().map(str::trim).find(|l| !l.is_empty());
            let Some(token) = token else {
                return Err(format!(
                    "{config}: admin.token_file: {}: the file holds no token",
                    file.display()
                ));
            };
            table.entries.push(TokenEntry {
                hash: Sha256::digest(token.as_bytes()).into(),
                scopes: vec![Scope::Admin],
            });
        }
        if table.is_empty() {
            return Err(format!(
                "{config}: http.auth: the token files and variables hold no tokens"
            ));
        }
        Ok(table)
    }
}

/// The access check the router runs before every handler.
#[derive(Debug)]
pub struct Auth {
    /// Where the tokens come from.
    sources: TokenSources,
    /// The tokens in force; replaced whole on reload.
    table: RwLock<Arc<TokenTable>>,
}

/// The realm named in `WWW-Authenticate`.
const REALM: &str = "replica-host";

impl Auth {
    /// Reads the tokens; the error is one line naming the config field.
    pub fn load(sources: TokenSources) -> Result<Self, String> {
        let table = sources.load()?;
        Ok(Self {
            sources,
            table: RwLock::new(Arc::new(table)),
        })
    }

    fn table(&self) -> Arc<TokenTable> {
        Arc::clone(&self.table.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Decides a request that needs `need`: `Ok` to serve it, or why not.
    pub fn check(&self, need: &Need, headers: &HeaderMap) -> Result<(), Denied> {
        if *need == Need::Open || (self.sources.admin_only && *need != Need::Admin) {
            return Ok(());
        }
        let Some(token) = presented_token(headers) else {
            return Err(Denied::Missing);
        };
        let table = self.table();
        let Some(scopes) = table.scopes_of(&token) else {
            return Err(Denied::Invalid);
        };
        if allows(scopes, need) {
            Ok(())
        } else {
            Err(Denied::Forbidden(need.clone()))
        }
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No token: 401.
    Missing,
    /// An unknown token: 401.
    Invalid,
    /// A token without the scope: 403.
    Forbidden(Need),
}

impl Denied {
    /// The metric label.
    fn reason(&self) -> &'static str {
        match self {
            Denied::Missing => "missing",
            Denied::Invalid => "invalid",
            Denied::Forbidden(_) => "forbidden",
        }
    }

    /// The answer: 401 with the challenges, or 403; one line of JSON each.
    /// Counted in `replica_http_auth_denied_total{reason}`.
    pub fn into_response(self) -> Response {
        metrics::counter!("replica_http_auth_denied_total", "reason" => self.reason()).increment(1);
        match self {
            Denied::Missing => challenge(false, "a bearer token is required"),
            Denied::Invalid => challenge(true, "the token is not valid"),
            Denied::Forbidden(need) => error(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this token lacks {}", need.describe()),
            ),
        }
    }
}

impl Reload for Auth {
    fn name(&self) -> &'static str {
        "http.auth tokens"
    }

    fn reload(&self) -> Result<String, String> {
        let table = self.sources.load()?;
        let summary = format!("{} tokens", table.len());
        *self.table.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
        Ok(summary)
    }
}

/// The token of `Authorization: Bearer T`, or the password of Basic.
fn presented_token(headers: &HeaderMap) -> Option<Vec<u8>> {
    use base64::Engine;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, credentials) = value.split_once(' ')?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return (!credentials.is_empty()).then(|| credentials.as_bytes().to_vec());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()?;
        let colon = decoded.iter().position(|&b| b == b':')?;
        let password = &decoded[colon + 1..];
        return (!password.is_empty()).then(|| password.to_vec());
    }
    None
}

/// 401 with the challenges, as a one-line JSON error.
fn challenge(invalid_token: bool, message: &str) -> Response {
    let mut response = error(StatusCode::UNAUTHORIZED, "unauthorized", message.into());
    let bearer = if invalid_token {
        format!("Bearer realm=\"{REALM}\", error=\"invalid_token\"")
    } else {
        format!("Bearer realm=\"{REALM}\"")
    };
    let headers = response.headers_mut();
    for challenge in [
        bearer,
        format!("Basic realm=\"{REALM}\", charset=\"UTF-8\""),
    ] {
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            headers.append(header::WWW_AUTHENTICATE, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }

    #[test]
    fn scopes_grant_what_they_name() {
        let one = [Scope::Read("Counter".into())];
        assert!(allows(&one, &Need::ReadType("Counter".into())));
        assert!(!allows(&one, &Need::ReadType("BankAccount".into())));
        assert!(allows(&one, &Need::AnyRead));
        assert!(!allows(&one, &Need::ReadAll));
        assert!(!allows(&one, &Need::Metrics));
        let all = [Scope::ReadAll];
        assert!(allows(&all, &Need::ReadType("X".into())) && allows(&all, &Need::ReadAll));
        assert!(!allows(&all, &Need::Admin));
        assert!(allows(&[Scope::Admin], &Need::Admin));
        assert!(allows(&[Scope::Metrics], &Need::Token));
    }

    #[test]
    fn token_lines_parse_and_match_by_hash() {
        let mut table = TokenTable::default();
        let text = format!(
            "# comment\n\n{}  read:Counter metrics # grafana\nsha256:{} admin\n",
            hash("s3cret"),
            hash("root")
        );
        table.parse(&text, "tokens").unwrap();
        assert_eq!(table.len(), 2);
        assert_eq!(
            table.scopes_of(b"s3cret"),
            Some(&[Scope::Read("Counter".into()), Scope::Metrics][..])
        );
        assert_eq!(table.scopes_of(b"root"), Some(&[Scope::Admin][..]));
        assert_eq!(table.scopes_of(b"s3cre"), None);
        assert_eq!(table.scopes_of(b""), None);
    }

    #[test]
    fn bad_lines_name_origin_and_line_but_never_the_text() {
        let mut table = TokenTable::default();
        let err = table
            .parse("\nmy-plain-token read\n", "/etc/tokens")
            .unwrap_err();
        assert_eq!(
            err,
            "/etc/tokens: line 2: the first field is not a sha256 (64 hex digits); write the token's sha256, not the token"
        );
        assert!(!err.contains("my-plain-token"));
        let err = table
            .parse(&format!("{} read:", hash("x")), "$T")
            .unwrap_err();
        assert!(
            err.starts_with("$T: line 1: unknown scope `read:`"),
            "{err}"
        );
        let err = table.parse(&hash("x"), "$T").unwrap_err();
        assert_eq!(err, "$T: line 1: no scopes after the hash");
    }

    #[test]
    fn bearer_and_basic_present_a_token() {
        use base64::Engine;
        let mut headers = HeaderMap::new();
        assert_eq!(presented_token(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(presented_token(&headers).as_deref(), Some(&b"abc"[..]));
        let basic = base64::engine::general_purpose::STANDARD.encode("anyone:abc:d");
        headers.insert(
            header::AUTHORIZATION,
            format!("Basic {basic}").parse().unwrap(),
        );
        assert_eq!(presented_token(&headers).as_deref(), Some(&b"abc:d"[..]));
        headers.insert(header::AUTHORIZATION, "Digest x".parse().unwrap());
        assert_eq!(presented_token(&headers), None);
    }
}
