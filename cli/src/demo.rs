//! demo
pub async fn run(_a: crate::args::DemoArgs, _j: bool) -> anyhow::Result<()> { Ok(()) }
