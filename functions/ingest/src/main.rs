//! Lambda entry point: tracing, configuration, clients, run. The logic is in the library.

use ingest::Ingest;
use lambda_http::{Error, Request, run, service_fn};
use po_sync::config::ProcessEnv;
use po_sync::config::ingest::IngestConfig;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = IngestConfig::from_env(&ProcessEnv)?;
    let ingest = Ingest::start(config, &po_sync_aws::load_aws_config().await).await?;
    let ingest = &ingest;
    run(service_fn(move |request: Request| async move { Ok::<_, Error>(ingest.handle(request).await) })).await
}
