//! A resource quantity exactly as the apiserver accepts it in an int-or-string field.
//!
//! The proposal writes `cpu: 10` as a YAML number. The apiserver keeps such a value as a
//! number, so we keep it too instead of forcing it through k8s-openapi's string-only
//! `Quantity`; the mutating webhook later rewrites it into canonical string form.

use std::fmt;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A quantity written either as an integer (`10`) or as a string (`"100Gi"`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ResourceQuantity {
    /// An integer as the client wrote it; the apiserver keeps it as a number.
    Int(i64),
    /// The usual Kubernetes quantity string, not yet checked for syntax.
    String(String),
}

impl ResourceQuantity {
    /// The quantity in the string form every Kubernetes tool understands.
    pub fn as_quantity_string(&self) -> String {
        match self {
            Self::Int(number) => number.to_string(),
            Self::String(text) => text.clone(),
        }
    }
}

impl fmt::Display for ResourceQuantity {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(number) => write!(formatter, "{number}"),
            Self::String(text) => formatter.write_str(text),
        }
    }
}

impl From<&str> for ResourceQuantity {
    fn from(text: &str) -> Self {
        Self::String(text.to_owned())
    }
}

impl From<i64> for ResourceQuantity {
    fn from(number: i64) -> Self {
        Self::Int(number)
    }
}

impl From<ResourceQuantity> for Quantity {
    fn from(value: ResourceQuantity) -> Self {
        Quantity(value.as_quantity_string())
    }
}

impl Serialize for ResourceQuantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Int(number) => serializer.serialize_i64(*number),
            Self::String(text) => serializer.serialize_str(text),
        }
    }
}

impl<'de> Deserialize<'de> for ResourceQuantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct QuantityVisitor;

        impl serde::de::Visitor<'_> for QuantityVisitor {
            type Value = ResourceQuantity;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("an integer or a quantity string such as \"100Gi\"")
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Self::Value, E> {
                Ok(ResourceQuantity::Int(value))
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Self::Value, E> {
                i64::try_from(value)
                    .map(ResourceQuantity::Int)
                    .map_err(|_| E::custom(format!("quantity {value} is too large")))
            }

            fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Self::Value, E> {
                // The apiserver's int-or-string check refuses fractional numbers; say how to fix it.
                Err(E::custom(format!(
                    "quantity {value} must be an integer or a string such as \"{value}\" or \"500m\""
                )))
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
                Ok(ResourceQuantity::String(value.to_owned()))
            }

            fn visit_string<E: serde::de::Error>(self, value: String) -> Result<Self::Value, E> {
                Ok(ResourceQuantity::String(value))
            }
        }

        deserializer.deserialize_any(QuantityVisitor)
    }
}

impl JsonSchema for ResourceQuantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ResourceQuantity".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "x-kubernetes-int-or-string": true,
            "anyOf": [{ "type": "integer" }, { "type": "string" }],
            "pattern": "^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))))?$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_numbers_as_numbers_and_strings_as_strings() {
        let number: ResourceQuantity = serde_json::from_str("10").unwrap();
        assert_eq!(number, ResourceQuantity::Int(10));
        assert_eq!(serde_json::to_string(&number).unwrap(), "10");

        let text: ResourceQuantity = serde_json::from_str("\"100Gi\"").unwrap();
        assert_eq!(text, ResourceQuantity::String("100Gi".into()));
        assert_eq!(serde_json::to_string(&text).unwrap(), "\"100Gi\"");
    }

    #[test]
    fn refuses_fractional_numbers_with_a_fix() {
        let error = serde_json::from_str::<ResourceQuantity>("1.5").unwrap_err();
        assert!(error.to_string().contains("\"500m\""), "{error}");
    }

    #[test]
    fn converts_to_the_openapi_quantity() {
        let quantity: Quantity = ResourceQuantity::Int(4).into();
        assert_eq!(quantity.0, "4");
    }
}
