//! JSON as the gateway reads what an agent sends: like `serde_json`, but a
//! member name given twice in one object is an error, not "the last one
//! wins". Upstreams differ on which duplicate they keep, so a body with
//! one is refused rather than judged by one reading and acted on by
//! another. Names are compared after unescaping (`"\u0061mount"` is
//! `amount`) and ignoring letter case (`fold`): Go's `encoding/json`
//! matches names to fields that way, so `"Name"` beside `"name"` is the
//! same member to it.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Parse one JSON value (surrounding whitespace allowed, nothing else),
/// refusing repeated member names at any depth.
pub fn from_slice(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = Strict.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// The seed that builds a `Value` and errors on a repeated name.
#[derive(Clone, Copy)]
struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        let mut folded: Vec<String> = Vec::new();
        // The name arrives unescaped, so escaped spellings of one name meet here.
        while let Some(name) = map.next_key::<String>()? {
            let f = fold(&name);
            if folded.contains(&f) {
                return Err(de::Error::custom(format_args!(
                    "member name `{}` is given twice in one object (names are compared ignoring letter case, as some readers do)",
                    name.escape_debug()
                )));
            }
            let v = map.next_value_seed(Strict)?;
            folded.push(f);
            out.insert(name, v);
        }
        Ok(Value::Object(out))
    }
}

/// A member name as readers that ignore letter case see it: lower case,
/// with the two letters Go's case folding adds (`K` Kelvin sign is `k`
/// already in lower case; `ſ` long s is `s`).
pub fn fold(name: &str) -> String {
    name.chars()
        .flat_map(char::to_lowercase)
        .map(|c| if c == 'ſ' { 's' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_what_serde_json_reads() {
        let text = br#" {"a":1,"b":[true,null,-2.5,"x\n"],"c":{"d":{}},"e":18446744073709551615} "#;
        assert_eq!(
            from_slice(text).unwrap(),
            serde_json::from_slice::<Value>(text).unwrap()
        );
        assert_eq!(from_slice(b"[]").unwrap(), json!([]));
        assert_eq!(from_slice(b"\"s\"").unwrap(), json!("s"));
    }

    #[test]
    fn a_repeated_name_is_refused_at_any_depth() {
        for bad in [
            &br#"{"amount":99999,"currency":"USD","amount":100}"#[..],
            br#"{"amount":99999,"\u0061mount":100}"#,
            br#"{"a\/b":1,"a/b":2}"#,
            br#"{"params":{"name":"delete_all","name":"safe_read"}}"#,
            br#"[{"x":{"y":[{"k":1,"k":1}]}}]"#,
            br#"{"params":{"name":"safe_read","Name":"delete_all"}}"#,
            br#"{"amount":100,"AMOUNT":99999}"#,
            "{\"kind\":1,\"\u{212a}ind\":2}".as_bytes(),
            "{\"ask\":1,\"a\u{17f}k\":2}".as_bytes(),
        ] {
            let e = from_slice(bad).unwrap_err().to_string();
            assert!(e.contains("is given twice"), "{e}");
            assert!(e.contains("line 1 column"), "says where: {e}");
        }
        // The same name in different objects is fine.
        assert_eq!(
            from_slice(br#"{"a":{"k":1},"b":{"k":2}}"#).unwrap(),
            json!({"a":{"k":1},"b":{"k":2}})
        );
    }

    #[test]
    fn trailing_data_and_bad_json_are_refused() {
        for bad in [&b"{} {}"[..], b"{\"a\":1", b"1e400", b"\xef\xbb\xbf{}", b""] {
            assert!(from_slice(bad).is_err(), "{bad:?}");
        }
    }
}
