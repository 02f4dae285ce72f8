//! The SDK's HTTP client as keyfed wants it: hyper with rustls (aws-lc), the host's trust store
//! (rustls-native-certs: `/etc/ssl/certs`, `SSL_CERT_FILE`, `SSL_CERT_DIR`) plus the optional
//! `ca_file`, proxies from `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` / `NO_PROXY` (upper or
//! lower case; `aws-smithy-http-client` supports them through hyper-util's matcher, but only
//! when asked to, so it is configured explicitly here) except for a loopback endpoint, which is
//! never reached through a proxy (as in `keyfed_core::http`), the connect and read timeouts, and
//! response bodies capped at [`MAX_RESPONSE_BYTES`]: the SDK would buffer any size.
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
    HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector, http_client_fn,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_types::body::SdkBody;
use keyfed_core::http::{HttpSettings, HttpSetupError, MAX_RESPONSE_BYTES};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// Builds the HTTP client for one STS endpoint; `loopback` when that endpoint is on this host
/// (an `endpoint_url` to `localhost`, 127.0.0.0/8 or `::1`), which no proxy may see.
pub(crate) fn build(
    settings: &HttpSettings,
    loopback: bool,
) -> Result<SharedHttpClient, HttpSetupError> {
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
    let proxy = if loopback {
        ProxyConfig::disabled()
    } else {
        ProxyConfig::from_env()
    };
    let connector = SharedHttpConnector::new(Capped {
        inner: SharedHttpConnector::new(
            Connector::builder()
                .connector_settings(timeouts)
                .proxy_config(proxy)
                .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
                .tls_context(tls)
                .build(),
        ),
    });
    Ok(http_client_fn(move |_, _| connector.clone()))
}

/// STS's answer was larger than keyfed reads.
#[derive(Debug, thiserror::Error)]
#[error("STS answered with more than 1 MiB")]
pub(crate) struct BodyTooLarge;

/// A connector whose response bodies fail with [`BodyTooLarge`] past [`MAX_RESPONSE_BYTES`].
#[derive(Debug)]
struct Capped {
    inner: SharedHttpConnector,
}

impl HttpConnector for Capped {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let call = self.inner.call(request);
        HttpConnectorFuture::new(async move {
            let response = call.await?;
            Ok(response.map(|body| {
                SdkBody::from_body_1_x(CappedBody {
                    inner: body,
                    left: MAX_RESPONSE_BYTES,
                })
            }))
        })
    }
}

/// A body that gives at most `left` more bytes, then an error; one whose announced length
/// (Content-Length) is already larger fails before anything is read.
struct CappedBody {
    inner: SdkBody,
    left: usize,
}

impl http_body::Body for CappedBody {
    type Data = <SdkBody as http_body::Body>::Data;
    type Error = aws_smithy_types::body::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if self.inner.size_hint().lower() > self.left as u64 {
            return std::task::Poll::Ready(Some(Err(BodyTooLarge.into())));
        }
        let frame = std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame {
            let len = frame.data_ref().map_or(0, |data| data.len());
            match self.left.checked_sub(len) {
                Some(left) => self.left = left,
                None => return std::task::Poll::Ready(Some(Err(BodyTooLarge.into()))),
            }
        }
        std::task::Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
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
