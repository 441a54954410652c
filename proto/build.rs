//! Generates the tonic/prost code for `ringkv/v1/*.proto`, and for the
//! slice of etcd's KV API that `ringkv bench --target etcd` speaks.
//!
//! `protoc` comes from the `protoc-bin-vendored` crate, so a fresh machine
//! needs no system protoc; a `$PROTOC` set by the user wins.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing reads the
        // environment concurrently.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    let files = ["ringkv/v1/kv.proto", "ringkv/v1/peer.proto", "ringkv/v1/admin.proto", "etcd/kv.proto"];
    tonic_prost_build::configure().compile_protos(&files, &["."])?;
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    Ok(())
}
