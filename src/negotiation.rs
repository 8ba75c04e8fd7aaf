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

/// The longest canonical form kept (browsers send `Accept` values of ~150 bytes).
const MAX_BYTES: usize = 512;
/// The most members kept.
const MAX_MEMBERS: usize = 64;

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
    /// The canonical members of all of `values`' field lines, or `None` when they cannot be
    /// canonicalised safely (then key them as sent).
    pub(crate) fn of(values: GetAll<'_, HeaderValue>) -> Option<Self> {
        let mut members = Self {
            buf: [0; MAX_BYTES],
            used: 0,
            ends: [0; MAX_MEMBERS],
            count: 0,
        };
        for value in values {
            let value = value.as_bytes();
            if value.iter().any(|&b| b == b'"' || b == b'\\') {
                return None;
            }
            for member in value.split(|&b| b == b',') {
                members.push_member(member)?;
            }
        }
        Some(members)
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

    /// Appends the canonical form of one list member, unless it is empty or a repeat; `None`
    /// when the buffer is full.
    fn push_member(&mut self, raw: &[u8]) -> Option<()> {
        let raw = trim(raw);
        if raw.is_empty() {
            return Some(());
        }
        let start = self.used;
        let mut pieces = raw.split(|&b| b == b';');
        self.push_lower(trim(pieces.next().unwrap_or_default()))?;
        // Where the last parameter starts, when it is a weight of 1.
        let mut default_weight_at = None;
        for piece in pieces {
            let piece = trim(piece);
            if piece.is_empty() {
                continue;
            }
            let at = self.used;
            self.push(b";")?;
            default_weight_at = None;
            let Some(eq) = piece.iter().position(|&b| b == b'=') else {
                self.push(piece)?;
                continue;
            };
            let (name, value) = (&piece[..eq], &piece[eq + 1..]);
            self.push_lower(name)?;
            self.push(b"=")?;
            match name
                .eq_ignore_ascii_case(b"q")
                .then(|| weight(value))
                .flatten()
            {
                Some(w) => {
                    self.push_weight(w)?;
                    default_weight_at = (w == 1000).then_some(at);
                }
                None => self.push(value)?,
            }
        }
        if let Some(at) = default_weight_at {
            self.used = at;
        }
        let member = &self.buf[start..self.used];
        if self.iter().any(|m| m == member) {
            self.used = start;
            return Some(());
        }
        if self.count == MAX_MEMBERS {
            return None;
        }
        self.ends[self.count] = u16::try_from(self.used).ok()?;
        self.count += 1;
        Some(())
    }

    fn push(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.used + bytes.len();
        self.buf.get_mut(self.used..end)?.copy_from_slice(bytes);
        self.used = end;
        Some(())
    }

    fn push_lower(&mut self, bytes: &[u8]) -> Option<()> {
        let start = self.used;
        self.push(bytes)?;
        self.buf[start..self.used].make_ascii_lowercase();
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

/// Without optional whitespace (space, tab) at either end.
fn trim(bytes: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !ows(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !ows(b)).map_or(start, |i| i + 1);
    &bytes[start..end]
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
        let members = Members::of(h.get_all(ACCEPT_LANGUAGE))?;
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
        let mut m = Members::of(HeaderMap::new().get_all(ACCEPT)).unwrap();
        for (w, text) in [(125, "0.125"), (50, "0.05"), (500, "0.5"), (1, "0.001")] {
            m.used = 0;
            m.push_weight(w).unwrap();
            assert_eq!(&m.buf[..m.used], text.as_bytes());
        }
    }
}
