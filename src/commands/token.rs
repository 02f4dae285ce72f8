//! `keyfed token <target>`: get a fresh token and print it raw, or `--decode` its header and
//! claims (never its signature).

use serde_json::json;

use crate::config::Config;

pub async fn run(config: Config, target: &str, decode: bool) -> anyhow::Result<()> {
    let (client, target) = super::client_for(config, target)?;
    let token = client.fetch_token(&target.request).await?;
    if decode {
        let decoded = token.decoded();
        let shown = json!({"header": decoded.header, "claims": decoded.claims});
        crate::stdout::write(format!("{}\n", serde_json::to_string_pretty(&shown)?))?;
    } else {
        crate::stdout::write(format!("{}\n", token.expose()))?;
    }
    Ok(())
}
