//! Record values are stored as posted (key order and number text kept) but on one line, as the
//! REST proxy and the S3 sink connector did: only whitespace outside strings is removed.

/// `raw` (valid JSON text) without insignificant whitespace.
pub fn compact(raw: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut in_string = false;
    let mut escaped = false;
    for &b in raw.as_bytes() {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            if b == b'"' {
                in_string = true;
            }
            out.push(b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_keeps_strings_order_and_number_text() {
        let raw = "{ \"b\" : \"a b\\\" c\" ,\n \"a\": 1.50, \"t\":\"2020-08-28 03:52:47\" }";
        assert_eq!(compact(raw), br#"{"b":"a b\" c","a":1.50,"t":"2020-08-28 03:52:47"}"#.to_vec());
        assert_eq!(compact("\"x\\\\\" "), b"\"x\\\\\"".to_vec());
    }
}
