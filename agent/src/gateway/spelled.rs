//! Finding a secret in what an upstream wrote, however it escaped it. Each
//! byte of the secret may appear as itself or in any escape of it that
//! servers write — percent-encoding (`%2F`), JSON, JavaScript and C
//! escapes (`\u002f`, `\u{2f}`, `\x2f`, `\/`, `\+`), HTML character
//! references (`&#47;`, `&#x2F;`, `&sol;`) — in either hex case, mixed
//! freely, and nested up to three deep (JSON in a JSON string `\\u002B`,
//! `%252B`, `&amp;#43;`): encoders each escape their own set of marks
//! (.NET `\u002B`, Gson `\u003d`, Go templates `&#43;`, PHP `\/`), so
//! listing spellings would always miss one.

/// How deep escapes may nest: an escape whose own marks are escaped (JSON
/// inside a JSON string, `%252B`, `&amp;#43;`), and once more.
const DEPTH: u8 = 3;

/// One logical byte at the start of `d`.
enum Unit {
    /// This byte, spelled in this many bytes of `d`.
    Got(u8, usize),
    /// None (or the data ends inside what could still be one: what is
    /// scrubbed never waits on what could begin the secret).
    No,
}

/// HTML's named references to ASCII marks.
const NAMED: &[(&[u8], u8)] = &[
    (b"amp", b'&'),
    (b"lt", b'<'),
    (b"gt", b'>'),
    (b"quot", b'"'),
    (b"apos", b'\''),
    (b"sol", b'/'),
    (b"bsol", b'\\'),
    (b"plus", b'+'),
    (b"equals", b'='),
    (b"excl", b'!'),
    (b"lpar", b'('),
    (b"rpar", b')'),
    (b"ast", b'*'),
    (b"midast", b'*'),
    (b"num", b'#'),
    (b"percnt", b'%'),
    (b"colon", b':'),
    (b"semi", b';'),
    (b"period", b'.'),
    (b"comma", b','),
    (b"lowbar", b'_'),
    (b"UnderBar", b'_'),
    (b"dollar", b'$'),
    (b"quest", b'?'),
    (b"commat", b'@'),
    (b"grave", b'`'),
    (b"DiacriticalGrave", b'`'),
    (b"lsqb", b'['),
    (b"lbrack", b'['),
    (b"rsqb", b']'),
    (b"rbrack", b']'),
    (b"lcub", b'{'),
    (b"lbrace", b'{'),
    (b"rcub", b'}'),
    (b"rbrace", b'}'),
    (b"verbar", b'|'),
    (b"vert", b'|'),
    (b"VerticalLine", b'|'),
    (b"Hat", b'^'),
    (b"NewLine", b'\n'),
    (b"Tab", b'\t'),
    (b"nbsp", b' '),
];

/// The logical byte at the start of `d` when escapes may nest `depth`
/// deep: an escape (whose own characters are logical bytes one level
/// down), or the byte itself.
fn unit(d: &[u8], depth: u8) -> Unit {
    let Some(&c) = d.first() else {
        return Unit::No;
    };
    if depth > 0 && matches!(c, b'%' | b'\\' | b'&') {
        match escaped(d, depth) {
            Unit::No => {}
            found => return found,
        }
    }
    Unit::Got(c, 1)
}

/// Reads logical bytes one level down, in sequence.
struct Reader<'a> {
    d: &'a [u8],
    at: usize,
    depth: u8,
}

impl Reader<'_> {
    /// The next logical byte; `Err` ends the escape (cut off, or not one).
    fn next(&mut self) -> Result<u8, Unit> {
        match unit(&self.d[self.at..], self.depth) {
            Unit::Got(b, n) => {
                self.at += n;
                Ok(b)
            }
            other => Err(other),
        }
    }

    /// The next byte if `want` holds for it; the position stays otherwise.
    fn next_if(&mut self, want: impl Fn(u8) -> bool) -> Result<Option<u8>, Unit> {
        let at = self.at;
        match self.next() {
            Ok(b) if want(b) => Ok(Some(b)),
            Ok(_) => {
                self.at = at;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Up to `max` digits of `radix` (at least `min`), as a number.
    fn number(&mut self, radix: u32, min: usize, max: usize) -> Result<u32, Unit> {
        let mut v: u32 = 0;
        let mut n = 0;
        while n < max {
            match self.next_if(|b| char::from(b).is_digit(radix))? {
                Some(b) => {
                    v = v
                        .saturating_mul(radix)
                        .saturating_add(char::from(b).to_digit(radix).unwrap_or(0));
                    n += 1;
                }
                None => break,
            }
        }
        if n < min { Err(Unit::No) } else { Ok(v) }
    }
}

/// An escape at the start of `d` (which starts with `%`, `\` or `&`):
/// percent-encoding, a JSON, JavaScript or C escape, an HTML reference.
fn escaped(d: &[u8], depth: u8) -> Unit {
    let mut r = Reader {
        d,
        at: 0,
        depth: depth - 1,
    };
    let value = (|| -> Result<u32, Unit> {
        match r.next()? {
            b'%' => r.number(16, 2, 2),
            b'\\' => match r.next()? {
                b'u' => {
                    if r.next_if(|b| b == b'{')?.is_some() {
                        let v = r.number(16, 1, 8)?;
                        r.next_if(|b| b == b'}')?.ok_or(Unit::No)?;
                        Ok(v)
                    } else {
                        r.number(16, 4, 4)
                    }
                }
                b'x' => r.number(16, 2, 2),
                c if !c.is_ascii_alphanumeric() => Ok(u32::from(c)),
                _ => Err(Unit::No),
            },
            b'&' => {
                let v = if r.next_if(|b| b == b'#')?.is_some() {
                    if r.next_if(|b| b == b'x' || b == b'X')?.is_some() {
                        r.number(16, 1, 16)?
                    } else {
                        r.number(10, 1, 16)?
                    }
                } else {
                    let mut name = Vec::new();
                    while let Some(b) = r.next_if(|b| b.is_ascii_alphanumeric())? {
                        name.push(b);
                        if name.len() > 16 {
                            return Err(Unit::No);
                        }
                    }
                    NAMED
                        .iter()
                        .find(|(n, _)| *n == name.as_slice())
                        .map(|(_, v)| u32::from(*v))
                        .ok_or(Unit::No)?
                };
                r.next_if(|b| b == b';')?.ok_or(Unit::No)?;
                Ok(v)
            }
            _ => Err(Unit::No),
        }
    })();
    match value {
        Ok(v) => u8::try_from(v).map_or(Unit::No, |b| Unit::Got(b, r.at)),
        Err(e) => e,
    }
}

/// The length of a spelling of `secret` at the start of `d`.
fn spelled_at(d: &[u8], secret: &[u8]) -> Option<usize> {
    let mut p = 0;
    for &b in secret {
        if d.get(p) == Some(&b) {
            p += 1;
            continue;
        }
        match escape_of(&d[p..], b) {
            Unit::Got(_, n) => p += n,
            Unit::No => return None,
        }
    }
    Some(p)
}

/// An escape of byte `b` at the start of `d`, nested as deep as it goes
/// (each depth tried, shallowest first: a reader of logical bytes takes
/// the longest escape it can, so an escape's own marks are read one level
/// down).
fn escape_of(d: &[u8], b: u8) -> Unit {
    if d.is_empty() {
        return Unit::No;
    }
    if !matches!(d[0], b'%' | b'\\' | b'&') {
        return Unit::No;
    }
    for depth in 1..=DEPTH {
        if let Unit::Got(v, n) = escaped(d, depth)
            && v == b
        {
            return Unit::Got(v, n);
        }
    }
    Unit::No
}

/// `data` with every spelling of `secret` replaced by `with`; whether
/// there was one.
pub fn replace(data: &[u8], secret: &[u8], with: &[u8]) -> (Vec<u8>, bool) {
    let (out, _, found) = replace_upto(data, secret, with, data.len());
    (out, found)
}

/// `data` up to `upto` with every spelling of `secret` that begins before
/// `upto` replaced by `with`; how much of `data` that covers (`upto`, or the
/// end of a spelling that begins before it and ends after); whether there
/// was one. A spelling that begins before `upto` but runs past the end of
/// `data` is not one: how much is covered never depends on what could
/// begin the secret (an agent that sees where a stream is cut would learn
/// the secret's first bytes, guess by guess).
pub fn replace_upto(
    data: &[u8],
    secret: &[u8],
    with: &[u8],
    upto: usize,
) -> (Vec<u8>, usize, bool) {
    let upto = upto.min(data.len());
    let mut out = Vec::with_capacity(upto);
    let mut found = false;
    let (mut emitted, mut p) = (0, 0);
    let first = secret.first().copied();
    while p < upto {
        let c = data[p];
        if Some(c) != first && !matches!(c, b'%' | b'\\' | b'&') {
            p += 1;
            continue;
        }
        match spelled_at(&data[p..], secret) {
            Some(n) if !secret.is_empty() => {
                out.extend_from_slice(&data[emitted..p]);
                out.extend_from_slice(with);
                found = true;
                p += n;
                emitted = p;
            }
            _ => p += 1,
        }
    }
    let end = p.max(upto);
    out.extend_from_slice(&data[emitted..end]);
    (out, end, found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrub(text: &str, secret: &str) -> String {
        let (out, _) = replace(text.as_bytes(), secret.as_bytes(), b"[x]");
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
            // Nested: JSON in a JSON string, twice percent-encoded, HTML
            // escaped twice, PHP's json_encode of json_encode.
            r"k\\u002Fe\\u002By\\u003d",
            "k%252Fe%252By%253D",
            "k&amp;#47;e&amp;#43;y&amp;#61;",
            r"k\\\/e+y=",
            // C, JavaScript, shell and regex quoting; long references.
            r"k\/e\+y\=",
            r"k\x2fe\x2By=",
            r"k\u{2f}e+y=",
            "k&#x000000002F;e+y=",
            "k&sol;e&plus;y&#61;",
        ] {
            assert_eq!(
                scrub(&format!("a {spelled} b"), secret),
                "a [x] b",
                "{spelled}"
            );
        }
        for other in ["k/e+y", "k%2Ge+y=", "k&#43e+y=", r"k\u002e+y=", r"k\ne+y="] {
            let t = format!("a {other} b");
            assert_eq!(scrub(&t, secret), t, "{other}");
        }
    }

    #[test]
    fn what_is_covered_never_depends_on_what_could_begin_the_secret() {
        // A possible start of the secret at the cut is covered like any
        // other bytes (the caller holds back a fixed tail instead).
        for tail in ["k%2", "zz%", "k/", "q/"] {
            let data = format!("abc {tail}");
            let (out, used, _) = replace_upto(data.as_bytes(), b"k/e", b"[x]", 5);
            assert_eq!((&out[..], used), (&data.as_bytes()[..5], 5), "{tail}");
        }
        // A whole spelling that begins before the cut is covered to its end.
        let (out, used, found) = replace_upto(b"ab k%2Fe cd", b"k/e", b"[x]", 4);
        assert_eq!((&out[..], used, found), (&b"ab [x]"[..], 8, true));
        let (out, found) = replace(b"x k&#47", b"k/", b"[x]");
        assert_eq!((&out[..], found), (&b"x k&#47"[..], false));
    }
}
