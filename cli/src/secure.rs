//! `ringkv cert` and `ringkv token`: the files a secured cluster needs.
//! The work is in the node library (`ringkv_node::security`); this module
//! only prints what was made and what to do next.

use std::path::Path;

use anyhow::Result;
use ringkv_node::security::ca::CaFiles;
use ringkv_node::security::identity::CertKind;
use ringkv_node::security::tokens::TokenFile;
use serde_json::json;

use crate::args::{CertAction, CertKindArg, TokenAction};

/// Runs `ringkv cert …`.
pub fn cert(action: CertAction, json_mode: bool) -> Result<()> {
    match action {
        CertAction::Init { dir } => {
            let ca = CaFiles::new(&dir);
            ca.init()?;
            let (cert, key) = ca.pair("ca");
            if json_mode {
                println!("{}", json!({ "ca_cert": cert, "ca_key": key }));
            } else {
                println!("CA written: {} (share it) and {} (keep it secret)", cert.display(), key.display());
                println!("next: ringkv cert issue node n1 --dir {}", dir.display());
            }
        }
        CertAction::Issue { kind, name, dir, host } => {
            let kind = match kind {
                CertKindArg::Node => CertKind::Node,
                CertKindArg::Client => CertKind::Client,
            };
            let (cert, key) = CaFiles::new(&dir).issue(kind, &name, &host)?;
            if json_mode {
                println!("{}", json!({ "cert": cert, "key": key }));
            } else {
                println!("issued {}: {} and {}", name, cert.display(), key.display());
                let ca = dir.join("ca.crt");
                match kind {
                    CertKind::Node => println!(
                        "serve with: ringkv serve --id {name} --ca {} --cert {} --key {} ...",
                        ca.display(),
                        cert.display(),
                        key.display()
                    ),
                    CertKind::Client => {
                        println!("use with: ringkv --ca {} --cert {} --key {} ...", ca.display(), cert.display(), key.display())
                    }
                }
            }
        }
    }
    Ok(())
}

/// Runs `ringkv token …`.
pub fn token(action: TokenAction, json_mode: bool) -> Result<()> {
    match action {
        TokenAction::Add { name, roles, file } => {
            let mut tokens = TokenFile::read(&file)?;
            let token = tokens.add(&name, &roles)?;
            tokens.write(&file)?;
            if json_mode {
                println!("{}", json!({ "principal": name, "roles": roles, "token": token, "file": file }));
            } else {
                println!("{token}");
                eprintln!(
                    "principal {name:?} added to {} with roles {}; the token above is shown only once.\n\
                     Running nodes pick it up on SIGHUP (kill -HUP <pid>). Use it with --token or RINGKV_TOKEN.",
                    file.display(),
                    roles.join(", ")
                );
            }
        }
        TokenAction::List { file } => list(&file, json_mode)?,
    }
    Ok(())
}

fn list(file: &Path, json_mode: bool) -> Result<()> {
    let tokens = TokenFile::read(file)?;
    tokens.compile()?;
    if json_mode {
        let principals: Vec<_> =
            tokens.principals.iter().map(|p| json!({ "name": p.name, "roles": p.roles, "token": p.token_hash.is_some() })).collect();
        println!("{}", json!({ "principals": principals, "roles": tokens.roles.keys().collect::<Vec<_>>() }));
    } else {
        for p in &tokens.principals {
            let how = if p.token_hash.is_some() { "token" } else { "certificate only" };
            println!("{:<20} {:<30} {how}", p.name, p.roles.join(","));
        }
    }
    Ok(())
}
