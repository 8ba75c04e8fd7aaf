//! Redis glob patterns (`*`, `?`, `[a-z]`, `[^x]`, `\` escapes), as `SCAN MATCH` reads them:
//! the memory store matches value keys the way Redis would, so a pattern means the same on both.

/// Escapes glob metacharacters so `literal` matches only itself.
#[cfg(any(feature = "redis", feature = "values"))]
pub(crate) fn escape(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len() + 4);
    for c in literal.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether `text` matches `pattern`, with Redis's `stringmatchlen` rules (case-sensitive).
pub(crate) fn matches(pattern: &str, text: &str) -> bool {
    matches_bytes(pattern.as_bytes(), text.as_bytes())
}

fn matches_bytes(mut p: &[u8], mut t: &[u8]) -> bool {
    // Where to resume after the last `*`: the pattern after it and the text it has not eaten.
    let mut star: Option<(&[u8], &[u8])> = None;
    loop {
        if let Some((&c, rest)) = p.split_first() {
            if c == b'*' {
                star = Some((rest, t));
                p = rest;
                continue;
            }
            if let Some((&ch, t_rest)) = t.split_first() {
                if let Some(p_rest) = one(c, rest, ch) {
                    p = p_rest;
                    t = t_rest;
                    continue;
                }
            }
        } else if t.is_empty() {
            return true;
        }
        // Mismatch: let the last `*` eat one more byte, if there is one to eat.
        match star {
            Some((after, eaten)) if !eaten.is_empty() => {
                star = Some((after, &eaten[1..]));
                p = after;
                t = &eaten[1..];
            }
            _ => return false,
        }
    }
}

/// Matches one text byte `ch` against the pattern element starting with `c` (`rest` follows
/// it); the pattern after the element when it matches.
fn one(c: u8, rest: &[u8], ch: u8) -> Option<&[u8]> {
    match c {
        b'?' => Some(rest),
        b'\\' if !rest.is_empty() => (rest[0] == ch).then_some(&rest[1..]),
        b'[' => class(rest, ch),
        _ => (c == ch).then_some(rest),
    }
}

/// A `[...]` class (after its `[`): whether `ch` is in it, and the pattern after the `]`.
fn class(mut p: &[u8], ch: u8) -> Option<&[u8]> {
    let negate = p.first() == Some(&b'^');
    if negate {
        p = &p[1..];
    }
    let mut hit = false;
    loop {
        match p {
            [] => break, // unterminated: Redis treats the end of the pattern as the `]`
            [b']', rest @ ..] => {
                p = rest;
                break;
            }
            [b'\\', e, rest @ ..] => {
                hit |= *e == ch;
                p = rest;
            }
            [lo, b'-', hi, rest @ ..] if *hi != b']' => {
                let (lo, hi) = if lo <= hi { (*lo, *hi) } else { (*hi, *lo) };
                hit |= (lo..=hi).contains(&ch);
                p = rest;
            }
            [c, rest @ ..] => {
                hit |= *c == ch;
                p = rest;
            }
        }
    }
    (hit != negate).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(any(feature = "redis", feature = "values"))]
    fn metacharacters_are_escaped() {
        assert_eq!(escape("app:{ab}:"), "app:{ab}:");
        assert_eq!(escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert!(matches(&escape("a*b?[c]\\"), "a*b?[c]\\"));
        assert!(!matches(&escape("a*"), "ab"));
    }

    #[test]
    fn globs_match_as_redis_does() {
        let cases = [
            ("*", "", true),
            ("*", "anything", true),
            ("user:*", "user:1", true),
            ("user:*", "user:", true),
            ("user:*", "users:1", false),
            ("*:stats", "fragment:twitter:stats", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-c]llo", "hbllo", true),
            ("h[a-c]llo", "hdllo", false),
            ("h\\*llo", "h*llo", true),
            ("h\\*llo", "hello", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(matches(pattern, text), want, "{pattern:?} ~ {text:?}");
        }
    }
}
