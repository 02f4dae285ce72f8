//! The SDK's HTTP client as keyfed wants it: hyper with rustls (aws-lc), the host's trust store
//! (rustls-native-certs: `/etc/ssl/certs`, `SSL_CERT_FILE`, `SSL_CERT_DIR`) plus the optional
//! `ca_file`, proxies from `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` / `NO_PROXY` (upper or
//! lower case; `aws-smithy-http-client` supports them through hyper-util's matcher, but only
//! when asked to, so it is configured explicitly here), and the connect and read timeouts.
//! One connector is built per client and shared by every call, so connections are pooled.
//!
//! The SDK's rustls connector panics on a CA bundle it cannot parse, so `ca_file` is parsed
//! here first; and in debug builds it asserts that the host has at least one system root
//! certificate, so debug builds need the host's CA store (`ca-certificates`) installed.

use aws_sdk_sts::config::SharedHttpClient;
use aws_smithy_http_client::Connector;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore};
use aws_smithy_runtime_api::client::http::{
    HttpConnectorSettings, SharedHttpConnector, http_client_fn,
};
use keyfed_core::http::{HttpSettings, HttpSetupError};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// Builds the HTTP client for one STS endpoint.
pub(crate) fn build(settings: &HttpSettings) -> Result<SharedHttpClient, HttpSetupError> {
    let mut trust = TrustStore::default().with_native_roots(true);
    if let Some(path) = &settings.ca_file {
        let pem = std::fs::read(path).map_err(|source| HttpSetupError::CaFileRead {
            path: path.clone(),
            source,
        })?;
        check_ca_bundle(&pem).map_err(|detail| HttpSetupError::CaFileInvalid {
            path: path.clone(),
            detail,
        })?;
        trust = trust.with_pem_certificate(pem);
    }
    let tls = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| HttpSetupError::CaFileInvalid {
            path: settings.ca_file.clone().unwrap_or_default(),
            detail: Some(e.to_string()),
        })?;
    let timeouts = HttpConnectorSettings::builder()
        .connect_timeout(settings.connect_timeout)
        .read_timeout(settings.timeout)
        .build();
    let connector = SharedHttpConnector::new(
        Connector::builder()
            .connector_settings(timeouts)
            .proxy_config(ProxyConfig::from_env())
            .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(tls)
            .build(),
    );
    Ok(http_client_fn(move |_, _| connector.clone()))
}

/// Checks a PEM bundle the way the SDK's rustls connector will read it — it panics on a bad
/// certificate instead of failing, so a bad `ca_file` must be refused here.
fn check_ca_bundle(pem: &[u8]) -> Result<(), Option<String>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Some(e.to_string()))?;
    if certs.is_empty() {
        return Err(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| Some(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ca_bundles_are_refused_not_panicked_on() {
        assert_eq!(check_ca_bundle(b""), Err(None));
        assert_eq!(check_ca_bundle(b"just text"), Err(None));
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(check_ca_bundle(garbage), Err(Some(_))));
    }
}
