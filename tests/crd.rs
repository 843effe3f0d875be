//! The committed CRD must be exactly what the Rust types generate.

#[test]
fn committed_crd_matches_the_rust_types() {
    let generated = tgb_agent::api::crd_yaml().expect("CRD renders");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/targetgroupbindings.elbv2.k8s.aws.yaml");
    let committed = std::fs::read_to_string(path).expect("crds/targetgroupbindings.elbv2.k8s.aws.yaml exists");
    assert!(
        generated == committed,
        "crds/ is stale: regenerate it with `cargo run -- crd > crds/targetgroupbindings.elbv2.k8s.aws.yaml`"
    );
}

#[test]
fn the_mission_manifest_deserializes_unchanged() {
    let manifest = include_str!("fixtures/mission-targetgroupbinding.yaml");
    let tgb: tgb_agent::api::TargetGroupBinding = serde_yaml::from_str(manifest).expect("manifest parses");
    assert_eq!(tgb.spec.service_ref.name, "service-name");
    assert_eq!(tgb.spec.target_type, Some(tgb_agent::api::TargetType::Ip));
    let rule = &tgb.spec.networking.expect("networking").ingress[0];
    assert_eq!(rule.from[0].security_group.as_ref().map(|g| g.group_id.as_str()), Some("sg-0123456789abcdef0"));
    assert_eq!(rule.ports[0].protocol, Some(tgb_agent::api::NetworkingProtocol::TCP));
    assert_eq!(rule.ports[0].port, None);
}

fn crd_json() -> serde_json::Value {
    serde_json::to_value(tgb_agent::api::crd()).expect("CRD serializes")
}

#[test]
fn v1alpha1_is_served_not_stored_with_the_v1beta1_schema() {
    let crd = crd_json();
    let versions = crd.pointer("/spec/versions").and_then(|v| v.as_array()).expect("versions");
    let names: Vec<(&str, bool, bool)> = versions
        .iter()
        .map(|v| (v["name"].as_str().unwrap_or_default(), v["served"] == true, v["storage"] == true))
        .collect();
    assert_eq!(names, vec![("v1alpha1", true, false), ("v1beta1", true, true)]);
    assert_eq!(versions[0]["schema"], versions[1]["schema"]);
    assert_eq!(versions[0]["subresources"], versions[1]["subresources"]);
    assert!(crd.pointer("/spec/conversion").is_none(), "no conversion webhook: strategy None");
}

#[test]
fn the_schema_has_the_references_shape() {
    let crd = crd_json();
    let schema = crd.pointer("/spec/versions/1/schema/openAPIV3Schema").expect("schema");
    // A deliberate difference: without `spec` one object would break every list of bindings.
    assert_eq!(schema.get("required"), Some(&serde_json::json!(["spec"])));
    assert_eq!(schema.pointer("/properties/spec/required"), Some(&serde_json::json!(["serviceRef"])));
    let selector = schema.pointer("/properties/spec/properties/nodeSelector").expect("nodeSelector");
    assert_eq!(selector["x-kubernetes-map-type"], "atomic");
    assert_eq!(selector.pointer("/properties/matchExpressions/x-kubernetes-list-type"), Some(&"atomic".into()));
    assert_eq!(
        selector.pointer("/properties/matchExpressions/items/properties/values/x-kubernetes-list-type"),
        Some(&"atomic".into())
    );
    let condition = schema.pointer("/properties/status/properties/conditions/items/properties").expect("conditions");
    assert_eq!(condition.pointer("/status/enum"), Some(&serde_json::json!(["True", "False", "Unknown"])));
    assert_eq!(condition.pointer("/reason/minLength"), Some(&serde_json::json!(1)));
    assert_eq!(condition.pointer("/type/maxLength"), Some(&serde_json::json!(316)));
    assert_eq!(condition.pointer("/message/maxLength"), Some(&serde_json::json!(32768)));
}

#[test]
fn identity_fields_are_immutable_through_cel_transition_rules() {
    let crd = crd_json();
    let rules = crd
        .pointer("/spec/versions/1/schema/openAPIV3Schema/properties/spec/x-kubernetes-validations")
        .and_then(|r| r.as_array())
        .expect("spec has validation rules");
    for field in ["targetGroupARN", "targetGroupName", "targetType", "ipAddressType"] {
        let rule = rules
            .iter()
            .find(|r| r["fieldPath"] == format!(".{field}"))
            .unwrap_or_else(|| panic!("a rule for {field}"));
        let text = rule["rule"].as_str().unwrap_or_default();
        assert!(text.contains(&format!("oldSelf.{field}")), "{field}: a transition rule, got {text}");
        assert!(rule["message"].as_str().unwrap_or_default().starts_with(&format!("{field} is immutable")));
    }
}

#[test]
fn ports_are_bounded_at_admission() {
    let crd = crd_json();
    let spec = crd.pointer("/spec/versions/1/schema/openAPIV3Schema/properties/spec/properties").expect("spec");
    for pointer in
        ["/serviceRef/properties/port", "/networking/properties/ingress/items/properties/ports/items/properties/port"]
    {
        let port = spec.pointer(pointer).expect(pointer);
        assert_eq!((port["minimum"].as_f64(), port["maximum"].as_f64()), (Some(1.0), Some(65535.0)), "{pointer}");
        assert_eq!(port["x-kubernetes-int-or-string"], true, "{pointer}: names stay allowed");
    }
    let cidr = spec
        .pointer("/networking/properties/ingress/items/properties/from/items/properties/ipBlock/properties/cidr")
        .expect("cidr");
    assert!(cidr["pattern"].as_str().is_some_and(|p| p.starts_with('^') && p.ends_with('$')));
}

#[test]
fn int_or_string_ports_list_both_types_as_the_reference_does() {
    let rendered: serde_json::Value =
        serde_yaml::from_str(&tgb_agent::api::crd_yaml().expect("CRD renders")).expect("YAML parses");
    let port = rendered
        .pointer("/spec/versions/1/schema/openAPIV3Schema/properties/spec/properties/serviceRef/properties/port")
        .expect("serviceRef.port");
    assert_eq!(port["anyOf"], serde_json::json!([{"type": "integer"}, {"type": "string"}]));
    assert_eq!(
        (port["minimum"].as_i64(), port["maximum"].as_i64()),
        (Some(1), Some(65535)),
        "bounds render as integers"
    );
}

/// A regular expression in the subset the CRD's patterns use: literals, escaped punctuation,
/// character classes with ranges, groups, alternation and `?`/`*`/`+`/`{n}`/`{n,}`/`{n,m}`.
/// Anything else panics, so that a pattern written with more syntax is noticed here instead of
/// being misread. Matching explores every way through the expression, so it answers exactly
/// whether the whole string is in the expression's language (as the API server's Go `regexp`
/// does for a pattern anchored with `^…$`).
mod pattern {
    pub enum Node {
        /// One character out of these inclusive ranges (a literal is a one-character range).
        Class(Vec<(char, char)>),
        /// Alternatives, each a sequence.
        Group(Vec<Vec<Node>>),
        Repeat(Box<Node>, u32, Option<u32>),
    }

    pub struct Regex(Vec<Vec<Node>>);

    impl Regex {
        /// Parses `^…$`: the pattern must be anchored at both ends.
        pub fn anchored(pattern: &str) -> Regex {
            let inner = pattern
                .strip_prefix('^')
                .and_then(|p| p.strip_suffix('$'))
                .unwrap_or_else(|| panic!("not anchored with ^…$: {pattern}"));
            let mut parser = Parser { chars: inner.chars().collect(), at: 0 };
            let alternatives = parser.alternation();
            assert_eq!(parser.at, parser.chars.len(), "unbalanced `)` in {pattern}");
            Regex(alternatives)
        }

        pub fn is_match(&self, text: &str) -> bool {
            let text: Vec<char> = text.chars().collect();
            self.0.iter().any(|alternative| sequence(alternative, &text, 0, &|end| end == text.len()))
        }
    }

    struct Parser {
        chars: Vec<char>,
        at: usize,
    }

    impl Parser {
        fn peek(&self) -> Option<char> {
            self.chars.get(self.at).copied()
        }

        fn next(&mut self) -> char {
            let c = self.peek().expect("pattern ends early");
            self.at += 1;
            c
        }

        fn eat(&mut self, c: char) -> bool {
            let found = self.peek() == Some(c);
            self.at += usize::from(found);
            found
        }

        fn alternation(&mut self) -> Vec<Vec<Node>> {
            let mut alternatives = vec![self.sequence()];
            while self.eat('|') {
                alternatives.push(self.sequence());
            }
            alternatives
        }

        fn sequence(&mut self) -> Vec<Node> {
            let mut nodes = Vec::new();
            while !matches!(self.peek(), None | Some('|' | ')')) {
                let atom = self.atom();
                nodes.push(self.quantified(atom));
            }
            nodes
        }

        fn escaped(&mut self) -> char {
            let c = self.next();
            assert!(!c.is_ascii_alphanumeric(), "unsupported escape \\{c}");
            c
        }

        fn atom(&mut self) -> Node {
            match self.next() {
                '(' => {
                    if self.eat('?') {
                        assert!(self.eat(':'), "only (?:…) groups are supported");
                    }
                    let alternatives = self.alternation();
                    assert!(self.eat(')'), "unclosed group");
                    Node::Group(alternatives)
                }
                '[' => {
                    assert!(self.peek() != Some('^'), "negated classes are not supported");
                    let mut ranges = Vec::new();
                    while !(self.eat(']')) {
                        let first = match self.next() {
                            '\\' => self.escaped(),
                            c => c,
                        };
                        let last = if self.peek() == Some('-') && self.chars.get(self.at + 1) != Some(&']') {
                            self.at += 1;
                            match self.next() {
                                '\\' => self.escaped(),
                                c => c,
                            }
                        } else {
                            first
                        };
                        ranges.push((first, last));
                    }
                    Node::Class(ranges)
                }
                '\\' => {
                    let c = self.escaped();
                    Node::Class(vec![(c, c)])
                }
                c @ ('.' | '^' | '$' | '*' | '+' | '?' | '{' | '}' | ']') => panic!("unsupported `{c}` in a pattern"),
                c => Node::Class(vec![(c, c)]),
            }
        }

        fn number(&mut self) -> Option<u32> {
            let start = self.at;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.at += 1;
            }
            (self.at > start).then(|| self.chars[start..self.at].iter().collect::<String>().parse().unwrap())
        }

        fn quantified(&mut self, atom: Node) -> Node {
            let (min, max) = match self.peek() {
                Some('?') => (0, Some(1)),
                Some('*') => (0, None),
                Some('+') => (1, None),
                Some('{') => {
                    self.at += 1;
                    let min = self.number().expect("{n…} needs n");
                    let max = if self.eat(',') { self.number() } else { Some(min) };
                    assert_eq!(self.peek(), Some('}'), "malformed {{n,m}}");
                    (min, max)
                }
                _ => return atom,
            };
            self.at += 1;
            assert!(!matches!(self.peek(), Some('?' | '*' | '+' | '{')), "lazy or stacked quantifiers");
            Node::Repeat(Box::new(atom), min, max)
        }
    }

    /// Whether `nodes` match `text` from `at` on in some way after which `rest` accepts.
    fn sequence(nodes: &[Node], text: &[char], at: usize, rest: &dyn Fn(usize) -> bool) -> bool {
        match nodes.split_first() {
            None => rest(at),
            Some((first, others)) => node(first, text, at, &|next| sequence(others, text, next, rest)),
        }
    }

    fn node(node: &Node, text: &[char], at: usize, rest: &dyn Fn(usize) -> bool) -> bool {
        match node {
            Node::Class(ranges) => {
                text.get(at).is_some_and(|c| ranges.iter().any(|(first, last)| (first..=last).contains(&c)))
                    && rest(at + 1)
            }
            Node::Group(alternatives) => alternatives.iter().any(|a| sequence(a, text, at, rest)),
            Node::Repeat(inner, min, max) => repeat(inner, *min, *max, text, at, rest),
        }
    }

    fn repeat(
        inner: &Node,
        min: u32,
        max: Option<u32>,
        text: &[char],
        at: usize,
        rest: &dyn Fn(usize) -> bool,
    ) -> bool {
        if min == 0 && rest(at) {
            return true;
        }
        if max == Some(0) {
            return false;
        }
        node(inner, text, at, &|next| {
            // An empty iteration past the minimum adds nothing and would loop forever.
            (next > at || min > 0) && repeat(inner, min.saturating_sub(1), max.map(|m| m - 1), text, next, rest)
        })
    }
}

fn cidr_pattern() -> &'static str {
    static PATTERN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let pointer = "/spec/versions/1/schema/openAPIV3Schema/properties/spec/properties/networking/properties/ingress/items/properties/from/items/properties/ipBlock/properties/cidr/pattern";
        crd_json().pointer(pointer).and_then(|p| p.as_str()).expect("the CIDR pattern").to_owned()
    });
    &PATTERN
}

fn cidr_regex() -> &'static pattern::Regex {
    static REGEX: std::sync::LazyLock<pattern::Regex> =
        std::sync::LazyLock::new(|| pattern::Regex::anchored(cidr_pattern()));
    &REGEX
}

/// Whether `text` is `address/prefix` by the standard library's address parsers, with a prefix
/// in range and written without leading zeros.
fn is_cidr(text: &str) -> bool {
    let Some((addr, prefix)) = text.split_once('/') else { return false };
    let prefix_ok = |max: u8| {
        !prefix.is_empty()
            && prefix.bytes().all(|b| b.is_ascii_digit())
            && (prefix == "0" || !prefix.starts_with('0'))
            && prefix.parse::<u8>().is_ok_and(|p| p <= max)
    };
    match (addr.parse::<std::net::Ipv4Addr>(), addr.parse::<std::net::Ipv6Addr>()) {
        (Ok(_), _) => prefix_ok(32),
        (_, Ok(_)) => prefix_ok(128),
        _ => false,
    }
}

/// Valid CIDRs: any IPv4 address and prefix, or an IPv6 address with runs of zero groups (so that
/// `::` compression shows up in every position), written compressed or in full.
fn valid_cidrs() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let v4 = (any::<u32>(), 0u8..=32).prop_map(|(a, p)| format!("{}/{p}", std::net::Ipv4Addr::from(a)));
    let group = prop_oneof![1 => Just(0u16), 2 => any::<u16>()];
    let v6 = (proptest::array::uniform8(group), any::<bool>(), 0u8..=128).prop_map(|(groups, compress, p)| {
        let text = if compress {
            std::net::Ipv6Addr::from(groups).to_string()
        } else {
            groups.iter().map(|g| format!("{g:x}")).collect::<Vec<_>>().join(":")
        };
        format!("{text}/{p}")
    });
    prop_oneof![v4, v6]
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 3000, ..Default::default() })]

    /// The CIDR pattern of the CRD against the standard library's parsers, on valid CIDRs, on
    /// one-character corruptions of them (IPv4-embedded IPv6, which the pattern leaves out, aside)
    /// and on their address with any prefix length, in range or not, with a leading zero or not.
    #[test]
    fn the_cidr_pattern_accepts_exactly_the_cidrs(
        cidr in valid_cidrs(),
        kind in 0u8..3,
        position in proptest::prelude::any::<proptest::sample::Index>(),
        replacement in proptest::sample::select(vec!['0', '1', '3', '9', 'a', 'f', 'g', 'z', ':', '.', '/']),
        prefix in 0u16..=300,
        leading_zero in proptest::prelude::any::<bool>(),
    ) {
        let pattern = cidr_regex();
        proptest::prop_assert!(is_cidr(&cidr), "{cidr}");
        proptest::prop_assert!(pattern.is_match(&cidr), "a valid CIDR refused: {cidr}");
        let mut corrupted: Vec<char> = cidr.chars().collect();
        let at = position.index(corrupted.len());
        match kind {
            0 => { corrupted.remove(at); }
            1 => corrupted.insert(at, replacement),
            _ => corrupted[at] = replacement,
        }
        let corrupted: String = corrupted.into_iter().collect();
        let embedded_v4 = corrupted.split_once('/').is_some_and(|(a, _)| a.contains(':') && a.contains('.'));
        if !embedded_v4 {
            proptest::prop_assert_eq!(pattern.is_match(&corrupted), is_cidr(&corrupted), "{}", corrupted);
        }
        let (address, _) = cidr.split_once('/').expect("a valid CIDR has a prefix");
        let other_prefix = format!("{address}/{}{prefix}", if leading_zero { "0" } else { "" });
        proptest::prop_assert_eq!(pattern.is_match(&other_prefix), is_cidr(&other_prefix), "{}", other_prefix);
    }

    /// The other way round: strings drawn from the pattern itself are all CIDRs (and the matcher
    /// above accepts them, which checks the matcher).
    #[test]
    fn every_string_the_cidr_pattern_describes_is_a_cidr(
        text in proptest::string::string_regex(
            cidr_pattern().trim_start_matches('^').trim_end_matches('$')
        ).expect("proptest reads the pattern")
    ) {
        proptest::prop_assert!(is_cidr(&text), "{text}");
        proptest::prop_assert!(cidr_regex().is_match(&text), "{text}");
    }
}

#[test]
fn the_pattern_matcher_reads_the_syntax_it_claims() {
    let r = pattern::Regex::anchored(r"^(a|bc){2,3}[x-z0-9\-]?\.d+$");
    for yes in ["aa.d", "abc.d", "bcbca.dd", "aay.d", "aa-.d", "aaa5.ddd"] {
        assert!(r.is_match(yes), "{yes}");
    }
    for no in ["a.d", "aaaa.d", "aa.", "aaxy.d", "aa.d ", "aa.dx", "bcbcbcbc.d", ""] {
        assert!(!r.is_match(no), "{no}");
    }
    assert!(std::panic::catch_unwind(|| pattern::Regex::anchored(r"^\d$")).is_err(), "escapes of letters panic");
    assert!(std::panic::catch_unwind(|| pattern::Regex::anchored("a")).is_err(), "unanchored panics");
}
