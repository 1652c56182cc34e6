//! Redis's glob patterns for `KEYS` and `SCAN MATCH`: `*` any run of bytes, `?` one byte,
//! `[abc]`, `[^abc]` and `[a-z]` one byte of (or not of) a set, `\x` the byte `x`.

/// Whether `text` matches `pattern`, byte by byte.
///
/// Two cursors and one backtrack point (the last `*`): linear in practice, and never
/// exponential, however many stars a client sends.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last star: the pattern after it, and the text position it
    // has swallowed up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match step(pattern, p, text[t]) {
            Step::Star => {
                star = Some((p + 1, t));
                p += 1;
                continue;
            }
            Step::Matched(next) => {
                p = next;
                t += 1;
                continue;
            }
            Step::Failed => {}
        }
        match star {
            Some((after, swallowed)) => {
                star = Some((after, swallowed + 1));
                p = after;
                t = swallowed + 1;
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&byte| byte == b'*')
}

enum Step {
    /// A `*` at this position.
    Star,
    /// The byte matched the element at `p`; the next element starts here.
    Matched(usize),
    Failed,
}

/// Matches one byte against the pattern element at `p`.
fn step(pattern: &[u8], p: usize, byte: u8) -> Step {
    let Some(&element) = pattern.get(p) else { return Step::Failed };
    match element {
        b'*' => Step::Star,
        b'?' => Step::Matched(p + 1),
        b'\\' if p + 1 < pattern.len() => {
            if pattern[p + 1] == byte {
                Step::Matched(p + 2)
            } else {
                Step::Failed
            }
        }
        b'[' => class(pattern, p + 1, byte),
        literal if literal == byte => Step::Matched(p + 1),
        _ => Step::Failed,
    }
}

/// A `[...]` class starting after its bracket. An unclosed class runs to the end of the
/// pattern, as in Redis.
fn class(pattern: &[u8], mut p: usize, byte: u8) -> Step {
    let negated = pattern.get(p) == Some(&b'^');
    if negated {
        p += 1;
    }
    let mut found = false;
    while p < pattern.len() && pattern[p] != b']' {
        if pattern[p] == b'\\' && p + 1 < pattern.len() {
            found |= pattern[p + 1] == byte;
            p += 2;
        } else if p + 2 < pattern.len() && pattern[p + 1] == b'-' && pattern[p + 2] != b']' {
            let (low, high) = (pattern[p].min(pattern[p + 2]), pattern[p].max(pattern[p + 2]));
            found |= (low..=high).contains(&byte);
            p += 3;
        } else {
            found |= pattern[p] == byte;
            p += 1;
        }
    }
    let next = (p + 1).min(pattern.len());
    if found != negated { Step::Matched(next) } else { Step::Failed }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn patterns_match_as_in_redis() {
        for (pattern, text, expected) in [
            ("*", "", true),
            ("*", "anything", true),
            ("user:*", "user:42", true),
            ("user:*", "users", false),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h*llo", "heeeello", true),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-c]llo", "hbllo", true),
            ("h[c-a]llo", "hbllo", true),
            ("h[a-c]llo", "hdllo", false),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            ("*a*b*c*", "xxaxxbxxcxx", true),
            ("*a*b*c*", "xxaxxcxxbxx", false),
            ("a*", "b", false),
            ("", "", true),
            ("", "a", false),
            ("[abc", "b", true),
        ] {
            assert_eq!(matches(pattern.as_bytes(), text.as_bytes()), expected, "{pattern:?} against {text:?}");
        }
    }

    #[test]
    fn many_stars_do_not_backtrack_exponentially() {
        let pattern = "*a".repeat(30) + "b";
        let text = "a".repeat(10_000);
        assert!(!matches(pattern.as_bytes(), text.as_bytes()));
    }
}
