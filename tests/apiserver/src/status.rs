//! `meta.k8s.io/v1` Status bodies shaped byte for byte like kube-apiserver's (see the
//! fixtures in `errors/`): clients such as kubectl print `message`, and kube-rs and
//! controller-runtime branch on `reason` and `code`.

use serde::Serialize;

use super::registry::ResourceType;

/// One entry of `details.causes`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Cause {
    pub reason: String,
    pub message: String,
    pub field: String,
}

/// `details` of a Status. Field order matches the apiserver's JSON.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Details {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<Cause>,
}

/// How `details` appears: absent, present but empty (`{}`, json-patch 422s), or filled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetailsShape {
    Absent,
    Empty,
    Filled(Box<Details>),
}

/// An error answer of the API: the HTTP code and the Status body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: u16,
    pub reason: Option<String>,
    pub message: String,
    pub details: DetailsShape,
    /// Seconds for a `Retry-After` header (429 and some 500s).
    pub retry_after: Option<u64>,
    /// A body that replaces the generated Status.
    pub body_override: Option<Box<BodyOverride>>,
}

/// Answers that are not a generated Status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyOverride {
    /// `text/plain` (unknown paths answer `404 page not found`).
    PlainText(String),
    /// A Status body built elsewhere (admission denials), sent as is.
    Status(String),
}

#[derive(Serialize)]
struct EmptyMeta {}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusBody<'a> {
    kind: &'static str,
    api_version: &'static str,
    metadata: EmptyMeta,
    status: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a Details>,
    code: u16,
}

impl ApiError {
    fn new(
        code: u16,
        reason: Option<&str>,
        message: impl Into<String>,
        details: DetailsShape,
    ) -> Self {
        Self {
            code,
            reason: reason.map(str::to_string),
            message: message.into(),
            details,
            retry_after: None,
            body_override: None,
        }
    }

    /// The JSON Status body.
    pub fn body(&self) -> Vec<u8> {
        if let Some(over) = &self.body_override {
            let (BodyOverride::PlainText(text) | BodyOverride::Status(text)) = over.as_ref();
            return text.as_bytes().to_vec();
        }
        let empty = Details::default();
        let details = match &self.details {
            DetailsShape::Absent => None,
            DetailsShape::Empty => Some(&empty),
            DetailsShape::Filled(d) => Some(d.as_ref()),
        };
        let body = StatusBody {
            kind: "Status",
            api_version: "v1",
            metadata: EmptyMeta {},
            status: "Failure",
            message: &self.message,
            reason: self.reason.as_deref(),
            details,
            code: self.code,
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// The Status as a JSON value (for watch ERROR events).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body()).unwrap_or(serde_json::Value::Null)
    }

    pub fn page_not_found() -> Self {
        let mut e = Self::new(
            404,
            Some("NotFound"),
            "404 page not found",
            DetailsShape::Absent,
        );
        e.body_override = Some(Box::new(BodyOverride::PlainText(
            "404 page not found\n".to_string(),
        )));
        e
    }

    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            Some("NotFound"),
            format!("{} \"{name}\" not found", rt.qualified_resource()),
            DetailsShape::Filled(Box::new(rt.details(Some(name)))),
        )
    }

    pub fn namespace_not_found(ns: &str) -> Self {
        Self::new(
            404,
            Some("NotFound"),
            format!("namespaces \"{ns}\" not found"),
            DetailsShape::Filled(Box::new(Details {
                name: Some(ns.to_string()),
                kind: Some("namespaces".to_string()),
                ..Details::default()
            })),
        )
    }

    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            Some("AlreadyExists"),
            format!("{} \"{name}\" already exists", rt.qualified_resource()),
            DetailsShape::Filled(Box::new(rt.details(Some(name)))),
        )
    }

    pub fn conflict(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            Some("Conflict"),
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                rt.qualified_resource()
            ),
            DetailsShape::Filled(Box::new(rt.details(Some(name)))),
        )
    }

    /// Conflict from a delete precondition: message and `details.kind` use the Kind.
    pub fn precondition_conflict(rt: &ResourceType, name: &str, message: &str) -> Self {
        Self::new(
            409,
            Some("Conflict"),
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {message}",
                rt.qualified_kind()
            ),
            DetailsShape::Filled(Box::new(Details {
                name: Some(name.to_string()),
                group: non_empty(&rt.group),
                kind: Some(rt.kind.clone()),
                ..Details::default()
            })),
        )
    }

    /// Server-side apply conflict (`causes[].reason: FieldManagerConflict`); `conflicts`
    /// are (manager, field path) pairs, paths in the `.spec.x` form.
    pub fn apply_conflict(api_version: &str, conflicts: &[(String, String)]) -> Self {
        let causes: Vec<Cause> = conflicts
            .iter()
            .map(|(manager, field)| Cause {
                reason: "FieldManagerConflict".to_string(),
                message: format!("conflict with \"{manager}\" using {api_version}"),
                field: field.clone(),
            })
            .collect();
        let summary = match causes.as_slice() {
            [one] => format!(
                "Apply failed with 1 conflict: {}: {}",
                one.message, one.field
            ),
            many => {
                let lines: Vec<String> = many
                    .iter()
                    .map(|c| format!("{}: {}", c.message, c.field))
                    .collect();
                format!(
                    "Apply failed with {} conflicts: {}",
                    many.len(),
                    lines.join("\n")
                )
            }
        };
        Self::new(
            409,
            Some("Conflict"),
            summary,
            DetailsShape::Filled(Box::new(Details {
                causes,
                ..Details::default()
            })),
        )
    }

    pub fn forbidden(rt: &ResourceType, name: Option<&str>, message_tail: &str) -> Self {
        let subject = match name {
            Some(n) if !n.is_empty() => format!("{} \"{n}\"", rt.qualified_resource()),
            _ => rt.qualified_resource(),
        };
        Self::new(
            403,
            Some("Forbidden"),
            format!("{subject} is forbidden: {message_tail}"),
            DetailsShape::Filled(Box::new(rt.details(name.filter(|n| !n.is_empty())))),
        )
    }

    /// Forbidden with a complete message (as the RBAC authorizer words it).
    pub fn forbidden_message(rt: &ResourceType, name: Option<&str>, message: String) -> Self {
        Self::new(
            403,
            Some("Forbidden"),
            message,
            DetailsShape::Filled(Box::new(rt.details(name.filter(|n| !n.is_empty())))),
        )
    }

    /// A Status body produced by another component, with its code.
    pub fn raw(code: u16, reason: &str, message: &str, body: String) -> Self {
        let mut e = Self::new(
            code,
            (!reason.is_empty()).then_some(reason),
            message,
            DetailsShape::Absent,
        );
        e.body_override = Some(Box::new(BodyOverride::Status(body)));
        e
    }

    /// Forbidden for a non-resource URL such as `/apis`.
    pub fn forbidden_path(user: &str, verb: &str, path: &str) -> Self {
        Self::new(
            403,
            Some("Forbidden"),
            format!("forbidden: User \"{user}\" cannot {verb} path \"{path}\""),
            DetailsShape::Filled(Box::default()),
        )
    }

    /// 422 whose `details.kind` is the resource plural (e.g. the missing resourceVersion).
    pub fn invalid_resource(rt: &ResourceType, name: &str, causes: Vec<Cause>) -> Self {
        Self::invalid_with(
            rt.qualified_resource(),
            rt.details(Some(name)),
            name,
            causes,
        )
    }

    /// 422 from schema or metadata validation: `details.kind` is the Kind.
    pub fn invalid(rt: &ResourceType, name: &str, causes: Vec<Cause>) -> Self {
        let details = Details {
            name: Some(name.to_string()),
            group: non_empty(&rt.group),
            kind: Some(rt.kind.clone()),
            ..Details::default()
        };
        Self::invalid_with(rt.qualified_kind(), details, name, causes)
    }

    fn invalid_with(subject: String, mut details: Details, name: &str, causes: Vec<Cause>) -> Self {
        // Like Go's error aggregate, the message lists each distinct error once.
        let mut parts: Vec<String> = Vec::new();
        for c in &causes {
            let part = format!("{}: {}", c.field, c.message);
            if !parts.contains(&part) {
                parts.push(part);
            }
        }
        let joined = if parts.len() == 1 {
            parts[0].clone()
        } else {
            format!("[{}]", parts.join(", "))
        };
        details.causes = causes;
        Self::new(
            422,
            Some("Invalid"),
            format!("{subject} \"{name}\" is invalid: {joined}"),
            DetailsShape::Filled(Box::new(details)),
        )
    }

    /// 422 without details, e.g. bad watch parameters.
    pub fn invalid_plain(message: impl Into<String>) -> Self {
        Self::new(422, Some("Invalid"), message, DetailsShape::Absent)
    }

    /// 422 from a JSON patch that cannot be applied (`details: {}`).
    pub fn patch_failed(message: impl Into<String>) -> Self {
        Self::new(422, Some("Invalid"), message, DetailsShape::Empty)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, Some("BadRequest"), message, DetailsShape::Absent)
    }

    /// A denial without a reason (admission denials without `status.code`).
    pub fn with_code(code: u16, reason: Option<&str>, message: impl Into<String>) -> Self {
        Self::new(code, reason, message, DetailsShape::Absent)
    }

    pub fn method_not_allowed(rt: &ResourceType, verb: &str) -> Self {
        Self::new(
            405,
            Some("MethodNotAllowed"),
            format!(
                "{verb} is not supported on resources of kind \"{}\"",
                rt.qualified_resource()
            ),
            DetailsShape::Filled(Box::new(rt.details(None))),
        )
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            Some("UnsupportedMediaType"),
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf, application/cbor (got {content_type})"
            ),
            DetailsShape::Absent,
        )
    }

    pub fn unsupported_patch(content_type: &str, accepted: &str) -> Self {
        Self::new(
            415,
            Some("UnsupportedMediaType"),
            format!(
                "the body of the request was in an unknown format - accepted media types include: {accepted}; got {content_type}"
            ),
            DetailsShape::Absent,
        )
    }

    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, Some("NotAcceptable"), message, DetailsShape::Absent)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, Some("Expired"), message, DetailsShape::Absent)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            401,
            Some("Unauthorized"),
            "Unauthorized",
            DetailsShape::Absent,
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            500,
            Some("InternalError"),
            format!("Internal error occurred: {}", message.into()),
            DetailsShape::Filled(Box::new(Details {
                causes: Vec::new(),
                ..Details::default()
            })),
        )
    }

    pub fn too_many_requests(retry_after: u64) -> Self {
        let mut e = Self::new(
            429,
            Some("TooManyRequests"),
            "The server has received too many requests and has asked us to try again later",
            DetailsShape::Filled(Box::new(Details {
                ..Details::default()
            })),
        );
        e.retry_after = Some(retry_after);
        e
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, Some("Timeout"), message, DetailsShape::Absent)
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// A field validation failure, as a cause.
pub fn field_invalid(field: &str, value: &serde_json::Value, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid".to_string(),
        message: format!("Invalid value: {}: {detail}", go_value(value)),
        field: field.to_string(),
    }
}

pub fn field_required(field: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueRequired".to_string(),
        message: format!(
            "Required value{}",
            if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            }
        ),
        field: field.to_string(),
    }
}

pub fn field_forbidden(field: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueForbidden".to_string(),
        message: format!("Forbidden: {detail}"),
        field: field.to_string(),
    }
}

/// How Go's field errors print a value: strings quoted, numbers bare.
pub fn go_value(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => format!("{s:?}"),
        serde_json::Value::Null => "null".to_string(),
        other => other.to_string(),
    }
}
