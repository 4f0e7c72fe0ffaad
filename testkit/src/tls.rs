//! The TLS client configuration every client of the kit uses: rustls with the ring provider (reqwest
//! is built without a provider of its own, and no aws-lc is linked), trusting only the certificates
//! given, usually the one ldash serves.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// A client configuration trusting `trusted` (nothing when empty: for cleartext clients, which
/// reqwest still builds with a TLS configuration), asking for `alpn`.
pub fn client_config(trusted: &[CertificateDer<'static>], alpn: &[&[u8]]) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in trusted {
        roots
            .add(cert.clone())
            .map_err(|e| format!("untrusted certificate: {e}"))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The certificates in a PEM file (ldash's `certs/cert.pem`).
pub fn certificates_in(pem: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(pem)
        .map_err(|e| format!("{}: {e}", pem.display()))?
        .map(|cert| cert.map_err(|e| format!("{}: {e}", pem.display())))
        .collect()
}
