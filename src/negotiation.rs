//! Canonical forms of the content-negotiation headers a key may vary on (`Accept`,
//! `Accept-Language`, `Accept-Encoding`), so that spellings meaning the same share one entry.
//!
//! A client that writes `ES`, ` es `, `es;q=1` or `es, es` asks for the same representation as
//! one that writes `es`; keyed raw, each spelling would be stored apart, and any client could
//! multiply a URL's entries at will. Only differences RFC 9110 says carry no meaning are removed:
//!
//! - field lines are one list (§5.3): `es` + `en` on two lines is `es, en`;
//! - empty list members and whitespace around members and `;` go (§5.6.1, §5.6.6);
//! - the value (language tag, content coding, media range) and parameter names are lower-cased:
//!   all are case-insensitive (§8.3.1, §8.4.1, RFC 4647 §2). Parameter values keep their case,
//!   since a media type parameter may be case-sensitive;
//! - a valid weight is written in its shortest form (`q=0.50` → `q=0.5`, `Q=0.0` → `q=0`), and
//!   `q=1` — the default weight — is dropped when it is the member's last parameter. (Where other
//!   parameters follow it, RFC 7231 read them as extensions of the weight, not of the media type,
//!   so it stays.) `q=0` means "not acceptable" and is kept: dropping the member would make it
//!   acceptable again (`identity;q=0` is not the same as saying nothing);
//! - an exact repeat of an earlier member goes: it says nothing new, and keeping the first keeps
//!   the order of preference.
//!
//! Order is kept otherwise: among members of equal weight, servers commonly prefer the first, so
//! `es, en` and `en, es` may select different representations. A value this cannot read safely
//! (a quoted string, where a comma or `;` need not be a separator) or that is very long is keyed
//! as sent, under a different tag, so it never lands on a canonical key.

use http::header::{GetAll, HeaderName, HeaderValue, ACCEPT, ACCEPT_ENCODING, ACCEPT_LANGUAGE};

/// The longest canonical form kept (browsers send `Accept` values of ~150 bytes). Small: the
/// buffer is zeroed on every lookup of a varying resource.
const MAX_BYTES: usize = 256;
/// The most members kept.
const MAX_MEMBERS: usize = 32;

/// Whether `name` is a negotiation header whose values are canonicalised before keying.
pub(crate) fn is_negotiation(name: &HeaderName) -> bool {
    name == ACCEPT_LANGUAGE || name == ACCEPT_ENCODING || name == ACCEPT
}

/// The canonical members of one negotiation header, in a stack buffer.
pub(crate) struct Members {
    buf: [u8; MAX_BYTES],
    /// Bytes of `buf` in use.
    used: usize,
    ends: [u16; MAX_MEMBERS],
    count: usize,
}

impl Members {
    pub(crate) fn new() -> Self {
        Self {
            buf: [0; MAX_BYTES],
            used: 0,
            ends: [0; MAX_MEMBERS],
            count: 0,
        }
    }

    /// Reads the canonical members of all of `values`' field lines; `false` when they cannot
    /// be canonicalised safely (then key them as sent). Filled in place: returned by value,
    /// the buffer would be copied.
    pub(crate) fn read(&mut self, values: GetAll<'_, HeaderValue>) -> bool {
        values
            .into_iter()
            .all(|value| self.push_line(value.as_bytes()).is_some())
    }

    /// How many members there are.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// The members, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends[..self.count].iter().map(move |&end| {
            let member = &self.buf[start..usize::from(end)];
            start = usize::from(end);
            member
        })
    }

    /// Appends the canonical members of one field line; `None` when it holds a quoted string
    /// or the buffer is full.
    ///
    /// One pass over the line: runs of ordinary bytes are copied as found (lower-cased where
    /// case does not count); what only the end of a piece can tell — trailing whitespace, an
    /// empty parameter, a weight to rewrite — is fixed up in the buffer then. This runs on
    /// every lookup of a varying resource: about 0.8k instructions for `gzip, deflate, br`,
    /// 1.7k for `fr-CH, fr;q=0.9, en;q=0.8` and 4.7k for a browser's `Accept` (callgrind).
    fn push_line(&mut self, line: &[u8]) -> Option<()> {
        let mut m = Member::at(self.used);
        let mut i = 0;
        while let Some(&b) = line.get(i) {
            if !SPECIAL[usize::from(b)] {
                // A run of ordinary bytes is copied (and lower-cased) in one go.
                let end = line[i..]
                    .iter()
                    .position(|&b| SPECIAL[usize::from(b)])
                    .map_or(line.len(), |n| i + n);
                let run = &line[i..end];
                let dst = self.buf.get_mut(self.used..self.used + run.len())?;
                if m.in_param {
                    dst.copy_from_slice(run);
                } else {
                    for (d, &s) in dst.iter_mut().zip(run) {
                        *d = LOWER[usize::from(s)];
                    }
                }
                self.used += run.len();
                m.solid = true;
                m.last_solid = self.used;
                i = end;
                continue;
            }
            match b {
                b'"' | b'\\' => return None,
                b',' => {
                    self.end_member(m)?;
                    m = Member::at(self.used);
                }
                b';' => {
                    m.solid = true;
                    self.end_piece(&mut m);
                    self.push_byte(b';')?;
                    m.param(self.used);
                }
                b'=' => {
                    m.solid = true;
                    if m.in_param && m.eq.is_none() {
                        // A parameter name is case-insensitive; its value may not be.
                        self.buf[m.piece..self.used].make_ascii_lowercase();
                        m.eq = Some(self.used);
                    }
                    self.push_byte(b'=')?;
                    m.last_solid = self.used;
                }
                // Space or tab. Leading whitespace is skipped; trailing whitespace is cut at
                // the piece's end.
                _ => {
                    if self.used != m.piece {
                        self.push_byte(b)?;
                    }
                }
            }
            i += 1;
        }
        self.end_member(m)
    }

    /// Ends the piece being read: cuts its trailing whitespace, drops it if it is an empty
    /// parameter, and writes a weight in its shortest form.
    fn end_piece(&mut self, m: &mut Member) {
        self.used = m.last_solid.max(m.piece);
        if !m.in_param {
            return;
        }
        if self.used == m.piece {
            // `;` with nothing after it: an empty parameter, which says nothing.
            self.used = m.piece - 1;
            return;
        }
        m.default_weight_at = None;
        let Some(eq) = m.eq else { return };
        if &self.buf[m.piece..eq] != b"q" {
            return;
        }
        if let Some(w) = weight(&self.buf[eq + 1..self.used]) {
            self.used = eq + 1;
            // The shortest form is never longer than what was read, so it fits.
            let _ = self.push_weight(w);
            m.default_weight_at = (w == 1000).then_some(m.piece - 1);
        }
    }

    /// Ends a member: keeps it unless it was empty or repeats an earlier one.
    fn end_member(&mut self, mut m: Member) -> Option<()> {
        self.end_piece(&mut m);
        if let Some(at) = m.default_weight_at {
            self.used = at;
        }
        let member = &self.buf[m.start..self.used];
        let repeat = || self.iter().any(|known| known == member);
        if !m.solid || repeat() {
            self.used = m.start;
            return Some(());
        }
        if self.count == MAX_MEMBERS {
            return None;
        }
        self.ends[self.count] = u16::try_from(self.used).ok()?;
        self.count += 1;
        Some(())
    }

    fn push_byte(&mut self, b: u8) -> Option<()> {
        *self.buf.get_mut(self.used)? = b;
        self.used += 1;
        Some(())
    }

    fn push(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.used + bytes.len();
        self.buf.get_mut(self.used..end)?.copy_from_slice(bytes);
        self.used = end;
        Some(())
    }

    /// A weight in thousandths, shortest form: `1`, `0`, `0.5`, `0.25`, `0.125`.
    fn push_weight(&mut self, thousandths: u16) -> Option<()> {
        match thousandths {
            1000 => self.push(b"1"),
            0 => self.push(b"0"),
            w => {
                let digits = [
                    b'0' + (w / 100) as u8,
                    b'0' + (w / 10 % 10) as u8,
                    b'0' + (w % 10) as u8,
                ];
                let used = 3 - digits.iter().rev().take_while(|&&d| d == b'0').count();
                self.push(b"0.")?;
                self.push(&digits[..used])
            }
        }
    }
}

/// Bytes that end a run of ordinary ones: separators, whitespace, `=`, and the start of a
/// quoted string or quoted pair.
const SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 7 {
        t[b",; \t=\"\\"[i] as usize] = true;
        i += 1;
    }
    t
};

/// Each byte ASCII-lower-cased, by table: the standard library's loop costs several times more
/// on the short runs these headers are made of.
const LOWER: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = (i as u8).to_ascii_lowercase();
        i += 1;
    }
    t
};

/// Where the member being read stands, as offsets into the buffer.
struct Member {
    /// Where the member starts.
    start: usize,
    /// Where the piece being read (the value, or one parameter after its `;`) starts.
    piece: usize,
    /// Just past the piece's last byte that is not whitespace.
    last_solid: usize,
    in_param: bool,
    /// The parameter's `=`.
    eq: Option<usize>,
    /// The `;` of the member's last parameter, when that parameter is a weight of 1.
    default_weight_at: Option<usize>,
    /// Whether anything but whitespace was read: a member of only whitespace is an empty list
    /// element, which says nothing; `;` alone is not empty.
    solid: bool,
}

impl Member {
    fn at(start: usize) -> Self {
        Self {
            start,
            piece: start,
            last_solid: start,
            in_param: false,
            eq: None,
            default_weight_at: None,
            solid: false,
        }
    }

    /// A parameter starts at `at`, after its `;`.
    fn param(&mut self, at: usize) {
        self.piece = at;
        self.last_solid = at;
        self.in_param = true;
        self.eq = None;
    }
}

/// A valid `qvalue` (RFC 9110 §12.4.2: `0[.ddd]` or `1[.000]`) in thousandths.
fn weight(v: &[u8]) -> Option<u16> {
    let (int, frac) = match v.iter().position(|&b| b == b'.') {
        Some(dot) => (&v[..dot], &v[dot + 1..]),
        None => (v, &[][..]),
    };
    let int: u16 = match int {
        b"0" => 0,
        b"1" => 1,
        _ => return None,
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let frac = (0..3).fold(0u16, |acc, i| {
        acc * 10 + frac.get(i).map_or(0, |d| u16::from(d - b'0'))
    });
    if int == 1 && frac != 0 {
        return None;
    }
    Some(int * 1000 + frac)
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;

    /// The canonical members of these field lines, joined by `, ` for reading.
    fn canonical(lines: &[&str]) -> Option<String> {
        let mut h = HeaderMap::new();
        for line in lines {
            h.append(ACCEPT_LANGUAGE, HeaderValue::from_str(line).unwrap());
        }
        let mut members = Members::new();
        if !members.read(h.get_all(ACCEPT_LANGUAGE)) {
            return None;
        }
        let all: Vec<&str> = members
            .iter()
            .map(|m| std::str::from_utf8(m).unwrap())
            .collect();
        Some(all.join(", "))
    }

    #[test]
    fn spellings_of_one_preference_read_alike() {
        for lines in [
            &["es"][..],
            &["ES"],
            &["Es"],
            &[" es\t"],
            &["es;q=1"],
            &["es; Q=1.0"],
            &["es ;q=1.000"],
            &["es,es"],
            &["es, ES;q=1"],
            &[",es,,"],
            &["es", "es"],
        ] {
            assert_eq!(canonical(lines).as_deref(), Some("es"), "{lines:?}");
        }
        assert_eq!(
            canonical(&["EN-us, en;Q=0.90", "es;q=0.500"]).as_deref(),
            Some("en-us, en;q=0.9, es;q=0.5")
        );
        assert_eq!(canonical(&["*;q=0.0"]).as_deref(), Some("*;q=0"));
        assert_eq!(canonical(&["es;;q=1;, ,en"]).as_deref(), Some("es, en"));
        assert_eq!(
            canonical(&[" es ; q=0.50 ;\tlevel=A b , en"]).as_deref(),
            Some("es;q=0.5;level=A b, en")
        );
    }

    #[test]
    fn what_may_select_another_representation_stays_apart() {
        let distinct = [
            &["es"][..],
            &["en"],
            &["es, en"],
            &["en, es"],
            &["es;q=0"],
            &["es;q=0.5"],
            &["es;q=0.5, es"],
            &[""],
            // Not valid weights: kept as sent, never read as a default weight.
            &["es;q=1.5"],
            &["es;q = 1"],
            &["es;q="],
            &["es;level=1"],
            &["es;q=1;level=1"],
            &["es;LEVEL=A"],
            &["es;level=a"],
            // Not valid members: kept apart from the valid ones and from each other.
            &["es, ;"],
            &["es;X"],
            &["es;x"],
            &["e s"],
        ];
        let forms: Vec<String> = distinct.iter().map(|l| canonical(l).unwrap()).collect();
        for (i, a) in forms.iter().enumerate() {
            for (j, b) in forms.iter().enumerate() {
                assert!(
                    i == j || a != b,
                    "{:?} and {:?} both read {a:?}",
                    distinct[i],
                    distinct[j]
                );
            }
        }
        assert_eq!(
            canonical(&["es;level=1;q=1"]).as_deref(),
            Some("es;level=1")
        );
        assert_eq!(canonical(&["es;LEVEL=A"]).as_deref(), Some("es;level=A"));
    }

    #[test]
    fn what_cannot_be_read_safely_is_not_canonicalised() {
        assert_eq!(canonical(&["text/html;x=\"a,b\""]), None);
        let many: Vec<String> = (0..=MAX_MEMBERS).map(|i| format!("l{i}")).collect();
        assert_eq!(canonical(&[&many.join(",")]), None);
        let long = format!("{},b", "a".repeat(MAX_BYTES));
        assert_eq!(canonical(&[&long]), None);
        // Repeats take no room.
        assert!(canonical(&[&"es,".repeat(MAX_MEMBERS * 4)]).is_some());
    }

    #[test]
    fn weights_are_read_as_rfc_9110_writes_them() {
        assert_eq!(weight(b"1"), Some(1000));
        assert_eq!(weight(b"1.000"), Some(1000));
        assert_eq!(weight(b"1."), Some(1000));
        assert_eq!(weight(b"0.125"), Some(125));
        assert_eq!(weight(b"0.05"), Some(50));
        for bad in [&b"1.001"[..], b"0.1234", b"2", b".5", b"0.x", b"", b"01"] {
            assert_eq!(weight(bad), None, "{bad:?}");
        }
        let mut m = Members::new();
        for (w, text) in [(125, "0.125"), (50, "0.05"), (500, "0.5"), (1, "0.001")] {
            m.used = 0;
            m.push_weight(w).unwrap();
            assert_eq!(&m.buf[..m.used], text.as_bytes());
        }
    }
}
