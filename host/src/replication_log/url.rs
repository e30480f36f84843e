//! Log URLs: which backend a URL names, and how to show one without its
//! password.

use super::LogError;

/// The backend a log URL names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LogUrl<'a> {
    /// `memory://`
    Memory,
    /// `sqlite://PATH` or `sqlite:PATH`, with the path as written.
    Sqlite(&'a str),
    /// `postgres://...` or `postgresql://...`, the whole URL.
    Postgres(&'a str),
}

impl<'a> LogUrl<'a> {
    /// Reads a log URL; an unknown or missing scheme is a [`LogError::Config`].
    pub(crate) fn parse(url: &'a str) -> Result<Self, LogError> {
        let expected = "expected memory://, sqlite://PATH or postgres://...";
        let Some((scheme, rest)) = url.split_once(':').filter(|(s, _)| is_scheme(s)) else {
            return Err(LogError::config(format!(
                "log URL `{}` has no scheme; {expected}",
                redact_password(url)
            )));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "memory" => Ok(LogUrl::Memory),
            "postgres" | "postgresql" => Ok(LogUrl::Postgres(url)),
            "sqlite" => {
                let path = rest.strip_prefix("//").unwrap_or(rest);
                if path.is_empty() || path == ":memory:" || path.contains('?') {
                    return Err(LogError::config(format!(
                        "log URL `{url}` needs a plain file path: sqlite://PATH or sqlite:PATH \
                         (no query parameters; use memory:// for an in-memory log)"
                    )));
                }
                Ok(LogUrl::Sqlite(path))
            }
            _ => Err(LogError::config(format!(
                "unsupported log URL scheme `{scheme}` in `{}`; {expected}",
                redact_password(url)
            ))),
        }
    }
}

/// Whether `s` is a URL scheme: a letter, then letters, digits, `+`, `-`, `.`.
fn is_scheme(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// The URL with the password of its `user:password@` part, and the value of
/// a `password=` query parameter, replaced by `***`: fit for logs and error
/// messages.
#[must_use]
pub fn redact_password(url: &str) -> String {
    redact_query_password(&redact_userinfo(url))
}

/// `password=VALUE` in the query becomes `password=***`.
fn redact_query_password(url: &str) -> String {
    let Some((head, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let (query, fragment) = query
        .split_once('#')
        .map_or((query, None), |(q, f)| (q, Some(f)));
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    let mut out = format!("{head}?{}", query.join("&"));
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// The password of `user:password@` becomes `***`.
fn redact_userinfo(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let authority = &url[start..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    match authority[..at].find(':') {
        Some(colon) => format!("{}***{}", &url[..start + colon + 1], &url[start + at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_pick_backends() {
        assert_eq!(LogUrl::parse("memory://").unwrap(), LogUrl::Memory);
        assert_eq!(
            LogUrl::parse("sqlite:///var/log.db").unwrap(),
            LogUrl::Sqlite("/var/log.db")
        );
        assert_eq!(
            LogUrl::parse("sqlite://data/log.db").unwrap(),
            LogUrl::Sqlite("data/log.db")
        );
        assert_eq!(
            LogUrl::parse("sqlite:log.db").unwrap(),
            LogUrl::Sqlite("log.db")
        );
        assert_eq!(
            LogUrl::parse("PostgreSQL://h/db").unwrap(),
            LogUrl::Postgres("PostgreSQL://h/db")
        );
    }

    #[test]
    fn bad_urls_are_config_errors_naming_the_scheme() {
        let err = LogUrl::parse("redis://u:pw@h").unwrap_err();
        assert!(
            matches!(&err, LogError::Config { message, .. } if message.contains("`redis`") && !message.contains("pw"))
        );
        assert!(matches!(
            LogUrl::parse("just-a-path"),
            Err(LogError::Config { .. })
        ));
        assert!(matches!(
            LogUrl::parse("sqlite://"),
            Err(LogError::Config { .. })
        ));
        assert!(matches!(
            LogUrl::parse("sqlite::memory:"),
            Err(LogError::Config { .. })
        ));
        assert!(matches!(
            LogUrl::parse("sqlite://a.db?mode=ro"),
            Err(LogError::Config { .. })
        ));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_password("postgres://u:p@ss:w@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db?x=1"
        );
        assert_eq!(redact_password("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_password("postgres://h/db?a=b@c"),
            "postgres://h/db?a=b@c"
        );
        assert_eq!(redact_password("sqlite:x.db"), "sqlite:x.db");
        assert_eq!(
            redact_password("postgres://u@h/db?sslmode=require&password=hunter2&x=1"),
            "postgres://u@h/db?sslmode=require&password=***&x=1"
        );
        assert_eq!(
            redact_password("postgres://u:a@h/db?PASSWORD=b"),
            "postgres://u:***@h/db?PASSWORD=***"
        );
    }
}
