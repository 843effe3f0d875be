//! Field errors, worded like the API server's `field.Error`s.

use std::fmt;

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum FieldErrorKind {
    Required {
        detail: String,
    },
    NotSupported {
        supported: Vec<Value>,
    },
    Invalid {
        value: Value,
        detail: String,
    },
    /// A value of the wrong JSON type (rendered like Invalid, reported as FieldValueTypeInvalid).
    TypeInvalid {
        value: Value,
        detail: String,
    },
    TooLong {
        max: u64,
    },
    TooMany {
        actual: usize,
        max: u64,
    },
    Forbidden {
        detail: String,
    },
}

/// One invalid field: `spec.targetType: Unsupported value: "foo": supported values: "instance", "ip"`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Path like `spec.networking.ingress[0].from`.
    pub field: String,
    /// The offending value, when the message shows it.
    pub value: Value,
    pub kind: FieldErrorKind,
}

impl FieldError {
    pub fn required(field: impl Into<String>) -> Self {
        Self::required_because(field, "")
    }

    /// `metadata.name: Required value: name or generateName is required`.
    pub fn required_because(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError { field: field.into(), value: Value::Null, kind: FieldErrorKind::Required { detail: detail.into() } }
    }

    pub fn not_supported(field: impl Into<String>, value: Value, supported: Vec<Value>) -> Self {
        FieldError { field: field.into(), value, kind: FieldErrorKind::NotSupported { supported } }
    }

    pub fn invalid(field: impl Into<String>, value: Value, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            value: value.clone(),
            kind: FieldErrorKind::Invalid { value, detail: detail.into() },
        }
    }

    pub fn type_invalid(field: impl Into<String>, value: Value, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            value: value.clone(),
            kind: FieldErrorKind::TypeInvalid { value, detail: detail.into() },
        }
    }

    /// Errors after which a real server does not evaluate CEL rules: the object is too broken for
    /// them (wrong types, missing required fields, unsupported enum values, too long or too many).
    pub fn blocks_validation_rules(&self) -> bool {
        matches!(
            self.kind,
            FieldErrorKind::Required { .. }
                | FieldErrorKind::NotSupported { .. }
                | FieldErrorKind::TooLong { .. }
                | FieldErrorKind::TooMany { .. }
                | FieldErrorKind::TypeInvalid { .. }
        )
    }

    pub fn too_long(field: impl Into<String>, value: Value, max: u64) -> Self {
        FieldError { field: field.into(), value, kind: FieldErrorKind::TooLong { max } }
    }

    pub fn too_many(field: impl Into<String>, actual: usize, max: u64) -> Self {
        FieldError { field: field.into(), value: Value::Null, kind: FieldErrorKind::TooMany { actual, max } }
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            value: Value::Null,
            kind: FieldErrorKind::Forbidden { detail: detail.into() },
        }
    }

    /// The `causes[].reason` of a Status.
    pub fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Required { .. } => "FieldValueRequired",
            FieldErrorKind::NotSupported { .. } => "FieldValueNotSupported",
            FieldErrorKind::Invalid { .. } => "FieldValueInvalid",
            FieldErrorKind::TypeInvalid { .. } => "FieldValueTypeInvalid",
            FieldErrorKind::TooLong { .. } => "FieldValueTooLong",
            FieldErrorKind::TooMany { .. } => "FieldValueTooMany",
            FieldErrorKind::Forbidden { .. } => "FieldValueForbidden",
        }
    }

    /// The message without the field path.
    pub fn detail(&self) -> String {
        match &self.kind {
            FieldErrorKind::Required { detail } if detail.is_empty() => "Required value".to_string(),
            FieldErrorKind::Required { detail } => format!("Required value: {detail}"),
            FieldErrorKind::NotSupported { supported } => {
                let values: Vec<String> = supported.iter().map(render_value).collect();
                format!("Unsupported value: {}: supported values: {}", render_value(&self.value), values.join(", "))
            }
            FieldErrorKind::Invalid { value, detail } | FieldErrorKind::TypeInvalid { value, detail } => {
                format!("Invalid value: {}: {detail}", render_value(value))
            }
            FieldErrorKind::TooLong { max } => {
                format!("Too long: may not be more than {max} bytes")
            }
            FieldErrorKind::TooMany { actual, max } => {
                format!("Too many: {actual}: must have at most {max} items")
            }
            FieldErrorKind::Forbidden { detail } => format!("Forbidden: {detail}"),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.detail())
        } else {
            write!(f, "{}: {}", self.field, self.detail())
        }
    }
}

/// Renders a value the way Go's `%#v`-ish formatting in field errors does: strings quoted,
/// numbers and booleans bare.
pub fn render_value(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".to_string(),
        other => other.to_string(),
    }
}

/// The JSON type name used in "must be of type" messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Field path helper: `join("spec", "port")` = `spec.port`, `index("ports", 0)` = `ports[0]`.
pub fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() { child.to_string() } else { format!("{parent}.{child}") }
}

pub fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unsupported_value_message() {
        let e = FieldError::not_supported("spec.targetType", json!("foo"), vec![json!("instance"), json!("ip")]);
        assert_eq!(e.to_string(), r#"spec.targetType: Unsupported value: "foo": supported values: "instance", "ip""#);
    }

    #[test]
    fn required_message() {
        assert_eq!(FieldError::required("spec.serviceRef").to_string(), "spec.serviceRef: Required value");
    }
}
