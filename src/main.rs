use anyhow::Context;

fn main() -> anyhow::Result<()> {
    print!("{}", tgb_agent::api::crd_yaml().context("rendering the CRD")?);
    Ok(())
}
