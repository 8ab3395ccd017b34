//! Registering with the kubelet through its `plugins_registry` directory:
//! the kubelet finds this socket, asks what it is (a CSI plugin, its
//! endpoint and the versions it speaks), and says whether it registered.

use tonic::{Request, Response, Status};

use super::DRIVER;
use super::proto::registration::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
    registration_server::Registration,
};

pub struct Registrar {
    /// The CSI socket, as the kubelet reaches it.
    pub endpoint: String,
}

#[tonic::async_trait]
impl Registration for Registrar {
    async fn get_info(&self, _: Request<InfoRequest>) -> Result<Response<PluginInfo>, Status> {
        Ok(Response::new(PluginInfo {
            r#type: "CSIPlugin".into(),
            name: DRIVER.into(),
            endpoint: self.endpoint.clone(),
            supported_versions: vec!["1.0.0".into()],
        }))
    }

    async fn notify_registration_status(
        &self,
        request: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        if status.plugin_registered {
            tracing::info!("registered with the kubelet");
        } else {
            tracing::error!(
                error = status.error,
                "the kubelet did not register the plugin"
            );
        }
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}
