//! Where the token goes (`spec.token.delivery`): CSI only where the
//! operator delivers to the CSI driver, consumers only with CSI, and no
//! Secret settings for a token that has no Secret.

use super::{InvalidSpec, Rules, invalid};
use crate::crd::SmartBackendClient;

/// (to the Secret, to CSI with these consumers).
pub(super) fn delivery(
    sbc: &SmartBackendClient,
    rules: &Rules,
) -> Result<(bool, Option<Vec<String>>), InvalidSpec> {
    let token = &sbc.spec.token;
    let delivery = token.delivery.unwrap_or_default();
    if delivery.csi() && !rules.csi {
        return Err(invalid(
            "token.delivery",
            "CSI delivery needs the operator installed with its CSI driver (Helm value csi.enabled=true, which sets --csi-listen-addr); until then use Secret",
        ));
    }
    if token.consumers.is_some() && !delivery.csi() {
        return Err(invalid(
            "token.consumers",
            "limits which pods may mount the token through the CSI driver: set token.delivery to CSI or SecretAndCSI, or remove it (who may read a token Secret is up to RBAC)",
        ));
    }
    if !delivery.secret() && (token.secret_name.is_some() || token.secret_template.is_some()) {
        return Err(invalid(
            "token.delivery",
            "CSI writes no token Secret, so token.secretName and token.secretTemplate do nothing: remove them, or deliver SecretAndCSI",
        ));
    }
    let csi = delivery
        .csi()
        .then(|| token.consumers.clone().unwrap_or_default());
    Ok((delivery.secret(), csi))
}
