//! Call inputs from the wire: protobuf `Struct`s to JSON maps, bounded in
//! size and depth (so no call can make a condition expensive), and the
//! digest an approval is bound to.

use prost_types::{ListValue, Struct, Value as PValue, value::Kind};
use serde_json::{Map, Value};

/// Largest parameters (or context) accepted, as JSON text.
pub const MAX_INPUT_BYTES: usize = 64 * 1024;
/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    #[error("{what} is nested deeper than {MAX_DEPTH} levels")]
    TooDeep { what: &'static str },
    #[error("{what} is {size} bytes as JSON; at most {MAX_INPUT_BYTES}")]
    TooLarge { what: &'static str, size: usize },
    #[error("{what} contains a number that is not finite")]
    NotFinite { what: &'static str },
}

fn value(v: &PValue, depth: usize, what: &'static str) -> Result<Value, InputError> {
    if depth > MAX_DEPTH {
        return Err(InputError::TooDeep { what });
    }
    Ok(match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::NumberValue(n)) => {
            if !n.is_finite() {
                return Err(InputError::NotFinite { what });
            }
            // Protobuf has only doubles: whole numbers become integers, so
            // `params.count == 3` and integer schemas work as written.
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                Value::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
            }
        }
        Some(Kind::ListValue(ListValue { values })) => Value::Array(
            values
                .iter()
                .map(|x| value(x, depth + 1, what))
                .collect::<Result<_, _>>()?,
        ),
        Some(Kind::StructValue(s)) => Value::Object(object(s, depth + 1, what)?),
    })
}

fn object(s: &Struct, depth: usize, what: &'static str) -> Result<Map<String, Value>, InputError> {
    s.fields
        .iter()
        .map(|(k, v)| value(v, depth, what).map(|v| (k.clone(), v)))
        .collect()
}

/// A request field (absent = empty) as a bounded JSON object.
pub fn to_json(s: Option<&Struct>, what: &'static str) -> Result<Map<String, Value>, InputError> {
    let map = match s {
        None => Map::new(),
        Some(s) => object(s, 1, what)?,
    };
    let size = serde_json::to_string(&map).map_or(usize::MAX, |t| t.len());
    if size > MAX_INPUT_BYTES {
        return Err(InputError::TooLarge { what, size });
    }
    Ok(map)
}

/// SHA-256 of the canonical JSON (keys sorted) of the parameters, hex.
pub fn digest(params: &Map<String, Value>) -> String {
    // serde_json's Map is ordered by key, so this text is canonical.
    let text = serde_json::to_string(params).unwrap_or_default();
    crate::audit::chain::sha256_hex(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn num(n: f64) -> PValue {
        PValue {
            kind: Some(Kind::NumberValue(n)),
        }
    }

    #[test]
    fn converts_and_bounds() {
        let mut fields = BTreeMap::new();
        fields.insert("amount".to_string(), num(7200.0));
        fields.insert("rate".to_string(), num(0.5));
        let s = Struct { fields };
        let m = to_json(Some(&s), "params").unwrap();
        assert_eq!(m["amount"], Value::from(7200));
        assert_eq!(m["rate"], Value::from(0.5));
        assert_eq!(digest(&m), digest(&m.clone()), "stable");
        // Deep nesting is refused.
        let mut v = num(1.0);
        for _ in 0..20 {
            v = PValue {
                kind: Some(Kind::ListValue(ListValue { values: vec![v] })),
            };
        }
        let deep = Struct {
            fields: [("x".to_string(), v)].into_iter().collect(),
        };
        assert_eq!(
            to_json(Some(&deep), "params"),
            Err(InputError::TooDeep { what: "params" })
        );
        let big = Struct {
            fields: [(
                "x".to_string(),
                PValue {
                    kind: Some(Kind::StringValue("a".repeat(70_000))),
                },
            )]
            .into_iter()
            .collect(),
        };
        assert!(matches!(
            to_json(Some(&big), "params"),
            Err(InputError::TooLarge { .. })
        ));
        let nan = Struct {
            fields: [("x".to_string(), num(f64::NAN))].into_iter().collect(),
        };
        assert!(matches!(
            to_json(Some(&nan), "params"),
            Err(InputError::NotFinite { .. })
        ));
    }

    #[test]
    fn the_digest_ignores_key_order_only() {
        let a: Map<String, Value> = serde_json::from_str(r#"{"b": 1, "a": 2}"#).unwrap();
        let b: Map<String, Value> = serde_json::from_str(r#"{"a": 2, "b": 1}"#).unwrap();
        let c: Map<String, Value> = serde_json::from_str(r#"{"a": 2, "b": 2}"#).unwrap();
        assert_eq!(digest(&a), digest(&b));
        assert_ne!(digest(&a), digest(&c));
    }
}
