//! Who may call what: the pure rules, with no I/O.
//!
//! A caller is authenticated once per request (`gate.rs`) into [`Grants`];
//! each surface then asks one question of them:
//!
//! | surface | needs |
//! |---|---|
//! | `grpc.health.v1` | nothing |
//! | `Kv` | `read` or `write` on a prefix of the key (checked per key) |
//! | `Admin` | `admin` |
//! | `Peer` | `peer` (a node certificate, or a token with the `peer` role) |
//!
//! With neither TLS nor tokens configured the node is open: every caller
//! gets [`Grants::all`]. That is the loopback development mode; off
//! loopback a node refuses to start that way unless given `--insecure`.

use std::sync::{Arc, LazyLock};

use super::tokens::Role;
use crate::error::Error;

/// The grants of every caller of an open node, built once: each request
/// takes a reference, not a copy of the prefix lists.
static OPEN: LazyLock<Arc<Grants>> = LazyLock::new(|| Arc::new(Grants::all(None)));
/// The grants of an anonymous client of a TLS-only node, built once.
static KV_ONLY: LazyLock<Arc<Grants>> = LazyLock::new(|| Arc::new(Grants::kv_only()));

/// What a caller may do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    /// The principal's name, for messages and rate limits (`None` when the
    /// caller is anonymous).
    pub name: Option<String>,
    /// Prefixes it may read.
    pub read: Vec<Vec<u8>>,
    /// Prefixes it may write.
    pub write: Vec<Vec<u8>>,
    /// The Admin API.
    pub admin: bool,
    /// The Peer API.
    pub peer: bool,
    /// Its own rate limit, `(per_sec, burst)`, when a role sets one.
    pub rate_limit: Option<(u32, u32)>,
}

impl Grants {
    /// Everything: the open (no TLS, no tokens) mode, and a node's own
    /// certificate.
    pub fn all(name: Option<String>) -> Self {
        Self { name, read: vec![Vec::new()], write: vec![Vec::new()], admin: true, peer: true, rate_limit: None }
    }

    /// Every key, nothing else: an anonymous client of a TLS-only node.
    pub fn kv_only() -> Self {
        Self { read: vec![Vec::new()], write: vec![Vec::new()], ..Default::default() }
    }

    /// Adds what `role` grants. Rate limits combine to the most generous.
    pub fn add(&mut self, role: &Role) {
        self.read.extend(role.read.iter().map(|p| p.as_bytes().to_vec()));
        self.write.extend(role.write.iter().map(|p| p.as_bytes().to_vec()));
        self.admin |= role.admin;
        self.peer |= role.peer;
        if let Some(rate) = role.rate_limit_per_sec {
            let burst = role.rate_limit_burst.unwrap_or(rate);
            self.rate_limit = Some(self.rate_limit.map_or((rate, burst), |(r, b)| (r.max(rate), b.max(burst))));
        }
    }

    /// May it read `key`?
    pub fn may_read(&self, key: &[u8]) -> bool {
        self.read.iter().any(|p| key.starts_with(p))
    }

    /// May it write `key`?
    pub fn may_write(&self, key: &[u8]) -> bool {
        self.write.iter().any(|p| key.starts_with(p))
    }

    fn who(&self) -> String {
        self.name.as_ref().map_or("this anonymous caller".into(), |n| format!("principal {n:?}"))
    }

    /// Refuses unless it may read `key`.
    pub fn check_read(&self, key: &[u8]) -> Result<(), Error> {
        if self.may_read(key) {
            return Ok(());
        }
        Err(Error::PermissionDenied(format!("{} lacks read on key {}; grant a role with read on a prefix of it", self.who(), shown(key))))
    }

    /// Refuses unless it may write `key`.
    pub fn check_write(&self, key: &[u8]) -> Result<(), Error> {
        if self.may_write(key) {
            return Ok(());
        }
        Err(Error::PermissionDenied(format!("{} lacks write on key {}; grant a role with write on a prefix of it", self.who(), shown(key))))
    }

    /// Refuses unless it may read every key under `prefix` (a scan).
    pub fn check_scan(&self, prefix: &[u8]) -> Result<(), Error> {
        if self.may_read(prefix) {
            return Ok(());
        }
        Err(Error::PermissionDenied(format!(
            "{} lacks read on every key under prefix {}; scan within a prefix it may read",
            self.who(),
            shown(prefix)
        )))
    }

    /// Refuses unless it holds `admin`.
    pub fn check_admin(&self) -> Result<(), Error> {
        if self.admin {
            return Ok(());
        }
        Err(Error::PermissionDenied(format!(
            "{} lacks admin, which the Admin API needs; use a token with the admin role or a node certificate",
            self.who()
        )))
    }

    /// Refuses unless it holds `peer`.
    pub fn check_peer(&self) -> Result<(), Error> {
        if self.peer {
            return Ok(());
        }
        Err(Error::PermissionDenied(format!(
            "{} lacks peer, which the Peer API needs: only nodes (a node certificate from the cluster CA, or a token with the peer role) may call it",
            self.who()
        )))
    }
}

/// A key for a message: text when printable, else hex; cut at 64 bytes.
fn shown(key: &[u8]) -> String {
    let cut = &key[..key.len().min(64)];
    let more = if key.len() > 64 { "…" } else { "" };
    match std::str::from_utf8(cut) {
        Ok(s) if !s.chars().any(char::is_control) => format!("{s:?}{more}"),
        _ => format!("0x{}{more}", cut.iter().map(|b| format!("{b:02x}")).collect::<String>()),
    }
}

/// What the caller presented.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Presented {
    /// Nothing.
    Nothing,
    /// A bearer token.
    Token(String),
    /// A client certificate from the cluster CA.
    Certificate(super::identity::CertIdentity),
}

/// How the node is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode {
    /// TLS is on.
    pub tls: bool,
    /// A token file defines principals: every client must be one.
    pub principals: bool,
}

/// Authenticates a caller. A token wins over a certificate when both come.
/// The grants are shared (the token file's, or the open modes'), so a
/// request clones a pointer, not the prefix lists.
pub fn authenticate(mode: Mode, presented: &Presented, tokens: &super::tokens::Tokens) -> Result<Arc<Grants>, Error> {
    use super::identity::CertKind;
    if !mode.tls && !mode.principals {
        return Ok(OPEN.clone());
    }
    match presented {
        Presented::Token(t) => tokens.by_token(t).cloned().ok_or_else(|| {
            Error::Unauthenticated(
                "the bearer token is not known to this node; check --token / RINGKV_TOKEN, or ask an operator for one (ringkv token add)"
                    .into(),
            )
        }),
        Presented::Certificate(id) if id.kind == CertKind::Node => Ok(Arc::new(Grants::all(Some(format!("node:{}", id.name))))),
        Presented::Certificate(id) => match tokens.by_name(&id.name) {
            Some(g) => Ok(g.clone()),
            None if !mode.principals => Ok(Arc::new(Grants { name: Some(id.name.clone()), ..Grants::kv_only() })),
            None => Err(Error::Unauthenticated(format!(
                "client certificate {:?} names no principal in this node's token file; add one with that name, or send a token",
                id.name
            ))),
        },
        Presented::Nothing if mode.principals => Err(Error::Unauthenticated(
            "this node requires a bearer token: pass --token or set RINGKV_TOKEN (ringkv token add makes one)".into(),
        )),
        Presented::Nothing => Ok(KV_ONLY.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::identity::{CertIdentity, CertKind};
    use super::super::tokens::TokenFile;
    use super::*;
    use crate::error::Error;

    fn file() -> (TokenFile, [String; 3]) {
        let mut f: TokenFile =
            toml::from_str("[roles.app]\nread = [\"app/\"]\nwrite = [\"app/\"]\n[roles.logs]\nread = [\"logs/\"]\n").unwrap();
        let rw = f.add("web", &["app".into()]).unwrap();
        let ro = f.add("auditor", &["logs".into()]).unwrap();
        let admin = f.add("ops", &["admin".into()]).unwrap();
        (f, [rw, ro, admin])
    }

    fn cert(kind: CertKind, name: &str) -> Presented {
        Presented::Certificate(CertIdentity { kind, name: name.into() })
    }

    #[test]
    fn open_mode_grants_everything_and_tls_only_mode_grants_kv_to_anyone() {
        let t = file().0.compile().unwrap();
        assert_eq!(*authenticate(Mode { tls: false, principals: false }, &Presented::Nothing, &t).unwrap(), Grants::all(None));
        let anon = authenticate(Mode { tls: true, principals: false }, &Presented::Nothing, &t).unwrap();
        assert!(anon.may_write(b"x") && !anon.admin && !anon.peer);
        let client = authenticate(Mode { tls: true, principals: false }, &cert(CertKind::Client, "ci"), &t).unwrap();
        assert!(client.check_peer().is_err(), "a client certificate is not a peer's");
        let node = authenticate(Mode { tls: true, principals: false }, &cert(CertKind::Node, "n1"), &t).unwrap();
        assert!(node.peer && node.admin);
    }

    #[test]
    fn with_principals_every_request_needs_a_known_one() {
        let (f, [rw, ro, admin]) = file();
        let t = f.compile().unwrap();
        let mode = Mode { tls: false, principals: true };
        assert!(matches!(authenticate(mode, &Presented::Nothing, &t), Err(Error::Unauthenticated(_))));
        assert!(matches!(authenticate(mode, &Presented::Token("rkv_nope".into()), &t), Err(Error::Unauthenticated(_))));
        let web = authenticate(mode, &Presented::Token(rw), &t).unwrap();
        assert!(web.check_write(b"app/1").is_ok() && web.check_read(b"app/1").is_ok());
        let denied = web.check_read(b"other/1").unwrap_err().to_string();
        assert!(denied.contains("read") && denied.contains("\"web\"") && denied.contains("other/1"), "{denied}");
        assert!(web.check_admin().is_err() && web.check_peer().is_err());
        assert!(web.check_scan(b"app/").is_ok() && web.check_scan(b"").is_err() && web.check_scan(b"ap").is_err());
        let auditor = authenticate(mode, &Presented::Token(ro), &t).unwrap();
        assert!(auditor.check_read(b"logs/1").is_ok() && auditor.check_write(b"logs/1").is_err());
        let ops = authenticate(mode, &Presented::Token(admin), &t).unwrap();
        assert!(ops.check_admin().is_ok() && ops.check_peer().is_err());
        assert!(matches!(
            authenticate(Mode { tls: true, principals: true }, &cert(CertKind::Client, "stranger"), &t),
            Err(Error::Unauthenticated(_))
        ));
        let by_cert = authenticate(Mode { tls: true, principals: true }, &cert(CertKind::Client, "web"), &t).unwrap();
        assert!(by_cert.may_write(b"app/2") && !by_cert.may_write(b"x"));
    }

    #[test]
    fn keys_in_messages_are_printable_and_bounded() {
        assert_eq!(shown(b"a/b"), "\"a/b\"");
        assert_eq!(shown(&[0, 255]), "0x00ff");
        assert!(shown(&[b'x'; 100]).ends_with('…'));
    }
}
