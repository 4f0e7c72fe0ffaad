//! TLS identities and configs: the certificate from --cert/--key, or a self-signed development
//! certificate generated once into the certificate folder; the TCP TLS config (ALPN h2, http/1.1).
//! Only the ring crypto provider is used, passed explicitly.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// Why the TLS identity could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The development certificate could not be generated or saved.
    #[error("cannot create the development certificate in {dir}: {reason}")]
    Generate {
        /// The certificate folder.
        dir: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the certificate or key.
    #[error("the certificate or key is not usable: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A certificate chain with its key, and the SPKI pin Chromium needs for a self-signed one.
#[derive(Debug)]
pub struct Identity {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    spki_sha256: String,
    /// Where the certificate came from, for the start-up message.
    pub source: PathBuf,
}

impl Identity {
    /// Loads --cert/--key, or the development certificate in `dir` (generating it on first start).
    pub fn load(cert: Option<&Path>, key: Option<&Path>, dir: &Path) -> Result<Identity, TlsError> {
        match (cert, key) {
            (Some(cert), Some(key)) => Self::from_files(cert, key),
            _ => {
                let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
                if !cert.exists() || !key.exists() {
                    generate(dir, &cert, &key)?;
                }
                Self::from_files(&cert, &key)
            }
        }
    }

    fn from_files(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        let pem = |path: &Path, reason: String| TlsError::Pem {
            path: path.to_owned(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(cert)
            .map_err(|e| pem(cert, e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem(cert, e.to_string()))?;
        let Some(leaf) = certs.first() else {
            return Err(pem(cert, "no certificate in the file".into()));
        };
        let spki_sha256 = spki_pin(leaf).ok_or_else(|| pem(cert, "the certificate does not parse".into()))?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem(key, e.to_string()))?;
        Ok(Identity {
            certs,
            key,
            spki_sha256,
            source: cert.to_owned(),
        })
    }

    /// base64(SHA-256(SubjectPublicKeyInfo)), the value of Chromium's
    /// `--ignore-certificate-errors-spki-list`.
    pub fn spki_sha256(&self) -> &str {
        &self.spki_sha256
    }

    /// The certificate chain.
    pub fn certs(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// The TLS config of the TCP listener: HTTP/2 and HTTP/1.1 by ALPN.
    pub fn tcp_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.certs.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The TLS config of the QUIC listener: TLS 1.3 only, ALPN exactly h3.
    pub fn quic_config(&self) -> Result<ServerConfig, TlsError> {
        let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(self.certs.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"h3".to_vec()];
        // No 0-RTT (see transport::quic).
        config.max_early_data_size = 0;
        Ok(config)
    }
}

fn spki_pin(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let digest = ring::digest::digest(&ring::digest::SHA256, parsed.tbs_certificate.subject_pki.raw);
    Some(base64::engine::general_purpose::STANDARD.encode(digest.as_ref()))
}

fn generate(dir: &Path, cert: &Path, key: &Path) -> Result<(), TlsError> {
    let fail = |reason: String| TlsError::Generate {
        dir: dir.to_owned(),
        reason,
    };
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    let certified = rcgen::generate_simple_self_signed(names).map_err(|e| fail(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    write_private(key, certified.signing_key.serialize_pem().as_bytes()).map_err(|e| fail(e.to_string()))?;
    std::fs::write(cert, certified.cert.pem()).map_err(|e| fail(e.to_string()))?;
    tracing::info!(dir = %dir.display(), "generated a self-signed development certificate for localhost");
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}
