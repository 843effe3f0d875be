//! The serving certificate the TLS listener presents, swapped in place when it changes, and the two
//! ways of keeping it: self-managed (a Secret every replica shares, the CA patched into the
//! MutatingWebhookConfiguration) or files another tool renews (cert-manager's mounted Secret).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde_json::json;

use super::certs::{self, Material, Renewal};

/// How often every replica re-reads its certificate source (renewals by another replica or by
/// cert-manager are picked up within this).
const RECHECK: Duration = Duration::from_secs(60);
const RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("webhook certificate Secret {secret}: {source}")]
    Secret { secret: String, source: kube::Error },
    #[error("MutatingWebhookConfiguration {name}: {source}")]
    Configuration { name: String, source: kube::Error },
    #[error("webhook certificate: {0}")]
    Certificate(#[from] certs::CertError),
    #[error("webhook certificate {what}: {detail}")]
    Pem { what: String, detail: String },
}

impl TlsError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Secret { .. } => "WebhookSecretFailed",
            Self::Configuration { .. } => "WebhookConfigurationFailed",
            Self::Certificate(_) => "WebhookCertificateFailed",
            Self::Pem { .. } => "WebhookCertificateInvalid",
        }
    }
}

/// The certificate and key presented to the API server; `None` until the first one is loaded.
#[derive(Debug, Default)]
pub struct ServingCert {
    current: RwLock<Option<(String, Arc<CertifiedKey>)>>,
}

impl ServingCert {
    pub fn loaded(&self) -> bool {
        self.current.read().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Loads `cert_pem` (the chain) and `key_pem` unless they are what is served already.
    pub fn load(&self, cert_pem: &str, key_pem: &str) -> Result<(), TlsError> {
        let fingerprint = format!("{cert_pem}{key_pem}");
        if self.current.read().unwrap_or_else(|p| p.into_inner()).as_ref().is_some_and(|(f, _)| *f == fingerprint) {
            return Ok(());
        }
        let pem =
            |what: &str, e: &dyn std::fmt::Display| TlsError::Pem { what: what.to_owned(), detail: e.to_string() };
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem("certificate", &e))?;
        if chain.is_empty() {
            return Err(pem("certificate", &"no PEM certificate"));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| pem("key", &e))?;
        let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).map_err(|e| pem("key", &e))?;
        let certified = Arc::new(CertifiedKey::new(chain, signing));
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some((fingerprint, certified));
        tracing::info!("webhook serving certificate loaded");
        Ok(())
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).as_ref().map(|(_, key)| key.clone())
    }
}

/// Where the certificate comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// Kept by the agent in the Secret `secret` of `namespace`, for `hosts`; its CA patched into
    /// the MutatingWebhookConfiguration `configuration`.
    SelfManaged { namespace: String, secret: String, configuration: String, hosts: Vec<String> },
    /// `tls.crt` and `tls.key` in a directory another tool keeps (and injects the CA itself).
    Files(PathBuf),
}

/// Keeps `serving` loaded from `source` for ever, re-reading every minute.
pub async fn keep(client: Client, source: Source, serving: Arc<ServingCert>) {
    let mut failures = 0u32;
    loop {
        let result = match &source {
            Source::SelfManaged { namespace, secret, configuration, hosts } => {
                let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
                let configurations: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
                self_managed_pass(&secrets, secret, &configurations, configuration, hosts, &serving).await
            }
            Source::Files(dir) => load_files(dir, &serving),
        };
        let wait = match result {
            Ok(Pass::Done) => {
                failures = 0;
                RECHECK
            }
            // Another replica wrote the Secret between our read and write: take theirs at once.
            Ok(Pass::Raced) => Duration::ZERO,
            Err(error) => {
                failures = failures.saturating_add(1);
                tracing::warn!(%error, reason = error.reason(), "keeping the webhook certificate failed; retrying");
                (RETRY * failures.min(12)).min(RECHECK)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

enum Pass {
    Done,
    Raced,
}

fn load_files(dir: &std::path::Path, serving: &ServingCert) -> Result<Pass, TlsError> {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map_err(|e| TlsError::Pem { what: dir.join(name).display().to_string(), detail: e.to_string() })
    };
    serving.load(&read(certs::CERT)?, &read(certs::KEY)?)?;
    Ok(Pass::Done)
}

/// Read the Secret; create, renew or take it; make sure the API server trusts its CA; serve it.
/// Writes are conditional (create, or replace at the read resourceVersion), so replicas agree.
async fn self_managed_pass(
    secrets: &Api<Secret>,
    secret: &str,
    configurations: &Api<MutatingWebhookConfiguration>,
    configuration: &str,
    hosts: &[String],
    serving: &ServingCert,
) -> Result<Pass, TlsError> {
    let secret_error = |source| TlsError::Secret { secret: secret.to_owned(), source };
    let now = unix_now();
    let stored = secrets.get_opt(secret).await.map_err(secret_error)?;
    let material = stored.as_ref().and_then(|s| {
        let data = s.data.as_ref()?.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect();
        Material::from_parts(&data, s.metadata.annotations.as_ref()?)
    });
    let (material, write) = match material {
        None => (certs::fresh(hosts, now)?, true),
        Some(material) => match certs::renewal(&material, hosts, now) {
            Renewal::Keep => (material, false),
            kind => (certs::renew(&material, &kind, hosts, now)?, true),
        },
    };
    let webhook_configuration = configurations
        .get_opt(configuration)
        .await
        .map_err(|source| TlsError::Configuration { name: configuration.to_owned(), source })?;
    if write {
        // Owned by the webhook configuration when there is one: uninstalling it (helm uninstall,
        // kubectl delete -k) lets the garbage collector take the CA and key with it.
        let owner = webhook_configuration.as_ref().and_then(|c| {
            Some(OwnerReference {
                api_version: "admissionregistration.k8s.io/v1".to_owned(),
                kind: "MutatingWebhookConfiguration".to_owned(),
                name: c.metadata.name.clone()?,
                uid: c.metadata.uid.clone()?,
                ..OwnerReference::default()
            })
        });
        let object = Secret {
            metadata: ObjectMeta {
                name: Some(secret.to_owned()),
                owner_references: owner.map(|o| vec![o]),
                annotations: Some(material.annotations()),
                resource_version: stored.as_ref().and_then(|s| s.metadata.resource_version.clone()),
                labels: Some([("app.kubernetes.io/name".to_owned(), "tgb-agent".to_owned())].into()),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/tls".to_owned()),
            data: Some(material.data().into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
            ..Secret::default()
        };
        let written = match &stored {
            None => secrets.create(&PostParams::default(), &object).await,
            Some(_) => secrets.replace(secret, &PostParams::default(), &object).await,
        };
        match written {
            Ok(_) => tracing::info!(%secret, hosts = ?material.hosts, "webhook certificate written"),
            Err(kube::Error::Api(status)) if status.code == 409 => return Ok(Pass::Raced),
            Err(e) => return Err(secret_error(e)),
        }
    }
    if let Some(current) = webhook_configuration {
        trust(configurations, &current, &material.ca_bundle).await?;
    } else {
        tracing::debug!(configuration, "no MutatingWebhookConfiguration to trust the webhook's CA");
    }
    serving.load(&material.cert, &material.key)?;
    Ok(Pass::Done)
}

/// Patches `bundle` into every webhook of the configuration that does not carry it yet. (A missing
/// configuration is not an error: the install may reach the webhook some other way, or not yet.)
async fn trust(
    configurations: &Api<MutatingWebhookConfiguration>,
    current: &MutatingWebhookConfiguration,
    bundle: &str,
) -> Result<(), TlsError> {
    let name = current.metadata.name.as_deref().unwrap_or_default();
    let error = |source| TlsError::Configuration { name: name.to_owned(), source };
    let stale: Vec<String> = current
        .webhooks
        .iter()
        .flatten()
        .filter(|w| w.client_config.ca_bundle.as_ref().is_none_or(|b| b.0 != bundle.as_bytes()))
        .map(|w| w.name.clone())
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    let encoded = ByteString(bundle.as_bytes().to_vec());
    let webhooks: Vec<_> = stale.iter().map(|n| json!({"name": n, "clientConfig": {"caBundle": encoded}})).collect();
    let patch = json!({"webhooks": webhooks});
    configurations.patch(name, &PatchParams::default(), &Patch::Strategic(&patch)).await.map_err(error)?;
    tracing::info!(configuration = name, webhooks = ?stale, "webhook CA bundle patched");
    Ok(())
}

fn unix_now() -> i64 {
    i64::try_from(crate::clock::unix_now()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_material_loads_and_is_served() {
        let material = certs::fresh(&["127.0.0.1".to_owned()], unix_now()).expect("fresh");
        let serving = ServingCert::default();
        assert!(!serving.loaded());
        serving.load(&material.cert, &material.key).expect("load");
        assert!(serving.loaded());
        serving.load(&material.cert, &material.key).expect("same again is a no-op");
    }

    #[test]
    fn garbage_is_refused_and_the_served_certificate_kept() {
        let material = certs::fresh(&["127.0.0.1".to_owned()], unix_now()).expect("fresh");
        let serving = ServingCert::default();
        serving.load(&material.cert, &material.key).expect("load");
        let error = serving.load("not a certificate", &material.key).expect_err("garbage");
        assert_eq!(error.reason(), "WebhookCertificateInvalid");
        assert!(serving.loaded());
    }
}
