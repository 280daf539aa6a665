//! po-sync's edges: AWS clients and the AppZen HTTP client, built once at cold start and passed in.
//!
//! One port per side effect, each a small trait with an AWS SDK adapter and an in-memory adapter:
//! [`queue::FifoQueue`] (SQS FIFO), [`mail::EmailSender`] (SES), [`ledger::Ledger`] (DynamoDB), [`objects::ObjectStore`] (S3). Their errors
//! are [`port::PortError`]s that say transient or permanent and keep their source.
//!
//! Everything here does I/O; the decisions live in `po-sync`.

pub mod appzen;
pub mod exsited;
pub mod invoices;
pub mod ledger;
pub mod mail;
pub mod metrics;
pub mod objects;
pub mod port;
pub mod queue;
pub mod secrets;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::{Builder, tls};

/// Loads the AWS configuration from the standard environment (region, credentials, and `AWS_ENDPOINT_URL`,
/// which points every client at an emulator such as moto), with TLS through rustls on ring.
pub async fn load_aws_config() -> SdkConfig {
    let http_client =
        Builder::new().tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring)).build_https();
    aws_config::defaults(BehaviorVersion::latest()).http_client(http_client).load().await
}
