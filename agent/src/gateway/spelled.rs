//! Finding a secret in what an upstream wrote, however it escaped it. Each
//! byte of the secret may appear as itself or in any escape of it that
//! servers write — percent-encoding (`%2F`), JSON (`\u002f`, `\/`), HTML
//! character references (`&#47;`, `&#x2F;`, `&sol;`) — in either hex case
//! and mixed freely: encoders each escape their own set of marks (.NET
//! `\u002B`, Gson `\u003d`, Go templates `&#43;`, PHP `\/`), so listing
//! spellings would always miss one.

/// Where one escape of a byte ends, if it is one.
enum Step {
    /// A spelling of the byte this long.
    Len(usize),
    /// The data ends inside what could still be one.
    CutOff,
    No,
}

/// HTML's named references to ASCII marks.
const NAMED: &[(&[u8], u8)] = &[
    (b"amp;", b'&'),
    (b"lt;", b'<'),
    (b"gt;", b'>'),
    (b"quot;", b'"'),
    (b"apos;", b'\''),
    (b"sol;", b'/'),
    (b"bsol;", b'\\'),
    (b"plus;", b'+'),
    (b"equals;", b'='),
    (b"excl;", b'!'),
    (b"lpar;", b'('),
    (b"rpar;", b')'),
    (b"ast;", b'*'),
    (b"num;", b'#'),
    (b"percnt;", b'%'),
    (b"colon;", b':'),
    (b"semi;", b';'),
    (b"period;", b'.'),
    (b"comma;", b','),
    (b"lowbar;", b'_'),
    (b"dollar;", b'$'),
    (b"quest;", b'?'),
    (b"commat;", b'@'),
    (b"grave;", b'`'),
    (b"lsqb;", b'['),
    (b"rsqb;", b']'),
    (b"lcub;", b'{'),
    (b"rcub;", b'}'),
    (b"verbar;", b'|'),
    (b"Hat;", b'^'),
];

/// `n` hex digits at the start of `d` whose value is `b`.
fn hex_digits(d: &[u8], n: usize, b: u8, skip: usize) -> Step {
    let avail = &d[..d.len().min(n)];
    if !avail.iter().all(u8::is_ascii_hexdigit) {
        return Step::No;
    }
    if avail.len() < n {
        return Step::CutOff;
    }
    let text = std::str::from_utf8(avail).unwrap_or("");
    match u32::from_str_radix(text, 16) {
        Ok(v) if v == u32::from(b) => Step::Len(skip + n),
        _ => Step::No,
    }
}

/// A numeric character reference after `&#` (`x` for hex), up to `;`.
fn reference(d: &[u8], b: u8) -> Step {
    let (hex, digits) = match d.first() {
        Some(b'x' | b'X') => (true, &d[1..]),
        Some(_) => (false, d),
        None => return Step::CutOff,
    };
    let is_digit = |c: &u8| {
        if hex {
            c.is_ascii_hexdigit()
        } else {
            c.is_ascii_digit()
        }
    };
    let n = digits.iter().take_while(|c| is_digit(c)).count();
    // Leading zeros are allowed; a reference longer than this is not one
    // of a byte.
    if n > 8 {
        return Step::No;
    }
    if n == digits.len() {
        return Step::CutOff;
    }
    if n == 0 || digits[n] != b';' {
        return Step::No;
    }
    let text = std::str::from_utf8(&digits[..n]).unwrap_or("");
    match u32::from_str_radix(text, if hex { 16 } else { 10 }) {
        Ok(v) if v == u32::from(b) => Step::Len(2 + usize::from(hex) + n + 1),
        _ => Step::No,
    }
}

/// An escape of byte `b` at the start of `d` (which does not start with
/// `b` itself).
fn escape(d: &[u8], b: u8) -> Step {
    let rest = &d[1..];
    match d[0] {
        b'%' => hex_digits(rest, 2, b, 1),
        b'\\' => match rest.first() {
            None => Step::CutOff,
            Some(b'u') => hex_digits(&rest[1..], 4, b, 2),
            Some(&c) if c == b && b"/\\\"".contains(&b) => Step::Len(2),
            Some(_) => Step::No,
        },
        b'&' => match rest.first() {
            None => Step::CutOff,
            Some(b'#') => reference(&rest[1..], b),
            Some(_) => {
                for (name, _) in NAMED.iter().filter(|(_, v)| *v == b) {
                    if rest.starts_with(name) {
                        return Step::Len(1 + name.len());
                    }
                    if name.starts_with(rest) {
                        return Step::CutOff;
                    }
                }
                Step::No
            }
        },
        _ => Step::No,
    }
}

/// The length of a spelling of `secret` at the start of `d`.
fn spelled_at(d: &[u8], secret: &[u8]) -> Step {
    let mut p = 0;
    for &b in secret {
        let Some(&c) = d.get(p) else {
            return Step::CutOff;
        };
        if c == b {
            p += 1;
            continue;
        }
        match escape(&d[p..], b) {
            Step::Len(n) => p += n,
            other => return other,
        }
    }
    Step::Len(p)
}

/// `data` with every spelling of `secret` replaced by `with`, and how much
/// of `data` that covers. Unless `last`, a possible spelling cut off by the
/// end of `data` is not covered: the caller keeps it for the next piece.
pub fn replace(data: &[u8], secret: &[u8], with: &[u8], last: bool) -> (Vec<u8>, usize, bool) {
    let mut out = Vec::with_capacity(data.len());
    let mut found = false;
    let (mut emitted, mut p) = (0, 0);
    let first = secret.first().copied();
    while p < data.len() {
        let c = data[p];
        if Some(c) != first && !matches!(c, b'%' | b'\\' | b'&') {
            p += 1;
            continue;
        }
        match spelled_at(&data[p..], secret) {
            Step::Len(n) if !secret.is_empty() => {
                out.extend_from_slice(&data[emitted..p]);
                out.extend_from_slice(with);
                found = true;
                p += n;
                emitted = p;
            }
            Step::CutOff if !last => {
                out.extend_from_slice(&data[emitted..p]);
                return (out, p, found);
            }
            _ => p += 1,
        }
    }
    out.extend_from_slice(&data[emitted..]);
    (out, data.len(), found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrub(text: &str, secret: &str) -> String {
        let (out, used, _) = replace(text.as_bytes(), secret.as_bytes(), b"[x]", true);
        assert_eq!(used, text.len());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_mix_of_escapes_is_the_secret() {
        let secret = "k/e+y=";
        for spelled in [
            "k/e+y=",
            r"k\/e+y=",
            r"k\u002Fe\u002by\u003d",
            "k%2Fe%2by=",
            "k/e&#43;y&#x3D;",
            "k&sol;e&plus;y&equals;",
            "k&#0047;e+y=",
        ] {
            assert_eq!(
                scrub(&format!("a {spelled} b"), secret),
                "a [x] b",
                "{spelled}"
            );
        }
        for other in ["k/e+y", "k%2Ge+y=", "k&#43e+y=", r"k\u002e+y="] {
            let t = format!("a {other} b");
            assert_eq!(scrub(&t, secret), t, "{other}");
        }
    }

    #[test]
    fn a_spelling_cut_off_by_the_end_is_kept_for_later() {
        let (out, used, _) = replace(b"abc k%2", b"k/e", b"[x]", false);
        assert_eq!((&out[..], used), (&b"abc "[..], 4));
        let (out, used, _) = replace(b"abc k%2", b"k/e", b"[x]", true);
        assert_eq!((&out[..], used), (&b"abc k%2"[..], 7));
        let (out, _, found) = replace(b"x k&#47", b"k/", b"[x]", false);
        assert_eq!((&out[..], found), (&b"x "[..], false));
    }
}
