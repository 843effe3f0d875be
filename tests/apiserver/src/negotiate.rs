//! Response representation negotiated from the `Accept` header and `includeObject` parameter.

/// What `Table` rows carry in `object` (`includeObject` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Representation {
    /// The objects themselves.
    Full,
    /// `meta.k8s.io/<version>` `Table`.
    Table { api_version: String, include: IncludeObject },
    /// `meta.k8s.io/<version>` `PartialObjectMetadata` / `PartialObjectMetadataList`.
    Metadata { api_version: String },
}

/// Picks the first acceptable media type of the `Accept` header that the double can produce.
pub fn negotiate(accept: Option<&str>, include_object: Option<&str>) -> Representation {
    let Some(accept) = accept else {
        return Representation::Full;
    };
    for media in accept.split(',') {
        let mut parts = media.split(';').map(str::trim);
        let mime = parts.next().unwrap_or_default();
        if !matches!(mime, "application/json" | "*/*" | "application/*") {
            continue;
        }
        let (mut as_, mut g, mut v) = (None, None, None);
        for param in parts {
            match param.split_once('=') {
                Some(("as", x)) => as_ = Some(x),
                Some(("g", x)) => g = Some(x),
                Some(("v", x)) => v = Some(x),
                _ => {}
            }
        }
        let meta_version = match (g, v) {
            (Some("meta.k8s.io"), Some(v @ ("v1" | "v1beta1"))) => Some(format!("meta.k8s.io/{v}")),
            _ => None,
        };
        match (as_, meta_version) {
            (None, _) => return Representation::Full,
            (Some("Table"), Some(api_version)) => {
                return Representation::Table { api_version, include: IncludeObject::parse(include_object) };
            }
            (Some("PartialObjectMetadata" | "PartialObjectMetadataList"), Some(api_version)) => {
                return Representation::Metadata { api_version };
            }
            _ => continue,
        }
    }
    Representation::Full
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_table_accept() {
        let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(
            negotiate(Some(accept), None),
            Representation::Table { api_version: "meta.k8s.io/v1".into(), include: IncludeObject::Metadata }
        );
        assert_eq!(negotiate(Some("application/json"), None), Representation::Full);
        assert_eq!(
            negotiate(Some("application/vnd.kubernetes.protobuf, application/json"), None),
            Representation::Full
        );
        assert_eq!(negotiate(None, None), Representation::Full);
    }
}
