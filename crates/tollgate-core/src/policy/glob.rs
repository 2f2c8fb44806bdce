//! `*` wildcards in descriptor values.
//!
//! Written here rather than taken from a crate: envoyproxy/ratelimit gives `*` alone a
//! meaning (any run of characters, possibly empty) and every other character, `?` and `[`
//! included, matches itself. Path-oriented glob crates treat `/`, `?` and `[` specially.

/// A value pattern with at least one `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    pattern: Box<str>,
}

impl Glob {
    /// A glob for `pattern`, or `None` if it has no `*` (an exact value).
    pub(crate) fn new(pattern: &str) -> Option<Glob> {
        pattern.contains('*').then(|| Glob {
            pattern: pattern.into(),
        })
    }

    /// Whether `value` matches. Linear in practice; worst case O(|pattern| × |value|).
    pub(crate) fn matches(&self, value: &str) -> bool {
        let (p, v) = (self.pattern.as_bytes(), value.as_bytes());
        let (mut pi, mut vi) = (0, 0);
        // Position after the last `*` seen, and the value position it was tried at.
        let mut backtrack: Option<(usize, usize)> = None;
        while vi < v.len() {
            if pi < p.len() && p[pi] == b'*' {
                pi += 1;
                backtrack = Some((pi, vi));
            } else if pi < p.len() && p[pi] == v[vi] {
                pi += 1;
                vi += 1;
            } else if let Some((bp, bv)) = backtrack {
                pi = bp;
                vi = bv + 1;
                backtrack = Some((bp, bv + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&c| c == b'*')
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;
    use proptest::prelude::*;

    fn g(p: &str) -> Glob {
        Glob::new(p).expect("pattern has a star")
    }

    #[test]
    fn star_matches_any_run() {
        assert!(g("value*").matches("value"));
        assert!(g("value*").matches("value_2"));
        assert!(!g("value*").matches("valu"));
        assert!(g("*").matches(""));
        assert!(g("/api/*/users").matches("/api/v1/users"));
        assert!(!g("/api/*/users").matches("/api/v1/groups"));
        assert!(g("*.example.com").matches("a.b.example.com"));
        assert!(g("a*b*c").matches("aXbYbZc"));
        assert!(!g("a*b*c").matches("aXbYbZ"));
    }

    #[test]
    fn other_metacharacters_are_literal() {
        assert!(g("a?[*").matches("a?[x"));
        assert!(!g("a?*").matches("ab"));
    }

    #[test]
    fn no_star_is_not_a_glob() {
        assert!(Glob::new("plain").is_none());
    }

    /// Reference: a regex-free recursive definition of `*` matching.
    fn reference(p: &[u8], v: &[u8]) -> bool {
        match p.split_first() {
            None => v.is_empty(),
            Some((b'*', rest)) => (0..=v.len()).any(|i| reference(rest, &v[i..])),
            Some((c, rest)) => v.first() == Some(c) && reference(rest, &v[1..]),
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_reference(p in "[ab*]{1,8}", v in "[ab]{0,10}") {
            prop_assume!(p.contains('*'));
            prop_assert_eq!(g(&p).matches(&v), reference(p.as_bytes(), v.as_bytes()));
        }
    }
}
