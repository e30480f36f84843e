//! The typed state is faithful end to end: the guest SDK's encoder
//! (`Serialize` → the replica value encoding), the host's validation, and
//! the host's JSON rendering straight from the buffer give exactly what
//! `serde_json::to_string` gives for the original Rust value; the `Value`
//! tree built on demand renders the same.

use std::collections::{BTreeMap, HashMap};

use replica_host::{OutputLimits, State, Value};
use serde::Serialize;

/// Encodes as the guest does and validates as the host does after a call.
fn through_the_contract<T: Serialize>(value: &T) -> State {
    let bytes = replica_guest::encoding::to_bytes(value).expect("encode");
    State::validate(&bytes, &OutputLimits::default()).expect("validate")
}

fn assert_faithful<T: Serialize>(value: &T) {
    let expected = serde_json::to_string(value).unwrap();
    let state = through_the_contract(value);
    assert_eq!(state.to_json().unwrap(), expected);
    assert_eq!(state.to_value().to_json().unwrap(), expected);
}

#[derive(Serialize)]
struct Unit;

#[derive(Serialize)]
struct Newtype(u64);

#[derive(Serialize)]
struct Tuple(i8, String, bool);

#[derive(Serialize)]
enum Shape {
    Empty,
    Circle(f64),
    Rect(u32, u32),
    Poly {
        points: Vec<(f32, f32)>,
        closed: bool,
    },
}

#[derive(Serialize)]
struct Everything {
    small: u8,
    big: u64,
    above_2_53: u64,
    neg: i64,
    min: i64,
    f32_value: f32,
    f64_value: f64,
    not_a_number: f64,
    text: String,
    unicode: String,
    escapes: String,
    bytes: serde_bytes_like::Bytes,
    nested: Option<Option<Option<u8>>>,
    some_none: Option<Option<u8>>,
    none: Option<String>,
    list: Vec<Vec<i32>>,
    empty: Vec<u8>,
    map: BTreeMap<String, Shape>,
    int_keys: BTreeMap<u32, bool>,
    unit: (),
    unit_struct: Unit,
    newtype: Newtype,
    tuple: Tuple,
    shapes: Vec<Shape>,
    character: char,
}

/// A byte string serialized with `serialize_bytes`, without extra crates.
mod serde_bytes_like {
    pub struct Bytes(pub Vec<u8>);
    impl serde::Serialize for Bytes {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }
}

#[test]
fn every_serde_shape_renders_like_serde_json() {
    let value = Everything {
        small: 255,
        big: u64::MAX,
        above_2_53: (1 << 53) + 1,
        neg: -1,
        min: i64::MIN,
        f32_value: 0.1,
        f64_value: -2.5e-300,
        not_a_number: f64::NAN,
        text: String::new(),
        unicode: "日本語 ✓ 🎉 zoë".into(),
        escapes: "quote \" backslash \\ newline \n tab \t nul \0".into(),
        bytes: serde_bytes_like::Bytes(vec![0, 1, 255]),
        nested: Some(Some(None)),
        some_none: Some(None),
        none: None,
        list: vec![vec![1, -2], vec![], vec![i32::MAX]],
        empty: vec![],
        map: [
            ("a".to_string(), Shape::Empty),
            ("b".to_string(), Shape::Circle(1.5)),
            ("c".to_string(), Shape::Rect(2, 3)),
            (
                "d".to_string(),
                Shape::Poly {
                    points: vec![(0.0, 1.0)],
                    closed: true,
                },
            ),
        ]
        .into_iter()
        .collect(),
        int_keys: [(1, true), (20, false)].into_iter().collect(),
        unit: (),
        unit_struct: Unit,
        newtype: Newtype(7),
        tuple: Tuple(-8, "t".into(), false),
        shapes: vec![Shape::Empty, Shape::Circle(-0.0)],
        character: 'é',
    };
    assert_faithful(&value);
}

#[test]
fn top_level_values_of_every_kind() {
    assert_faithful(&42u64);
    assert_faithful(&-42i64);
    assert_faithful(&"just a string");
    assert_faithful(&Shape::Empty);
    assert_faithful(&Shape::Rect(1, 2));
    assert_faithful(&Some(3u8));
    assert_faithful(&Option::<u8>::None);
    assert_faithful(&vec![(); 3]);
    let map: HashMap<String, Vec<Option<i64>>> = [("k".to_string(), vec![Some(-1), None])]
        .into_iter()
        .collect();
    assert_faithful(&map);
}

#[test]
fn nested_options_stay_distinct_in_the_typed_value() {
    let v = through_the_contract(&Some(Some(Option::<u8>::None))).to_value();
    assert_eq!(v, Value::Some(Box::new(Value::Some(Box::new(Value::None)))));
    let v = through_the_contract(&u64::MAX).to_value();
    assert_eq!(v, Value::U64(u64::MAX));
    let v = through_the_contract(&i64::MIN).to_value();
    assert_eq!(v, Value::I64(i64::MIN));
}
