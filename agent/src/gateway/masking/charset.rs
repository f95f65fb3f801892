//! The text inside a base64 blob: its encoding from a byte-order mark, the
//! mime type's `charset`, or the bytes themselves (UTF-8, or UTF-16 as
//! JSON without a mark is written), and back again after masking.

/// How a blob's text was encoded (written back the same way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enc {
    Utf8 { bom: bool },
    Utf16 { le: bool, bom: bool },
    Latin1,
}

/// Is a mime type one of text (`text/*`, JSON, XML, YAML, CSV, JS)?
pub fn textual(mime: &str) -> bool {
    let base = mime
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    base.starts_with("text/")
        || [
            "json",
            "xml",
            "yaml",
            "yml",
            "javascript",
            "ecmascript",
            "csv",
            "ndjson",
            "toml",
        ]
        .iter()
        .any(|s| base.ends_with(s))
}

/// The `charset` parameter of a mime type, lowercased.
fn charset(mime: &str) -> Option<String> {
    mime.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| v.trim().trim_matches('"').to_ascii_lowercase())
    })
}

fn utf16(raw: &[u8], le: bool) -> Option<String> {
    if !raw.len().is_multiple_of(2) {
        return None;
    }
    let units: Vec<u16> = raw
        .as_chunks::<2>()
        .0
        .iter()
        .map(|&c| {
            if le {
                u16::from_le_bytes(c)
            } else {
                u16::from_be_bytes(c)
            }
        })
        .collect();
    String::from_utf16(&units).ok()
}

/// Decode `raw` as text; `None` when it is not text the gateway can read.
pub fn decode(raw: &[u8], mime: Option<&str>) -> Option<(String, Enc)> {
    // A mark decides, whatever the mime type says (as readers do). UTF-32
    // marks (which begin like UTF-16's) are not read.
    if raw.starts_with(&[0xFF, 0xFE, 0, 0]) || raw.starts_with(&[0, 0, 0xFE, 0xFF]) {
        return None;
    }
    if let Some(rest) = raw.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return String::from_utf8(rest.to_vec())
            .ok()
            .map(|s| (s, Enc::Utf8 { bom: true }));
    }
    for (mark, le) in [([0xFF, 0xFE], true), ([0xFE, 0xFF], false)] {
        if let Some(rest) = raw.strip_prefix(&mark) {
            return utf16(rest, le).map(|s| (s, Enc::Utf16 { le, bom: true }));
        }
    }
    match mime.and_then(charset).as_deref() {
        None | Some("utf-8" | "utf8" | "us-ascii" | "ascii") => {}
        Some("utf-16le") => {
            return utf16(raw, true).map(|s| {
                (
                    s,
                    Enc::Utf16 {
                        le: true,
                        bom: false,
                    },
                )
            });
        }
        Some("utf-16be" | "utf-16") => {
            return utf16(raw, false).map(|s| {
                (
                    s,
                    Enc::Utf16 {
                        le: false,
                        bom: false,
                    },
                )
            });
        }
        Some("iso-8859-1" | "latin1" | "latin-1" | "l1") => {
            return Some((raw.iter().map(|&b| char::from(b)).collect(), Enc::Latin1));
        }
        Some(_) => return None,
    }
    // UTF-16 without a mark (RFC 4627 §3): ASCII text has a zero in every
    // other byte (which would also read as UTF-8, zeros and all).
    if raw.len() >= 2 {
        let le = raw[1] == 0 && raw[0] != 0;
        let be = raw[0] == 0 && raw[1] != 0;
        if le || be {
            return utf16(raw, le).map(|s| (s, Enc::Utf16 { le, bom: false }));
        }
    }
    std::str::from_utf8(raw)
        .ok()
        .map(|s| (s.to_string(), Enc::Utf8 { bom: false }))
}

/// `s` written back the way the blob was; `None` if it cannot be.
pub fn encode(s: &str, enc: Enc) -> Option<Vec<u8>> {
    Some(match enc {
        Enc::Utf8 { bom } => {
            let mut out = if bom {
                vec![0xEF, 0xBB, 0xBF]
            } else {
                Vec::new()
            };
            out.extend_from_slice(s.as_bytes());
            out
        }
        Enc::Utf16 { le, bom } => {
            let mut out = Vec::with_capacity(s.len() * 2 + 2);
            let units = bom.then_some(0xFEFF).into_iter().chain(s.encode_utf16());
            for u in units {
                out.extend_from_slice(&if le { u.to_le_bytes() } else { u.to_be_bytes() });
            }
            out
        }
        Enc::Latin1 => s
            .chars()
            .map(|c| u8::try_from(u32::from(c)).ok())
            .collect::<Option<Vec<u8>>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_marks_charsets_and_unmarked_utf16() {
        let doc = "{\"number\":\"4242\"}";
        let le: Vec<u8> = doc.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let be: Vec<u8> = doc.encode_utf16().flat_map(u16::to_be_bytes).collect();
        for (raw, mime) in [
            (le.clone(), Some("application/json")),
            (be.clone(), Some("application/json")),
            ([&[0xFF, 0xFE][..], &le].concat(), None),
            ([&[0xFE, 0xFF][..], &be].concat(), Some("text/plain")),
            ([&[0xEF, 0xBB, 0xBF][..], doc.as_bytes()].concat(), None),
            (le.clone(), Some("application/json; charset=utf-16le")),
            (
                doc.as_bytes().to_vec(),
                Some("text/plain; charset=ISO-8859-1"),
            ),
        ] {
            let (text, enc) = decode(&raw, mime).unwrap_or_else(|| panic!("{raw:?} {mime:?}"));
            assert_eq!(text, doc);
            assert_eq!(encode(&text, enc).unwrap(), raw);
        }
        assert!(decode(&[0xFF, 0xFE, 0, 0, b'x', 0, 0, 0], None).is_none());
        assert!(decode(b"x", Some("text/plain; charset=koi8-r")).is_none());
        assert!(decode(&[0xC3, 0x28, 0xC3, 0x28], None).is_none());
        assert!(textual("application/vnd.api+json") && textual("text/csv; charset=utf-8"));
        assert!(!textual("image/png") && !textual("application/octet-stream"));
    }
}
