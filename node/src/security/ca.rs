//! A development certificate authority: `ringkv cert init` and
//! `ringkv cert issue node|client NAME`.
//!
//! `init` writes `ca.crt` and `ca.key` into a directory. `issue` signs a
//! certificate with them and writes `NAME.crt` and `NAME.key` beside them.
//! A node certificate serves TLS (its names: the node's name, `localhost`,
//! `127.0.0.1`, [`PEER_NAME`] and any `--host` given) and is also the
//! node's client certificate toward its peers; a client certificate only
//! authenticates a client. Keys are written owner-only. For production,
//! bring certificates from your own CA with the same organizational units
//! (identity.rs).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use super::identity::{CertKind, CLIENT_UNIT, NODE_UNIT};
use crate::error::{Error, Result};

/// The name every node certificate carries, and that nodes verify each
/// other against: peers dial addresses that may change (a pod's IP), so
/// they check that the other side holds a node certificate of the cluster
/// CA, not that it owns the address.
pub const PEER_NAME: &str = "ringkv-node";

/// Where `init` and `issue` put their files.
pub struct CaFiles {
    dir: PathBuf,
}

fn cert_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Config(format!("{what}: {e}"))
}

impl CaFiles {
    /// The CA in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `dir/ca.crt`.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// `dir/NAME.crt` and `dir/NAME.key`.
    pub fn pair(&self, name: &str) -> (PathBuf, PathBuf) {
        (self.dir.join(format!("{name}.crt")), self.dir.join(format!("{name}.key")))
    }

    /// Makes a new CA. Refuses to overwrite one, since every certificate it
    /// signed would stop being trusted.
    pub fn init(&self) -> Result<()> {
        let (cert_path, key_path) = self.pair("ca");
        if cert_path.exists() || key_path.exists() {
            return Err(Error::Config(format!(
                "a CA already exists in {}; remove ca.crt and ca.key first to start over (every certificate it signed stops working)",
                self.dir.display()
            )));
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| cert_error(&format!("cannot create {}", self.dir.display()), e))?;
        let key = KeyPair::generate().map_err(|e| cert_error("cannot generate the CA key", e))?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| cert_error("CA parameters", e))?;
        params.distinguished_name.push(DnType::CommonName, "ringkv development CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).map_err(|e| cert_error("cannot sign the CA", e))?;
        write_public(&cert_path, cert.pem().as_bytes())?;
        super::write_private(&key_path, key.serialize_pem().as_bytes())
    }

    /// Issues a certificate for `name`, signed by the CA in this directory.
    /// `hosts` are extra DNS names or IP addresses a node serves under.
    pub fn issue(&self, kind: CertKind, name: &str, hosts: &[String]) -> Result<(PathBuf, PathBuf)> {
        if name.is_empty() || name == "ca" || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(Error::Config(format!("{name:?} cannot name a certificate: use letters, digits, '-' or '_', and not \"ca\"")));
        }
        let (ca_cert, ca_key) = self.pair("ca");
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| {
                Error::Config(format!("cannot read {}: {e}; run `ringkv cert init --dir {}` first", p.display(), self.dir.display()))
            })
        };
        let ca_key = KeyPair::from_pem(&read(&ca_key)?).map_err(|e| cert_error("the CA key", e))?;
        let issuer = Issuer::from_ca_cert_pem(&read(&ca_cert)?, ca_key).map_err(|e| cert_error("the CA certificate", e))?;
        let mut names = hosts.to_vec();
        let unit = match kind {
            CertKind::Node => {
                names.extend([name.to_string(), PEER_NAME.into(), "localhost".into(), "127.0.0.1".into()]);
                NODE_UNIT
            }
            CertKind::Client => CLIENT_UNIT,
        };
        names.sort();
        names.dedup();
        let mut params = CertificateParams::new(names).map_err(|e| cert_error(&format!("names for {name:?}"), e))?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.distinguished_name.push(DnType::OrganizationalUnitName, unit);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = match kind {
            CertKind::Node => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            CertKind::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        let key = KeyPair::generate().map_err(|e| cert_error("cannot generate a key", e))?;
        let cert = params.signed_by(&key, &issuer).map_err(|e| cert_error(&format!("cannot sign {name:?}"), e))?;
        let (cert_path, key_path) = self.pair(name);
        write_public(&cert_path, cert.pem().as_bytes())?;
        super::write_private(&key_path, key.serialize_pem().as_bytes())?;
        Ok((cert_path, key_path))
    }
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| cert_error(&format!("cannot write {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::super::identity::{of_der, CertIdentity};
    use super::*;

    fn der(pem_path: &Path) -> Vec<u8> {
        let text = std::fs::read(pem_path).unwrap();
        x509_parser::pem::parse_x509_pem(&text).unwrap().1.contents
    }

    #[test]
    fn issued_certificates_say_who_holds_them_and_init_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CaFiles::new(dir.path());
        ca.init().unwrap();
        assert!(ca.init().unwrap_err().to_string().contains("already exists"));
        let (node, _) = ca.issue(CertKind::Node, "n1", &["10.0.0.1".into()]).unwrap();
        let (client, key) = ca.issue(CertKind::Client, "alice", &[]).unwrap();
        assert_eq!(of_der(&der(&node)), Some(CertIdentity { kind: CertKind::Node, name: "n1".into() }));
        assert_eq!(of_der(&der(&client)), Some(CertIdentity { kind: CertKind::Client, name: "alice".into() }));
        assert!(ca.issue(CertKind::Client, "ca", &[]).is_err(), "would overwrite the CA");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(key).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let missing = CaFiles::new(dir.path().join("none")).issue(CertKind::Node, "n2", &[]).unwrap_err().to_string();
        assert!(missing.contains("ringkv cert init"), "{missing}");
    }
}
