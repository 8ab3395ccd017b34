//! The token step's side for CSI delivery: the leader's memory is where a
//! CSI client's token lives (there is no Secret to read it back from).

use std::time::SystemTime;

use k8s_openapi::api::core::v1::Secret;

use crate::controller::Context;
use crate::controller::decide::secret_data::StoredToken;
use crate::controller::decide::validate::ValidSpec;
use crate::controller::model::target::Target;
use crate::smart::AccessToken;
use crate::token_delivery::store::Held;
use crate::token_delivery::wire::DeliveredToken;

/// The token the leader holds for a CSI-only client, as the token step
/// reads a Secret's.
pub(super) fn held(ctx: &Context, target: &Target<'_>) -> Option<StoredToken> {
    let delivery = ctx.delivery.as_ref()?;
    let held = delivery.tokens.get(target.namespace, target.name)?.token?;
    Some(StoredToken {
        issued_at: held.issued_at,
        expires_at: held.delivered.expires()?,
        inputs_hash: held.inputs_hash,
        scope: held.delivered.scope,
    })
}

/// A new token for the node plugins.
pub(super) fn put(
    ctx: &Context,
    target: &Target<'_>,
    spec: &ValidSpec,
    token: &AccessToken,
    issued_at: SystemTime,
    inputs_hash: &str,
    refresh_at: SystemTime,
) {
    let (Some(delivery), Some(consumers)) = (&ctx.delivery, &spec.to_csi) else {
        return;
    };
    let held = held_token(
        token.access_token.expose(),
        spec,
        StoredToken {
            issued_at,
            expires_at: token.expires_at,
            inputs_hash: inputs_hash.to_string(),
            scope: token.scope.clone(),
        },
        refresh_at,
    );
    delivery
        .tokens
        .put(target.namespace, target.name, consumers, held);
}

/// The token is kept: the consumers are brought up to date, and a client
/// delivered to both places whose token this leader does not hold yet (it
/// has just begun to lead) takes it from the Secret. A client that no
/// longer delivers by CSI is forgotten.
pub(super) fn keep(
    ctx: &Context,
    target: &Target<'_>,
    spec: &ValidSpec,
    existing: Option<&Secret>,
    stored: &StoredToken,
    refresh_at: SystemTime,
) {
    let Some(delivery) = &ctx.delivery else {
        return;
    };
    let Some(consumers) = &spec.to_csi else {
        delivery.tokens.forget(target.namespace, target.name);
        return;
    };
    // The Secret's token is read only when the leader holds none.
    delivery
        .tokens
        .register(target.namespace, target.name, consumers, || {
            let token = existing?.data.as_ref()?.get("access_token")?;
            let access_token = std::str::from_utf8(&token.0).ok()?;
            Some(held_token(access_token, spec, stored.clone(), refresh_at))
        });
}

/// A token as the leader holds it: what plugins get, and what the token
/// step reads back.
fn held_token(
    access_token: &str,
    spec: &ValidSpec,
    stored: StoredToken,
    refresh_at: SystemTime,
) -> Held {
    let delivered = DeliveredToken::new(
        access_token,
        stored.expires_at,
        stored.scope.as_deref(),
        spec.fhir_base_url.as_str(),
        refresh_at,
    );
    Held {
        delivered,
        issued_at: stored.issued_at,
        inputs_hash: stored.inputs_hash,
    }
}
