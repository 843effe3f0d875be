//! Label selectors (`a=b,c!=d,e in (f,g),h notin (i),j,!k`) and field selectors (`metadata.name=x`).

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(pub String);

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter().map(str::trim).filter(|p| !p.is_empty()).collect()
}

fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn parse_set(rest: &str, whole: &str) -> Result<Vec<String>, SelectorError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError(whole.to_string()))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
}

fn parse_requirement(part: &str) -> Result<Requirement, SelectorError> {
    let bad = || SelectorError(part.to_string());
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        return if valid_key(key) {
            Ok(Requirement { key: key.to_string(), op: Op::DoesNotExist })
        } else {
            Err(bad())
        };
    }
    for (token, negate) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((key, value)) = part.split_once(token) {
            let (key, value) = (key.trim(), value.trim().to_string());
            if !valid_key(key) {
                return Err(bad());
            }
            let op = if negate { Op::NotEquals(value) } else { Op::Equals(value) };
            return Ok(Requirement { key: key.to_string(), op });
        }
    }
    let mut words = part.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default().trim();
    let rest = words.next().unwrap_or_default().trim();
    if !valid_key(key) {
        return Err(bad());
    }
    if rest.is_empty() {
        return Ok(Requirement { key: key.to_string(), op: Op::Exists });
    }
    if let Some(set) = rest.strip_prefix("notin") {
        return Ok(Requirement { key: key.to_string(), op: Op::NotIn(parse_set(set, part)?) });
    }
    if let Some(set) = rest.strip_prefix("in") {
        return Ok(Requirement { key: key.to_string(), op: Op::In(parse_set(set, part)?) });
    }
    Err(bad())
}

impl LabelSelector {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        split_top_level(s).into_iter().map(parse_requirement).collect::<Result<_, _>>().map(LabelSelector)
    }

    /// Matches against an object's `metadata.labels`.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels").and_then(Value::as_object);
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match &r.op {
            Op::Equals(v) => label(&r.key) == Some(v.as_str()),
            Op::NotEquals(v) => label(&r.key) != Some(v.as_str()),
            Op::In(vs) => label(&r.key).is_some_and(|l| vs.iter().any(|v| v == l)),
            Op::NotIn(vs) => label(&r.key).is_none_or(|l| vs.iter().all(|v| v != l)),
            Op::Exists => label(&r.key).is_some(),
            Op::DoesNotExist => label(&r.key).is_none(),
        })
    }
}

/// A parsed field selector over dotted paths of the object (`metadata.name`, `spec.nodeName`, ...).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for part in split_top_level(s) {
            let parsed = [("!=", false), ("==", true), ("=", true)].iter().find_map(|(token, eq)| {
                part.split_once(token).map(|(k, v)| (k.trim().to_string(), *eq, v.trim().to_string()))
            });
            match parsed {
                Some(term) if !term.0.is_empty() => terms.push(term),
                _ => return Err(SelectorError(part.to_string())),
            }
        }
        Ok(FieldSelector(terms))
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, eq, expected)| {
            let pointer = format!("/{}", path.replace('.', "/"));
            let actual = match object.pointer(&pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == *expected) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_operators() {
        let obj = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        let yes = [
            "app=web",
            "app==web",
            "app!=db",
            "app in (web, db)",
            "tier notin (back)",
            "app",
            "!missing",
            "app=web,tier in (front)",
            "",
        ];
        let no = ["app=db", "app in (db)", "tier notin (front,back)", "missing", "!app"];
        for s in yes {
            assert!(LabelSelector::parse(s).unwrap().matches(&obj), "{s}");
        }
        for s in no {
            assert!(!LabelSelector::parse(s).unwrap().matches(&obj), "{s}");
        }
        assert!(LabelSelector::parse("app in web").is_err());
    }

    #[test]
    fn field_selectors() {
        let obj = json!({"metadata": {"name": "a", "namespace": "ns"}});
        assert!(FieldSelector::parse("metadata.name=a,metadata.namespace!=x").unwrap().matches(&obj));
        assert!(!FieldSelector::parse("metadata.name==b").unwrap().matches(&obj));
    }
}
