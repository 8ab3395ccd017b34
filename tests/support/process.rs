//! The operator binary run as a separate process against the test control
//! plane, killed when dropped.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

pub struct OperatorProcess {
    child: Option<Child>,
    /// The admin port (health, metrics, JWKS).
    pub port: u16,
}

/// How one operator process runs.
pub struct Launch<'a> {
    pub kubeconfig: &'a Path,
    /// The one namespace to watch; "" watches them all.
    pub watch_namespace: &'a str,
    pub lease_namespace: &'a str,
    pub lease_name: &'a str,
    pub lease_duration: Duration,
    pub admin_port: u16,
}

impl OperatorProcess {
    /// `run` with leader election, plain http and loopback allowed (the
    /// tests' servers), a 1 s refresh floor.
    pub fn spawn(launch: &Launch<'_>) -> Self {
        Self::spawn_with(launch, &[])
    }

    /// Like [`Self::spawn`], with more environment (settings the chart
    /// passes that way).
    pub fn spawn_with(launch: &Launch<'_>, env: &[(&str, &str)]) -> Self {
        Self::spawn_args(launch, env, &[])
    }

    /// Like [`Self::spawn_with`], with more flags.
    pub fn spawn_args(launch: &Launch<'_>, env: &[(&str, &str)], args: &[&str]) -> Self {
        let port = launch.admin_port;
        let child = Command::new(env!("CARGO_BIN_EXE_smart-backend-operator"))
            .args([
                "run",
                "--namespaces",
                launch.watch_namespace,
                "--insecure-allow-http",
                "--allow-host",
                "127.0.0.1",
                "--admin-addr",
                &format!("127.0.0.1:{port}"),
                "--health-addr",
                "127.0.0.1:0",
                "--leader-election",
                "--lease-namespace",
                launch.lease_namespace,
                "--lease-name",
                launch.lease_name,
                "--lease-duration",
                &format!("{}s", launch.lease_duration.as_secs()),
            ])
            // A 1 s refresh floor unless the caller names its own.
            .args(
                (!args.contains(&"--min-refresh-interval"))
                    .then_some(["--min-refresh-interval", "1s"])
                    .into_iter()
                    .flatten(),
            )
            .args(args)
            .env("KUBECONFIG", launch.kubeconfig)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .spawn()
            .expect("start the operator binary");
        Self {
            child: Some(child),
            port,
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process has exited by itself.
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Stops the process as Kubernetes does (SIGTERM) and waits for it to
    /// exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "kill -TERM {} failed", child.id());
        child.wait().is_ok_and(|s| s.success())
    }

    /// Kills the process at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
