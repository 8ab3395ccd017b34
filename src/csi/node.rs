//! The CSI Identity and Node services the kubelet calls: publishing a
//! pod's volume mounts a tmpfs, writes the token the leader gives for the
//! pod, and keeps it fresh; unpublishing stops that and unmounts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

use super::DRIVER;
use super::fetch::{Fetched, Leader};
use super::proto::csi::{self, identity_server::Identity, node_server::Node};
use super::refresh::{self, Shared};
use super::{files, volume};

/// How long a first publish waits for the leader to have the token before
/// the kubelet is told to try again (it then retries with its backoff).
const FIRST_TOKEN_WAIT: Duration = Duration::from_secs(15);

struct Published {
    request: Shared,
    asked: Arc<Notify>,
    task: JoinHandle<()>,
}

pub struct Plugin {
    pub node_name: String,
    pub audience: String,
    pub leader: Arc<Leader>,
    volumes: Mutex<HashMap<PathBuf, Published>>,
}

impl Plugin {
    pub fn new(node_name: String, audience: String, leader: Arc<Leader>) -> Self {
        Plugin {
            node_name,
            audience,
            leader,
            volumes: Mutex::new(HashMap::new()),
        }
    }

    fn volumes(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Published>> {
        self.volumes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The first token for a new volume: waits a little for the leader.
    async fn first_token(
        &self,
        request: &volume::VolumeRequest,
    ) -> Result<crate::token_delivery::wire::DeliveredToken, Status> {
        let deadline = tokio::time::Instant::now() + FIRST_TOKEN_WAIT;
        loop {
            match self.leader.fetch(request).await {
                Fetched::Token(token) => return Ok(token),
                Fetched::Refused(why) => {
                    tracing::info!(
                        client = request.client_ref(),
                        pod = request.pod,
                        "refused: {why}"
                    );
                    return Err(Status::permission_denied(why));
                }
                Fetched::Unavailable(why) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(Status::unavailable(format!(
                            "no token yet for SmartBackendClient {}: {why}; the kubelet tries again",
                            request.client_ref()
                        )));
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

#[tonic::async_trait]
impl Identity for Arc<Plugin> {
    async fn get_plugin_info(
        &self,
        _: Request<csi::GetPluginInfoRequest>,
    ) -> Result<Response<csi::GetPluginInfoResponse>, Status> {
        Ok(Response::new(csi::GetPluginInfoResponse {
            name: DRIVER.into(),
            vendor_version: env!("CARGO_PKG_VERSION").into(),
            manifest: HashMap::new(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<csi::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<csi::GetPluginCapabilitiesResponse>, Status> {
        // A node plugin only: no controller service.
        Ok(Response::new(csi::GetPluginCapabilitiesResponse::default()))
    }

    async fn probe(
        &self,
        _: Request<csi::ProbeRequest>,
    ) -> Result<Response<csi::ProbeResponse>, Status> {
        Ok(Response::new(csi::ProbeResponse { ready: Some(true) }))
    }
}

fn target_of(path: &str) -> Result<PathBuf, Status> {
    let path = Path::new(path);
    if path.as_os_str().is_empty() || !path.is_absolute() {
        return Err(Status::invalid_argument(
            "target_path must be an absolute path",
        ));
    }
    Ok(path.to_path_buf())
}

#[tonic::async_trait]
impl Node for Arc<Plugin> {
    async fn node_publish_volume(
        &self,
        request: Request<csi::NodePublishVolumeRequest>,
    ) -> Result<Response<csi::NodePublishVolumeResponse>, Status> {
        let request = request.into_inner();
        let target = target_of(&request.target_path)?;
        let wanted = volume::read(&request.volume_context, &self.audience)
            .map_err(Status::invalid_argument)?;
        // A republish (the kubelet repeats it to hand over a fresh pod
        // credential) or a volume mounted before this plugin restarted.
        if let Some(published) = self.volumes().get(&target) {
            *published.request.lock().unwrap_or_else(|e| e.into_inner()) = wanted;
            published.asked.notify_one();
            return Ok(Response::new(csi::NodePublishVolumeResponse {}));
        }
        let mounted = files::is_mount(&target).map_err(|e| Status::internal(e.to_string()))?;
        let token = self.first_token(&wanted).await?;
        if !mounted {
            files::mount_tmpfs(&target).map_err(|e| {
                Status::internal(format!("mounting a tmpfs at {}: {e}", target.display()))
            })?;
        }
        refresh::write(&target, &token).map_err(|e| {
            Status::internal(format!("writing the token into {}: {e}", target.display()))
        })?;
        tracing::info!(
            client = wanted.client_ref(),
            pod = wanted.pod,
            service_account = wanted.service_account,
            expires_at = token.expires_at,
            "published a token volume"
        );
        let shared: Shared = Arc::new(Mutex::new(wanted));
        let asked = Arc::new(Notify::new());
        let task = tokio::spawn(refresh::keep_fresh(
            self.leader.clone(),
            shared.clone(),
            asked.clone(),
            target.clone(),
            token,
        ));
        let replaced = self.volumes().insert(
            target,
            Published {
                request: shared,
                asked,
                task,
            },
        );
        if let Some(old) = replaced {
            old.task.abort();
        }
        Ok(Response::new(csi::NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<csi::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<csi::NodeUnpublishVolumeResponse>, Status> {
        let target = target_of(&request.into_inner().target_path)?;
        if let Some(published) = self.volumes().remove(&target) {
            published.task.abort();
        }
        files::unmount(&target)
            .map_err(|e| Status::internal(format!("unmounting {}: {e}", target.display())))?;
        Ok(Response::new(csi::NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<csi::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<csi::NodeGetCapabilitiesResponse>, Status> {
        Ok(Response::new(csi::NodeGetCapabilitiesResponse::default()))
    }

    async fn node_get_info(
        &self,
        _: Request<csi::NodeGetInfoRequest>,
    ) -> Result<Response<csi::NodeGetInfoResponse>, Status> {
        Ok(Response::new(csi::NodeGetInfoResponse {
            node_id: self.node_name.clone(),
            ..Default::default()
        }))
    }

    async fn node_stage_volume(
        &self,
        _: Request<csi::NodeStageVolumeRequest>,
    ) -> Result<Response<csi::NodeStageVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "no staging: inline ephemeral volumes only",
        ))
    }

    async fn node_unstage_volume(
        &self,
        _: Request<csi::NodeUnstageVolumeRequest>,
    ) -> Result<Response<csi::NodeUnstageVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "no staging: inline ephemeral volumes only",
        ))
    }

    async fn node_get_volume_stats(
        &self,
        _: Request<csi::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<csi::NodeGetVolumeStatsResponse>, Status> {
        Err(Status::unimplemented("no volume statistics"))
    }

    async fn node_expand_volume(
        &self,
        _: Request<csi::NodeExpandVolumeRequest>,
    ) -> Result<Response<csi::NodeExpandVolumeResponse>, Status> {
        Err(Status::unimplemented("token volumes are not expanded"))
    }
}
