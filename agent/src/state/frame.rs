//! One journal line: `CRC32 JSON\n`, the CRC (IEEE, 8 hex digits) over the
//! JSON text. Readable with `less`, and a torn or edited line never passes
//! for a record.

use super::record::Record;

const fn table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static TABLE: [u32; 256] = table();

pub fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |c, b| {
        TABLE[((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// The line for `record`, newline included.
pub fn encode(record: &Record) -> Result<Vec<u8>, serde_json::Error> {
    let mut line = Vec::with_capacity(192);
    encode_into(record, &mut line)?;
    Ok(line)
}

/// Append the line for `record` to `out` (nothing on error). The JSON is
/// written in place after room for its checksum, which is filled in
/// last: a budget record is written on every `Decide`.
pub fn encode_into(record: &Record, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let start = out.len();
    out.extend_from_slice(b"00000000 ");
    if let Err(e) = serde_json::to_writer(&mut *out, record) {
        out.truncate(start);
        return Err(e);
    }
    let crc = crc32(&out[start + 9..]);
    for (i, digit) in out[start..start + 8].iter_mut().enumerate() {
        *digit = HEX[((crc >> (28 - 4 * i)) & 0xf) as usize];
    }
    out.push(b'\n');
    Ok(())
}

/// Why a line is not a record.
#[derive(Debug, PartialEq, Eq)]
pub enum Bad {
    /// The file ends inside this line (no newline).
    Truncated,
    /// The checksum does not match, or the line is not `CRC JSON`.
    Checksum,
    /// The checksum matches but the record is not one this daemon knows.
    Unknown(String),
}

/// Decode one line (without its newline).
pub fn decode(line: &[u8]) -> Result<Record, Bad> {
    let (crc, json) = match (line.get(..8), line.get(8), line.get(9..)) {
        (Some(crc), Some(b' '), Some(json)) => (crc, json),
        _ => return Err(Bad::Checksum),
    };
    let want = std::str::from_utf8(crc)
        .ok()
        .and_then(|s| u32::from_str_radix(s, 16).ok())
        .ok_or(Bad::Checksum)?;
    if crc32(json) != want {
        return Err(Bad::Checksum);
    }
    serde_json::from_slice(json).map_err(|e| Bad::Unknown(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_ieee_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn lines_round_trip_and_edits_are_caught() {
        let r = Record::Revoked {
            identity: "a".into(),
            at: 7,
            at_ms: None,
        };
        let line = encode(&r).unwrap();
        assert_eq!(line.last(), Some(&b'\n'));
        let json = serde_json::to_vec(&r).unwrap();
        assert_eq!(&line[..9], format!("{:08x} ", crc32(&json)).as_bytes());
        let body = &line[..line.len() - 1];
        assert_eq!(decode(body), Ok(r));
        let mut edited = body.to_vec();
        let n = edited.len();
        edited[n - 2] = b'8';
        assert_eq!(decode(&edited), Err(Bad::Checksum));
        assert_eq!(decode(b"garbage"), Err(Bad::Checksum));
        let unknown = br#"{"t":"from_the_future"}"#;
        let mut l = format!("{:08x} ", crc32(unknown)).into_bytes();
        l.extend_from_slice(unknown);
        assert!(matches!(decode(&l), Err(Bad::Unknown(_))));
    }
}
