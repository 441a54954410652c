//! The token file: principals with hashed bearer tokens, and the roles that
//! grant them permissions (etcd's model: a role grants `read` and/or
//! `write` on key prefixes; `admin` grants the Admin API; `peer` the Peer
//! API).
//!
//! ```toml
//! [roles.app]
//! read = ["app/"]
//! write = ["app/"]
//! rate_limit_per_sec = 500   # optional, per principal holding the role
//!
//! [[principal]]
//! name = "web"
//! token_hash = "blake3:9f2c…"
//! roles = ["app"]
//! ```
//!
//! Four roles are built in: `admin` (the Admin API and every key), `peer`
//! (the Peer API: what a node's token needs when peers do not use mutual
//! TLS), `readwrite` and `readonly` (every key). Tokens are stored only as
//! hashes. A token is 32 random bytes, so a fast hash (BLAKE3) is enough:
//! there is no password to guess by brute force. The file is parsed whole
//! and checked before use, so a node never runs with half of a bad file.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::authz::Grants;
use crate::error::{Error, Result};

/// The roles every node knows without a file entry.
pub const BUILTIN_ROLES: [&str; 4] = ["admin", "peer", "readwrite", "readonly"];

/// A role as the file writes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// Key prefixes this role may read (`""` is every key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read: Vec<String>,
    /// Key prefixes this role may write.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub write: Vec<String>,
    /// The Admin API.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
    /// The Peer API.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub peer: bool,
    /// Requests per second a principal with this role may send to one node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_sec: Option<u32>,
    /// Its burst above that rate (default: the rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_burst: Option<u32>,
}

/// A principal as the file writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    /// Its name: printed in logs and errors, and matched against the
    /// common name of a client certificate.
    pub name: String,
    /// `blake3:<hex>` of its token; absent for a principal that signs in
    /// with a client certificate only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_hash: Option<String>,
    /// The roles it holds.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// The token file as written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    /// Roles by name.
    #[serde(default)]
    pub roles: BTreeMap<String, Role>,
    /// Principals.
    #[serde(default, rename = "principal")]
    pub principals: Vec<Principal>,
}

/// The hash a token is stored as.
pub fn hash(token: &str) -> String {
    format!("blake3:{}", blake3::hash(token.as_bytes()).to_hex())
}

/// A new random token: `rkv_` and 32 random bytes in hex.
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("rkv_{hex}")
}

fn builtin(name: &str) -> Option<Role> {
    let all = || vec![String::new()];
    match name {
        "admin" => Some(Role { read: all(), write: all(), admin: true, ..Default::default() }),
        "peer" => Some(Role { peer: true, ..Default::default() }),
        "readwrite" => Some(Role { read: all(), write: all(), ..Default::default() }),
        "readonly" => Some(Role { read: all(), ..Default::default() }),
        _ => None,
    }
}

impl TokenFile {
    /// Reads and parses `path`; a missing file is an empty one.
    pub fn read(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(Error::Config(format!("cannot read token file {}: {e}", path.display()))),
        };
        toml::from_str(&text).map_err(|e| Error::Config(format!("token file {}: {e}", path.display())))
    }

    /// Writes the file (owner-only permissions on Unix).
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = toml::to_string_pretty(self).map_err(|e| Error::Config(format!("cannot encode the token file: {e}")))?;
        let header = "# ringkv principals and roles. Tokens are stored hashed; a node re-reads this file on SIGHUP.\n\n";
        super::write_private(path, format!("{header}{text}").as_bytes())
    }

    /// The grants of a role by name.
    fn role(&self, name: &str) -> Option<Role> {
        builtin(name).or_else(|| self.roles.get(name).cloned())
    }

    /// Checks the file as a whole and builds the lookup tables.
    pub fn compile(&self) -> Result<Tokens> {
        let bad = |m: String| Err(Error::Config(format!("token file: {m}")));
        for name in self.roles.keys() {
            if BUILTIN_ROLES.contains(&name.as_str()) {
                return bad(format!("role {name:?} is built in and cannot be redefined; pick another name"));
            }
        }
        let mut by_hash = HashMap::new();
        let mut by_name = HashMap::new();
        for p in &self.principals {
            if p.name.is_empty() {
                return bad("a principal has an empty name".into());
            }
            let mut grants = Grants::default();
            for r in &p.roles {
                let Some(role) = self.role(r) else {
                    return bad(format!("principal {:?} has role {r:?}, which is neither built in nor under [roles]", p.name));
                };
                grants.add(&role);
            }
            grants.name = Some(p.name.clone());
            let grants = Arc::new(grants);
            if by_name.insert(p.name.clone(), grants.clone()).is_some() {
                return bad(format!("principal {:?} is listed twice", p.name));
            }
            if let Some(h) = &p.token_hash {
                if !h.starts_with("blake3:") || h.len() != "blake3:".len() + 64 {
                    return bad(format!("principal {:?}: token_hash must be blake3:<64 hex digits> (ringkv token add writes it)", p.name));
                }
                if by_hash.insert(h.clone(), grants).is_some() {
                    return bad(format!("principal {:?} shares its token with another principal", p.name));
                }
            }
        }
        Ok(Tokens { by_hash, by_name })
    }

    /// Adds a principal with a fresh token and returns the token (shown
    /// once; only its hash is kept).
    pub fn add(&mut self, name: &str, roles: &[String]) -> Result<String> {
        if self.principals.iter().any(|p| p.name == name) {
            return Err(Error::Config(format!("principal {name:?} already exists; remove it from the file first to issue a new token")));
        }
        let token = generate();
        self.principals.push(Principal { name: name.into(), token_hash: Some(hash(&token)), roles: roles.to_vec() });
        self.compile()?;
        Ok(token)
    }
}

/// The compiled token file: who a token or a certificate name is.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    by_hash: HashMap<String, Arc<Grants>>,
    by_name: HashMap<String, Arc<Grants>>,
}

impl Tokens {
    /// The principal a bearer token names.
    pub fn by_token(&self, token: &str) -> Option<&Arc<Grants>> {
        self.by_hash.get(&hash(token))
    }

    /// The principal with this name (a client certificate's common name).
    pub fn by_name(&self, name: &str) -> Option<&Arc<Grants>> {
        self.by_name.get(name)
    }

    /// How many principals there are.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_found_by_its_hash_and_the_file_never_holds_it() {
        let mut file = TokenFile::default();
        file.roles.insert("app".into(), Role { read: vec!["app/".into()], ..Default::default() });
        let token = file.add("web", &["app".into()]).unwrap();
        let text = toml::to_string(&file).unwrap();
        assert!(!text.contains(&token), "the file keeps only the hash");
        let tokens = file.compile().unwrap();
        let g = tokens.by_token(&token).expect("known token");
        assert_eq!(g.name.as_deref(), Some("web"));
        assert!(g.may_read(b"app/x") && !g.may_read(b"other"));
        assert!(tokens.by_token("rkv_wrong").is_none());
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let unknown_role: TokenFile = toml::from_str("[[principal]]\nname = \"a\"\nroles = [\"nope\"]\n").unwrap();
        assert!(unknown_role.compile().unwrap_err().to_string().contains("\"nope\""));
        let redefined: TokenFile = toml::from_str("[roles.admin]\nread = [\"\"]\n").unwrap();
        assert!(redefined.compile().unwrap_err().to_string().contains("built in"));
        let bad_hash: TokenFile = toml::from_str("[[principal]]\nname = \"a\"\ntoken_hash = \"plain\"\n").unwrap();
        assert!(bad_hash.compile().unwrap_err().to_string().contains("blake3"));
        assert!(toml::from_str::<TokenFile>("[[principal]]\nname = \"a\"\ntoken = \"x\"\n").is_err(), "unknown fields are refused");
        let mut twice = TokenFile::default();
        twice.add("a", &[]).unwrap();
        assert!(twice.add("a", &[]).is_err());
    }

    #[test]
    fn builtin_roles_grant_what_their_names_say() {
        let mut file = TokenFile::default();
        let admin = file.add("ops", &["admin".into()]).unwrap();
        let peer = file.add("node", &["peer".into()]).unwrap();
        let ro = file.add("reader", &["readonly".into()]).unwrap();
        let t = file.compile().unwrap();
        let (admin, peer, ro) = (t.by_token(&admin).unwrap(), t.by_token(&peer).unwrap(), t.by_token(&ro).unwrap());
        assert!(admin.admin && !admin.peer && admin.may_write(b"any"));
        assert!(peer.peer && !peer.admin && !peer.may_read(b"any"));
        assert!(ro.may_read(b"any") && !ro.may_write(b"any") && !ro.admin);
    }
}
