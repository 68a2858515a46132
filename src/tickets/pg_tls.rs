//! TLS to the team database (issue 15): rustls through
//! tokio-postgres-rustls, with the libpq names for the settings.
//!
//! `sslmode` (URL parameter, else `PGSSLMODE`):
//!
//! - `verify-full`: TLS, the server's certificate chains to the CA file
//!   and names the host of the URL. **The default** for a host reached over
//!   the network.
//! - `verify-ca`: TLS, the chain is checked, the name is not.
//! - `require`: TLS; with a CA file the chain is checked (as libpq does),
//!   without one the server is not authenticated (a warning says so).
//! - `disable`: no TLS. **The default** when every host of the URL is a
//!   unix socket or a loopback address (127.0.0.0/8, ::1): that traffic
//!   never leaves the machine, and PostgreSQL has no TLS on sockets.
//! - `prefer`, `allow` (libpq's default and its sibling): refused. They
//!   fall back to plain text without a word when TLS fails, so an
//!   attacker in the path only has to break the handshake.
//!
//! The CA file: `sslrootcert=PATH` in the URL, else `PGSSLROOTCERT`, else
//! `~/.postgresql/root.crt` if it exists (libpq's places). Client
//! certificates (`sslcert`, `sslkey`) are not supported; a URL with them is
//! refused rather than connecting without them.

use super::{JournalError, Result};
use postgres::config::Host;
use postgres::{Client, Config};
use std::path::PathBuf;

/// What `sslmode` asks for (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub(crate) fn parse(v: &str) -> Result<SslMode> {
        Ok(match v {
            "disable" => SslMode::Disable,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "prefer" | "allow" => {
                return Err(JournalError::Invalid(format!(
                    "sslmode={v} falls back to an unencrypted connection without a word; \
                     use sslmode=verify-full (with sslrootcert=CA.pem), or sslmode=disable \
                     for a database on a trusted path"
                )))
            }
            other => {
                return Err(JournalError::Invalid(format!(
                    "sslmode={other:?} is not one of disable, require, verify-ca, verify-full"
                )))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// `%XX` escapes of a URL query value.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URL without the TLS parameters rust-postgres does not know, and
/// those parameters: (url, sslmode, sslrootcert).
pub(crate) fn split_tls_params(url: &str) -> Result<(String, Option<String>, Option<String>)> {
    let Some((head, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None, None));
    };
    let (mut mode, mut root) = (None, None);
    let mut kept = Vec::new();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "sslmode" => mode = Some(percent_decode(v)),
            "sslrootcert" => root = Some(percent_decode(v)),
            "sslcert" | "sslkey" | "sslpassword" | "sslcrl" => {
                return Err(JournalError::Invalid(format!(
                    "{k}= (client certificates) is not supported; authenticate with a password \
                     over verify-full TLS instead"
                )))
            }
            _ => kept.push(kv),
        }
    }
    let url = if kept.is_empty() {
        head.to_owned()
    } else {
        format!("{head}?{}", kept.join("&"))
    };
    Ok((url, mode, root))
}

/// The mode when the URL and `PGSSLMODE` say none (module documentation).
pub(crate) fn default_mode(config: &Config) -> SslMode {
    let local = |h: &Host| match h {
        #[cfg(unix)]
        Host::Unix(_) => true,
        Host::Tcp(name) => name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
    };
    if config.get_hosts().iter().all(local) {
        SslMode::Disable
    } else {
        SslMode::VerifyFull
    }
}

/// How this journal connects.
#[derive(Clone)]
pub(crate) enum Connector {
    Plain,
    #[cfg(not(target_os = "macos"))]
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

impl Connector {
    /// The connector for `mode`, with `config`'s own fallback switched off
    /// (rust-postgres' `prefer`).
    pub(crate) fn new(
        config: &mut Config,
        mode: SslMode,
        root: Option<String>,
    ) -> Result<Connector> {
        if mode == SslMode::Disable {
            config.ssl_mode(postgres::config::SslMode::Disable);
            return Ok(Connector::Plain);
        }
        config.ssl_mode(postgres::config::SslMode::Require);
        let root = root
            .filter(|r| !r.is_empty())
            .or_else(|| {
                std::env::var("PGSSLROOTCERT")
                    .ok()
                    .filter(|r| !r.is_empty())
            })
            .map(PathBuf::from)
            .or_else(|| {
                let p = PathBuf::from(std::env::var_os("HOME")?)
                    .join(".postgresql")
                    .join("root.crt");
                p.is_file().then_some(p)
            });
        Self::rustls(mode, root)
    }

    #[cfg(target_os = "macos")]
    fn rustls(mode: SslMode, _root: Option<PathBuf>) -> Result<Connector> {
        Err(JournalError::Invalid(format!(
            "sslmode={}: this build has no TLS for the database (macOS); use an SSH tunnel \
             and sslmode=disable",
            mode.as_str()
        )))
    }

    #[cfg(not(target_os = "macos"))]
    fn rustls(mode: SslMode, root: Option<PathBuf>) -> Result<Connector> {
        let config = rustls_config(mode, root)?;
        Ok(Connector::Rustls(
            tokio_postgres_rustls::MakeRustlsConnect::new(config),
        ))
    }

    pub(crate) fn connect(&self, config: &Config) -> Result<Client, postgres::Error> {
        match self {
            Connector::Plain => config.connect(postgres::NoTls),
            #[cfg(not(target_os = "macos"))]
            Connector::Rustls(m) => config.connect(m.clone()),
        }
    }
}

#[cfg(not(target_os = "macos"))]
fn rustls_config(mode: SslMode, root: Option<PathBuf>) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    use std::sync::Arc;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| JournalError::Invalid(format!("TLS: {e}")))?;
    let roots = match &root {
        None => None,
        Some(path) => {
            let mut store = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    JournalError::Invalid(format!(
                        "sslrootcert {}: not a PEM certificate file: {e}",
                        path.display()
                    ))
                })?;
            for c in certs {
                store.add(c).map_err(|e| {
                    JournalError::Invalid(format!("sslrootcert {}: {e}", path.display()))
                })?;
            }
            if store.is_empty() {
                return Err(JournalError::Invalid(format!(
                    "sslrootcert {}: no certificate in it",
                    path.display()
                )));
            }
            Some(Arc::new(store))
        }
    };
    let config = match (mode, roots) {
        (SslMode::VerifyFull, Some(roots)) => {
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        (SslMode::VerifyCa | SslMode::Require, Some(roots)) => {
            let inner =
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| JournalError::Invalid(format!("TLS: {e}")))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verify::ChainOnly(inner)))
                .with_no_client_auth()
        }
        (SslMode::Require, None) => {
            tracing::warn!(
                "sslmode=require without a CA file (sslrootcert=, PGSSLROOTCERT): the connection \
                 is encrypted but the database server is not authenticated; use verify-full"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verify::Unauthenticated(provider)))
                .with_no_client_auth()
        }
        (_, None) => {
            return Err(JournalError::Invalid(format!(
                "sslmode={} needs the CA certificate of the database server: sslrootcert=PATH \
                 in the URL, or PGSSLROOTCERT (or sslmode=disable on a trusted path)",
                mode.as_str()
            )))
        }
        (SslMode::Disable, Some(_)) => unreachable!("no TLS config for disable"),
    };
    Ok(config)
}

#[cfg(not(target_os = "macos"))]
mod verify {
    //! The two weaker modes: a checked chain without the name
    //! (`verify-ca`, `require` with a CA), and no authentication at all
    //! (`require` without a CA, as libpq). The handshake signatures are
    //! checked in both.
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};
    use std::sync::Arc;

    #[derive(Debug)]
    pub struct ChainOnly(pub Arc<WebPkiServerVerifier>);

    impl ServerCertVerifier for ChainOnly {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            // webpki checks the chain first and the name last: a name
            // error means the chain was good.
            match self
                .0
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            {
                Err(Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }

    #[derive(Debug)]
    pub struct Unauthenticated(pub Arc<CryptoProvider>);

    impl ServerCertVerifier for Unauthenticated {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_the_url() {
        let (u, m, r) = split_tls_params(
            "postgres://u@h/db?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(u, "postgres://u@h/db?application_name=x");
        assert_eq!(m.as_deref(), Some("verify-full"));
        assert_eq!(r.as_deref(), Some("/etc/ca.pem"));
        let (u, m, r) = split_tls_params("postgres://u@h/db").unwrap();
        assert_eq!((u.as_str(), m, r), ("postgres://u@h/db", None, None));
        assert!(split_tls_params("postgres://u@h/db?sslcert=/c.pem").is_err());
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%41%zz"), "A%zz");
    }

    #[test]
    fn modes() {
        for (v, m) in [
            ("disable", SslMode::Disable),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("verify-full", SslMode::VerifyFull),
        ] {
            assert_eq!(SslMode::parse(v).unwrap(), m);
        }
        for bad in ["prefer", "allow", "", "VERIFY-FULL", "verify_full"] {
            assert!(SslMode::parse(bad).is_err(), "{bad}");
        }
        let local = |url: &str| default_mode(&url.parse().unwrap());
        assert_eq!(local("postgres://u@127.0.0.1/db"), SslMode::Disable);
        assert_eq!(local("postgres://u@127.0.0.2:5433/db"), SslMode::Disable);
        assert_eq!(local("postgres://u@[::1]/db"), SslMode::Disable);
        assert_eq!(
            local("postgres://u@%2Fvar%2Frun%2Fpostgresql/db"),
            SslMode::Disable
        );
        assert_eq!(local("postgres://u@db.example/db"), SslMode::VerifyFull);
        assert_eq!(local("postgres://u@10.0.0.5/db"), SslMode::VerifyFull);
        // `localhost` is a name (resolved, maybe elsewhere): verified.
        assert_eq!(local("postgres://u@localhost/db"), SslMode::VerifyFull);
        assert_eq!(
            local("postgres://u@127.0.0.1,db.example/db"),
            SslMode::VerifyFull
        );
    }
}
