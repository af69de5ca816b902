//! Strict reading of signed JSON payloads, with errors an operator can act on.
//!
//! Every signed payload (offer, manifest, control, key rotation, rollout record) is read by
//! [`parse_signed`]: on top of what each type refuses itself (unknown and missing keys,
//! duplicate keys, trailing garbage), it refuses `null` anywhere (an optional key is left out
//! when absent, never `null`: serde's `Option` would take `null` as absent) and describes every
//! failure as a sentence naming the key, never as a parser's line and column:
//!
//! - `key `expires-at` is null: leave an optional key out instead of setting it to null`
//! - `key `rollout-percent`: unable to accept rollout percentage 0: expected 1..=100`
//! - `key `target`: must hold exactly one key, it holds 2 (`device`, `group`)`
//! - `key `sequence`: 18446744073709551616 is not a whole number from 0 to 18446744073709551615`
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Parses `bytes` as the JSON document `T`; the error is a sentence naming the key. For any
/// JSON a station or an operator tool reads (state, events, envelopes).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| describe(bytes, &e))?;
    // Trailing garbage after the document.
    de.end()
        .map_err(|e| format!("the payload is not valid JSON: {}", without_position(&e)))?;
    Ok(value)
}

/// [`parse`], and `null` anywhere is refused: for signed payloads, whose optional keys are
/// left out when absent.
pub fn parse_signed<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let value = parse(bytes)?;
    // The typed parse succeeded, so the document is valid JSON: look for nulls.
    let tree: Value = serde_json::from_slice(bytes).map_err(|e| without_position(&e))?;
    if let Some(path) = find_null(&tree, &mut Vec::new()) {
        return Err(format!(
            "key `{path}` is null: leave an optional key out instead of setting it to null"
        ));
    }
    Ok(value)
}

/// A path like `target.device` or `chunks[3]`.
fn join(path: &[String]) -> String {
    let mut s = String::new();
    for p in path {
        if !p.starts_with('[') && !s.is_empty() {
            s.push('.');
        }
        s.push_str(p);
    }
    s
}

fn find_null(v: &Value, path: &mut Vec<String>) -> Option<String> {
    match v {
        Value::Null => Some(if path.is_empty() {
            "(the whole payload)".to_owned()
        } else {
            join(path)
        }),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            path.push(format!("[{i}]"));
            let r = find_null(item, path);
            path.pop();
            r
        }),
        Value::Object(map) => map.iter().find_map(|(k, item)| {
            path.push(k.clone());
            let r = find_null(item, path);
            path.pop();
            r
        }),
        _ => None,
    }
}

/// The message of a serde_json error without its " at line L column C" tail.
fn without_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    let tail = format!(" at line {} column {}", e.line(), e.column());
    s.strip_suffix(&tail).map_or(s.clone(), str::to_owned)
}

/// The value at `path` in `tree`, when the document is valid JSON.
fn value_at<'a>(tree: &'a Value, path: &serde_path_to_error::Path) -> Option<&'a Value> {
    let mut v = tree;
    for seg in path {
        v = match seg {
            serde_path_to_error::Segment::Map { key } => v.get(key)?,
            serde_path_to_error::Segment::Seq { index } => v.get(index)?,
            _ => return None,
        };
    }
    Some(v)
}

fn describe(bytes: &[u8], e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let inner = e.inner();
    let path = e.path().to_string();
    let tree: Option<Value> = serde_json::from_slice(bytes).ok();
    let Some(tree) = tree else {
        // Not JSON at all (or trailing garbage): say so, without positions.
        return format!("the payload is not valid JSON: {}", without_position(inner));
    };
    let message = without_position(inner);
    let at = value_at(&tree, e.path());
    if let Some(Value::Null) = at {
        return format!(
            "key `{path}` is null: leave an optional key out instead of setting it to null"
        );
    }
    // A number the type cannot hold: serde_json reads integers above u64 as floating point.
    if let Some(Value::Number(n)) = at
        && (message.starts_with("invalid type") || message.starts_with("invalid value"))
    {
        let text = match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e30 => format!("{f:.0}"),
            _ => n.to_string(),
        };
        let range = range_of(&message).unwrap_or("in the range this key takes");
        return format!("key `{path}`: {text} is not a whole number {range}");
    }
    // An enum written as an object with more than one key (`{"device": .., "group": ..}`):
    // serde_json stops at the second key with a syntax error although the JSON is valid.
    if let Some(Value::Object(map)) = at
        && inner.classify() == serde_json::error::Category::Syntax
    {
        let keys: Vec<String> = map.keys().map(|k| format!("`{k}`")).collect();
        return format!(
            "key `{path}`: must hold exactly one key, it holds {} ({})",
            map.len(),
            keys.join(", ")
        );
    }
    if path == "." {
        message
    } else {
        format!("key `{path}`: {message}")
    }
}

/// The range of the integer type a serde message expects.
fn range_of(message: &str) -> Option<&'static str> {
    let expected = message.rsplit("expected ").next()?;
    Some(match expected.trim() {
        "u8" => "from 0 to 255",
        "u16" => "from 0 to 65535",
        "u32" => "from 0 to 4294967295",
        "u64" => "from 0 to 18446744073709551615",
        "i32" => "from -2147483648 to 2147483647",
        "i64" => "from -9223372036854775808 to 9223372036854775807",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use fleet_core::update::Offer;

    use super::*;

    const OFFER: &str = r#"{"update-id":"rel-1","sequence":5,"bundle-id":"3eec6f2df36b88a1a97c03224253e9d0c59f2696ff7b145203a5d43c736bc7e0","bundle-size":600000,"compatible":"fleet-rpi5","version":"1.4.0","target":{"group":"canary"},"rollout-percent":25,"issued-at":1763812800}"#;

    fn with(key: &str, value: &str) -> String {
        let mut v: Value = serde_json::from_str(OFFER).expect("offer");
        v[key] = serde_json::from_str(value).expect("value");
        v.to_string()
    }

    fn refusal(doc: &str) -> String {
        parse_signed::<Offer>(doc.as_bytes()).expect_err("refused")
    }

    #[test]
    fn a_valid_offer_parses() {
        parse_signed::<Offer>(OFFER.as_bytes()).expect("parses");
    }

    #[test]
    fn a_null_optional_key_is_refused_by_name() {
        for key in ["expires-at", "manifest-hash", "downgrade"] {
            let e = refusal(&with(key, "null"));
            assert!(e.contains(&format!("key `{key}` is null")), "{key}: {e}");
        }
    }

    #[test]
    fn every_optional_key_of_every_signed_payload_refuses_null() {
        use fleet_core::rollout::Control;
        use fleet_core::trust::Rotation;

        let control = r#"{"scope":"fleet","sequence":1,"issued-at":1}"#;
        parse_signed::<Control>(control.as_bytes()).expect("control parses");
        for key in ["freeze", "halted", "pin"] {
            let mut v: Value = serde_json::from_str(control).expect("json");
            v[key] = Value::Null;
            let e = parse_signed::<Control>(v.to_string().as_bytes()).expect_err(key);
            assert!(e.contains(&format!("key `{key}` is null")), "{key}: {e}");
        }
        let rotation = r#"{"sequence":1,"keys":["8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"],"issued-at":1}"#;
        parse_signed::<Rotation>(rotation.as_bytes()).expect("rotation parses");
        let mut v: Value = serde_json::from_str(rotation).expect("json");
        v["revoke"] = Value::Null;
        let e = parse_signed::<Rotation>(v.to_string().as_bytes()).expect_err("revoke");
        assert!(e.contains("key `revoke` is null"), "{e}");
    }

    #[test]
    fn a_null_inside_a_nested_value_is_refused_by_its_path() {
        let e = refusal(&with("target", r#"{"group": null}"#));
        assert!(e.contains("target"), "{e}");
        assert!(!e.contains("line"), "{e}");
    }

    #[test]
    fn a_target_naming_a_device_and_a_group_is_a_sentence_without_positions() {
        let e = refusal(&with("target", r#"{"device": "stn-1", "group": "canary"}"#));
        assert_eq!(
            e,
            "key `target`: must hold exactly one key, it holds 2 (`device`, `group`)"
        );
    }

    #[test]
    fn a_rollout_percentage_of_zero_names_the_key_and_the_range() {
        let e = refusal(&with("rollout-percent", "0"));
        assert!(e.starts_with("key `rollout-percent`: "), "{e}");
        assert!(e.contains("1..=100"), "{e}");
    }

    #[test]
    fn a_sequence_above_u64_is_not_called_floating_point() {
        let e = refusal(&OFFER.replace("\"sequence\":5", "\"sequence\":18446744073709551616"));
        assert_eq!(
            e,
            "key `sequence`: 18446744073709551616 is not a whole number from 0 to 18446744073709551615"
        );
    }

    #[test]
    fn an_envelope_that_is_not_json_is_described_without_positions() {
        let trusted = crate::envelope::TrustedKeys::new();
        for bytes in [
            &b"{not json"[..],
            b"{\"v\":1}",
            b"[1,2]",
            b"{\"v\":1,\"v\":2}",
        ] {
            let e = crate::envelope::open(
                bytes,
                crate::envelope::Kind::Offer,
                &trusted,
                &crate::Limits::DEFAULT,
            )
            .expect_err("refused")
            .to_string();
            assert!(e.starts_with("unable to parse envelope: "), "{e}");
            assert!(!e.contains(" line ") && !e.contains("column"), "{e}");
        }
    }

    #[test]
    fn parser_errors_never_carry_line_and_column() {
        let cases = [
            "{not json".to_owned(),
            format!("{OFFER} trailing"),
            with("unknown-key", "1"),
            OFFER.replace("\"version\":\"1.4.0\",", ""),
            with("sequence", "-1"),
            with("sequence", "\"5\""),
            OFFER.replacen("\"sequence\":5", "\"sequence\":5,\"sequence\":6", 1),
        ];
        for doc in cases {
            let e = refusal(&doc);
            assert!(!e.contains(" line "), "{doc}: {e}");
            assert!(!e.contains("column"), "{doc}: {e}");
        }
    }
}
