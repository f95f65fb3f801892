//! Finding a secret in what an upstream wrote, however it escaped it. Each
//! byte of the secret may appear as itself or in any escape of it that
//! servers write — percent-encoding (`%2F`), JSON, JavaScript and C
//! escapes (`\u002f`, `\u{2f}`, `\x2f`, `\/`, `\+`), HTML character
//! references (`&#47;`, `&#x2F;`, `&sol;`) — in either hex case, mixed
//! freely, and nested up to three deep (JSON in a JSON string `\\u002B`,
//! `%252B`, `&amp;#43;`): encoders each escape their own set of marks
//! (.NET `\u002B`, Gson `\u003d`, Go templates `&#43;`, PHP `\/`), so
//! listing spellings would always miss one.
//!
//! The text is often the agent's own (an upstream that echoes what it is
//! sent), and the daemon's CPU time is visible to local users, so the
//! work done depends on the text alone, never on how far it matches the
//! secret: escapes are decoded once per position (`Escapes`), then one
//! bit-parallel pass moves the set of secret prefixes spelled so far
//! along every reading of every position (`Secret::ends`).

/// How deep escapes may nest: an escape whose own marks are escaped (JSON
/// inside a JSON string, `%252B`, `&amp;#43;`), and once more.
const DEPTH: u8 = 3;

/// How far a spelling of a secret of `len` bytes may run and still be
/// caught whole wherever a cut falls: 16 bytes per byte of the secret
/// (servers write at most 14, `&amp;amp;#x2F;`), at least 64. Streams hold
/// back this much; large buffers are read in windows overlapping by it.
pub fn reach(len: usize) -> usize {
    (len * 16).max(64)
}

/// Large buffers are scrubbed this much at a time (the tables below take
/// about 20 bytes per byte of the window).
const WINDOW: usize = 64 * 1024;

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

/// The escape (if any) that begins at each position of a window, at each
/// nesting depth 1..=DEPTH, packed as `byte << 16 | length` (0: none).
/// Built once per window, from its end backwards, so that reading an
/// escape's own marks one level down is a lookup: the work depends on the
/// text alone, never on the secret (an agent that makes the upstream echo
/// its guesses must not learn, from the daemon's CPU time, how far a guess
/// matched).
struct Escapes {
    at: Vec<[u32; DEPTH as usize]>,
    /// The longest escape in the window.
    longest: usize,
}

impl Escapes {
    fn of(d: &[u8]) -> Self {
        let mut e = Escapes {
            at: Vec::new(),
            longest: 1,
        };
        // Most text has no mark at all: no table, one reading a position.
        let Some(last) = d.iter().rposition(|&c| is_mark(c)) else {
            return e;
        };
        e.at = vec![[0; DEPTH as usize]; last + 1];
        for p in (0..=last).rev() {
            if !is_mark(d[p]) {
                continue;
            }
            for depth in 1..=DEPTH {
                if let Some((b, n)) = e.read(d, p, depth)
                    && let Ok(n16) = u16::try_from(n)
                {
                    e.at[p][usize::from(depth - 1)] = u32::from(b) << 16 | u32::from(n16);
                    e.longest = e.longest.max(n);
                }
            }
        }
        e
    }

    /// The escape read at `p` when escapes nest `depth` deep.
    fn get(&self, p: usize, depth: u8) -> Option<(u8, usize)> {
        let v = *self.at.get(p)?.get(usize::from(depth - 1))?;
        (v != 0).then_some(((v >> 16) as u8, (v & 0xffff) as usize))
    }

    /// Every reading of the text at `p`: the byte itself, then its escape
    /// at each depth (repeats and all: the caller's work per position must
    /// not depend on which readings differ).
    fn readings(&self, d: &[u8], p: usize) -> [Option<(u8, usize)>; 1 + DEPTH as usize] {
        let mut r = [None; 1 + DEPTH as usize];
        r[0] = Some((d[p], 1));
        if is_mark(d[p]) {
            for depth in 1..=DEPTH {
                r[usize::from(depth)] = self.get(p, depth);
            }
        }
        r
    }

    /// Parse the escape at `p` (which holds `%`, `\` or `&`) whose own
    /// marks are logical bytes `depth - 1` deep, as looked up already.
    fn read(&self, d: &[u8], p: usize, depth: u8) -> Option<(u8, usize)> {
        let mut r = Reader {
            d,
            esc: self,
            at: p,
            depth: depth - 1,
        };
        let value = (|| -> Option<u32> {
            match r.next()? {
                b'%' => r.number(16, 2, 2),
                b'\\' => match r.next()? {
                    b'u' => {
                        if r.next_if(|b| b == b'{')?.is_some() {
                            let v = r.number(16, 1, 8)?;
                            r.next_if(|b| b == b'}')??;
                            Some(v)
                        } else {
                            r.number(16, 4, 4)
                        }
                    }
                    b'x' => r.number(16, 2, 2),
                    c if !c.is_ascii_alphanumeric() => Some(u32::from(c)),
                    _ => None,
                },
                b'&' => {
                    let v = if r.next_if(|b| b == b'#')?.is_some() {
                        if r.next_if(|b| b == b'x' || b == b'X')?.is_some() {
                            r.number(16, 1, 16)?
                        } else {
                            r.number(10, 1, 16)?
                        }
                    } else {
                        let mut name = [0u8; 16];
                        let mut len = 0;
                        while let Some(b) = r.next_if(|b| b.is_ascii_alphanumeric())? {
                            *name.get_mut(len)? = b;
                            len += 1;
                        }
                        if len < 2 {
                            return None;
                        }
                        NAMED
                            .iter()
                            .find(|(n, _)| *n == &name[..len])
                            .map(|(_, v)| u32::from(*v))?
                    };
                    r.next_if(|b| b == b';')??;
                    Some(v)
                }
                _ => None,
            }
        })()?;
        u8::try_from(value).ok().map(|b| (b, r.at - p))
    }
}

/// Whether an escape can begin with `c`.
fn is_mark(c: u8) -> bool {
    matches!(c, b'%' | b'\\' | b'&')
}

/// Reads logical bytes one level down, in sequence. `None` ends the escape:
/// not one, or cut off by the end of the window (what is scrubbed never
/// waits on what could begin the secret).
struct Reader<'a> {
    d: &'a [u8],
    esc: &'a Escapes,
    at: usize,
    depth: u8,
}

impl Reader<'_> {
    /// The next logical byte: an escape if one begins here, else the byte.
    fn next(&mut self) -> Option<u8> {
        let &c = self.d.get(self.at)?;
        let (b, n) = match self.depth {
            0 => (c, 1),
            depth => self.esc.get(self.at, depth).unwrap_or((c, 1)),
        };
        self.at += n;
        Some(b)
    }

    /// The next byte if `want` holds for it (`Some(None)`: the position
    /// stays where it was).
    fn next_if(&mut self, want: impl Fn(u8) -> bool) -> Option<Option<u8>> {
        let at = self.at;
        let b = self.next()?;
        if want(b) {
            Some(Some(b))
        } else {
            self.at = at;
            Some(None)
        }
    }

    /// Up to `max` digits of `radix` (at least `min`), as a number.
    fn number(&mut self, radix: u32, min: usize, max: usize) -> Option<u32> {
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
        (n >= min).then_some(v)
    }
}

/// Sets of "how many bytes of the secret have been spelled", one bit per
/// count (0..=len), `words` u64 per set, kept in flat vectors.
struct Bits {
    words: usize,
}

impl Bits {
    /// `dst |= (src & mask) << 1`: every count in `src` whose next byte of
    /// the secret is the one read moves on by one.
    fn advance(&self, dst: &mut [u64], src: &[u64], mask: &[u64]) {
        let mut carry = 0;
        for w in 0..self.words {
            let v = src[w] & mask[w];
            dst[w] |= v << 1 | carry;
            carry = v >> 63;
        }
    }

    fn has(set: &[u64], bit: usize) -> bool {
        set[bit / 64] >> (bit % 64) & 1 == 1
    }
}

/// Where spellings end, and the work it took to find them (readings
/// followed: counted so that a test can check it never depends on the
/// secret).
struct Ends {
    at: Vec<usize>,
    work: u64,
}

/// A secret, ready to be looked for: for each byte value, the set of
/// positions in the secret where it stands.
struct Secret<'a> {
    bytes: &'a [u8],
    bits: Bits,
    forward: Vec<u64>,
}

impl<'a> Secret<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        let words = bytes.len() / 64 + 1;
        Secret {
            bytes,
            bits: Bits { words },
            forward: Self::positions(bytes.iter().copied(), words),
        }
    }

    /// For each byte value, the set of positions where it stands in
    /// `bytes`, `words` u64 a set.
    fn positions(bytes: impl Iterator<Item = u8>, words: usize) -> Vec<u64> {
        let mut table = vec![0u64; 256 * words];
        for (k, b) in bytes.enumerate() {
            table[usize::from(b) * words + k / 64] |= 1 << (k % 64);
        }
        table
    }

    fn mask<'m>(&self, table: &'m [u64], b: u8) -> &'m [u64] {
        let w = self.bits.words;
        &table[usize::from(b) * w..][..w]
    }

    /// Where spellings of the secret that begin before `upto` end, found in
    /// one pass over the text doing the same work at every position
    /// whatever the secret (bit-parallel matching over every reading of
    /// every position, all at once).
    fn ends(&self, d: &[u8], esc: &Escapes, upto: usize) -> Ends {
        let (w, len) = (self.bits.words, self.bytes.len());
        // Sets for the positions ahead, in a ring: no reading is longer
        // than `longest`.
        let ring = (esc.longest + 1).next_power_of_two();
        let m = ring - 1;
        if w == 1 {
            return self.ends_in_a_word(d, esc, upto, ring);
        }
        let mut reach = vec![0u64; ring * w];
        let mut cur = vec![0u64; w];
        let mut ends = Ends {
            at: Vec::new(),
            work: 0,
        };
        for p in 0..d.len() {
            let slot = &mut reach[(p & m) * w..][..w];
            cur.copy_from_slice(slot);
            slot.fill(0);
            if Bits::has(&cur, len) {
                ends.at.push(p);
            }
            cur[0] |= u64::from(p < upto);
            for (b, n) in esc.readings(d, p).into_iter().flatten() {
                let dst = &mut reach[((p + n) & m) * w..][..w];
                self.bits.advance(dst, &cur, self.mask(&self.forward, b));
                ends.work += 1;
            }
        }
        if Bits::has(&reach[(d.len() & m) * w..][..w], len) {
            ends.at.push(d.len());
        }
        ends
    }

    /// `ends` for a secret shorter than 64 bytes (most are): each set is
    /// one word.
    fn ends_in_a_word(&self, d: &[u8], esc: &Escapes, upto: usize, ring: usize) -> Ends {
        let m = ring - 1;
        let whole = 1u64 << self.bytes.len();
        let next: &[u64; 256] = self.forward[..256].try_into().unwrap_or(&[0; 256]);
        let mut reach = vec![0u64; ring];
        let mut ends = Ends {
            at: Vec::new(),
            work: d.len() as u64,
        };
        // The reading of each byte as itself goes one position on: kept in
        // a register; escapes go further, through the ring.
        let mut ahead = 0u64;
        let no_escapes = esc.at.is_empty();
        for (p, &c) in d.iter().enumerate() {
            let mut cur = ahead | u64::from(p < upto);
            if !no_escapes {
                cur |= std::mem::take(&mut reach[p & m]);
            }
            if cur & whole != 0 {
                ends.at.push(p);
            }
            ahead = (cur & next[usize::from(c)]) << 1;
            if is_mark(c) {
                for (b, n) in esc.readings(d, p).into_iter().skip(1).flatten() {
                    reach[(p + n) & m] |= (cur & next[usize::from(b)]) << 1;
                    ends.work += 1;
                }
            }
        }
        if (ahead | reach[d.len() & m]) & whole != 0 {
            ends.at.push(d.len());
        }
        ends
    }

    /// The first position from which the secret is spelled up to `end`
    /// (there is one: `end` came from `ends`). Only run for a spelling that
    /// is there, which the agent sees redacted anyway.
    fn start(&self, d: &[u8], esc: &Escapes, end: usize) -> usize {
        let (w, len) = (self.bits.words, self.bytes.len());
        let backward = Self::positions(self.bytes.iter().rev().copied(), w);
        // back[i]: how many of the secret's last bytes are spelled from
        // `end - i` to `end` (the secret read backwards).
        let mut back = vec![0u64; w];
        back[0] = 1;
        let (mut first, mut live) = (end, 0);
        let mut set = vec![0u64; w];
        for i in 1..=end {
            // No reading is longer than `longest`: past a gap that long
            // nothing more can be spelled.
            if i > live + esc.longest {
                break;
            }
            let p = end - i;
            set.fill(0);
            for (b, n) in esc.readings(d, p).into_iter().flatten() {
                if n <= i {
                    let from = &back[(i - n) * w..][..w];
                    self.bits.advance(&mut set, from, self.mask(&backward, b));
                }
            }
            if set.iter().any(|&x| x != 0) {
                live = i;
                if Bits::has(&set, len) {
                    first = p;
                }
            }
            back.extend_from_slice(&set);
        }
        first
    }
}

/// `data` with every spelling of `secret` replaced by `with`; whether
/// there was one. Large buffers are read in overlapping windows.
pub fn replace(data: &[u8], secret: &[u8], with: &[u8]) -> (Vec<u8>, bool) {
    let overlap = reach(secret.len());
    let mut out = Vec::with_capacity(data.len());
    let (mut at, mut found) = (0, false);
    while at < data.len() {
        let end = (at + WINDOW + overlap).min(data.len());
        let upto = if end == data.len() { end - at } else { WINDOW };
        let (o, used, f) = replace_upto(&data[at..end], secret, with, upto);
        out.extend_from_slice(&o);
        found |= f;
        at += used;
    }
    (out, found)
}

/// `data` up to `upto` with every spelling of `secret` that begins before
/// `upto` replaced by `with` (spellings that overlap are replaced as one);
/// how much of `data` that covers (`upto`, or the end of a spelling that
/// begins before it and ends after); whether there was one. A spelling that
/// begins before `upto` but runs past the end of `data` is not one: how
/// much is covered never depends on what could begin the secret (an agent
/// that sees where a stream is cut would learn the secret's first bytes,
/// guess by guess), and neither does the work done.
pub fn replace_upto(
    data: &[u8],
    secret: &[u8],
    with: &[u8],
    upto: usize,
) -> (Vec<u8>, usize, bool) {
    let upto = upto.min(data.len());
    if secret.is_empty() {
        return (data[..upto].to_vec(), upto, false);
    }
    let esc = Escapes::of(data);
    let s = Secret::new(secret);
    // Spellings in the order they end; one that begins earlier swallows
    // those it overlaps.
    let mut spans: Vec<(usize, usize)> = s
        .ends(data, &esc, upto)
        .at
        .into_iter()
        .map(|end| (s.start(data, &esc, end), end))
        .collect();
    spans.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for (a, b) in spans {
        match merged.last_mut() {
            Some(last) if a < last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    let covered = merged.last().map_or(upto, |m| m.1.max(upto));
    let mut out = Vec::with_capacity(covered);
    let mut emitted = 0;
    for &(a, b) in &merged {
        out.extend_from_slice(&data[emitted..a]);
        out.extend_from_slice(with);
        emitted = b;
    }
    out.extend_from_slice(&data[emitted..covered]);
    (out, covered, !merged.is_empty())
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

    #[test]
    fn spellings_that_overlap_are_replaced_as_one() {
        assert_eq!(scrub("xabababy", "abab"), "x[x]y");
        assert_eq!(scrub("abab abab", "abab"), "[x] [x]");
        assert_eq!(scrub("ab%61b", "abab"), "[x]");
    }

    /// The work done on a text whose guesses go on to spell more and more
    /// of the secret, each followed by an escape that is costly to read.
    fn work(secret: &[u8], guess: &[u8]) -> u64 {
        let heavy = format!("&#x{}&", format!("&#x{}30;", "0".repeat(14)).repeat(16));
        let mut text = Vec::new();
        while text.len() < WINDOW {
            text.extend_from_slice(guess);
            text.extend_from_slice(heavy.as_bytes());
        }
        let ends = Secret::new(secret).ends(&text, &Escapes::of(&text), text.len());
        assert!(ends.at.is_empty());
        ends.work
    }

    #[test]
    fn the_work_does_not_depend_on_how_far_a_guess_matches() {
        let secret = b"sk_live_4eC39HqLyjWDarjtT1zdp7dc";
        // Longer than a word: the general matcher.
        let secret_70 = [&secret[..], &secret[..], b"abcdef"].concat();
        for (len, long) in [(9, false), (31, false), (70, true)] {
            let secret = if long { &secret_70[..] } else { &secret[..] };
            let wrong = work(secret, &vec![b'Q'; len]);
            for right in [1, 2, 8, 9, 20, 31, 64, 69]
                .into_iter()
                .filter(|&k| k <= len && k < secret.len())
            {
                let mut guess = secret[..right].to_vec();
                guess.resize(len, b'Q');
                assert_eq!(work(secret, &guess), wrong, "{right} of {len} bytes right");
            }
        }
    }

    /// The scrubber as it was before it read each position once: it finds
    /// the spellings servers write, one at a time from the left, preferring
    /// each byte as itself. Kept to check that the matcher finds at least
    /// as much.
    mod reference {
        use super::super::{DEPTH, NAMED};

        /// One logical byte at the start of `d`.
        enum Unit {
            /// This byte, spelled in this many bytes of `d`.
            Got(u8, usize),
            /// None (or the data ends inside what could still be one: what is
            /// scrubbed never waits on what could begin the secret).
            No,
        }

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

        /// Where the first spelling of `secret` begins, if any.
        pub fn find(data: &[u8], secret: &[u8]) -> Option<usize> {
            (0..data.len()).find(|&p| spelled_at(&data[p..], secret).is_some())
        }
    }

    /// A small generator for texts made of escapes and marks.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }

        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[self.next() as usize % from.len()]
        }
    }

    #[test]
    fn nothing_the_reference_finds_is_left() {
        let pieces = [
            "a",
            "b",
            "/",
            "%",
            "%2F",
            "%252F",
            "%61",
            "%2561",
            "\\",
            "\\/",
            "\\u0061",
            "\\\\u0062",
            "\\x2f",
            "\\u{62}",
            "&",
            "&#47;",
            "&amp;#97;",
            "&sol;",
            "&#x62;",
            "#",
            ";",
            "x",
            "u",
            "2",
            "5",
            "F",
            "0",
        ];
        let mut rng = Lcg(7);
        let mut had = 0;
        for secret in ["ab/", "a/b", "/ab", "ba", "a%b", "b&a"] {
            for _ in 0..3_000 {
                let n = 1 + rng.next() as usize % 12;
                let text: String = (0..n).map(|_| rng.pick(&pieces)).collect();
                let (out, found) = replace(text.as_bytes(), secret.as_bytes(), b"\0");
                if let Some(p) = reference::find(text.as_bytes(), secret.as_bytes()) {
                    assert!(found, "{text:?} has {secret:?} at {p}");
                    had += 1;
                }
                assert_eq!(
                    reference::find(&out, secret.as_bytes()),
                    None,
                    "{text:?} scrubbed of {secret:?} is {:?}",
                    String::from_utf8_lossy(&out)
                );
            }
        }
        assert!(had > 300, "only {had} texts held a secret");
    }

    #[test]
    fn large_buffers_are_read_in_windows_that_overlap() {
        let secret = b"sk_live_12345";
        for at in [
            0,
            WINDOW - 20,
            WINDOW - 1,
            WINDOW,
            WINDOW + 5,
            3 * WINDOW - 7,
        ] {
            let mut text = vec![b'.'; 3 * WINDOW + 100];
            let spelled = b"sk%5Flive%5F12345";
            text[at..at + spelled.len()].copy_from_slice(spelled);
            let (out, found) = replace(&text, secret, b"[x]");
            assert!(found, "{at}");
            assert_eq!(out.len(), text.len() - spelled.len() + 3, "{at}");
            assert_eq!(&out[at..at + 3], b"[x]", "{at}");
        }
    }
}
