//! Subjects: `tollgate.<type>.<domain>`, the domain as one subject token.
//!
//! A NATS token may not contain `.`, whitespace or be `*` / `>`; domain names may (a
//! policy file's domain is any string). Letters, digits, `_`, `-` and `:` stay as they are;
//! every other byte becomes `%XX`, so the mapping is one to one and `%` itself is escaped.
//! Events about no domain (API keys, failed sign-ins) use the token `_`.

use std::fmt::Write;

use crate::cloudevent::EventType;

/// The subject token for events about no domain.
pub const NO_DOMAIN: &str = "_";

/// `domain` as a single subject token.
pub fn token(domain: Option<&str>) -> String {
    let Some(domain) = domain.filter(|d| !d.is_empty()) else {
        return NO_DOMAIN.to_owned();
    };
    let mut out = String::with_capacity(domain.len());
    for b in domain.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b':')
            || (b == b'_' && domain != NO_DOMAIN)
        {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The subject of an event of `kind` about `domain`.
pub fn subject(kind: EventType, domain: Option<&str>) -> String {
    format!("tollgate.{}.{}", kind.token(), token(domain))
}

/// The subject filter for `kind` (all types when `None`) and `domain` (all when `None`).
pub fn filter(kind: Option<EventType>, domain: Option<&str>) -> String {
    let kind = kind.map_or("*", EventType::token);
    let domain = domain.map_or_else(|| "*".to_owned(), |d| token(Some(d)));
    format!("tollgate.{kind}.{domain}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_names_stay_and_the_rest_is_escaped() {
        assert_eq!(token(Some("api")), "api");
        assert_eq!(token(Some("api.v1")), "api%2Ev1");
        assert_eq!(token(Some("a b*>%")), "a%20b%2A%3E%25");
        assert_eq!(token(None), "_");
        assert_eq!(
            token(Some("_")),
            "%5F",
            "a domain named _ is not 'no domain'"
        );
        assert_eq!(subject(EventType::Audit, Some("api")), "tollgate.audit.api");
    }

    proptest! {
        #[test]
        fn every_domain_is_one_valid_token_and_no_two_share_one(a in ".{1,40}", b in ".{1,40}") {
            let ta = token(Some(&a));
            prop_assert!(!ta.is_empty());
            prop_assert!(ta.bytes().all(|c| c.is_ascii_graphic() && c != b'.' && c != b'*' && c != b'>'));
            if a != b {
                prop_assert_ne!(ta, token(Some(&b)));
            }
        }
    }
}
