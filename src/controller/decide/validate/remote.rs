//! Keys that stay in a key manager: allowed only where the operator is
//! configured for it, alone (no key Secret, generated-key setting, rotation
//! schedule or kid beside them), and named under the resource's namespace,
//! so that no namespace can sign with another's key.

use super::{InvalidSpec, KeySource, Rules, invalid};
use crate::crd::{AwsKmsSpec, SmartBackendClient, VaultTransitSpec};

/// Nothing a key manager's key cannot be combined with is set.
fn alone(
    sbc: &SmartBackendClient,
    field: &'static str,
    what: &str,
    rotate: &str,
) -> Result<(), InvalidSpec> {
    let signing = &sbc.spec.signing;
    if signing.key_secret_ref.is_some()
        || signing.next_key_secret_ref.is_some()
        || signing.rsa_key_size.is_some()
        || signing.generated_key_policy.is_some()
        || signing.rotation.is_some()
    {
        return Err(invalid(
            field,
            format!(
                "cannot be combined with keySecretRef, nextKeySecretRef, rsaKeySize, generatedKeyPolicy or rotation: {rotate}"
            ),
        ));
    }
    if signing.kid.is_some() {
        return Err(invalid(
            "signing.kid",
            format!(
                "cannot be combined with {field}: each {what} is published under its own kid (its thumbprint)"
            ),
        ));
    }
    Ok(())
}

fn namespace(sbc: &SmartBackendClient) -> &str {
    sbc.metadata.namespace.as_deref().unwrap_or("default")
}

pub(super) fn transit_key(
    sbc: &SmartBackendClient,
    transit: &VaultTransitSpec,
    rules: &Rules,
) -> Result<KeySource, InvalidSpec> {
    let field = "signing.vaultTransit";
    if !rules.vault {
        return Err(invalid(
            field,
            "this operator is not configured for Vault or OpenBao: install it with vault.address and vault.role set (or --vault-address and --vault-role), or sign with a key Secret",
        ));
    }
    alone(
        sbc,
        field,
        "Transit key version",
        "rotate the Transit key itself",
    )?;
    let key = format!("{}.{}", namespace(sbc), transit.key);
    crate::smart::signer::transit::wire::check_path("the Transit key", &key, false)
        .map_err(|problem| invalid("signing.vaultTransit.key", problem))?;
    Ok(KeySource::Transit { key })
}

/// A name in the namespace's aliases, as the CRD's pattern says.
fn kms_name(field: &'static str, name: &str) -> Result<String, InvalidSpec> {
    let fine = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if fine {
        Ok(name.to_string())
    } else {
        Err(invalid(
            field,
            format!("{name:?} is not a key name: 1 to 64 letters, digits, '_' or '-'"),
        ))
    }
}

pub(super) fn kms_key(
    sbc: &SmartBackendClient,
    kms: &AwsKmsSpec,
    rules: &Rules,
) -> Result<KeySource, InvalidSpec> {
    let field = "signing.awsKms";
    if !rules.kms {
        return Err(invalid(
            field,
            "this operator is not configured for AWS KMS: install it with aws.kms.enabled (or --aws-kms), or sign with a key Secret",
        ));
    }
    alone(sbc, field, "KMS key", "rotate with awsKms.nextKey")?;
    let key = kms_name("signing.awsKms.key", &kms.key)?;
    let next = match kms.next_key.as_deref() {
        Some(next) if next == key => {
            return Err(invalid(
                "signing.awsKms.nextKey",
                "names the key that already signs: name the new key's alias",
            ));
        }
        next => next
            .map(|n| kms_name("signing.awsKms.nextKey", n))
            .transpose()?,
    };
    Ok(KeySource::Kms { key, next })
}
