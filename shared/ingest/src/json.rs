//! Record values are stored as posted (key order and number text kept) but on one line, as the
//! REST proxy and the S3 sink connector did: only whitespace outside strings is removed.

/// `raw` (valid JSON text) without insignificant whitespace. String contents are copied in
/// runs found with memchr (they are most of a record's bytes); only the structure between
/// strings is looked at byte by byte.
pub fn compact(raw: &str) -> Vec<u8> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        if matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            continue;
        }
        out.push(b);
        if b != b'"' {
            continue;
        }
        // Inside a string: copy through its closing quote, stepping over escapes.
        loop {
            match memchr::memchr2(b'"', b'\\', &bytes[i..]) {
                None => {
                    out.extend_from_slice(&bytes[i..]);
                    return out;
                }
                Some(n) if bytes[i + n] == b'"' => {
                    out.extend_from_slice(&bytes[i..=i + n]);
                    i += n + 1;
                    break;
                }
                Some(n) => {
                    let end = (i + n + 2).min(bytes.len());
                    out.extend_from_slice(&bytes[i..end]);
                    i = end;
                }
            }
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
        assert_eq!(compact("[ \"a\\\"\" , \"\\\\\" ,\"\" ]"), br#"["a\"","\\",""]"#.to_vec());
        assert_eq!(compact("{\"k\" : \"v\\"), b"{\"k\":\"v\\".to_vec());
    }
}
