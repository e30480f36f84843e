//! Schema evolution: decode a payload written by any of several versions of
//! a state type, and upcast the older ones into the current type.
//!
//! Orlando's payloads carry no header saying which layout wrote them, so a
//! plugin that accepts several layouts tries each in turn. [`Versions`]
//! lists them once, newest first; the plugin's
//! [`SCHEMA_VERSION`](crate::Plugin::SCHEMA_VERSION) and
//! [`STATE_VERSIONS`](crate::Plugin::STATE_VERSIONS) come from that same
//! list, so they cannot drift apart:
//!
//! ```
//! use replica_guest::versions::Versions;
//! use replica_guest::{DecodeError, Plugin, Snapshot, formats};
//! use serde::{Deserialize, Serialize};
//!
//! /// The layout Orlando wrote first.
//! #[derive(Deserialize)]
//! pub struct CounterStateV1 {
//!     pub count: i64,
//! }
//!
//! /// The current layout.
//! #[derive(Serialize, Deserialize)]
//! pub struct CounterState {
//!     pub count: i64,
//!     pub updated_by: Option<String>,
//! }
//!
//! impl From<CounterStateV1> for CounterState {
//!     fn from(v1: CounterStateV1) -> Self {
//!         CounterState { count: v1.count, updated_by: None }
//!     }
//! }
//!
//! /// Every layout this plugin reads, newest first.
//! pub const VERSIONS: Versions<CounterState, 2> = Versions::new([
//!     ("2", formats::bincode::<CounterState>),
//!     ("1", |p| formats::bincode::<CounterStateV1>(p).map(Into::into)),
//! ]);
//!
//! pub struct Counter;
//!
//! impl Plugin for Counter {
//!     const GRAIN_TYPE: &'static str = "Counter";
//!     const SCHEMA_NAME: &'static str = "CounterState";
//!     const SCHEMA_VERSION: &'static str = VERSIONS.current();
//!     const STATE_VERSIONS: &'static [&'static str] = &VERSIONS.names();
//!     type State = CounterState;
//!
//!     fn decode(snapshot: &Snapshot) -> Result<CounterState, DecodeError> {
//!         VERSIONS.decode(&snapshot.payload)
//!     }
//! }
//! # let v1 = bincode::serde::encode_to_vec(&(7i64,), bincode::config::standard()).unwrap();
//! # assert_eq!(VERSIONS.decode(&v1).unwrap().count, 7);
//! # assert_eq!(Counter::STATE_VERSIONS, ["2", "1"]);
//! ```
//!
//! # The pattern for header-less payloads
//! - **Newest first.** Most payloads in a live log are of the newest layout,
//!   and a newer layout is usually the longer one: trying it first makes the
//!   common case one attempt.
//! - **Strict decoders.** A layout must refuse bytes it does not use up
//!   entirely: [`formats::bincode`](crate::formats::bincode) refuses trailing
//!   bytes, so an old, shorter layout never half-decodes a new payload and
//!   drops its new fields. For JSON, add `#[serde(deny_unknown_fields)]` to
//!   the older types, or a V1 reader accepts a V2 object and ignores the
//!   fields it does not know.
//! - **The limit: ambiguous layouts.** Two layouts that both decode the same
//!   bytes cannot be told apart without a header: the first one tried wins,
//!   silently. Changing a field from `u32` to `i64` does that in bincode
//!   (both are varints: a V1 count of 5 reads as V2's -3). Catch it in a
//!   test: encode a sample of every version and check that only its own
//!   layout decodes it, with [`Versions::assert_unambiguous`]:
//!
//! ```should_panic
//! use replica_guest::{formats, versions::Versions};
//!
//! #[derive(serde::Deserialize)]
//! struct V1 { count: u32 }
//! #[derive(serde::Deserialize)]
//! struct V2 { count: i64 }
//!
//! const VERSIONS: Versions<V2, 2> = Versions::new([
//!     ("2", formats::bincode::<V2>),
//!     ("1", |p| formats::bincode::<V1>(p).map(|v| V2 { count: v.count.into() })),
//! ]);
//!
//! fn bin<T: serde::Serialize>(value: &T) -> Vec<u8> {
//!     bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap()
//! }
//!
//! // Panics: "the sample of version 1 also decodes as version 2".
//! VERSIONS.assert_unambiguous(&[("2", bin(&(-3i64,))), ("1", bin(&(5u32,)))]);
//! ```
//!
//! When the layouts are ambiguous, make them distinct (e.g. a new field) or
//! ask Orlando to write a version header, and decode on it.

use crate::{DecodeError, ErrorKind};

/// Decodes one layout's payload into the current state type.
pub type DecodeFn<T> = fn(&[u8]) -> Result<T, DecodeError>;

/// The `N` layouts a plugin reads, newest first, each with its version name
/// and a decoder that returns the current state type `T` (upcasting older
/// layouts). Build it in a `const` with [`Versions::new`].
pub struct Versions<T, const N: usize> {
    /// `(version, decoder)`, newest first.
    layouts: [(&'static str, DecodeFn<T>); N],
}

impl<T, const N: usize> Versions<T, N> {
    /// The layouts, newest first: the first is the current version.
    ///
    /// # Panics
    /// When `layouts` is empty, or names a version twice (at compile time
    /// when built in a `const`).
    pub const fn new(layouts: [(&'static str, DecodeFn<T>); N]) -> Self {
        assert!(N > 0, "Versions needs at least one layout");
        let mut i = 0;
        while i < N {
            let mut j = i + 1;
            while j < N {
                assert!(
                    !str_eq(layouts[i].0, layouts[j].0),
                    "Versions names a version twice"
                );
                j += 1;
            }
            i += 1;
        }
        Self { layouts }
    }

    /// The newest version: the plugin's
    /// [`SCHEMA_VERSION`](crate::Plugin::SCHEMA_VERSION).
    pub const fn current(&self) -> &'static str {
        self.layouts[0].0
    }

    /// Every version, newest first: the plugin's
    /// [`STATE_VERSIONS`](crate::Plugin::STATE_VERSIONS).
    pub const fn names(&self) -> [&'static str; N] {
        let mut names = [""; N];
        let mut i = 0;
        while i < N {
            names[i] = self.layouts[i].0;
            i += 1;
        }
        names
    }

    /// Decodes `payload` with the first layout, newest first, that accepts
    /// it. When none does, the error names every version tried and why it
    /// failed, in one line. Its kind is [`ErrorKind::Rejected`] if some
    /// layout decoded the payload but refused its content,
    /// [`ErrorKind::UnsupportedSchemaVersion`] if some layout said so, and
    /// [`ErrorKind::MalformedPayload`] otherwise.
    pub fn decode(&self, payload: &[u8]) -> Result<T, DecodeError> {
        self.decode_versioned(payload).map(|(_, state)| state)
    }

    /// Like [`Versions::decode`], also saying which version decoded it.
    pub fn decode_versioned(&self, payload: &[u8]) -> Result<(&'static str, T), DecodeError> {
        let mut failures = Vec::with_capacity(N);
        for (version, decode) in &self.layouts {
            match decode(payload) {
                Ok(state) => return Ok((version, state)),
                Err(e) => failures.push((*version, e)),
            }
        }
        let kind = if failures.iter().any(|(_, e)| e.kind == ErrorKind::Rejected) {
            ErrorKind::Rejected
        } else if failures
            .iter()
            .any(|(_, e)| e.kind == ErrorKind::UnsupportedSchemaVersion)
        {
            ErrorKind::UnsupportedSchemaVersion
        } else {
            ErrorKind::MalformedPayload
        };
        let reasons: Vec<String> = failures
            .iter()
            .map(|(version, e)| format!("version {version}: {}", e.message.replace('\n', " ")))
            .collect();
        Err(DecodeError {
            kind,
            message: format!(
                "no known layout decodes this payload: {}",
                reasons.join("; ")
            ),
        })
    }

    /// Which of `samples` (`(version, payload)`) a layout other than its
    /// own decodes, one line each, e.g. `the sample of version 1 also
    /// decodes as version 2 (tried first)`. Also lists a sample its own
    /// layout refuses, and a sample naming an unknown version.
    pub fn ambiguities(&self, samples: &[(&str, Vec<u8>)]) -> Vec<String> {
        let mut found = Vec::new();
        for (own, payload) in samples {
            if !self.layouts.iter().any(|(v, _)| v == own) {
                found.push(format!("a sample names version {own}, which is not listed"));
                continue;
            }
            for (position, (version, decode)) in self.layouts.iter().enumerate() {
                let decoded = decode(payload);
                if version == own {
                    if let Err(e) = decoded {
                        found.push(format!(
                            "the sample of version {own} does not decode as itself: {e}"
                        ));
                    }
                } else if decoded.is_ok() {
                    let order = if self.position(own) > Some(position) {
                        " (tried first)"
                    } else {
                        ""
                    };
                    found.push(format!(
                        "the sample of version {own} also decodes as version {version}{order}"
                    ));
                }
            }
        }
        found
    }

    /// Panics, listing them, when [`Versions::ambiguities`] finds any, or
    /// when `samples` leaves a version without a sample. For a plugin's
    /// unit tests.
    #[track_caller]
    pub fn assert_unambiguous(&self, samples: &[(&str, Vec<u8>)]) {
        let mut problems = self.ambiguities(samples);
        for (version, _) in &self.layouts {
            if !samples.iter().any(|(v, _)| v == version) {
                problems.push(format!("no sample of version {version}"));
            }
        }
        assert!(
            problems.is_empty(),
            "the layouts are ambiguous: {}",
            problems.join("; ")
        );
    }

    fn position(&self, version: &str) -> Option<usize> {
        self.layouts.iter().position(|(v, _)| *v == version)
    }
}

/// `a == b`, usable in a `const fn`.
const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V1 {
        count: i64,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V2 {
        count: i64,
        updated_by: Option<String>,
    }

    impl From<V1> for V2 {
        fn from(v1: V1) -> Self {
            V2 {
                count: v1.count,
                updated_by: None,
            }
        }
    }

    const VERSIONS: Versions<V2, 2> = Versions::new([
        ("2", formats::bincode::<V2>),
        ("1", |p| formats::bincode::<V1>(p).map(Into::into)),
    ]);

    fn bin<T: Serialize>(v: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(v, bincode::config::standard()).unwrap()
    }

    fn v2() -> V2 {
        V2 {
            count: -9,
            updated_by: Some("ops".into()),
        }
    }

    #[test]
    fn names_come_from_the_list_newest_first() {
        const NAMES: &[&str] = &VERSIONS.names();
        assert_eq!(NAMES, ["2", "1"]);
        assert_eq!(VERSIONS.current(), "2");
    }

    #[test]
    fn each_version_decodes_and_old_ones_upcast() {
        assert_eq!(VERSIONS.decode_versioned(&bin(&v2())).unwrap(), ("2", v2()));
        assert_eq!(
            VERSIONS.decode_versioned(&bin(&V1 { count: 4 })).unwrap(),
            (
                "1",
                V2 {
                    count: 4,
                    updated_by: None
                }
            )
        );
    }

    #[test]
    fn a_payload_no_layout_reads_names_every_version_tried() {
        let err = VERSIONS.decode(&[0xff, 0xff, 0xff]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::MalformedPayload);
        assert!(
            err.message
                .starts_with("no known layout decodes this payload: version 2: bincode: "),
            "{err}"
        );
        assert!(err.message.contains("; version 1: bincode: "), "{err}");
        assert!(!err.message.contains('\n'));
    }

    #[test]
    fn trailing_bytes_keep_an_old_layout_from_half_decoding_a_new_payload() {
        // V1 reads the count and stops: the strict check refuses the rest.
        let err = formats::bincode::<V1>(&bin(&v2())).unwrap_err();
        assert!(err.message.contains("trailing bytes"), "{err}");
        // A V2 payload with one byte too many fits no layout.
        let mut longer = bin(&v2());
        longer.push(0);
        let err = VERSIONS.decode(&longer).unwrap_err();
        assert!(
            err.message.contains("version 2: bincode: 1 trailing bytes"),
            "{err}"
        );
    }

    #[test]
    fn the_error_kind_prefers_rejected_then_unsupported() {
        const MIXED: Versions<i64, 3> = Versions::new([
            ("3", |_| Err(DecodeError::malformed("m"))),
            ("2", |_| Err(DecodeError::rejected("negative count"))),
            ("1", |_| Err(DecodeError::unsupported_version("u"))),
        ]);
        let err = MIXED.decode(b"x").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Rejected);
        assert_eq!(
            err.message,
            "no known layout decodes this payload: version 3: m; version 2: negative count; version 1: u"
        );
        const UNSUPPORTED: Versions<i64, 2> = Versions::new([
            ("2", |_| Err(DecodeError::malformed("m"))),
            ("1", |_| Err(DecodeError::unsupported_version("u"))),
        ]);
        assert_eq!(
            UNSUPPORTED.decode(b"x").unwrap_err().kind,
            ErrorKind::UnsupportedSchemaVersion
        );
    }

    #[test]
    fn distinct_layouts_pass_the_ambiguity_check() {
        VERSIONS.assert_unambiguous(&[("2", bin(&v2())), ("1", bin(&V1 { count: 5 }))]);
    }

    #[test]
    fn layouts_that_read_the_same_bytes_are_reported() {
        #[derive(Deserialize)]
        struct Narrow {
            count: u32,
        }
        const WIDENED: Versions<i64, 2> = Versions::new([
            ("2", |p| formats::bincode::<(i64,)>(p).map(|v| v.0)),
            ("1", |p| {
                formats::bincode::<Narrow>(p).map(|v| v.count.into())
            }),
        ]);
        let found = WIDENED.ambiguities(&[("2", bin(&(-3i64,))), ("1", bin(&(5u32,)))]);
        assert!(
            found.contains(
                &"the sample of version 1 also decodes as version 2 (tried first)".into()
            ),
            "{found:?}"
        );
        // And the V1 payload is silently read as V2: -3, not 5.
        assert_eq!(WIDENED.decode(&bin(&(5u32,))).unwrap(), -3);

        let missing =
            std::panic::catch_unwind(|| VERSIONS.assert_unambiguous(&[("2", bin(&v2()))]))
                .unwrap_err();
        let message = missing.downcast_ref::<String>().unwrap();
        assert!(message.contains("no sample of version 1"), "{message}");
        // A V2 payload labelled 1: V2 reads it and V1 does not.
        let wrong = VERSIONS.ambiguities(&[("1", bin(&v2())), ("7", vec![])]);
        assert_eq!(wrong.len(), 3, "{wrong:?}");
        assert_eq!(
            wrong[0],
            "the sample of version 1 also decodes as version 2 (tried first)"
        );
        assert!(wrong[1].starts_with("the sample of version 1 does not decode as itself"));
        assert!(wrong[2].contains("version 7, which is not listed"));
    }
}
