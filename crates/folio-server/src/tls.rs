//! TLS for client connections, with rustls.
//!
//! The server's certificate chain and private key come from one PEM file
//! (`--tlsCertificateKeyFile`, as mongod's). With `--tlsCAFile`, clients are asked for a
//! certificate that must chain to one of those authorities; `--tlsAllowConnectionsWithoutCertificates`
//! makes presenting one optional, and `--tlsAllowInvalidCertificates` accepts certificates that do
//! not verify (their signatures over the handshake are still checked, so the client must hold the
//! certificate's key). Encrypted private keys are refused (`--tlsCertificateKeyFilePassword`):
//! rustls reads only unencrypted keys.
//!
//! One port serves TLS and plaintext: the connection task peeks at the first bytes of the
//! connection. A TLS handshake record starts `0x16 0x03`; a wire message starts with its
//! little-endian length, and a first message of exactly `0x??0316` bytes (790 bytes or more,
//! never a driver's opening `hello`) is the only plaintext that looks the same. Under
//! `requireTLS` plaintext is closed.
//!
//! A verified client certificate's subject, written as MongoDB writes it (RFC 2253: the last
//! relative name first, `CN=client,OU=apps,O=Example`), becomes the connection's
//! `client_certificate_subject`, the user name MONGODB-X509 authenticates as in `$external`.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use folio::Connection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::Io;

/// `--tlsMode` other than `disabled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS and plaintext are both accepted (the server prefers plaintext for its own
    /// connections, of which Folio makes none).
    Allow,
    /// TLS and plaintext are both accepted.
    Prefer,
    /// Plaintext connections are closed.
    Require,
}

impl TlsMode {
    /// The mode of a `--tlsMode` value; `None` for `disabled`.
    pub fn parse(s: &str) -> Result<Option<TlsMode>, String> {
        match s {
            "disabled" => Ok(None),
            "allowTLS" => Ok(Some(TlsMode::Allow)),
            "preferTLS" => Ok(Some(TlsMode::Prefer)),
            "requireTLS" => Ok(Some(TlsMode::Require)),
            other => Err(format!(
                "--tlsMode must be one of disabled, allowTLS, preferTLS, requireTLS, not {other:?}"
            )),
        }
    }
}

/// TLS settings of the server.
#[derive(Clone)]
pub struct TlsConfig {
    /// Whether plaintext is still served.
    pub mode: TlsMode,
    acceptor: TlsAcceptor,
    /// Whether client certificates are verified against a CA (only then does a certificate's
    /// subject name a user).
    verifies_clients: bool,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig").field("mode", &self.mode).finish_non_exhaustive()
    }
}

/// Where client certificates are concerned.
#[derive(Clone, Debug, Default)]
pub struct ClientCertificates<'a> {
    /// `--tlsCAFile`: ask clients for certificates chaining to these authorities.
    pub ca_file: Option<&'a Path>,
    /// `--tlsAllowConnectionsWithoutCertificates`.
    pub allow_without: bool,
    /// `--tlsAllowInvalidCertificates`.
    pub allow_invalid: bool,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn read(path: &Path, what: &str) -> io::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| invalid(format!("cannot read {what} {}: {e}", path.display())))
}

fn certificates(pem: &[u8], path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("bad certificate in {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(format!("no certificate in {}", path.display())));
    }
    Ok(certs)
}

impl TlsConfig {
    /// Loads the server's certificate and key and sets up client certificate checks.
    pub fn load(
        mode: TlsMode,
        certificate_key_file: &Path,
        clients: &ClientCertificates<'_>,
    ) -> io::Result<TlsConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pem = read(certificate_key_file, "--tlsCertificateKeyFile")?;
        let chain = certificates(&pem, certificate_key_file)?;
        if String::from_utf8_lossy(&pem).contains("ENCRYPTED PRIVATE KEY") {
            return Err(invalid(format!(
                "the private key in {} is encrypted, which is not supported",
                certificate_key_file.display()
            )));
        }
        let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
            invalid(format!("no private key in {}: {e}", certificate_key_file.display()))
        })?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(e.to_string()))?;
        let builder = match clients.ca_file {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in certificates(&read(ca, "--tlsCAFile")?, ca)? {
                    roots.add(cert).map_err(|e| {
                        invalid(format!("bad CA certificate in {}: {e}", ca.display()))
                    })?;
                }
                let verifier: Arc<dyn ClientCertVerifier> = if clients.allow_invalid {
                    Arc::new(AnyClientCertificate {
                        provider: provider.clone(),
                        mandatory: !clients.allow_without,
                    })
                } else {
                    let b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                    let b = if clients.allow_without { b.allow_unauthenticated() } else { b };
                    b.build().map_err(|e| invalid(e.to_string()))?
                };
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(chain, key)
            .map_err(|e| invalid(format!("{}: {e}", certificate_key_file.display())))?;
        Ok(TlsConfig {
            mode,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            verifies_clients: clients.ca_file.is_some() && !clients.allow_invalid,
        })
    }
}

/// Accepts any client certificate (`--tlsAllowInvalidCertificates`) while still checking the
/// handshake signatures made with its key.
#[derive(Debug)]
struct AnyClientCertificate {
    provider: Arc<rustls::crypto::CryptoProvider>,
    mandatory: bool,
}

impl ClientCertVerifier for AnyClientCertificate {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// Decides between TLS and plaintext for a new connection and completes the TLS handshake.
pub(crate) async fn accept(
    config: &TlsConfig,
    stream: TcpStream,
    conn: &mut Connection,
) -> io::Result<Box<dyn Io>> {
    let mut first = [0u8; 2];
    let mut n = stream.peek(&mut first).await?;
    if n == 0 {
        // Closed before sending anything: the serve loop sees the end of the stream.
        return Ok(Box::new(stream));
    }
    if n == 1 && first[0] == TLS_HANDSHAKE {
        // The record's version byte is on its way.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        n = stream.peek(&mut first).await?;
    }
    let looks_like_tls = first[0] == TLS_HANDSHAKE && (n < 2 || first[1] == 0x03);
    if !looks_like_tls {
        if config.mode == TlsMode::Require {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "plaintext connection refused: the server requires TLS (--tlsMode requireTLS)",
            ));
        }
        return Ok(Box::new(stream));
    }
    let tls = config.acceptor.accept(stream).await?;
    if config.verifies_clients {
        conn.client_certificate_subject =
            tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| subject(c));
    }
    Ok(Box::new(tls))
}

/// A certificate's subject in RFC 2253 form, as MongoDB names X.509 users.
fn subject(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let mut parts = Vec::new();
    for rdn in parsed.subject().iter().collect::<Vec<_>>().into_iter().rev() {
        let mut attrs = Vec::new();
        for attr in rdn.iter() {
            let oid = attr.attr_type().to_id_string();
            let name = match oid.as_str() {
                "2.5.4.3" => "CN",
                "2.5.4.6" => "C",
                "2.5.4.7" => "L",
                "2.5.4.8" => "ST",
                "2.5.4.9" => "STREET",
                "2.5.4.10" => "O",
                "2.5.4.11" => "OU",
                "0.9.2342.19200300.100.1.25" => "DC",
                "0.9.2342.19200300.100.1.1" => "UID",
                "1.2.840.113549.1.9.1" => "emailAddress",
                other => other,
            };
            let value = attr.as_str().ok()?;
            attrs.push(format!("{name}={}", escape_rfc2253(value)));
        }
        parts.push(attrs.join("+"));
    }
    Some(parts.join(","))
}

/// Escapes an attribute value for RFC 2253.
fn escape_rfc2253(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.char_indices() {
        let edge = (i == 0 && (c == ' ' || c == '#')) || (i + c.len_utf8() == v.len() && c == ' ');
        if edge || matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape_rfc2253;

    #[test]
    fn rfc2253_escapes_specials_and_edge_spaces() {
        assert_eq!(escape_rfc2253("a,b+c=d"), "a\\,b\\+c\\=d");
        assert_eq!(escape_rfc2253("#a"), "\\#a");
        assert_eq!(escape_rfc2253(" #x é "), "\\ #x é\\ ");
        assert_eq!(escape_rfc2253("é"), "é");
    }
}
