//! The webhook's serving certificate, self-managed: a CA (10 years) whose certificate the API
//! server trusts through the webhook configuration's `caBundle`, and a serving certificate (1 year)
//! it signs. Both live in one Secret that every replica reads, so they all serve the same one.
//! Renewal keeps the CA (no `caBundle` change) until the CA itself nears its end; a new CA is
//! trusted beside the old one, so certificates of either verify while replicas catch up.

use std::collections::BTreeMap;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

const DAY: i64 = 86_400;
const CA_LIFETIME: i64 = 3650 * DAY;
/// A new CA this long before the old one ends; both are trusted meanwhile.
const CA_RENEW_BEFORE: i64 = 365 * DAY;
const SERVING_LIFETIME: i64 = 365 * DAY;
/// Well before expiry: a third of the lifetime, so months of failed renewals still leave time.
const SERVING_RENEW_BEFORE: i64 = SERVING_LIFETIME / 3;
/// Tolerate clocks of other machines (the API server's) running behind ours.
const BACKDATE: i64 = 3600;
const CA_NAME: &str = "tgb-agent webhook CA";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating a key or certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0} is not a valid time")]
    Time(i64),
}

/// What the Secret holds, as PEM text, with the end of each certificate's validity (Unix seconds,
/// kept beside the PEM in the Secret's annotations so renewal needs no certificate parser).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Material {
    /// The certificates the API server should trust: the current CA first, then the previous one
    /// while it may still have signed a certificate some replica serves.
    pub ca_bundle: String,
    pub ca_key: String,
    pub ca_not_after: i64,
    pub cert: String,
    pub key: String,
    pub cert_not_after: i64,
    /// The names and addresses the serving certificate is valid for.
    pub hosts: Vec<String>,
}

/// What to do with the stored material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Renewal {
    Keep,
    /// A new serving certificate from the same CA (expiring, or names missing).
    ServingCertificate,
    /// A new CA (trusted beside the old one) and a serving certificate from it.
    Authority,
}

/// Pure: whether `stored` still serves `hosts` at `now`, and if not, what to renew.
pub fn renewal(stored: &Material, hosts: &[String], now: i64) -> Renewal {
    if stored.ca_not_after - now < CA_RENEW_BEFORE {
        Renewal::Authority
    } else if stored.cert_not_after - now < SERVING_RENEW_BEFORE || hosts.iter().any(|h| !stored.hosts.contains(h)) {
        Renewal::ServingCertificate
    } else {
        Renewal::Keep
    }
}

/// A fresh CA and serving certificate for `hosts`.
pub fn fresh(hosts: &[String], now: i64) -> Result<Material, CertError> {
    let ca_key = KeyPair::generate()?;
    let ca_not_after = now + CA_LIFETIME;
    let ca_cert = ca_params(now, ca_not_after)?.self_signed(&ca_key)?;
    serve(ca_cert.pem(), ca_key, ca_not_after, hosts, now)
}

/// `stored` renewed as [`renewal`] says (names only ever added: replicas started with different
/// names then agree on the union instead of taking turns).
pub fn renew(stored: &Material, kind: &Renewal, hosts: &[String], now: i64) -> Result<Material, CertError> {
    let mut all_hosts = stored.hosts.clone();
    all_hosts.extend(hosts.iter().filter(|h| !stored.hosts.contains(h)).cloned());
    match kind {
        Renewal::Keep => Ok(stored.clone()),
        Renewal::ServingCertificate => {
            let ca_key = KeyPair::from_pem(&stored.ca_key)?;
            let mut material = serve(stored.ca_bundle.clone(), ca_key, stored.ca_not_after, &all_hosts, now)?;
            material.ca_bundle = stored.ca_bundle.clone();
            Ok(material)
        }
        Renewal::Authority => {
            let mut material = fresh(&all_hosts, now)?;
            if let Some(previous) = first_pem(&stored.ca_bundle) {
                material.ca_bundle.push_str(previous);
            }
            Ok(material)
        }
    }
}

/// A serving certificate for `hosts`, signed by the CA whose key is `ca_key`. The issuer is
/// rebuilt from the same parameters the CA was made with (name and key identifier derive from
/// them and the key), so no parser of the stored CA certificate is needed.
fn serve(
    ca_bundle: String,
    ca_key: KeyPair,
    ca_not_after: i64,
    hosts: &[String],
    now: i64,
) -> Result<Material, CertError> {
    let issuer = Issuer::new(ca_params(now, ca_not_after)?, ca_key);
    let key = KeyPair::generate()?;
    let cert_not_after = (now + SERVING_LIFETIME).min(ca_not_after);
    let mut params = CertificateParams::default();
    params.not_before = time(now - BACKDATE)?;
    params.not_after = time(cert_not_after)?;
    params.distinguished_name = name(hosts.first().map_or("tgb-agent webhook", String::as_str));
    params.subject_alt_names = hosts.iter().map(|h| san(h)).collect::<Result<_, _>>()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Material {
        ca_bundle,
        ca_key: issuer.key().serialize_pem(),
        ca_not_after,
        cert: cert.pem(),
        key: key.serialize_pem(),
        cert_not_after,
        hosts: hosts.to_vec(),
    })
}

fn ca_params(now: i64, not_after: i64) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    params.not_before = time(now - BACKDATE)?;
    params.not_after = time(not_after)?;
    params.distinguished_name = name(CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn san(host: &str) -> Result<SanType, CertError> {
    Ok(match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(host.try_into()?),
    })
}

fn time(unix: i64) -> Result<time::OffsetDateTime, CertError> {
    time::OffsetDateTime::from_unix_timestamp(unix).map_err(|_| CertError::Time(unix))
}

/// The first PEM block of a bundle (the current CA).
fn first_pem(bundle: &str) -> Option<&str> {
    const END: &str = "-----END CERTIFICATE-----";
    bundle.find(END).map(|i| &bundle[..i + END.len()]).map(|s| s.trim_start())
}

/// Secret keys and annotations.
pub const CA_BUNDLE: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const CERT: &str = "tls.crt";
pub const KEY: &str = "tls.key";
pub const CA_NOT_AFTER: &str = "tgb-agent.elbv2.k8s.aws/ca-not-after";
pub const CERT_NOT_AFTER: &str = "tgb-agent.elbv2.k8s.aws/cert-not-after";
pub const CERT_HOSTS: &str = "tgb-agent.elbv2.k8s.aws/cert-hosts";

impl Material {
    /// From a Secret's data and annotations; `None` when anything is missing or malformed (the
    /// caller then makes a fresh one).
    pub fn from_parts(data: &BTreeMap<String, Vec<u8>>, annotations: &BTreeMap<String, String>) -> Option<Self> {
        let text = |k: &str| data.get(k).and_then(|v| String::from_utf8(v.clone()).ok()).filter(|s| !s.is_empty());
        let number = |k: &str| annotations.get(k).and_then(|v| v.parse::<i64>().ok());
        Some(Self {
            ca_bundle: text(CA_BUNDLE)?,
            ca_key: text(CA_KEY)?,
            ca_not_after: number(CA_NOT_AFTER)?,
            cert: text(CERT)?,
            key: text(KEY)?,
            cert_not_after: number(CERT_NOT_AFTER)?,
            hosts: annotations.get(CERT_HOSTS)?.split(',').filter(|h| !h.is_empty()).map(str::to_owned).collect(),
        })
    }

    pub fn data(&self) -> BTreeMap<String, Vec<u8>> {
        [(CA_BUNDLE, &self.ca_bundle), (CA_KEY, &self.ca_key), (CERT, &self.cert), (KEY, &self.key)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.clone().into_bytes()))
            .collect()
    }

    pub fn annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (CA_NOT_AFTER.to_owned(), self.ca_not_after.to_string()),
            (CERT_NOT_AFTER.to_owned(), self.cert_not_after.to_string()),
            (CERT_HOSTS.to_owned(), self.hosts.join(",")),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn hosts(names: &[&str]) -> Vec<String> {
        names.iter().map(|h| (*h).to_owned()).collect()
    }

    #[test]
    fn fresh_material_round_trips_through_a_secret_and_needs_nothing() {
        let wanted = hosts(&["tgb-agent-webhook.tgb-system.svc", "127.0.0.1"]);
        let material = fresh(&wanted, NOW).expect("fresh");
        assert!(material.ca_bundle.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(Material::from_parts(&material.data(), &material.annotations()), Some(material.clone()));
        assert_eq!(renewal(&material, &wanted, NOW), Renewal::Keep);
        assert_eq!(renewal(&material, &wanted, NOW + 200 * DAY), Renewal::Keep);
    }

    #[test]
    fn the_serving_certificate_is_renewed_a_third_before_its_end_from_the_same_ca() {
        let wanted = hosts(&["tgb-agent-webhook.tgb-system.svc"]);
        let material = fresh(&wanted, NOW).expect("fresh");
        let later = NOW + 250 * DAY;
        assert_eq!(renewal(&material, &wanted, later), Renewal::ServingCertificate);
        let renewed = renew(&material, &Renewal::ServingCertificate, &wanted, later).expect("renew");
        assert_eq!(renewed.ca_bundle, material.ca_bundle, "the caBundle does not change");
        assert_eq!(renewed.ca_key, material.ca_key);
        assert_ne!(renewed.cert, material.cert);
        assert_eq!(renewed.cert_not_after, later + SERVING_LIFETIME);
        assert_eq!(renewal(&renewed, &wanted, later), Renewal::Keep);
    }

    #[test]
    fn a_missing_name_adds_it_and_keeps_the_others() {
        let material = fresh(&hosts(&["a.tgb-system.svc"]), NOW).expect("fresh");
        let other = hosts(&["127.0.0.1"]);
        assert_eq!(renewal(&material, &other, NOW), Renewal::ServingCertificate);
        let renewed = renew(&material, &Renewal::ServingCertificate, &other, NOW).expect("renew");
        assert_eq!(renewed.hosts, hosts(&["a.tgb-system.svc", "127.0.0.1"]));
        assert_eq!(renewal(&renewed, &hosts(&["a.tgb-system.svc"]), NOW), Renewal::Keep, "no taking turns");
    }

    #[test]
    fn a_new_ca_is_trusted_beside_the_old_one() {
        let wanted = hosts(&["a.tgb-system.svc"]);
        let material = fresh(&wanted, NOW).expect("fresh");
        let late = NOW + CA_LIFETIME - 100 * DAY;
        assert_eq!(renewal(&material, &wanted, late), Renewal::Authority);
        let renewed = renew(&material, &Renewal::Authority, &wanted, late).expect("renew");
        assert_eq!(renewed.ca_bundle.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(renewed.ca_bundle.ends_with(material.ca_bundle.trim()), "old CA kept second");
        assert_eq!(renewed.ca_not_after, late + CA_LIFETIME);
        let again = renew(&renewed, &Renewal::Authority, &wanted, late + CA_LIFETIME - 10 * DAY).expect("renew");
        assert_eq!(again.ca_bundle.matches("BEGIN CERTIFICATE").count(), 2, "at most two CAs");
    }

    #[test]
    fn the_serving_certificate_never_outlives_its_ca() {
        let wanted = hosts(&["a.tgb-system.svc"]);
        let material = fresh(&wanted, NOW).expect("fresh");
        let late = NOW + CA_LIFETIME - 100 * DAY;
        let renewed = renew(&material, &Renewal::ServingCertificate, &wanted, late).expect("renew");
        assert_eq!(renewed.cert_not_after, material.ca_not_after);
    }

    #[test]
    fn incomplete_secrets_are_not_material() {
        let material = fresh(&hosts(&["a"]), NOW).expect("fresh");
        let mut data = material.data();
        data.remove(CA_KEY);
        assert_eq!(Material::from_parts(&data, &material.annotations()), None);
        let mut annotations = material.annotations();
        annotations.insert(CERT_NOT_AFTER.to_owned(), "soon".to_owned());
        assert_eq!(Material::from_parts(&material.data(), &annotations), None);
    }
}
