//! What the AWS-backed parts (the SQS transport, the DynamoDB state store) share: the SDK
//! configuration from the environment, who the host is to AWS, and an SDK error as one line.

use aws_sdk_sqs::error::ProvideErrorMetadata;

/// Loads the AWS configuration the usual way (environment, profile, web identity, instance
/// metadata); `AWS_ENDPOINT_URL` points it at an SQS- or DynamoDB-compatible server.
pub async fn config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}

/// Who the host is to AWS, for messages: its access key id (an identifier, not a secret), or
/// why it has none.
pub async fn identity(config: &aws_config::SdkConfig) -> String {
    use aws_sdk_sqs::config::ProvideCredentials;
    match config.credentials_provider() {
        Some(provider) => match provider.provide_credentials().await {
            Ok(credentials) => format!("access key {}", credentials.access_key_id()),
            Err(err) => format!("no AWS credentials ({err})"),
        },
        None => "no AWS credentials configured".to_owned(),
    }
}

/// An SDK error as one line: the service's code and message, else the error and its causes.
pub fn describe<E: ProvideErrorMetadata + std::error::Error + 'static>(err: &E) -> String {
    match (err.code(), err.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => {
            let mut text = err.to_string();
            let mut source = err.source();
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    }
}
