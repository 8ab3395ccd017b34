//! `token`: discovery, signing and exchange once, from a laptop, to register
//! and debug a client by hand. The token itself is printed only on request.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::{Args, ValueEnum};
use serde::Serialize;
use url::Url;

use super::keys::parse_algorithm;
use crate::smart::{
    self, AssertionParams, DiscoveryWarning, HttpClient, HttpPolicy, MetadataSource,
    SigningAlgorithm, TokenRequest,
    discovery::{AlgorithmChoice, AlgorithmSource},
};

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// FHIR base URL; discovery reads {URL}/.well-known/smart-configuration.
    #[arg(long)]
    pub fhir_base_url: Url,
    /// The client id registered with the authorization server.
    #[arg(long)]
    pub client_id: String,
    #[command(flatten)]
    pub key: super::signer::KeyArgs,
    /// Space-separated scopes, e.g. "system/Patient.rs system/Observation.rs".
    #[arg(long)]
    pub scope: String,
    /// Signing algorithm; default: the first the server lists that the key can do.
    #[arg(long, value_parser = parse_algorithm)]
    pub alg: Option<SigningAlgorithm>,
    /// Key id; default: the RFC 7638 thumbprint of the public key.
    #[arg(long)]
    pub kid: Option<String>,
    /// OAuth issuer whose RFC 8414 or OpenID Connect metadata names the
    /// token endpoint and algorithms (instead of SMART discovery).
    #[arg(long)]
    pub issuer: Option<Url>,
    /// Token endpoint; skips discovery when given.
    #[arg(long)]
    pub token_endpoint: Option<Url>,
    /// Assertion audience; default: the token endpoint.
    #[arg(long)]
    pub audience: Option<String>,
    /// URL of the client's JWK Set, put in the assertion header.
    #[arg(long)]
    pub jku: Option<String>,
    /// Allow plain http URLs (development servers only).
    #[arg(long)]
    pub insecure_allow_http: bool,
    /// Allow only these hosts (repeatable; `*.example.org` wildcards). A host
    /// named exactly is reachable even on loopback or link-local addresses.
    #[arg(long = "allow-host")]
    pub allow_hosts: Vec<String>,
    /// Also refuse private (RFC 1918 / unique-local) addresses.
    #[arg(long)]
    pub block_private_networks: bool,
    /// Egress proxy for every request (environment proxies are ignored).
    #[arg(long)]
    pub proxy: Option<Url>,
    /// PEM bundle of extra CAs for servers behind a private CA.
    #[arg(long)]
    pub ca_bundle: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Also print the access token (it is a credential: handle with care).
    #[arg(long)]
    pub show_token: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Serialize)]
struct Report {
    token_endpoint: String,
    algorithm: SigningAlgorithm,
    algorithm_source: &'static str,
    kid: String,
    scope: Option<String>,
    expires_in: u64,
    expires_in_defaulted: bool,
    expires_at: String,
    warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_token: Option<String>,
}

pub async fn run(args: &TokenArgs) -> anyhow::Result<()> {
    let extra_roots_pem = super::read_optional(args.ca_bundle.as_deref(), "the CA bundle")?;
    let client = HttpClient::new(HttpPolicy {
        allow_http: args.insecure_allow_http,
        extra_roots_pem,
        destinations: crate::smart::DestinationPolicy {
            allow_hosts: args.allow_hosts.clone(),
            block_private: args.block_private_networks,
        },
        proxy: args.proxy.clone(),
        ..HttpPolicy::default()
    })?;
    let scopes: Vec<String> = args.scope.split_whitespace().map(str::to_string).collect();
    anyhow::ensure!(
        !scopes.is_empty(),
        "--scope is empty: name at least one scope"
    );
    let key =
        super::signer::held_key(&args.key, args.insecure_allow_http, args.kid.clone()).await?;

    let mut warnings: Vec<DiscoveryWarning> = Vec::new();
    let (token_endpoint, choice) = match &args.token_endpoint {
        Some(endpoint) => {
            client.check_url(endpoint)?;
            let algorithm = args.alg.unwrap_or_else(|| key.algorithm());
            (
                endpoint.clone(),
                AlgorithmChoice {
                    algorithm,
                    source: AlgorithmSource::Explicit,
                },
            )
        }
        None => {
            let source = match &args.issuer {
                Some(issuer) => MetadataSource::Issuer(issuer.clone()),
                None => MetadataSource::Smart(args.fhir_base_url.clone()),
            };
            let config = source.fetch(&client).await?;
            // With no explicit choice, the key in hand decides among what
            // the server offers, or alone when it offers no list.
            let choice = config.choose_algorithm(args.alg, Some(key.algorithm()))?;
            warnings = config.warnings(&scopes, Some(choice));
            (config.token_endpoint, choice)
        }
    };
    let signer = key.bind(Some(choice.algorithm))?;
    let audience = args
        .audience
        .clone()
        .unwrap_or_else(|| token_endpoint.to_string());
    let mut params = AssertionParams::new(&args.client_id, &audience);
    params.jku = args.jku.as_deref();
    let assertion = signer.sign_assertion(&params).await?;
    let scope = scopes.join(" ");
    let request = TokenRequest {
        token_endpoint: &token_endpoint,
        scope: &scope,
        assertion: &assertion,
        extra_params: &[],
    };
    let token = smart::token::request_token(&client, &request)
        .await
        .map_err(|e| {
            anyhow::anyhow!(smart::token::advice(
                &e,
                &args.client_id,
                signer.kid(),
                &token_endpoint
            ))
        })?;

    let report = Report {
        token_endpoint: token_endpoint.to_string(),
        algorithm: choice.algorithm,
        algorithm_source: match choice.source {
            AlgorithmSource::Explicit => "explicit",
            AlgorithmSource::ServerMetadata => "server metadata",
            AlgorithmSource::KeyType => "the key's type (server lists none)",
            AlgorithmSource::DefaultWithoutServerList => "default (server lists none)",
        },
        kid: signer.kid().to_string(),
        scope: token.scope.clone(),
        expires_in: token.expires_in.as_secs(),
        expires_in_defaulted: token.expires_in_defaulted,
        expires_at: humantime::format_rfc3339_seconds(token.expires_at).to_string(),
        warnings: warnings.iter().map(ToString::to_string).collect(),
        access_token: args
            .show_token
            .then(|| token.access_token.expose().to_string()),
    };
    print_report(&report, args.output)
}

fn print_report(report: &Report, format: OutputFormat) -> anyhow::Result<()> {
    if format == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let remaining = humantime::parse_rfc3339(&report.expires_at)
        .ok()
        .and_then(|at| at.duration_since(SystemTime::now()).ok())
        .unwrap_or(Duration::ZERO);
    println!("token endpoint: {}", report.token_endpoint);
    println!(
        "algorithm:      {} ({})",
        report.algorithm, report.algorithm_source
    );
    println!("kid:            {}", report.kid);
    println!(
        "granted scope:  {}",
        report
            .scope
            .as_deref()
            .unwrap_or("(not stated by the server)")
    );
    let defaulted = if report.expires_in_defaulted {
        ", server gave no expires_in"
    } else {
        ""
    };
    println!(
        "expires at:     {} (in {}s{defaulted})",
        report.expires_at,
        remaining.as_secs()
    );
    for warning in &report.warnings {
        println!("warning:        {warning}");
    }
    if let Some(token) = &report.access_token {
        println!("access token:   {token}");
    }
    Ok(())
}
