//! Small serde helpers shared by the wire types (crate-private).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Serializer;

/// Defines a zero-sized type that always serialises as one fixed string (`"chat.completion"`,
/// `"assistant"`, ...) and only deserialises from that string. Using a type rather than a
/// `String` field means a response can never carry the wrong `object`/`role` value. Its
/// OpenAPI schema (`utoipa::ToSchema`) is a string enum of that one value.
macro_rules! const_str {
    ($(#[$meta:meta])* $name:ident = $value:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
        pub struct $name;

        impl $name {
            /// The string this type stands for on the wire.
            pub const VALUE: &'static str = $value;

            /// The string this type stands for on the wire.
            pub const fn as_str(self) -> &'static str {
                $value
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str($value)
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str($value)
            }
        }

        /// OpenAPI: a string with this one value (`{"type":"string","enum":[VALUE]}`).
        impl ::utoipa::PartialSchema for $name {
            fn schema() -> ::utoipa::openapi::RefOr<::utoipa::openapi::schema::Schema> {
                ::utoipa::openapi::ObjectBuilder::new()
                    .schema_type(::utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$value]))
                    .into()
            }
        }

        impl ::utoipa::ToSchema for $name {
            fn name() -> ::std::borrow::Cow<'static, str> {
                ::std::borrow::Cow::Borrowed(stringify!($name))
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl ::serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        write!(f, "the string \"{}\"", $value)
                    }
                    fn visit_str<E: ::serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        if v == $value {
                            Ok($name)
                        } else {
                            Err(E::invalid_value(::serde::de::Unexpected::Str(v), &self))
                        }
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}
pub(crate) use const_str;

/// Serialises an `f64` the way Go's `encoding/json` (Groq's server) does for the values we
/// emit: an integral value has no fraction (`0`, not `0.0`), as in the live capture
/// `"logprob":0`. Everything else is serde_json's shortest round-trip form, which matches Go
/// for the magnitudes that appear in timings and log-probabilities.
pub(crate) fn go_f64<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    // 2^53: every integral f64 below this converts to i64 exactly.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if v.is_finite() && v.fract() == 0.0 && v.abs() < EXACT {
        // Exact: integral and below 2^53, checked above.
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

/// `deserialize_with` helper that tells an absent field (`None`, via `#[serde(default)]`)
/// apart from an explicit `null` (`Some(None)`).
pub(crate) fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Which non-string JSON shape [`string_or`] accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Other {
    /// A JSON object.
    Map,
    /// A JSON array.
    Seq,
}

/// Deserialises a value that is either a JSON string or one other shape `M` (an object or an
/// array), without serde's untagged buffering: errors inside `M` keep their exact path and a
/// wrong type gets a readable "expected ..." instead of "did not match any variant".
pub(crate) fn string_or<'de, D, T, M>(
    d: D,
    other: Other,
    expecting: &'static str,
    from_str: fn(String) -> T,
    from_other: fn(M) -> T,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    M: Deserialize<'de>,
{
    struct V<T, M> {
        other: Other,
        expecting: &'static str,
        from_str: fn(String) -> T,
        from_other: fn(M) -> T,
        marker: PhantomData<fn() -> M>,
    }

    impl<'de, T, M: Deserialize<'de>> Visitor<'de> for V<T, M> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            Ok((self.from_str)(v.to_owned()))
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<T, E> {
            Ok((self.from_str)(v))
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            if self.other != Other::Map {
                return Err(de::Error::invalid_type(de::Unexpected::Map, &self));
            }
            M::deserialize(de::value::MapAccessDeserializer::new(map)).map(self.from_other)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
            if self.other != Other::Seq {
                return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
            }
            M::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(self.from_other)
        }
    }

    d.deserialize_any(V {
        other,
        expecting,
        from_str,
        from_other,
        marker: PhantomData,
    })
}

/// Deserialises `T` (a derived struct) from a JSON object only. serde's derived structs also
/// accept an array of the field values in declaration order, which no client means and which
/// would let `["user","hi"]` pass as a message.
pub(crate) fn map_only<'de, D, T>(d: D, expecting: &'static str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T> {
        expecting: &'static str,
        marker: PhantomData<fn() -> T>,
    }

    impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }

    d.deserialize_map(V {
        expecting,
        marker: PhantomData,
    })
}

/// Builders for the OpenAPI schemas that `#[derive(ToSchema)]` cannot express (a string enum
/// on an `Option<String>`, an untagged enum whose arms need limits), used through
/// `#[schema(schema_with = ...)]` and hand-written `PartialSchema` impls.
pub(crate) mod schema {
    use utoipa::openapi::schema::{
        ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
    };
    use utoipa::openapi::RefOr;

    /// `{"type":"string"}`.
    pub(crate) fn string() -> ObjectBuilder {
        ObjectBuilder::new().schema_type(Type::String)
    }

    /// A string that is one of `values`.
    pub(crate) fn string_enum(values: &[&str]) -> ObjectBuilder {
        string().enum_values(Some(values.iter().copied()))
    }

    /// A string that is one of `values`, or `null` (an optional request field: `null` means
    /// unset).
    pub(crate) fn nullable_string_enum(values: &[&str]) -> ObjectBuilder {
        let values = values.iter().map(|v| serde_json::Value::from(*v));
        ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
            .enum_values(Some(values.chain([serde_json::Value::Null])))
    }

    /// `{"type":"array","items":item}`.
    pub(crate) fn array(item: impl Into<RefOr<Schema>>) -> ArrayBuilder {
        ArrayBuilder::new().items(item.into())
    }

    /// `{"type":"null"}`.
    pub(crate) fn null() -> ObjectBuilder {
        ObjectBuilder::new().schema_type(Type::Null)
    }

    /// `oneOf` the given schemas.
    pub(crate) fn one_of(items: impl IntoIterator<Item = RefOr<Schema>>) -> OneOfBuilder {
        items
            .into_iter()
            .fold(OneOfBuilder::new(), OneOfBuilder::item)
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    #[derive(Serialize)]
    struct F(#[serde(serialize_with = "super::go_f64")] f64);

    fn go(v: f64) -> String {
        serde_json::to_string(&F(v)).unwrap()
    }

    #[test]
    fn go_floats() {
        assert_eq!(go(0.0), "0");
        assert_eq!(go(-3.0), "-3");
        assert_eq!(go(-16.635532), "-16.635532");
        assert_eq!(go(0.017371826), "0.017371826");
        assert_eq!(go(-9999.0), "-9999");
        assert_eq!(go(f64::NAN), "null");
    }
}
