//! The subset of Kubernetes JSONPath used by printer columns:
//! `.a.b`, `['a']`, `[0]`, `[-1]`, `[*]`, `.*` and filters `[?(@.type=="Ready")]` (`==`, `!=`, existence).

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid JSONPath {path:?}: {reason}")]
pub struct JsonPathError {
    pub path: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Field(String),
    Index(i64),
    Wildcard,
    Filter { path: Vec<Segment>, test: Option<(bool, Value)> },
}

/// A compiled JSONPath expression.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath(Vec<Segment>);

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, reason: &'static str) -> JsonPathError {
        JsonPathError { path: self.src.to_string(), reason }
    }

    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn eat(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    fn skip_ws(&mut self) {
        while self.rest().starts_with(' ') {
            self.pos += 1;
        }
    }

    fn ident(&mut self) -> String {
        let len = self
            .rest()
            .find(|c: char| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '/')))
            .unwrap_or(self.rest().len());
        let ident = self.rest()[..len].to_string();
        self.pos += len;
        ident
    }

    fn quoted(&mut self) -> Result<String, JsonPathError> {
        let quote = if self.eat("'") {
            '\''
        } else if self.eat("\"") {
            '"'
        } else {
            return Err(self.err("expected a quoted string"));
        };
        let end = self.rest().find(quote).ok_or_else(|| self.err("unterminated string"))?;
        let s = self.rest()[..end].to_string();
        self.pos += end + 1;
        Ok(s)
    }

    /// Parses segments until the end of input or (inside filters) a comparison/closing paren.
    fn segments(&mut self, in_filter: bool) -> Result<Vec<Segment>, JsonPathError> {
        let mut segments = Vec::new();
        loop {
            if in_filter {
                self.skip_ws();
                if self.rest().is_empty() || self.rest().starts_with([')', '=', '!']) {
                    return Ok(segments);
                }
            } else if self.rest().is_empty() {
                return Ok(segments);
            }
            if self.eat(".") {
                if self.eat("*") {
                    segments.push(Segment::Wildcard);
                } else {
                    let ident = self.ident();
                    if ident.is_empty() {
                        return Err(self.err("expected a field name after '.'"));
                    }
                    segments.push(Segment::Field(ident));
                }
            } else if self.eat("[") {
                self.skip_ws();
                if self.eat("*") {
                    segments.push(Segment::Wildcard);
                } else if self.eat("?(") {
                    self.skip_ws();
                    if !self.eat("@") {
                        return Err(self.err("filters must start with @"));
                    }
                    let path = self.segments(true)?;
                    self.skip_ws();
                    let test = if self.eat("==") {
                        self.skip_ws();
                        Some((true, self.literal()?))
                    } else if self.eat("!=") {
                        self.skip_ws();
                        Some((false, self.literal()?))
                    } else {
                        None
                    };
                    self.skip_ws();
                    if !self.eat(")") {
                        return Err(self.err("expected ')' closing the filter"));
                    }
                    segments.push(Segment::Filter { path, test });
                } else if self.rest().starts_with(['\'', '"']) {
                    segments.push(Segment::Field(self.quoted()?));
                } else {
                    let len = self.rest().find(']').ok_or_else(|| self.err("expected ']'"))?;
                    let index = self.rest()[..len].trim().parse().map_err(|_| self.err("bad index"))?;
                    self.pos += len;
                    segments.push(Segment::Index(index));
                }
                self.skip_ws();
                if !self.eat("]") {
                    return Err(self.err("expected ']'"));
                }
            } else {
                return Err(self.err("unexpected character"));
            }
        }
    }

    fn literal(&mut self) -> Result<Value, JsonPathError> {
        if self.rest().starts_with(['\'', '"']) {
            return Ok(Value::String(self.quoted()?));
        }
        let len = self.rest().find([')', ' ']).unwrap_or(self.rest().len());
        let raw = &self.rest()[..len];
        let value = serde_json::from_str(raw).map_err(|_| self.err("bad literal in filter"))?;
        self.pos += len;
        Ok(value)
    }
}

impl JsonPath {
    /// Parses `.spec.x` or `{.spec.x}`.
    pub fn parse(path: &str) -> Result<Self, JsonPathError> {
        let trimmed = path.trim();
        let inner = trimmed.strip_prefix('{').and_then(|p| p.strip_suffix('}')).unwrap_or(trimmed);
        let inner = inner.strip_prefix('$').unwrap_or(inner);
        let mut parser = Parser { src: inner, pos: 0 };
        parser.segments(false).map(JsonPath)
    }

    /// All values the path selects.
    pub fn find<'v>(&self, root: &'v Value) -> Vec<&'v Value> {
        let mut current = vec![root];
        for segment in &self.0 {
            current = current.into_iter().flat_map(|v| step(segment, v)).collect();
        }
        current
    }
}

fn step<'v>(segment: &Segment, value: &'v Value) -> Vec<&'v Value> {
    match (segment, value) {
        (Segment::Field(name), Value::Object(map)) => map.get(name).into_iter().collect(),
        (Segment::Index(i), Value::Array(items)) => {
            let idx = if *i < 0 { items.len() as i64 + i } else { *i };
            usize::try_from(idx).ok().and_then(|i| items.get(i)).into_iter().collect()
        }
        (Segment::Wildcard, Value::Array(items)) => items.iter().collect(),
        (Segment::Wildcard, Value::Object(map)) => map.values().collect(),
        (Segment::Filter { path, test }, Value::Array(items)) => {
            let sub = JsonPath(path.clone());
            items
                .iter()
                .filter(|item| {
                    let found = sub.find(item);
                    match test {
                        None => !found.is_empty(),
                        Some((true, expected)) => found.contains(&expected),
                        Some((false, expected)) => found.iter().all(|v| *v != expected),
                    }
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn printer_column_paths() {
        let obj = json!({
            "spec": {"serviceRef": {"port": 80}, "list": [1, 2, 3]},
            "status": {"conditions": [
                {"type": "Synced", "status": "False"},
                {"type": "Ready", "status": "True"}
            ]}
        });
        let find = |p: &str| JsonPath::parse(p).unwrap().find(&obj).into_iter().cloned().collect::<Vec<_>>();
        assert_eq!(find(".spec.serviceRef.port"), vec![json!(80)]);
        assert_eq!(find(r#".status.conditions[?(@.type=="Ready")].status"#), vec![json!("True")]);
        assert_eq!(find(".status.conditions[?(@.type == 'Synced')].status"), vec![json!("False")]);
        assert_eq!(find("{.spec.list[-1]}"), vec![json!(3)]);
        assert_eq!(find(".spec.list[*]").len(), 3);
        assert_eq!(find(".spec['serviceRef'].port"), vec![json!(80)]);
        assert!(find(".spec.missing").is_empty());
        assert!(JsonPath::parse(".spec[").is_err());
    }
}
