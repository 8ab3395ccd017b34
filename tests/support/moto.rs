//! moto serving AWS KMS, STS and IAM on a loopback port, for one test. It
//! checks SigV4 signatures and IAM policies (after the three requests that
//! create its administrator), so wrong credentials and a missing `kms:Sign`
//! are refused for real. moto comes from PyPI (`make signer-deps` puts it
//! in target/tools/moto); a missing install fails the test, never skips it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Moto {
    child: Child,
    pub endpoint: String,
    admin: (String, String),
}

/// Access key id and secret.
pub type Credentials = (String, String);

fn tools() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools/moto/bin");
    assert!(
        dir.join("moto_server").exists(),
        "{} is missing: run `make signer-deps` (moto from PyPI)",
        dir.display()
    );
    dir
}

impl Moto {
    /// With SigV4 and IAM checked.
    pub fn start() -> Self {
        Self::start_with(true)
    }

    /// With nothing checked: moto fails an unsigned AssumeRoleWithWebIdentity
    /// (as STS takes it) when it checks signatures.
    pub fn start_open() -> Self {
        Self::start_with(false)
    }

    fn start_with(checked: bool) -> Self {
        let port = super::process::free_port();
        let log = tempfile::NamedTempFile::new().expect("a log file");
        let mut command = Command::new(tools().join("moto_server"));
        if checked {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", "3");
        }
        let child = command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("the log file"))
            .spawn()
            .expect("start moto_server");
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto did not start: {}",
                std::fs::read_to_string(log.path()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut moto = Moto {
            child,
            endpoint,
            admin: Default::default(),
        };
        let admin = moto.run(&["admin"]);
        moto.admin = credentials(&admin);
        moto
    }

    /// tests/signers/aws.py with the administrator's credentials.
    pub fn run(&self, args: &[&str]) -> Value {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/signers/aws.py");
        let out = Command::new(tools().join("python"))
            .arg(script)
            .arg(&self.endpoint)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &self.admin.0)
            .env("AWS_SECRET_ACCESS_KEY", &self.admin.1)
            .env_remove("AWS_SESSION_TOKEN")
            .output()
            .expect("run aws.py");
        assert!(
            out.status.success(),
            "aws.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("aws.py prints JSON")
    }

    /// A signing key of `spec` (ECC_NIST_P384, RSA_3072, ...) named by
    /// `alias`; its ARN.
    pub fn create_key(&self, spec: &str, alias: &str) -> String {
        self.run(&["key", spec, alias])["arn"]
            .as_str()
            .expect("an ARN")
            .to_string()
    }

    /// A user allowed `actions` (comma-separated, e.g. kms:Sign).
    pub fn user(&self, name: &str, actions: &str) -> Credentials {
        credentials(&self.run(&["user", name, actions]))
    }

    /// The operator's credentials: the user `operator`, allowed `actions`,
    /// in this process's environment (the SDK's standard chain reads it at
    /// the first use). For a binary whose one test calls this once, before
    /// it starts an operator.
    pub fn operator_user(&self, actions: &str) {
        let (id, secret) = self.user("operator", actions);
        // SAFETY: no other thread reads the environment yet (see above).
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", id);
            std::env::set_var("AWS_SECRET_ACCESS_KEY", secret);
            std::env::remove_var("AWS_SESSION_TOKEN");
            std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        }
    }

    /// The actions `name` is allowed from now on.
    pub fn grant(&self, name: &str, actions: &str) {
        self.run(&["grant", name, actions]);
    }

    /// A role for a web identity (IRSA), allowed `actions`; its ARN.
    pub fn role(&self, name: &str, actions: &str) -> String {
        self.run(&["role", name, actions])["arn"]
            .as_str()
            .expect("an ARN")
            .to_string()
    }
}

fn credentials(answer: &Value) -> Credentials {
    let field = |name: &str| answer[name].as_str().expect("a credential").to_string();
    (field("id"), field("secret"))
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
