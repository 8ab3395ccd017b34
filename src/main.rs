//! Command line of smart-backend-operator. Parsing and dispatch only.

use clap::{Parser, Subcommand};
use smart_backend_operator::cli;

#[derive(Debug, Parser)]
#[command(
    name = "smart-backend-operator",
    version,
    about = "SMART on FHIR Backend Services tokens for Kubernetes workloads"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a private key and print its public JWK Set.
    Keygen(cli::keys::KeygenArgs),
    /// Print the public JWK Set of an existing private key.
    Jwks(Box<cli::keys::JwksArgs>),
    /// Run the operator (controllers and the admin server).
    Run(Box<cli::run::RunArgs>),
    /// Run a local SMART authorization server for development and demos.
    Sandbox(cli::sandbox::SandboxArgs),
    /// Print the SmartBackendClient CustomResourceDefinition (YAML).
    Crd,
    /// Discover, sign an assertion and obtain one access token.
    Token(Box<cli::token::TokenArgs>),
    /// Check a running installation: the CRD, the leader Lease, the
    /// Service's endpoints (the chart's `helm test` runs this).
    Check(cli::check::CheckArgs),
    /// The kubectl plugin (also installed as `kubectl-smart`).
    Kubectl(cli::plugin::PluginArgs),
    /// Run the CSI node plugin that puts tokens into pods' memory (the
    /// chart's DaemonSet).
    CsiNode(cli::csi_node::CsiNodeArgs),
}

/// Installed as `kubectl-smart`, the binary is the kubectl plugin.
fn invoked_as_plugin() -> bool {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_stem().map(|s| s == "kubectl-smart"))
        .unwrap_or(false)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let command = if invoked_as_plugin() {
        Command::Kubectl(cli::plugin::PluginArgs::parse())
    } else {
        Cli::parse().command
    };
    let result = match &command {
        Command::Run(args) => cli::run::run(args).await,
        Command::Sandbox(args) => cli::sandbox::run(args).await,
        Command::Check(args) => cli::check::run(args).await,
        Command::Crd => smart_backend_operator::crd::crd_yaml()
            .map(|yaml| print!("{yaml}"))
            .map_err(Into::into),
        Command::Keygen(args) => cli::keys::keygen(args),
        Command::Jwks(args) => cli::keys::jwks(args).await,
        Command::Token(args) => cli::token::run(args).await,
        Command::Kubectl(args) => cli::plugin::run(args).await,
        Command::CsiNode(args) => cli::csi_node::run(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, the way a person reads it; a cause
/// whose text the message already quotes is not repeated.
fn one_line(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text.replace('\n', " ")
}
