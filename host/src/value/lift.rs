//! Lifting the contract's flat node list into a [`Value`], with the checks
//! that keep a hostile plugin from hurting the host: every child index must
//! point forward and be used once (so the nodes form a tree, never a cycle or
//! an exponential DAG), and size and depth stay within [`OutputLimits`].
//! Works without recursion, so no input can overflow the host's stack.

use crate::contract::types::ValueNode;

use super::Value;

/// Bounds on what a plugin may return for one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimits {
    /// Most nodes in one value.
    pub max_nodes: usize,
    /// Deepest nesting (the root alone has depth 1).
    pub max_depth: usize,
    /// Most bytes of strings, byte strings and names, summed.
    pub max_bytes: usize,
}

impl Default for OutputLimits {
    fn default() -> Self {
        Self {
            max_nodes: 1_000_000,
            max_depth: 128,
            max_bytes: 32 << 20,
        }
    }
}

/// Why a returned value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LiftError {
    /// The value has no nodes.
    #[error("the value has no nodes")]
    Empty,
    /// Too many nodes.
    #[error("the value has {0} nodes, more than the limit of {1}")]
    TooManyNodes(usize, usize),
    /// Nested too deeply.
    #[error("the value is nested more than {0} levels deep")]
    TooDeep(usize),
    /// Too many bytes of text.
    #[error("the value holds more than {0} bytes of strings")]
    TooLarge(usize),
    /// A child index that does not point forward inside the list.
    #[error("node {parent} refers to node {child}, which is not after it in the list of {len}")]
    BadIndex {
        /// The referring node.
        parent: usize,
        /// The referred index.
        child: u32,
        /// The number of nodes.
        len: usize,
    },
    /// A node used twice.
    #[error("node {0} is referred to more than once")]
    Shared(u32),
    /// A node used by no parent.
    #[error("node {0} is not part of the value")]
    Orphan(usize),
}

/// Lifts a node list (root first) into a [`Value`].
pub fn lift(nodes: Vec<ValueNode>, limits: &OutputLimits) -> Result<Value, LiftError> {
    let len = nodes.len();
    if len == 0 {
        return Err(LiftError::Empty);
    }
    if len > limits.max_nodes {
        return Err(LiftError::TooManyNodes(len, limits.max_nodes));
    }
    let mut bytes = 0usize;
    let mut count_bytes = |n: usize| {
        bytes = bytes.saturating_add(n);
        if bytes > limits.max_bytes {
            Err(LiftError::TooLarge(limits.max_bytes))
        } else {
            Ok(())
        }
    };

    // Built values and their depths, filled from the last node to the first,
    // so that every child is ready before its parent.
    let mut built: Vec<Option<Value>> = Vec::with_capacity(len);
    built.resize_with(len, || None);
    let mut depth = vec![0u32; len];
    let mut claimed = vec![false; len];
    let max_depth = limits.max_depth as u32;

    for (i, node) in nodes.into_iter().enumerate().rev() {
        let mut take = |child: u32| -> Result<Value, LiftError> {
            let c = child as usize;
            if c <= i || c >= len {
                return Err(LiftError::BadIndex {
                    parent: i,
                    child,
                    len,
                });
            }
            if std::mem::replace(&mut claimed[c], true) {
                return Err(LiftError::Shared(child));
            }
            depth[i] = depth[i].max(depth[c]);
            Ok(built[c]
                .take()
                .expect("a forward node is built before its parent"))
        };
        let value = match node {
            ValueNode::Unit => Value::Unit,
            ValueNode::Boolean(b) => Value::Bool(b),
            ValueNode::Signed(n) => Value::I64(n),
            ValueNode::Unsigned(n) => Value::U64(n),
            ValueNode::Float32(n) => Value::F32(n),
            ValueNode::Float64(n) => Value::F64(n),
            ValueNode::Text(s) => {
                count_bytes(s.len())?;
                Value::String(s)
            }
            ValueNode::Bytes(b) => {
                count_bytes(b.len())?;
                Value::Bytes(b)
            }
            ValueNode::Absent => Value::None,
            ValueNode::Present(c) => Value::Some(Box::new(take(c)?)),
            ValueNode::List(items) => {
                Value::List(items.into_iter().map(&mut take).collect::<Result<_, _>>()?)
            }
            ValueNode::Record(fields) => Value::Record(
                fields
                    .into_iter()
                    .map(|f| {
                        count_bytes(f.name.len())?;
                        Ok((f.name, take(f.value)?))
                    })
                    .collect::<Result<_, LiftError>>()?,
            ),
            ValueNode::Map(entries) => Value::Map(
                entries
                    .into_iter()
                    .map(|e| Ok((take(e.key)?, take(e.value)?)))
                    .collect::<Result<_, LiftError>>()?,
            ),
            ValueNode::Variant(v) => {
                count_bytes(v.name.len())?;
                let payload = match v.payload {
                    Some(c) => Some(Box::new(take(c)?)),
                    None => None,
                };
                Value::Variant(v.name, payload)
            }
        };
        depth[i] += 1;
        if depth[i] > max_depth {
            return Err(LiftError::TooDeep(limits.max_depth));
        }
        built[i] = Some(value);
    }
    if let Some(orphan) = (1..len).find(|&c| !claimed[c]) {
        return Err(LiftError::Orphan(orphan));
    }
    Ok(built[0].take().expect("the root is built last"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::types::{Field, VariantValue};

    fn rec(fields: &[(&str, u32)]) -> ValueNode {
        ValueNode::Record(
            fields
                .iter()
                .map(|(n, v)| Field {
                    name: n.to_string(),
                    value: *v,
                })
                .collect(),
        )
    }

    #[test]
    fn lifts_a_tree_and_renders_like_serde_json() {
        let nodes = vec![
            rec(&[("a", 1), ("b", 2), ("c", 4)]),
            ValueNode::Unsigned(u64::MAX),
            ValueNode::Present(3),
            ValueNode::Absent,
            ValueNode::Variant(VariantValue {
                name: "Red".into(),
                payload: None,
            }),
        ];
        let v = lift(nodes, &OutputLimits::default()).unwrap();
        assert_eq!(
            v.to_json().unwrap(),
            r#"{"a":18446744073709551615,"b":null,"c":"Red"}"#
        );
        assert_eq!(v.field("b"), Some(&Value::Some(Box::new(Value::None))));
    }

    #[test]
    fn refuses_cycles_shared_nodes_and_orphans() {
        let limits = OutputLimits::default();
        let back = vec![ValueNode::List(vec![1]), ValueNode::List(vec![0])];
        assert!(matches!(
            lift(back, &limits),
            Err(LiftError::BadIndex {
                parent: 1,
                child: 0,
                ..
            })
        ));
        let shared = vec![ValueNode::List(vec![1, 1]), ValueNode::Unit];
        assert_eq!(lift(shared, &limits), Err(LiftError::Shared(1)));
        let orphan = vec![ValueNode::Unit, ValueNode::Unit];
        assert_eq!(lift(orphan, &limits), Err(LiftError::Orphan(1)));
        assert_eq!(lift(vec![], &limits), Err(LiftError::Empty));
        let out_of_range = vec![ValueNode::Present(9)];
        assert!(matches!(
            lift(out_of_range, &limits),
            Err(LiftError::BadIndex { .. })
        ));
    }

    #[test]
    fn enforces_depth_nodes_and_bytes() {
        let limits = OutputLimits {
            max_nodes: 10,
            max_depth: 3,
            max_bytes: 4,
        };
        let deep: Vec<ValueNode> = (0..4)
            .map(|i| {
                if i < 3 {
                    ValueNode::Present(i + 1)
                } else {
                    ValueNode::Unit
                }
            })
            .collect();
        assert_eq!(lift(deep, &limits), Err(LiftError::TooDeep(3)));
        let ok: Vec<ValueNode> = (0..3)
            .map(|i| {
                if i < 2 {
                    ValueNode::Present(i + 1)
                } else {
                    ValueNode::Unit
                }
            })
            .collect();
        assert!(lift(ok, &limits).is_ok());
        let many = vec![ValueNode::Unit; 11];
        assert_eq!(lift(many, &limits), Err(LiftError::TooManyNodes(11, 10)));
        let big = vec![ValueNode::Text("hello".into())];
        assert_eq!(lift(big, &limits), Err(LiftError::TooLarge(4)));
    }
}
