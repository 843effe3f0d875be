//! Decoding of the Kubernetes protobuf bodies kubectl's typed clients send for built-ins
//! (`kubectl create namespace|configmap|secret|serviceaccount`): the `k8s\0` envelope around a `runtime.Unknown`
//! that names the type and carries the object's own protobuf encoding. Only these kinds, and only
//! the fields those commands set, are understood; anything else is refused (415), never guessed.

use serde_json::{Map, Value, json};

/// Why a protobuf body was not understood.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProtobufError {
    #[error("the body does not start with the Kubernetes protobuf magic k8s\\0")]
    NoMagic,
    #[error("truncated or malformed protobuf in {0}")]
    Malformed(&'static str),
    #[error("decoding {kind} ({api_version}) from protobuf is not supported by the double")]
    UnsupportedKind { api_version: String, kind: String },
}

const MAGIC: &[u8] = b"k8s\0";

/// One field of a protobuf message (fixed-width values are skipped: none of these types use them).
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], at: &mut usize, what: &'static str) -> Result<u64, ProtobufError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*at).ok_or(ProtobufError::Malformed(what))?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(ProtobufError::Malformed(what))
}

fn fields<'a>(buf: &'a [u8], what: &'static str) -> Result<Vec<(u64, Wire<'a>)>, ProtobufError> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < buf.len() {
        let key = varint(buf, &mut at, what)?;
        let wire = match key & 7 {
            0 => Some(Wire::Varint(varint(buf, &mut at, what)?)),
            2 => {
                let len = usize::try_from(varint(buf, &mut at, what)?).map_err(|_| ProtobufError::Malformed(what))?;
                let end = at.checked_add(len).filter(|end| *end <= buf.len()).ok_or(ProtobufError::Malformed(what))?;
                let bytes = &buf[at..end];
                at = end;
                Some(Wire::Bytes(bytes))
            }
            1 => {
                at += 8;
                None
            }
            5 => {
                at += 4;
                None
            }
            _ => return Err(ProtobufError::Malformed(what)),
        };
        if at > buf.len() {
            return Err(ProtobufError::Malformed(what));
        }
        if let Some(wire) = wire {
            out.push((key >> 3, wire));
        }
    }
    Ok(out)
}

fn text(bytes: &[u8], what: &'static str) -> Result<String, ProtobufError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| ProtobufError::Malformed(what))
}

/// Sets a string field, leaving out the empty strings gogo-protobuf writes for unset fields.
fn put_text(map: &mut Map<String, Value>, key: &str, bytes: &[u8], what: &'static str) -> Result<(), ProtobufError> {
    let value = text(bytes, what)?;
    if !value.is_empty() {
        map.insert(key.to_string(), json!(value));
    }
    Ok(())
}

/// A `map<string, string|bytes>` entry (a message with key = 1, value = 2).
fn entry(bytes: &[u8], binary: bool, what: &'static str) -> Result<(String, Value), ProtobufError> {
    let mut key = String::new();
    let mut value = json!("");
    for (field, wire) in fields(bytes, what)? {
        match (field, wire) {
            (1, Wire::Bytes(b)) => key = text(b, what)?,
            (2, Wire::Bytes(b)) if binary => value = json!(base64(b)),
            (2, Wire::Bytes(b)) => value = json!(text(b, what)?),
            _ => {}
        }
    }
    Ok((key, value))
}

fn insert_entry(
    map: &mut Map<String, Value>,
    key: &str,
    bytes: &[u8],
    binary: bool,
    what: &'static str,
) -> Result<(), ProtobufError> {
    let (k, v) = entry(bytes, binary, what)?;
    if let Value::Object(inner) = map.entry(key.to_string()).or_insert_with(|| json!({})) {
        inner.insert(k, v);
    }
    Ok(())
}

fn push_text(map: &mut Map<String, Value>, key: &str, bytes: &[u8], what: &'static str) -> Result<(), ProtobufError> {
    let value = text(bytes, what)?;
    if let Value::Array(items) = map.entry(key.to_string()).or_insert_with(|| json!([])) {
        items.push(json!(value));
    }
    Ok(())
}

fn object_meta(bytes: &[u8]) -> Result<Value, ProtobufError> {
    const WHAT: &str = "metadata";
    let mut meta = Map::new();
    for (field, wire) in fields(bytes, WHAT)? {
        let Wire::Bytes(b) = wire else { continue };
        match field {
            1 => put_text(&mut meta, "name", b, WHAT)?,
            2 => put_text(&mut meta, "generateName", b, WHAT)?,
            3 => put_text(&mut meta, "namespace", b, WHAT)?,
            6 => put_text(&mut meta, "resourceVersion", b, WHAT)?,
            11 => insert_entry(&mut meta, "labels", b, false, WHAT)?,
            12 => insert_entry(&mut meta, "annotations", b, false, WHAT)?,
            14 => push_text(&mut meta, "finalizers", b, WHAT)?,
            _ => {}
        }
    }
    Ok(Value::Object(meta))
}

fn namespace(raw: &[u8]) -> Result<Value, ProtobufError> {
    const WHAT: &str = "Namespace";
    let mut object = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": {} });
    for (field, wire) in fields(raw, WHAT)? {
        let Wire::Bytes(b) = wire else { continue };
        match field {
            1 => object["metadata"] = object_meta(b)?,
            2 => {
                let mut spec = Map::new();
                for (f, w) in fields(b, WHAT)? {
                    if let (1, Wire::Bytes(name)) = (f, w) {
                        push_text(&mut spec, "finalizers", name, WHAT)?;
                    }
                }
                if !spec.is_empty() {
                    object["spec"] = Value::Object(spec);
                }
            }
            _ => {}
        }
    }
    Ok(object)
}

fn config_map(raw: &[u8]) -> Result<Value, ProtobufError> {
    const WHAT: &str = "ConfigMap";
    let mut object = Map::new();
    object.insert("apiVersion".into(), json!("v1"));
    object.insert("kind".into(), json!("ConfigMap"));
    for (field, wire) in fields(raw, WHAT)? {
        match (field, wire) {
            (1, Wire::Bytes(b)) => {
                object.insert("metadata".into(), object_meta(b)?);
            }
            (2, Wire::Bytes(b)) => insert_entry(&mut object, "data", b, false, WHAT)?,
            (3, Wire::Bytes(b)) => insert_entry(&mut object, "binaryData", b, true, WHAT)?,
            (4, Wire::Varint(v)) => {
                object.insert("immutable".into(), json!(v != 0));
            }
            _ => {}
        }
    }
    Ok(Value::Object(object))
}

fn secret(raw: &[u8]) -> Result<Value, ProtobufError> {
    const WHAT: &str = "Secret";
    let mut object = Map::new();
    object.insert("apiVersion".into(), json!("v1"));
    object.insert("kind".into(), json!("Secret"));
    for (field, wire) in fields(raw, WHAT)? {
        match (field, wire) {
            (1, Wire::Bytes(b)) => {
                object.insert("metadata".into(), object_meta(b)?);
            }
            (2, Wire::Bytes(b)) => insert_entry(&mut object, "data", b, true, WHAT)?,
            (3, Wire::Bytes(b)) => put_text(&mut object, "type", b, WHAT)?,
            (4, Wire::Bytes(b)) => insert_entry(&mut object, "stringData", b, false, WHAT)?,
            (5, Wire::Varint(v)) => {
                object.insert("immutable".into(), json!(v != 0));
            }
            _ => {}
        }
    }
    Ok(Value::Object(object))
}

fn service_account(raw: &[u8]) -> Result<Value, ProtobufError> {
    const WHAT: &str = "ServiceAccount";
    let mut object = json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {} });
    for (field, wire) in fields(raw, WHAT)? {
        match (field, wire) {
            (1, Wire::Bytes(b)) => object["metadata"] = object_meta(b)?,
            (4, Wire::Varint(v)) => object["automountServiceAccountToken"] = json!(v != 0),
            _ => {}
        }
    }
    Ok(object)
}

/// Decodes a protobuf request body into the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let envelope = body.strip_prefix(MAGIC).ok_or(ProtobufError::NoMagic)?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), None);
    for (field, wire) in fields(envelope, "runtime.Unknown")? {
        match (field, wire) {
            (1, Wire::Bytes(type_meta)) => {
                for (f, w) in fields(type_meta, "TypeMeta")? {
                    match (f, w) {
                        (1, Wire::Bytes(b)) => api_version = text(b, "TypeMeta")?,
                        (2, Wire::Bytes(b)) => kind = text(b, "TypeMeta")?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => raw = Some(b),
            _ => {}
        }
    }
    let raw = raw.unwrap_or_default();
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => namespace(raw),
        ("v1", "ConfigMap") => config_map(raw),
        ("v1", "Secret") => secret(raw),
        ("v1", "ServiceAccount") => service_account(raw),
        _ => Err(ProtobufError::UnsupportedKind { api_version, kind }),
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body kubectl 1.32 sends for `kubectl create namespace team-a` (captured with -v=9).
    const CREATE_NAMESPACE: &[u8] = b"k8s\x00\x0a\x0f\x0a\x02v1\x12\x09Namespace\x12\x1e\x0a\x16\x0a\x06team-a\x12\x00\x1a\x00\x22\x00\x2a\x00\x32\x00\x38\x00\x42\x00\x12\x00\x1a\x02\x0a\x00\x1a\x00\x22\x00";

    #[test]
    fn kubectl_create_namespace() {
        let object = decode(CREATE_NAMESPACE).expect("decodes");
        assert_eq!(object, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}));
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        assert_eq!(decode(b"{}"), Err(ProtobufError::NoMagic));
        assert!(matches!(decode(b"k8s\x00\x0a\x05\x0a\x02v1"), Err(ProtobufError::Malformed(_))));
        let pod = b"k8s\x00\x0a\x09\x0a\x02v1\x12\x03Pod\x12\x00";
        assert!(matches!(decode(pod), Err(ProtobufError::UnsupportedKind { .. })));
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"hello world"), "aGVsbG8gd29ybGQ=");
    }
}
