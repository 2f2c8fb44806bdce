//! A descriptor's `metadata`: envoyproxy/ratelimit's free-form map, kept as written so the
//! gRPC service can return it in a response's dynamic metadata (upstream's
//! `RESPONSE_DYNAMIC_METADATA`).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A metadata map: string keys, as a protobuf `Struct` has them.
pub type Metadata = BTreeMap<String, MetadataValue>;

/// One metadata value, the shapes a protobuf `Value` can take.
#[derive(Debug, Clone)]
pub enum MetadataValue {
    /// `null` (or `~`).
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// Any number; a protobuf `Value` holds numbers as doubles.
    Number(f64),
    /// A string.
    String(String),
    /// A list.
    List(Vec<MetadataValue>),
    /// A nested map.
    Map(Metadata),
}

impl PartialEq for MetadataValue {
    fn eq(&self, other: &Self) -> bool {
        use MetadataValue::*;
        match (self, other) {
            (Null, Null) => true,
            (Bool(a), Bool(b)) => a == b,
            // Bitwise, so that equality is an equivalence (policies compare as Eq).
            (Number(a), Number(b)) => a.to_bits() == b.to_bits(),
            (String(a), String(b)) => a == b,
            (List(a), List(b)) => a == b,
            (Map(a), Map(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for MetadataValue {}

/// Merges `src` into `dest` as envoyproxy/ratelimit merges the metadata of several passing
/// descriptors: a key already present is kept, except that two maps merge recursively.
pub fn merge_metadata(dest: &mut Metadata, src: &Metadata) {
    for (key, value) in src {
        match (dest.get_mut(key), value) {
            (Some(MetadataValue::Map(d)), MetadataValue::Map(s)) => merge_metadata(d, s),
            (Some(_), _) => {}
            (None, _) => {
                dest.insert(key.clone(), value.clone());
            }
        }
    }
}

impl<'de> Deserialize<'de> for MetadataValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = MetadataValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a metadata value (null, boolean, number, string, list or map)")
    }

    fn visit_unit<E: de::Error>(self) -> Result<MetadataValue, E> {
        Ok(MetadataValue::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<MetadataValue, E> {
        Ok(MetadataValue::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<MetadataValue, D::Error> {
        MetadataValue::deserialize(d)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<MetadataValue, E> {
        Ok(MetadataValue::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<MetadataValue, E> {
        Ok(MetadataValue::Number(v as f64))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<MetadataValue, E> {
        Ok(MetadataValue::Number(v as f64))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<MetadataValue, E> {
        Ok(MetadataValue::Number(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<MetadataValue, E> {
        Ok(MetadataValue::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<MetadataValue, E> {
        Ok(MetadataValue::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MetadataValue, A::Error> {
        let mut list = Vec::new();
        while let Some(v) = seq.next_element()? {
            list.push(v);
        }
        Ok(MetadataValue::List(list))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MetadataValue, A::Error> {
        let mut out = Metadata::new();
        while let Some((key, value)) = map.next_entry::<MetadataValue, MetadataValue>()? {
            out.insert(key_text(&key)?, value);
        }
        Ok(MetadataValue::Map(out))
    }
}

/// A map key as text: upstream formats non-string YAML keys (`1: x`, `true: y`) with Go's
/// `%v`; nested values cannot be keys.
fn key_text<E: de::Error>(key: &MetadataValue) -> Result<String, E> {
    match key {
        MetadataValue::String(s) => Ok(s.clone()),
        MetadataValue::Bool(b) => Ok(b.to_string()),
        MetadataValue::Number(n) => Ok(n.to_string()),
        MetadataValue::Null => Ok("<nil>".to_owned()),
        MetadataValue::List(_) | MetadataValue::Map(_) => Err(E::custom(
            "metadata keys must be strings, numbers or booleans",
        )),
    }
}

/// The `metadata` field of a descriptor: a map.
pub(super) fn metadata_map<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Metadata>, D::Error> {
    match Option::<MetadataValue>::deserialize(d)? {
        None | Some(MetadataValue::Null) => Ok(None),
        Some(MetadataValue::Map(m)) if m.is_empty() => Ok(None),
        Some(MetadataValue::Map(m)) => Ok(Some(m)),
        Some(_) => Err(de::Error::custom("metadata: must be a map")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(yaml: &str) -> Metadata {
        match yaml_serde::from_str::<MetadataValue>(yaml).unwrap() {
            MetadataValue::Map(m) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_shape_is_kept() {
        let m = map("a: 1\nb: [x, 2.5, true, null]\nc: {d: e}\n7: seven\n");
        assert_eq!(m["a"], MetadataValue::Number(1.0));
        assert_eq!(
            m["b"],
            MetadataValue::List(vec![
                MetadataValue::String("x".into()),
                MetadataValue::Number(2.5),
                MetadataValue::Bool(true),
                MetadataValue::Null,
            ])
        );
        assert!(
            matches!(&m["c"], MetadataValue::Map(c) if c["d"] == MetadataValue::String("e".into()))
        );
        assert_eq!(m["7"], MetadataValue::String("seven".into()));
    }

    #[test]
    fn merging_keeps_the_first_and_merges_maps() {
        let mut dest = map("team: a\nlabels: {x: 1}\n");
        merge_metadata(
            &mut dest,
            &map("team: b\nlabels: {x: 2, y: 3}\nextra: true\n"),
        );
        assert_eq!(dest, map("team: a\nlabels: {x: 1, y: 3}\nextra: true\n"));
    }
}
