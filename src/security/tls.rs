//! The TLS side of VeNCrypt: the server certificate (the operator's own
//! PEM files, or a self-signed one generated once and kept 0600 in the
//! config directory) and a rustls acceptor for it.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no certificate in the PEM file")]
    NoCertificate { path: PathBuf },
    #[error("{path}: cannot read a private key: {detail}")]
    BadKey { path: PathBuf, detail: String },
    #[error("{path}: cannot read the certificates: {detail}")]
    BadCertificate { path: PathBuf, detail: String },
    #[error("the certificate and key do not fit together: {0}")]
    Config(#[from] rustls::Error),
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("no config directory: set XDG_CONFIG_HOME or HOME, or pass --tls-cert and --tls-key")]
    NoConfigDir,
}

/// The server's certificate and what viewers need to pin it.
pub struct TlsIdentity {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// SHA-256 of the leaf certificate's DER form, "AB:CD:..." (as
    /// `openssl x509 -noout -fingerprint -sha256` prints it).
    pub fingerprint: String,
    /// The certificate file (a viewer's CA file for a self-signed one).
    pub cert_path: PathBuf,
    /// True when the certificate was generated on this start.
    pub generated: bool,
}

/// `$XDG_CONFIG_HOME/ticketvnc`, else (Windows) `%APPDATA%\ticketvnc`, else
/// `$HOME/.config/ticketvnc`.
pub fn default_config_dir() -> Result<PathBuf, TlsError> {
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    // Windows: %APPDATA% (HOME is rarely set there, and Wine passes the
    // Unix one, which is not an absolute Windows path).
    #[cfg(windows)]
    let xdg = xdg.or_else(|| {
        std::env::var_os("APPDATA")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    });
    let base = match xdg {
        Some(p) => p,
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .ok_or(TlsError::NoConfigDir)?
            .join(".config"),
    };
    Ok(base.join("ticketvnc"))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The operator's certificate chain and key from PEM files.
pub fn load(cert: &Path, key: &Path) -> Result<TlsIdentity, TlsError> {
    check_key_mode(key)?;
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_error(cert, e, true))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert, e, true))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e, false))?;
    identity(certs, key_der, cert.to_path_buf(), false)
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error, cert: bool) -> TlsError {
    if let rustls::pki_types::pem::Error::Io(source) = e {
        return TlsError::Io {
            path: path.to_path_buf(),
            source,
        };
    }
    let detail = format!("{e:?}");
    if cert {
        TlsError::BadCertificate {
            path: path.to_path_buf(),
            detail,
        }
    } else {
        TlsError::BadKey {
            path: path.to_path_buf(),
            detail,
        }
    }
}

/// The self-signed certificate in `dir` (`tls-cert.pem`, `tls-key.pem`),
/// generated on first use for this host's names.
pub fn load_or_generate(dir: &Path) -> Result<TlsIdentity, TlsError> {
    let cert = dir.join("tls-cert.pem");
    let key = dir.join("tls-key.pem");
    if cert.exists() && key.exists() {
        return load(&cert, &key);
    }
    create_private_dir(dir)?;
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Some(h) = hostname() {
        if !names.contains(&h) {
            names.push(h);
        }
    }
    let mut params = rcgen::CertificateParams::new(names)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!(
            "ticketvnc on {}",
            hostname().unwrap_or_else(|| "this host".into())
        ),
    );
    let key_pair = rcgen::KeyPair::generate()?;
    let c = params.self_signed(&key_pair)?;
    // Key first: a crash in between leaves no certificate without its key.
    write_private(&key, key_pair.serialize_pem().as_bytes())?;
    write_private(&cert, c.pem().as_bytes())?;
    let key_der =
        PrivateKeyDer::try_from(key_pair.serialize_der()).map_err(|e| TlsError::BadKey {
            path: key.clone(),
            detail: e.to_string(),
        })?;
    identity(vec![c.der().clone()], key_der, cert, true)
}

fn identity(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_path: PathBuf,
    generated: bool,
) -> Result<TlsIdentity, TlsError> {
    let fingerprint = fingerprint(&certs[0]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    // No session resumption: a VNC session is one long connection, and the
    // TLS 1.3 tickets rustls would send after the handshake can arrive
    // while TigerVNC's non-blocking GnuTLS handshake is still deciding it
    // is done, which stalls it (seen under load).
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(TlsIdentity {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        fingerprint,
        cert_path,
        generated,
    })
}

/// "AB:CD:…" SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    let d = Sha256::digest(der);
    d.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn hostname() -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        rustix::system::uname()
            .nodename()
            .to_str()
            .ok()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }
    #[cfg(not(target_os = "linux"))]
    {
        std::env::var("COMPUTERNAME").ok().filter(|s| !s.is_empty())
    }
}

fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(io(dir))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut f = o.open(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// A private key others can read is tightened to 0600, with a warning.
fn check_key_mode(key: &Path) -> Result<(), TlsError> {
    #[cfg(not(unix))]
    let _ = key; // Windows: ACLs, not mode bits
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(key).map_err(io(key))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %key.display(),
                mode = format!("{mode:o}"),
                "TLS key was readable by others; tightening it to 0600"
            );
            std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600))
                .map_err(io(key))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_loads_the_same_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("conf");
        let a = load_or_generate(&d).unwrap();
        assert!(a.generated);
        let b = load_or_generate(&d).unwrap();
        assert!(!b.generated);
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint.len(), 32 * 3 - 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&d), 0o700);
            assert_eq!(mode(&d.join("tls-key.pem")), 0o600);
            assert_eq!(mode(&d.join("tls-cert.pem")), 0o600);
        }
    }

    #[cfg(unix)]
    #[test]
    fn loose_key_is_tightened() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        load_or_generate(dir.path()).unwrap();
        let key = dir.path().join("tls-key.pem");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        load_or_generate(dir.path()).unwrap();
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn garbage_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        std::fs::write(&cert, "not a certificate").unwrap();
        std::fs::write(&key, "not a key").unwrap();
        let e = load(&cert, &key).err().unwrap().to_string();
        assert!(e.contains("c.pem"), "{e}");
        let e = load(&dir.path().join("missing.pem"), &key)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("missing.pem"), "{e}");
    }
}
