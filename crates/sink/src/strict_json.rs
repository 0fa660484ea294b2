//! The `data` field: a line that is a JSON object, re-serialised so every
//! output line is strict JSON whatever arrived.
//!
//! Validating the text and copying it verbatim is not enough: a lone
//! surrogate escape (`"\ud800"`) or a number out of range (`1e400`) is
//! accepted by lenient parsers but rejected by strict ones (or turned into
//! infinity), so one hostile line could make the consumer drop the whole
//! stream. The object is therefore parsed into values and written out
//! again by serde_json: strings are valid Unicode, numbers finite. An
//! object that does not survive this (a lone surrogate, a number beyond
//! `f64`) gets no `data`; its text stays, exactly, in `message`.

use serde_json::Value;

/// Appends `,"data":` and the re-serialised object `text` (already
/// checked to be a JSON object of bounded depth by
/// [`crate::output::json_object`]) to `out`; returns false, appending
/// nothing, when it cannot be represented as strict JSON.
pub fn write_data(out: &mut Vec<u8>, text: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(text) else {
        return false;
    };
    if !v.is_object() {
        return false;
    }
    let start = out.len();
    out.extend_from_slice(b",\"data\":");
    if serde_json::to_writer(&mut *out, &v).is_err() {
        out.truncate(start);
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(s: &str) -> Option<String> {
        let mut v = Vec::new();
        write_data(&mut v, s.as_bytes()).then(|| String::from_utf8(v).unwrap())
    }

    #[test]
    fn strict() {
        assert_eq!(
            data(r#"{"a": 1, "b": [true, null, "x"]}"#).unwrap(),
            r#","data":{"a":1,"b":[true,null,"x"]}"#
        );
        // Lone surrogates and non-finite numbers never reach the output.
        assert_eq!(data(r#"{"k":"\ud800"}"#), None);
        assert_eq!(data(r#"{"k":"\udc00x"}"#), None);
        assert_eq!(data(r#"{"n":1e400}"#), None);
        assert_eq!(data(r#"{"n":-1e400}"#), None);
        // A valid pair stays the character it encodes.
        assert_eq!(
            data(r#"{"k":"\ud83d\ude00"}"#).unwrap(),
            ",\"data\":{\"k\":\"\u{1F600}\"}"
        );
        // Control characters are escaped, numbers normalised.
        assert_eq!(
            data("{\"k\":\"a\\u0001\",\"n\":1.50E2}").unwrap(),
            r#","data":{"k":"a\u0001","n":150.0}"#
        );
    }
}
