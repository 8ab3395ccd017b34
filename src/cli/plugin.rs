//! The kubectl plugin: the same binary installed as `kubectl-smart` (or run
//! as `smart-backend-operator kubectl ...`). `register` prints what an EHR's
//! administrators need, `refresh` asks for a new token now, `status` is a
//! table across namespaces.

use clap::{Parser, Subcommand, ValueEnum};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde::Serialize;

use crate::crd::{REFRESH_REQUESTED_ANNOTATION, SmartBackendClient};

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-smart",
    about = "Register, refresh and inspect SmartBackendClients"
)]
pub struct PluginArgs {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text, global = true)]
    pub output: Output,
    #[command(subcommand)]
    pub command: PluginCommand,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// What to register with the EHR: client id, JWKS URL, kid, algorithm,
    /// scopes and the public JWK Set.
    Register { name: String },
    /// Refresh the token now.
    Refresh { name: String },
    /// Every client (all namespaces unless -n is given): ready, reason,
    /// algorithm, expiry.
    Status,
}

/// What an EHR's administrators need to register one client.
#[derive(Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    pub client_id: String,
    pub token_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
    pub kid: String,
    pub algorithm: String,
    pub scopes: Vec<String>,
    pub public_jwks: serde_json::Value,
}

impl Registration {
    pub fn of(sbc: &SmartBackendClient) -> anyhow::Result<Self> {
        let status = sbc.status.clone().unwrap_or_default();
        let name = sbc.name_any();
        let (Some(kid), Some(algorithm), Some(jwks)) =
            (status.kid, status.algorithm, status.public_jwks)
        else {
            anyhow::bail!(
                "{name} has no key yet: see `kubectl describe sbc {name}` for why (KeyReady)"
            );
        };
        Ok(Self {
            client_id: sbc.spec.client_id.clone(),
            token_endpoint: status.token_endpoint,
            jwks_uri: status.jwks_uri,
            kid,
            algorithm: algorithm.to_string(),
            scopes: sbc.spec.scopes.clone(),
            public_jwks: serde_json::from_str(&jwks)?,
        })
    }

    pub fn text(&self) -> String {
        let jwks_uri = self.jwks_uri.clone().unwrap_or_else(|| {
            "(not exposed: install the chart with ingress.host, or register by value)".into()
        });
        format!(
            "client id:      {}\ntoken endpoint: {}\nJWKS URL:       {jwks_uri}\nkid:            {}\nalgorithm:      {}\nscopes:         {}\ngrant:          client_credentials, private_key_jwt\npublic JWKS (to register by value):\n{}\n",
            self.client_id,
            self.token_endpoint
                .as_deref()
                .unwrap_or("(not discovered yet)"),
            self.kid,
            self.algorithm,
            self.scopes.join(" "),
            serde_json::to_string_pretty(&self.public_jwks).unwrap_or_default(),
        )
    }
}

/// One row of `status`.
#[derive(Debug, PartialEq, Serialize)]
pub struct Row {
    pub namespace: String,
    pub name: String,
    pub ready: String,
    pub reason: String,
    pub algorithm: String,
    pub expires: String,
}

impl Row {
    pub fn of(sbc: &SmartBackendClient) -> Self {
        let status = sbc.status.clone().unwrap_or_default();
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
        let dash = || "-".to_string();
        Self {
            namespace: sbc.namespace().unwrap_or_default(),
            name: sbc.name_any(),
            ready: ready.map(|c| c.status.clone()).unwrap_or_else(dash),
            reason: ready.map(|c| c.reason.clone()).unwrap_or_else(dash),
            algorithm: status.algorithm.map(|a| a.to_string()).unwrap_or_else(dash),
            expires: status.token_expires_at.unwrap_or_else(dash),
        }
    }
}

/// Rows as an aligned table with a header.
pub fn table(rows: &[Row]) -> String {
    let mut lines = vec![
        [
            "NAMESPACE",
            "NAME",
            "READY",
            "REASON",
            "ALGORITHM",
            "EXPIRES",
        ]
        .map(str::to_string),
    ];
    for row in rows {
        lines.push([
            row.namespace.clone(),
            row.name.clone(),
            row.ready.clone(),
            row.reason.clone(),
            row.algorithm.clone(),
            row.expires.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0))
        .collect();
    lines
        .iter()
        .map(|l| {
            let cells: Vec<String> = l
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            cells.join("   ").trim_end().to_string() + "\n"
        })
        .collect()
}

pub async fn run(args: &PluginArgs) -> anyhow::Result<()> {
    let config = kube::Config::infer().await?;
    let default_namespace = config.default_namespace.clone();
    let client = Client::try_from(config)?;
    let namespace = args.namespace.clone().unwrap_or(default_namespace);
    let api: Api<SmartBackendClient> = Api::namespaced(client.clone(), &namespace);
    match &args.command {
        PluginCommand::Register { name } => {
            let registration = Registration::of(&api.get(name).await?)?;
            match args.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&registration)?),
                Output::Text => print!("{}", registration.text()),
            }
        }
        PluginCommand::Refresh { name } => {
            let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
            let patch = serde_json::json!({"metadata": {"annotations": {REFRESH_REQUESTED_ANNOTATION: now}}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            println!("refresh requested for {namespace}/{name}");
        }
        PluginCommand::Status => {
            let api: Api<SmartBackendClient> = match &args.namespace {
                Some(namespace) => Api::namespaced(client, namespace),
                None => Api::all(client),
            };
            let rows: Vec<Row> = api
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .map(Row::of)
                .collect();
            match args.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                Output::Text => print!("{}", table(&rows)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{SmartBackendClientSpec, SmartBackendClientStatus};

    fn client(status: Option<SmartBackendClientStatus>) -> SmartBackendClient {
        let spec: SmartBackendClientSpec = serde_json::from_value(serde_json::json!({
            "fhirBaseUrl": "https://ehr.example/fhir", "clientId": "billing",
            "scopes": ["system/Patient.rs"]
        }))
        .unwrap();
        let mut sbc = SmartBackendClient::new("billing", spec);
        sbc.metadata.namespace = Some("team-a".into());
        sbc.status = status;
        sbc
    }

    #[test]
    fn register_names_everything_the_ehr_needs() {
        let status = SmartBackendClientStatus {
            kid: Some("kid-1".into()),
            algorithm: Some(crate::smart::SigningAlgorithm::ES384),
            public_jwks: Some(r#"{"keys":[{"kid":"kid-1"}]}"#.into()),
            jwks_uri: Some("https://jwks.example/jwks/team-a/billing".into()),
            ..Default::default()
        };
        let registration = Registration::of(&client(Some(status))).unwrap();
        let text = registration.text();
        for needed in [
            "billing",
            "kid-1",
            "ES384",
            "system/Patient.rs",
            "https://jwks.example/jwks/team-a/billing",
        ] {
            assert!(text.contains(needed), "{needed}: {text}");
        }
        let json = serde_json::to_value(&registration).unwrap();
        assert_eq!(json["publicJwks"]["keys"][0]["kid"], "kid-1");
        let error = Registration::of(&client(None)).unwrap_err().to_string();
        assert!(error.contains("no key yet"), "{error}");
    }

    #[test]
    fn status_is_an_aligned_table_with_dashes_for_what_is_unknown() {
        let rows = [Row::of(&client(None))];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAMESPACE   NAME"), "{text}");
        assert!(lines[1].starts_with("team-a      billing"), "{text}");
        assert!(lines[1].contains('-'));
    }
}
