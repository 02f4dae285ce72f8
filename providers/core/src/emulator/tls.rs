//! A throwaway certificate authority for emulators served over TLS, so that tests exercise the
//! same certificate verification (with an extra `ca_file`) that production uses.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// A CA generated in memory, and a server certificate it signed for loopback names.
pub struct TestCa {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    server: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// A new CA and a server certificate for `localhost`, `127.0.0.1` and `::1`.
    pub fn new() -> Result<Self, String> {
        let ca_key = KeyPair::generate().map_err(|e| e.to_string())?;
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "keyfed emulator test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(|e| e.to_string())?;
        let issuer = Issuer::new(ca_params, ca_key);
        let server = server_config(&issuer, &["localhost", "127.0.0.1", "::1"])?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            issuer,
            server,
        })
    }

    /// A server configuration with a certificate this CA signed for `names` only (tests: a
    /// certificate for another name than the one the client asked for).
    pub fn server_config_for(&self, names: &[&str]) -> Result<Arc<rustls::ServerConfig>, String> {
        server_config(&self.issuer, names)
    }

    /// The CA certificate, PEM-encoded, for a client's `ca_file`.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.server)
    }
}

/// A server configuration with a new key and a certificate `issuer` signed for `names`.
fn server_config(
    issuer: &Issuer<'static, KeyPair>,
    names: &[&str],
) -> Result<Arc<rustls::ServerConfig>, String> {
    let server_key = KeyPair::generate().map_err(|e| e.to_string())?;
    let names: Vec<String> = names.iter().map(|&n| n.to_owned()).collect();
    let mut params = CertificateParams::new(names).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "keyfed emulator");
    let server_cert = params
        .signed_by(&server_key, issuer)
        .map_err(|e| e.to_string())?;
    let key = rustls::pki_types::PrivateKeyDer::try_from(server_key.serialize_der())
        .map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![server_cert.der().clone()], key)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(server))
}
