//! JSON secrets from AWS Secrets Manager, read once at cold start.

use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    // The SDK error's Display names the operation only; its source says why (access denied, not found…).
    #[error("could not read secret {arn}: {source}")]
    Unavailable {
        arn: String,
        // Boxed: the SDK error is large, and this error is only ever built once, at cold start.
        #[source]
        source: Box<
            aws_sdk_secretsmanager::error::SdkError<
                aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError,
            >,
        >,
    },
    #[error("secret {arn} has no SecretString")]
    NotText { arn: String },
    #[error("secret {arn} is not a JSON object of strings")]
    NotJsonObject { arn: String },
}

/// Reads a secret whose value is a JSON object of strings, such as `{"username": "...", "password": "..."}`.
/// The values are never logged; errors name only the ARN.
pub async fn read_json_secret(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
) -> Result<HashMap<String, String>, SecretError> {
    let output = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|source| SecretError::Unavailable { arn: arn.to_owned(), source: Box::new(source) })?;
    let text = output.secret_string().ok_or_else(|| SecretError::NotText { arn: arn.to_owned() })?;
    serde_json::from_str(text).map_err(|_| SecretError::NotJsonObject { arn: arn.to_owned() })
}
