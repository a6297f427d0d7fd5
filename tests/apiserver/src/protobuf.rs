//! Decoding of the Kubernetes protobuf envelope for the few kinds that kubectl's
//! generator commands (`kubectl create namespace|secret|configmap|serviceaccount`) send
//! as `application/vnd.kubernetes.protobuf`. Other kinds are refused with a message that
//! says how to send them as JSON/YAML instead.

use base64::Engine as _;
use serde_json::{Map, Value, json};

const MAGIC: &[u8] = b"k8s\0";

/// One decoded field: number and value.
enum Field<'a> {
    Varint(u32, u64),
    Bytes(u32, &'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(out);
        }
    }
    None
}

fn fields(buf: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let number = u32::try_from(key >> 3).ok()?;
        match key & 7 {
            0 => out.push(Field::Varint(number, varint(buf, &mut pos)?)),
            1 => pos += 8,
            5 => pos += 4,
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len)?;
                out.push(Field::Bytes(number, buf.get(pos..end)?));
                pos = end;
            }
            _ => return None,
        }
    }
    Some(out)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A `map<string, string|bytes>` entry list.
fn map_entry(entry: &[u8], bytes_value: bool) -> Option<(String, Value)> {
    let mut key = String::new();
    let mut value = Value::String(String::new());
    for f in fields(entry)? {
        match f {
            Field::Bytes(1, k) => key = text(k),
            Field::Bytes(2, v) if bytes_value => {
                value = json!(base64::engine::general_purpose::STANDARD.encode(v))
            }
            Field::Bytes(2, v) => value = json!(text(v)),
            _ => {}
        }
    }
    Some((key, value))
}

fn insert_map(target: &mut Map<String, Value>, name: &str, entry: &[u8], bytes_value: bool) {
    let Some((k, v)) = map_entry(entry, bytes_value) else {
        return;
    };
    if let Some(m) = target
        .entry(name)
        .or_insert_with(|| json!({}))
        .as_object_mut()
    {
        m.insert(k, v);
    }
}

fn push_string(target: &mut Map<String, Value>, name: &str, v: &[u8]) {
    if let Some(a) = target
        .entry(name)
        .or_insert_with(|| json!([]))
        .as_array_mut()
    {
        a.push(json!(text(v)));
    }
}

fn object_meta(buf: &[u8]) -> Option<Value> {
    let mut m = Map::new();
    for f in fields(buf)? {
        match f {
            Field::Bytes(1, v) => {
                m.insert("name".into(), json!(text(v)));
            }
            Field::Bytes(2, v) => {
                m.insert("generateName".into(), json!(text(v)));
            }
            Field::Bytes(3, v) => {
                m.insert("namespace".into(), json!(text(v)));
            }
            Field::Bytes(6, v) => {
                m.insert("resourceVersion".into(), json!(text(v)));
            }
            Field::Bytes(11, e) => insert_map(&mut m, "labels", e, false),
            Field::Bytes(12, e) => insert_map(&mut m, "annotations", e, false),
            Field::Bytes(14, v) => push_string(&mut m, "finalizers", v),
            _ => {}
        }
    }
    m.retain(|_, v| v.as_str() != Some(""));
    Some(Value::Object(m))
}

/// The kinds this decoder understands.
pub const SUPPORTED: &str =
    "Namespace, Secret, ConfigMap, ServiceAccount, (Self)SubjectAccessReview";

fn strings_of(buf: &[u8], names: &[(u32, &str)]) -> Option<Map<String, Value>> {
    let mut m = Map::new();
    for f in fields(buf)? {
        if let Field::Bytes(n, v) = f
            && let Some((_, name)) = names.iter().find(|(num, _)| *num == n)
        {
            m.insert((*name).to_string(), json!(text(v)));
        }
    }
    Some(m)
}

/// `SubjectAccessReviewSpec` (also the self-review's spec, which has fields 1 and 2 only).
fn access_review_spec(buf: &[u8]) -> Option<Value> {
    let mut spec = Map::new();
    for f in fields(buf)? {
        match f {
            Field::Bytes(1, r) => {
                let attrs = [
                    (1, "namespace"),
                    (2, "verb"),
                    (3, "group"),
                    (4, "version"),
                    (5, "resource"),
                    (6, "subresource"),
                    (7, "name"),
                ];
                spec.insert(
                    "resourceAttributes".into(),
                    Value::Object(strings_of(r, &attrs)?),
                );
            }
            Field::Bytes(2, n) => {
                spec.insert(
                    "nonResourceAttributes".into(),
                    Value::Object(strings_of(n, &[(1, "path"), (2, "verb")])?),
                );
            }
            Field::Bytes(3, u) => {
                spec.insert("user".into(), json!(text(u)));
            }
            Field::Bytes(4, g) => push_string(&mut spec, "groups", g),
            _ => {}
        }
    }
    Some(Value::Object(spec))
}

/// Decodes a protobuf request body into the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or("the body does not start with the protobuf magic number")?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for f in fields(envelope).ok_or("malformed protobuf envelope")? {
        match f {
            Field::Bytes(1, type_meta) => {
                for t in fields(type_meta).ok_or("malformed protobuf type meta")? {
                    match t {
                        Field::Bytes(1, v) => api_version = text(v),
                        Field::Bytes(2, v) => kind = text(v),
                        _ => {}
                    }
                }
            }
            Field::Bytes(2, r) => raw = r,
            _ => {}
        }
    }
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    let parts = fields(raw).ok_or("malformed protobuf object")?;
    for f in parts {
        match (kind.as_str(), f) {
            (_, Field::Bytes(1, meta)) => {
                obj.insert(
                    "metadata".into(),
                    object_meta(meta).ok_or("malformed protobuf metadata")?,
                );
            }
            ("Namespace", Field::Bytes(2, spec)) => {
                let mut s = Map::new();
                for sf in fields(spec).ok_or("malformed namespace spec")? {
                    if let Field::Bytes(1, v) = sf {
                        push_string(&mut s, "finalizers", v);
                    }
                }
                obj.insert("spec".into(), Value::Object(s));
            }
            ("Namespace", _) => {}
            ("Secret", Field::Bytes(2, e)) => insert_map(&mut obj, "data", e, true),
            ("Secret", Field::Bytes(3, v)) => {
                obj.insert("type".into(), json!(text(v)));
            }
            ("Secret", Field::Bytes(4, e)) => insert_map(&mut obj, "stringData", e, false),
            ("Secret" | "ConfigMap", Field::Varint(5, v)) if kind == "Secret" => {
                obj.insert("immutable".into(), json!(v != 0));
            }
            ("ConfigMap", Field::Bytes(2, e)) => insert_map(&mut obj, "data", e, false),
            ("ConfigMap", Field::Bytes(3, e)) => insert_map(&mut obj, "binaryData", e, true),
            ("ConfigMap", Field::Varint(4, v)) => {
                obj.insert("immutable".into(), json!(v != 0));
            }
            ("ServiceAccount", Field::Varint(4, v)) => {
                obj.insert("automountServiceAccountToken".into(), json!(v != 0));
            }
            ("SelfSubjectAccessReview" | "SubjectAccessReview", Field::Bytes(2, spec)) => {
                obj.insert(
                    "spec".into(),
                    access_review_spec(spec).ok_or("malformed access review spec")?,
                );
            }
            (
                "Secret"
                | "ConfigMap"
                | "ServiceAccount"
                | "SelfSubjectAccessReview"
                | "SubjectAccessReview",
                _,
            ) => {}
            (other, _) => {
                return Err(format!(
                    "the test API server decodes protobuf bodies only for {SUPPORTED}, not {other}; send it as JSON or YAML (kubectl create -f / kubectl apply -f)"
                ));
            }
        }
    }
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_field(number: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![
            u8::try_from((number << 3) | 2).unwrap(),
            u8::try_from(payload.len()).unwrap(),
        ];
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn decodes_a_secret_like_kubectl_create_secret_sends() {
        let type_meta = [bytes_field(1, b"v1"), bytes_field(2, b"Secret")].concat();
        let entry = [bytes_field(1, b"token"), bytes_field(2, b"hi")].concat();
        let meta = [bytes_field(1, b"creds"), bytes_field(3, b"team-a")].concat();
        let secret = [
            bytes_field(1, &meta),
            bytes_field(2, &entry),
            bytes_field(3, b"Opaque"),
        ]
        .concat();
        let body = [
            MAGIC.to_vec(),
            bytes_field(1, &type_meta),
            bytes_field(2, &secret),
        ]
        .concat();
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": "team-a"}, "data": {"token": "aGk="}, "type": "Opaque"})
        );
    }

    #[test]
    fn refuses_kinds_it_cannot_decode() {
        let type_meta = [bytes_field(1, b"apps/v1"), bytes_field(2, b"Deployment")].concat();
        let dep = bytes_field(2, b"x");
        let body = [
            MAGIC.to_vec(),
            bytes_field(1, &type_meta),
            bytes_field(2, &dep),
        ]
        .concat();
        assert!(decode(&body).unwrap_err().contains("not Deployment"));
    }
}
