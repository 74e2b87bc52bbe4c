//! TLS client settings shared by the MQTT sink and webhooks: rustls with the ring provider,
//! trust anchors from a PEM CA in the node's config or else the system store
//! (`/etc/ssl/certs`), and an optional client certificate.
//!
//! It only turns PEM text into rustls values; connecting is rumqttc's and ureq's job. It
//! deliberately has no "skip verification" switch: a CA that is not in the system store is
//! given as PEM instead.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustls::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The crypto provider of every TLS connection the node makes.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM text (at least one).
pub fn pem_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading the PEM certificates of the {what}"))?;
    if certs.is_empty() {
        bail!("the {what} holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
    }
    Ok(certs)
}

/// The trust anchors: the certificates of `ca` if given, else the system's.
pub fn roots(ca: Option<&str>) -> Result<Vec<CertificateDer<'static>>> {
    if let Some(pem) = ca {
        return pem_certs(pem, "CA");
    }
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!(error = %e, "skipping part of the system certificate store");
    }
    if found.certs.is_empty() {
        bail!(
            "no system CA certificates found (install the ca-certificates package, or give the \
             server's CA as PEM in the node's config)"
        );
    }
    Ok(found.certs)
}

/// A rustls client configuration trusting `ca` (or the system roots), presenting
/// `client = (certificate chain PEM, private key PEM)` if given.
pub fn client_config(ca: Option<&str>, client: Option<(&str, &str)>) -> Result<ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(roots(ca)?);
    if added == 0 {
        bail!("none of the CA certificates could be used as a trust anchor");
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?
        .with_root_certificates(store);
    Ok(match client {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => {
            let chain = pem_certs(chain, "client certificate")?;
            // The key's own parse error could quote key material: say only what failed.
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|_| anyhow::anyhow!("the client key is not a PEM private key"))?;
            builder
                .with_client_auth_cert(chain, key)
                .context("the client certificate does not match its key")?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pem_is_a_clear_error() {
        let e = format!("{:#}", client_config(Some("not a cert"), None).unwrap_err());
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = format!(
            "{:#}",
            pem_certs("-----BEGIN CERTIFICATE-----\n!!\n", "CA").unwrap_err()
        );
        assert!(e.contains("CA"), "{e}");
    }
}
