//! Token delivery to the CSI driver's node plugins: the leader keeps each
//! CSI client's token in memory ([`store`]), serves it over TLS to a node
//! plugin that presents the pod's ServiceAccount token ([`server`]), after
//! asking the API server whose it is and deciding whether that pod may have
//! it ([`authorize`]). Where the leader listens, and the certificate a
//! plugin pins, are published on the leader Lease ([`publish`]).

pub mod authorize;
pub mod publish;
pub mod server;
pub mod store;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where the leader listens for node plugins.
#[derive(Clone, Debug)]
pub struct DeliverySettings {
    pub listen: SocketAddr,
    /// The host (this pod's IP) that plugins connect to; the certificate
    /// names it.
    pub advertise_host: String,
    /// The audience of the pods' ServiceAccount tokens (the CSIDriver
    /// object's tokenRequests).
    pub audience: String,
    /// The Lease that names the leader's address and certificate.
    pub lease_namespace: String,
    pub lease_name: String,
    /// This replica's identity in the Lease, when elections run.
    pub identity: Option<String>,
}

/// This replica's delivery: its certificate, the tokens it holds while it
/// leads, and the TokenReviews it remembers.
pub struct Delivery {
    pub settings: DeliverySettings,
    pub tokens: store::Tokens,
    pub certificate_pem: String,
    tls: tokio_rustls::TlsAcceptor,
    reviews: server::Reviews,
    leading: AtomicBool,
}

impl Delivery {
    /// Makes the certificate (a new key per start; plugins learn it from
    /// the Lease).
    pub fn new(settings: DeliverySettings, port: u16) -> anyhow::Result<Arc<Self>> {
        let (certificate_pem, tls) = server::certificate(&settings.advertise_host)?;
        let mut settings = settings;
        settings.listen.set_port(port);
        Ok(Arc::new(Delivery {
            settings,
            tokens: store::Tokens::default(),
            certificate_pem,
            tls,
            reviews: server::Reviews::default(),
            leading: AtomicBool::new(false),
        }))
    }

    /// The URL plugins call.
    pub fn url(&self) -> String {
        let host = &self.settings.advertise_host;
        let port = self.settings.listen.port();
        if host.contains(':') {
            format!("https://[{host}]:{port}")
        } else {
            format!("https://{host}:{port}")
        }
    }

    pub fn tls(&self) -> tokio_rustls::TlsAcceptor {
        self.tls.clone()
    }

    pub fn leading(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    /// This replica leads: it answers plugins, and says so on the Lease.
    pub fn lead(self: &Arc<Self>, client: kube::Client) {
        self.leading.store(true, Ordering::SeqCst);
        let this = self.clone();
        tokio::spawn(async move { publish::announce(&client, &this).await });
    }

    /// This replica no longer leads: it forgets every token.
    pub fn step_down(&self) {
        self.leading.store(false, Ordering::SeqCst);
        self.tokens.clear();
    }
}
