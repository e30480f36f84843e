use std::collections::BTreeMap;

use replica_encoding::{tag, to_bytes};
use serde::Serialize;

use super::*;

fn state<T: Serialize>(value: &T) -> State {
    State::from_serialize(value).unwrap()
}

fn check(bytes: &[u8]) -> Result<State, StateError> {
    State::validate(bytes, &OutputLimits::default())
}

#[derive(Serialize)]
enum E {
    Unit,
    New(u8),
    Tup(i8, bool),
    Str { x: Option<Option<u64>> },
}

#[derive(Serialize)]
struct Outer {
    big: u64,
    neg: i64,
    name: String,
    tags: Vec<E>,
    map: BTreeMap<String, f64>,
    keyed: BTreeMap<i32, ()>,
    bytes: serde_bytes_like::Bytes,
    half: f32,
    nan: f64,
}

/// `serialize_bytes`, without a dependency on serde_bytes.
mod serde_bytes_like {
    pub struct Bytes(pub Vec<u8>);
    impl serde::Serialize for Bytes {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }
}

fn outer() -> Outer {
    Outer {
        big: u64::MAX,
        neg: i64::MIN,
        name: "zoë ✓ \"quoted\"\n".into(),
        tags: vec![
            E::Unit,
            E::New(7),
            E::Tup(-1, true),
            E::Str { x: Some(None) },
        ],
        map: [("a".to_string(), 1.5)].into_iter().collect(),
        keyed: [(-3, ()), (4, ())].into_iter().collect(),
        bytes: serde_bytes_like::Bytes(vec![0, 255]),
        half: 0.1,
        nan: f64::NAN,
    }
}

#[test]
fn renders_exactly_like_serde_json() {
    let value = outer();
    let s = state(&value);
    assert_eq!(s.to_json().unwrap(), serde_json::to_string(&value).unwrap());
    assert_eq!(
        s.to_value().to_json().unwrap(),
        serde_json::to_string(&value).unwrap()
    );
}

#[test]
fn builds_a_value_tree_on_demand() {
    let v = state(&outer()).to_value();
    assert_eq!(v.field("big"), Some(&Value::U64(u64::MAX)));
    assert_eq!(v.field("neg"), Some(&Value::I64(i64::MIN)));
    let Some(Value::List(tags)) = v.field("tags") else {
        panic!("tags is not a list: {v:?}")
    };
    assert_eq!(tags[0], Value::Variant("Unit".into(), None));
    assert_eq!(
        tags[3],
        Value::Variant(
            "Str".into(),
            Some(Box::new(Value::Record(vec![(
                "x".into(),
                Value::Some(Box::new(Value::None))
            )])))
        )
    );
    assert_eq!(state(&5u8).field("count"), None);
}

#[test]
fn refuses_malformed_buffers() {
    assert_eq!(check(&[]), Err(StateError::Empty));
    assert_eq!(check(&[2, tag::UNIT]), Err(StateError::UnknownVersion(2)));
    assert_eq!(
        check(&[1, 0x20]),
        Err(StateError::UnknownTag { tag: 0x20, at: 1 })
    );
    assert_eq!(
        check(&[1, 0xC0]),
        Err(StateError::UnknownTag { tag: 0xC0, at: 1 })
    );
    assert!(matches!(
        check(&[1, tag::STRING, 5, b'a']),
        Err(StateError::Malformed { what: "string", .. })
    ));
    assert!(matches!(
        check(&[1, tag::STRING, 2, 0xC3, 0x28]),
        Err(StateError::Malformed { what: "string", .. })
    ));
    assert!(matches!(
        check(&[
            1,
            tag::UNSIGNED,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0x02
        ]),
        Err(StateError::Malformed {
            what: "integer",
            ..
        })
    ));
    assert_eq!(check(&[1, tag::UNIT, 0]), Err(StateError::TrailingBytes(1)));
    // A seq never closed, a struct field referring to an undefined name.
    assert!(check(&[1, tag::SEQ, tag::UNIT]).is_err());
    assert!(matches!(
        check(&[1, tag::STRUCT, 7, tag::UNIT, 0]),
        Err(StateError::Malformed {
            what: "field name",
            ..
        })
    ));
    // A map that ends between a key and its value.
    assert!(check(&[1, tag::MAP, tag::STRING, 1, b'k', tag::END]).is_err());
}

#[test]
fn refuses_keys_json_cannot_hold() {
    let list_key: BTreeMap<Vec<u8>, u8> = [(vec![1], 2)].into_iter().collect();
    let refused = State::from_serialize(&list_key).unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("map key at byte 2 is a sequence"),
        "{refused}"
    );
    for (bytes, what) in [
        (vec![1, tag::MAP, tag::UNIT, tag::UNIT, tag::END], "unit"),
        (vec![1, tag::MAP, tag::NONE, tag::UNIT, tag::END], "None"),
        (
            vec![1, tag::MAP, tag::SOME, tag::BYTES, 0, tag::UNIT, tag::END],
            "bytes",
        ),
        (
            vec![1, tag::MAP, tag::STRUCT, 0, tag::UNIT, tag::END],
            "a struct",
        ),
        (
            vec![1, tag::MAP, tag::MAP, tag::END, tag::UNIT, tag::END],
            "a map",
        ),
        (
            vec![
                1,
                tag::MAP,
                tag::VARIANT,
                1,
                1,
                b'V',
                tag::UNIT,
                tag::UNIT,
                tag::END,
            ],
            "a variant with a payload",
        ),
    ] {
        match check(&bytes) {
            Err(StateError::BadKey { what: got, .. }) => assert_eq!(got, what),
            other => panic!("{bytes:?}: {other:?}"),
        }
    }
    let mut nan_key = vec![1, tag::MAP, tag::F64];
    nan_key.extend(f64::NAN.to_le_bytes());
    nan_key.extend([tag::UNIT, tag::END]);
    assert!(matches!(check(&nan_key), Err(StateError::BadKey { .. })));

    // What serde_json accepts as keys renders as it does.
    #[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
    enum K {
        A,
    }
    let ok = (
        [(true, 1)].into_iter().collect::<BTreeMap<_, _>>(),
        [(K::A, 1)].into_iter().collect::<BTreeMap<_, _>>(),
        [(Some("s"), 1)].into_iter().collect::<BTreeMap<_, _>>(),
        [(u64::MAX, 1)].into_iter().collect::<BTreeMap<_, _>>(),
    );
    assert_eq!(
        state(&ok).to_json().unwrap(),
        serde_json::to_string(&ok).unwrap()
    );
}

#[test]
fn enforces_size_nodes_and_depth() {
    let limits = OutputLimits {
        max_nodes: 3,
        max_depth: 2,
        max_bytes: 16,
        max_rendered_bytes: u64::MAX,
    };
    let ok = to_bytes(&vec![1u8, 2]).unwrap();
    assert!(State::validate(&ok, &limits).is_ok());
    let wide = to_bytes(&vec![1u8, 2, 3]).unwrap();
    assert_eq!(
        State::validate(&wide, &limits),
        Err(StateError::TooManyNodes(3))
    );
    let deep = to_bytes(&vec![vec![vec![1u8]]]).unwrap();
    assert_eq!(State::validate(&deep, &limits), Err(StateError::TooDeep(2)));
    let long = to_bytes("seventeen bytes!!").unwrap();
    assert!(matches!(
        State::validate(&long, &limits),
        Err(StateError::TooLarge { limit: 16, .. })
    ));
}

#[test]
fn a_million_levels_of_nesting_is_refused_without_recursion() {
    let mut bytes = vec![1];
    bytes.extend(std::iter::repeat_n(tag::SOME, 1_000_000));
    bytes.push(tag::UNIT);
    let limits = OutputLimits {
        max_depth: usize::MAX,
        max_nodes: usize::MAX,
        max_bytes: usize::MAX,
        max_rendered_bytes: u64::MAX,
    };
    assert_eq!(
        State::validate(&bytes, &limits),
        Err(StateError::TooDeep(OutputLimits::DEPTH_CAP))
    );
}

#[test]
fn reads_back_into_the_rust_type() {
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Empty,
        Circle(f64),
        Rect(u32, u32),
        Poly {
            points: Vec<(f32, f32)>,
            closed: bool,
        },
    }
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Account {
        owner: String,
        balance: i64,
        big: u64,
        tags: Vec<String>,
        nested: Option<Option<u8>>,
        none: Option<String>,
        shapes: Vec<Shape>,
        by_name: BTreeMap<String, Shape>,
        by_number: BTreeMap<u32, bool>,
        unit: (),
        ch: char,
    }
    let account = Account {
        owner: "Zoë".into(),
        balance: -1250,
        big: u64::MAX,
        tags: vec!["vip".into()],
        nested: Some(None),
        none: None,
        shapes: vec![
            Shape::Empty,
            Shape::Circle(1.5),
            Shape::Rect(2, 3),
            Shape::Poly {
                points: vec![(0.0, 1.0)],
                closed: true,
            },
        ],
        by_name: [("a".to_string(), Shape::Empty)].into_iter().collect(),
        by_number: [(7, true)].into_iter().collect(),
        unit: (),
        ch: 'é',
    };
    let back: Account = state(&account).deserialize().unwrap();
    assert_eq!(back, account);
    // A state of another shape is an error, not a panic.
    let err = state(&5u8).deserialize::<Account>().unwrap_err();
    assert!(err.to_string().contains("invalid type"), "{err}");
}

/// A sequence of `refs` unit variants all named by one `name_len`-byte name:
/// defined once, then referred to by a two-byte name reference each time.
fn amplified(name_len: usize, refs: usize) -> Vec<u8> {
    use replica_encoding::{NAME_INDEX_BASE, NEW_NAME, tag};
    let mut buf = vec![replica_encoding::VERSION, tag::SEQ];
    buf.push(tag::UNIT_VARIANT);
    buf.push(NEW_NAME as u8);
    let mut len = name_len;
    while len >= 0x80 {
        buf.push((len as u8) | 0x80);
        len >>= 7;
    }
    buf.push(len as u8);
    buf.extend(std::iter::repeat_n(b'n', name_len));
    for _ in 1..refs {
        buf.extend([tag::UNIT_VARIANT, NAME_INDEX_BASE as u8]);
    }
    buf.push(tag::END);
    buf
}

#[test]
fn a_small_state_that_would_render_huge_is_refused() {
    // ~1 MiB encoded, ~1 GiB rendered: 1,000 bytes of name, 350,000 times.
    let buf = amplified(1000, 350_000);
    assert!(buf.len() < 1 << 20, "{}", buf.len());
    let limits = OutputLimits::default();
    assert_eq!(
        State::validate(&buf, &limits),
        Err(StateError::RendersTooLarge {
            limit: limits.max_rendered_bytes
        })
    );
    // The same shape, small enough, validates and renders within the bound.
    let small = amplified(10, 100);
    let limits = OutputLimits {
        max_rendered_bytes: 1_400,
        ..OutputLimits::default()
    };
    let json = State::validate(&small, &limits).unwrap().to_json().unwrap();
    assert_eq!(json.len(), 2 + 100 * 12 + 99);
    assert!(json.len() as u64 <= limits.max_rendered_bytes);
    let tighter = OutputLimits {
        max_rendered_bytes: 1_000,
        ..limits
    };
    assert!(matches!(
        State::validate(&small, &tighter),
        Err(StateError::RendersTooLarge { limit: 1_000 })
    ));
}

#[test]
fn the_rendered_bound_counts_json_escapes() {
    // 1,000 control characters render as 6,000 bytes (`\u0001`) plus quotes.
    let text = "\u{1}".repeat(1000);
    let buf = replica_encoding::to_bytes(&text).unwrap();
    let at = |limit| OutputLimits {
        max_rendered_bytes: limit,
        ..OutputLimits::default()
    };
    assert!(State::validate(&buf, &at(5_000)).is_err());
    let json = State::validate(&buf, &at(6_010))
        .unwrap()
        .to_json()
        .unwrap();
    assert_eq!(json.len(), 6_002);
}

#[test]
fn strings_and_names_are_measured_and_checked_exactly_at_every_position() {
    // Every byte value at every position of texts of 1 to 35 bytes (the
    // validator reads eight bytes at a time below sixteen, sixteen from
    // there on): the rendered bound is the exact JSON length, and text that
    // is not UTF-8 is refused.
    let at = |limit| OutputLimits {
        max_rendered_bytes: limit,
        ..OutputLimits::default()
    };
    for len in 1..36u8 {
        for position in 0..usize::from(len) {
            for byte in 0..=255u8 {
                let mut text = vec![b'a'; usize::from(len)];
                text[position] = byte;
                // The text as a string, then as a unit variant's name.
                let mut string = vec![1, tag::STRING, len];
                string.extend(&text);
                let mut name = vec![1, tag::UNIT_VARIANT, 1, len];
                name.extend(&text);
                for buf in [string, name] {
                    match std::str::from_utf8(&text) {
                        Err(_) => assert!(
                            matches!(check(&buf), Err(StateError::Malformed { .. })),
                            "{text:?}"
                        ),
                        Ok(s) => {
                            // The value's separator, the quotes and the text.
                            let exact = 1 + serde_json::to_string(s).unwrap().len() as u64;
                            assert!(State::validate(&buf, &at(exact)).is_ok(), "{text:?}");
                            assert!(
                                matches!(
                                    State::validate(&buf, &at(exact - 1)),
                                    Err(StateError::RendersTooLarge { .. })
                                ),
                                "{text:?}"
                            );
                        }
                    }
                }
            }
        }
    }
}
