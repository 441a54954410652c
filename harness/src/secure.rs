//! Secured local clusters: a CA, a node certificate per node, and a token
//! file with an `admin` principal, made once in a directory and reused.
//!
//! `ringkv cluster --secure DIR` and `jepsen-lite --secure` start their
//! nodes with [`SecureFiles::serve_args`] (TLS with mutual TLS between
//! peers, and tokens) and talk to them with [`SecureFiles::credentials`].
//! The admin token is kept in `DIR/admin.token` (owner-only), since the
//! token file holds only its hash.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ringkv_client::Credentials;
use ringkv_node::security::ca::CaFiles;
use ringkv_node::security::identity::CertKind;
use ringkv_node::security::tokens::TokenFile;
use ringkv_node::security::write_private;

/// The files of a secured local cluster.
pub struct SecureFiles {
    /// Their directory.
    pub dir: PathBuf,
    /// The `admin` principal's token.
    pub admin_token: String,
}

impl SecureFiles {
    /// Makes whatever is missing in `dir` for nodes `n1`.. at `addrs`
    /// (`ip:port`, n1 first): the CA (`ringkv cert init`), their
    /// certificates (naming their IPs, which clients verify), and
    /// `tokens.toml` with an `admin` principal.
    pub fn prepare(dir: &Path, addrs: &[String]) -> Result<Self> {
        let ca = CaFiles::new(dir);
        if !ca.ca_cert().exists() {
            ca.init()?;
        }
        for (i, addr) in addrs.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let ip = addr.rsplit_once(':').map_or(addr.as_str(), |(ip, _)| ip).to_string();
            if !ca.pair(&name).0.exists() {
                ca.issue(CertKind::Node, &name, &[ip])?;
            }
        }
        let token_path = dir.join("admin.token");
        let tokens_file = dir.join("tokens.toml");
        let admin_token = if token_path.exists() {
            std::fs::read_to_string(&token_path).with_context(|| format!("cannot read {}", token_path.display()))?.trim().to_string()
        } else {
            let mut tokens = TokenFile::read(&tokens_file)?;
            let token = tokens.add("admin", &["admin".into()]).with_context(|| {
                format!("{} has an admin principal but {} is gone; remove both to start over", tokens_file.display(), token_path.display())
            })?;
            tokens.write(&tokens_file)?;
            write_private(&token_path, format!("{token}\n").as_bytes())?;
            token
        };
        Ok(Self { dir: dir.to_path_buf(), admin_token })
    }

    /// `serve` flags for node `i` (0-based): its TLS files and the token file.
    pub fn serve_args(&self, i: usize) -> Vec<String> {
        let ca = CaFiles::new(&self.dir);
        let (cert, key) = ca.pair(&format!("n{}", i + 1));
        let tokens = self.dir.join("tokens.toml");
        [("--ca", ca.ca_cert()), ("--cert", cert), ("--key", key), ("--tokens-file", tokens)]
            .into_iter()
            .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
            .collect()
    }

    /// What a client of this cluster presents: the CA and the admin token.
    pub fn credentials(&self) -> Result<Credentials> {
        Ok(Credentials::from_files(Some(&CaFiles::new(&self.dir).ca_cert()), None, None, Some(self.admin_token.clone()))?)
    }
}
