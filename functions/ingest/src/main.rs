//! Lambda entry point: tracing, metrics, configuration, clients, run. The logic is in the library.

use ingest::Ingest;
use lambda_http::{Error, Request, RequestExt, run, service_fn};
use po_sync::config::ProcessEnv;
use po_sync::config::ingest::IngestConfig;
use po_sync_aws::metrics::{Metrics, Service};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let metrics = Metrics::install(Service::Ingest, &ProcessEnv)?;
    let config = IngestConfig::from_env(&ProcessEnv)?;
    let ingest = Ingest::start(config, &po_sync_aws::load_aws_config().await).await?;
    let (ingest, metrics) = (&ingest, &metrics);
    run(service_fn(move |request: Request| async move {
        // Each invocation's metrics are written as EMF lines once it is done, before Lambda gets the answer.
        let request_id = request.lambda_context_ref().map(|context| context.request_id.clone()).unwrap_or_default();
        Ok::<_, Error>(metrics.invocation(&request_id, ingest.handle(request)).await)
    }))
    .await
}
