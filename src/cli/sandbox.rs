//! `sandbox`: run the local SMART authorization server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::sandbox::{ClientsFile, Sandbox, SandboxClient, SandboxConfig, router};
use crate::smart::{HttpClient, HttpPolicy};

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,
    /// Public base URL (default: http://<listen>).
    #[arg(long)]
    pub base_url: Option<String>,
    /// Lifetime of issued tokens.
    #[arg(long, default_value = "300s", value_parser = |v: &str| humantime::parse_duration(v).map_err(|e| e.to_string()))]
    pub token_lifetime: Duration,
    /// Register a client: CLIENT_ID=JWKS_URI (repeatable).
    #[arg(long = "client", value_parser = parse_client)]
    pub clients: Vec<SandboxClient>,
    /// Hosts the sandbox may fetch jwks_uri from (default: 127.0.0.1 and localhost).
    #[arg(long = "allow-host")]
    pub allow_hosts: Vec<String>,
    /// YAML or JSON file: {"clients": [{"clientId", "jwksUri" | "jwks", "scopes"}]}.
    #[arg(long)]
    pub clients_file: Option<PathBuf>,
}

fn parse_client(value: &str) -> Result<SandboxClient, String> {
    let (id, uri) = value.split_once('=').ok_or("expected CLIENT_ID=JWKS_URI")?;
    Ok(SandboxClient {
        client_id: id.to_string(),
        jwks_uri: Some(uri.to_string()),
        jwks: None,
        scopes: Vec::new(),
    })
}

pub async fn run(args: &SandboxArgs) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .try_init();
    let mut clients = args.clients.clone();
    if let Some(path) = &args.clients_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: ClientsFile = serde_yaml::from_str(&text)
            .with_context(|| format!("{} is not a clients file", path.display()))?;
        clients.extend(file.clients);
    }
    let base_url = args
        .base_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", args.listen));
    // The sandbox fetches jwks_uri from local development servers.
    let allow_hosts = if args.allow_hosts.is_empty() {
        vec!["127.0.0.1".to_string(), "localhost".to_string()]
    } else {
        args.allow_hosts.clone()
    };
    let http = HttpClient::new(HttpPolicy {
        allow_http: true,
        destinations: crate::smart::DestinationPolicy {
            allow_hosts,
            block_private: false,
        },
        ..HttpPolicy::default()
    })?;
    let sandbox = Sandbox::new(
        SandboxConfig {
            base_url: base_url.clone(),
            token_lifetime: args.token_lifetime,
            clients,
        },
        http,
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(fhir_base_url = %format!("{base_url}/fhir"), "SMART sandbox listening");
    axum::serve(listener, router(sandbox)).await?;
    Ok(())
}
